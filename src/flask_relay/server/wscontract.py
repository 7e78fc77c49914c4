"""The contract between WebSocket routes and the doors that serve them.

A *door* (the own HTTP server, the foreign-server middleware, the in-process
test client) accepts an upgrade request and offers an :class:`Upgrader` in
``environ[UPGRADER_KEY]``; the route's ``ws`` object
(:mod:`flask_relay.engine.websocket`) calls :meth:`Upgrader.accept` with itself
as the :class:`ChannelListener` and gets a :class:`Channel` back. Both sides
call each other on the event loop thread only.

This module also holds what both sides raise and configure: the errors
(:class:`ConnectionClosed`, :class:`HandshakeRejected`) and the per-app
:class:`WebSocketOptions`. It imports neither Flask nor the ``ws`` objects, so
the doors (``server/``) depend on it and not on the Flask face
(:mod:`flask_relay.sock` re-exports every public name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol.closecode import CloseCode
from ..protocol.errors import FlaskRelayError

if TYPE_CHECKING:
    from .loop import Hub

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "UPGRADER_KEY",
    "Channel",
    "ChannelListener",
    "ConnectionClosed",
    "Data",
    "HandshakeRejected",
    "Upgrader",
    "WebSocketError",
    "WebSocketOptions",
    "requested_subprotocols",
]

#: The environ key under which a door offers to upgrade the request.
UPGRADER_KEY = "flask_relay.websocket"

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

Data = str | bytes


class WebSocketError(FlaskRelayError, RuntimeError):
    """Base class of this module's errors (simple-websocket's ``SimpleWebsocketError``)."""


class ConnectionClosed(WebSocketError):
    """The WebSocket connection is closed; raised by ``receive``, ``send`` and ``close``.

    ``reason`` is the close code the peer sent (1005 when it sent none, 1006
    when the TCP connection was lost without a closing handshake) and
    ``message`` its close reason text, as in simple-websocket.
    """

    def __init__(self, reason: int = CloseCode.NO_STATUS, message: str | None = None) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"Connection closed: {reason} {message or ''}".rstrip())


class HandshakeRejected(ConnectionClosed):
    """The upgrade request was not a valid WebSocket handshake.

    Raised from the first use of ``ws`` (the handshake is lazy); the route's
    view then answers with this HTTP response (``status``, ``headers``,
    ``body``) instead of switching protocols.
    """

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(CloseCode.ABNORMAL, body.decode("utf-8", "replace").strip())
        self.status = status
        self.headers = headers
        self.body = body


@dataclass(frozen=True)
class WebSocketOptions:
    """The per-application WebSocket settings (``SOCK_SERVER_OPTIONS``)."""

    ping_interval: float | None = None
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    subprotocols: tuple[str, ...] = ()
    compression: bool = False
    max_queued_messages: int = 64

    _IGNORED = frozenset({"receive_bytes", "thread_class", "event_class", "selector_class"})

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> WebSocketOptions:
        """Build from a ``SOCK_SERVER_OPTIONS`` mapping; unknown keys are an error."""
        if not config:
            return cls()
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            if key in cls._IGNORED:
                continue
            if key == "ping_interval":
                if value is not None and float(value) <= 0:
                    raise ValueError("SOCK_SERVER_OPTIONS['ping_interval'] must be > 0 or None")
                kwargs[key] = None if value is None else float(value)
            elif key == "max_message_size":
                if value is not None and int(value) < 1:
                    raise ValueError("SOCK_SERVER_OPTIONS['max_message_size'] must be >= 1 or None")
                kwargs[key] = None if value is None else int(value)
            elif key == "subprotocols":
                kwargs[key] = tuple(str(s) for s in (value or ()))
            elif key == "compression":
                kwargs[key] = bool(value)
            elif key == "max_queued_messages":
                if int(value) < 1:
                    raise ValueError("SOCK_SERVER_OPTIONS['max_queued_messages'] must be >= 1")
                kwargs[key] = int(value)
            else:
                raise ValueError(f"unknown SOCK_SERVER_OPTIONS key {key!r}")
        return cls(**kwargs)

    def choose_subprotocol(self, offered: Iterable[str]) -> str | None:
        """The first subprotocol the client offers that the server supports."""
        for name in offered:
            if name in self.subprotocols:
                return name
        return None


class Channel(Protocol):
    """Loop-side handle on one accepted WebSocket connection.

    A door implements it over its connection driver. Every method is called
    on the event loop thread only, and never raises for a closed connection
    (it does nothing then).
    """

    def send(self, data: Data) -> None:
        """Queue one text (``str``) or binary (``bytes``) message."""

    def ping(self, data: bytes) -> None:
        """Queue a ping frame."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the door closes TCP when it completes
        (or after its close timeout)."""

    def pause_reading(self) -> None:
        """Stop reading from the socket until :meth:`resume_reading`."""

    def resume_reading(self) -> None:
        """Resume reading."""


class ChannelListener(Protocol):
    """What a door calls, on the loop thread, about an accepted connection."""

    def message_received(self, data: Data) -> None:
        """A complete text or binary message arrived."""

    def pong_received(self, data: bytes) -> None:
        """A pong (or any sign of life the door chooses to report) arrived."""

    def connection_closed(self, code: int, reason: str) -> None:
        """The connection is over: the peer's close code and reason (1005 when
        its close frame had none, 1006 when TCP was lost without one). Called
        exactly once, last."""

    def pause_writing(self) -> None:
        """The transport's write buffer went over its high-water mark."""

    def resume_writing(self) -> None:
        """The transport's write buffer drained below its low-water mark."""


class Upgrader(Protocol):
    """What a door puts in ``environ[UPGRADER_KEY]`` for an upgrade request.

    The door has already checked that the request is a valid WebSocket
    handshake (answering 400 otherwise) and runs the Flask dispatch for it in a
    thread of its own.
    """

    hub: Hub

    def accept(
        self, listener: ChannelListener, options: WebSocketOptions, subprotocol: str | None
    ) -> Channel:
        """Complete the handshake and start the connection on the loop.

        Called from the route's thread. Returns at once: the channel is handed
        to the loop through ``hub.call``, so that every later call the ws object
        makes through ``hub.call`` runs after it. Raises
        :class:`HandshakeRejected` for an invalid handshake and
        :class:`ConnectionClosed` (1006) when the client is already gone.
        After a successful call the door ignores the WSGI response.
        """


def requested_subprotocols(environ: Mapping[str, Any]) -> list[str]:
    """The subprotocols a client offers in ``Sec-WebSocket-Protocol``."""
    header = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    return [p.strip() for p in str(header).split(",") if p.strip()]
