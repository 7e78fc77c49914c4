"""flask_relay.sock still offers every name it defined before the layer split
(contracts now in server/wscontract.py, ws objects in engine/websocket.py,
close codes in protocol/closecode.py), as the same objects."""

from __future__ import annotations

import pytest

import flask_relay.sock as sock
from flask_relay.engine import websocket as ws_objects
from flask_relay.protocol import closecode
from flask_relay.server import wscontract

MOVED = {
    wscontract: [
        "UPGRADER_KEY",
        "DEFAULT_MAX_MESSAGE_SIZE",
        "Data",
        "WebSocketError",
        "ConnectionClosed",
        "HandshakeRejected",
        "WebSocketOptions",
        "Channel",
        "ChannelListener",
        "Upgrader",
        "requested_subprotocols",
    ],
    ws_objects: ["SEND_HIGH_WATER", "WebSocket", "AsyncWebSocket"],
    closecode: ["check_close_code"],
}


@pytest.mark.parametrize(
    ("home", "name"), [(home, name) for home, names in MOVED.items() for name in names]
)
def test_sock_reexports(home: object, name: str) -> None:
    assert getattr(sock, name) is getattr(home, name)


def test_close_code_names() -> None:
    assert (sock.CLOSE_NORMAL, sock.CLOSE_NO_STATUS, sock.CLOSE_ABNORMAL) == (1000, 1005, 1006)
    assert (sock.CLOSE_POLICY_VIOLATION, sock.CLOSE_INTERNAL_ERROR) == (1008, 1011)
    for name in sock.__all__:
        assert hasattr(sock, name)
