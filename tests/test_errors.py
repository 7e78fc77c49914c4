"""Every exception the package defines derives from FlaskRelayError, and keeps
the builtin base user code may already catch."""

from __future__ import annotations

import pytest

import flask_relay
from flask_relay import FlaskRelayError
from flask_relay.engine.dispatch import DispatcherClosed, DispatchQueueFull
from flask_relay.extension import MessageQueueNotSupported
from flask_relay.protocol.errors import ProtocolError
from flask_relay.server.http import ListenError
from flask_relay.sock import ConnectionClosed, HandshakeRejected, WebSocketError
from flask_relay.sockets import WebSocketError as GeventWebSocketError
from flask_relay.ws_testing import UpgradeRefused


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ProtocolError, ValueError),
        (DispatchQueueFull, RuntimeError),
        (DispatcherClosed, RuntimeError),
        (ListenError, OSError),
        (WebSocketError, RuntimeError),
        (ConnectionClosed, RuntimeError),
        (HandshakeRejected, RuntimeError),
        (GeventWebSocketError, OSError),
        (flask_relay.ConnectionRefusedError, ConnectionRefusedError),
        (MessageQueueNotSupported, NotImplementedError),
        (UpgradeRefused, Exception),
    ],
)
def test_one_error_root(error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, FlaskRelayError)
    assert issubclass(error, builtin)


def test_errors_construct_as_before() -> None:
    closed = ConnectionClosed(1001, "bye")
    assert (closed.reason, closed.message) == (1001, "bye")
    assert str(ListenError("127.0.0.1", 5000, "address already in use")) != ""
    refused = flask_relay.ConnectionRefusedError("nope", {"code": 1})
    assert isinstance(refused, ConnectionRefusedError)
    with pytest.raises(FlaskRelayError, match="bad"):
        raise ProtocolError("bad")
