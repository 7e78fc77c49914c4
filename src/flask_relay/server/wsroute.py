"""What every door shares to serve WebSocket routes (contracts in :mod:`.wscontract`).

* :func:`route_channel`: the loop-side driver of one route connection, a
  :class:`~flask_relay.server.wschannel.WSChannel` (which implements
  :class:`~flask_relay.server.wscontract.Channel`) with the routes' settings:
  10 s close timeout, its own slow-consumer watch, big sends written at once.
  A burst from a route thread arrives through one
  :meth:`Hub.call <flask_relay.server.loop.Hub.call>` drain and leaves in one
  ``transport.write``.
* :class:`RouteUpgrader`: the common part of the doors' upgraders (the handshake
  from a WSGI environ); a door adds how the socket reaches the loop.
* :func:`dispatch_upgrade`: run the Flask dispatch of an upgrade request in a
  thread of its own and report, once, either "accepted" or the HTTP response to
  send instead.
* :func:`serve_route_upgrade`: the own HTTP server's door (``server/httpconn.py``
  calls it for a WebSocket upgrade outside every mount).
* :func:`shutdown_routes`: close every route connection of the running loop
  with 1001 (the server's graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..protocol import websocket as wsproto
from ..protocol.closecode import CloseCode
from .request import bodyless_status, response_bytes, response_head
from .wschannel import WSChannel
from .wscontract import (
    UPGRADER_KEY,
    ChannelListener,
    ConnectionClosed,
    HandshakeRejected,
    WebSocketOptions,
)

if TYPE_CHECKING:
    from .loop import Hub
    from .request import UpgradeHandle

__all__ = [
    "RouteChannel",
    "route_channel",
    "RouteOutcome",
    "RouteUpgrader",
    "dispatch_upgrade",
    "environ_headers",
    "is_websocket_upgrade",
    "serve_route_upgrade",
    "shutdown_routes",
]

logger = logging.getLogger("flask_relay.sock")

#: Seconds to wait for the peer's close frame (or its TCP close) after ours.
CLOSE_TIMEOUT = 10.0

#: Seconds a client may accept no byte while output waits for it (the default of
#: ``SOCK_SERVER_OPTIONS["slow_consumer_timeout"]``).
SLOW_CONSUMER_TIMEOUT = 10.0
#: Sends that add up to this many bytes are written at once, not at the next flush.
FLUSH_AT_ONCE = 64 * 1024
#: A route connection's channel (one class for every WebSocket user).
RouteChannel = WSChannel

#: Every route connection whose transport is open, on any loop (for shutdown).
_live: set[WSChannel] = set()


def route_channel(
    conn: wsproto.WebSocketConnection,
    listener: ChannelListener,
    loop: asyncio.AbstractEventLoop,
    *,
    slow_consumer_timeout: float = SLOW_CONSUMER_TIMEOUT,
) -> WSChannel:
    """The channel of one accepted route connection."""
    return WSChannel(
        conn,
        listener,
        loop,
        close_timeout=CLOSE_TIMEOUT,
        slow_consumer_timeout=slow_consumer_timeout,
        flush_at_once=FLUSH_AT_ONCE,
        live=_live,
    )


def is_websocket_upgrade(environ: dict[str, Any]) -> bool:
    """Whether a WSGI request asks for a WebSocket upgrade (Werkzeug's test)."""
    if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
        return False
    connection = environ.get("HTTP_CONNECTION", "").lower()
    return any(part.strip() == "upgrade" for part in connection.split(","))


def environ_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The request headers of a WSGI environ, as name/value pairs."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").title(), str(value)))
    return headers


class RouteUpgrader:
    """The handshake part of a door's :class:`~flask_relay.server.wscontract.Upgrader`.

    :meth:`accept` builds the connection from the environ's headers, calls
    :meth:`start` (the door's way to bring the socket to the loop) and reports
    the acceptance to ``on_accept`` (the thread waiting in the door).
    """

    def __init__(self, hub: Hub, environ: dict[str, Any]) -> None:
        self.hub = hub
        self.environ = environ
        self.accepted = False
        self.on_accept: Callable[[], None] | None = None

    def accept(
        self, listener: ChannelListener, options: WebSocketOptions, subprotocol: str | None
    ) -> RouteChannel:
        environ = self.environ
        target = (
            environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        )
        result = wsproto.accept(
            environ.get("REQUEST_METHOD", "GET"),
            target,
            environ_headers(environ),
            http_version=environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
            select_subprotocol=lambda offered: subprotocol if subprotocol in offered else None,
            compression=options.compression,
            max_message_size=options.max_message_size,
        )
        if isinstance(result, wsproto.Rejection):
            raise HandshakeRejected(result.status, result.headers, result.body)
        channel = route_channel(
            result, listener, self.hub.loop, slow_consumer_timeout=options.slow_consumer_timeout
        )
        try:
            self.start(channel)
        except OSError:
            raise ConnectionClosed(CloseCode.ABNORMAL, "") from None
        self.accepted = True
        if self.on_accept is not None:
            self.on_accept()
        return channel

    def start(self, channel: RouteChannel) -> None:  # pragma: no cover - abstract
        """Bring the socket to the loop and call ``channel.connection_made``
        there (from any thread; through ``hub.call``)."""
        raise NotImplementedError


class RouteOutcome:
    """The answer to an upgrade request, decided in the route thread.

    ``accepted`` is True once the route took the connection; otherwise
    ``status``, ``headers`` and ``body`` hold the WSGI response to send.
    """

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.accepted = False
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.exc_info: Any = None


def dispatch_upgrade(
    app: Callable[..., Iterable[bytes]],
    environ: dict[str, Any],
    upgrader: RouteUpgrader,
    on_outcome: Callable[[RouteOutcome], None] | None = None,
) -> RouteOutcome:
    """Run ``app(environ, ...)`` in a new thread; return its outcome object.

    ``outcome.ready`` is set (and ``on_outcome`` called, from the route
    thread) once, either when the route accepted the upgrade (its thread goes
    on running the route) or when the application returned an HTTP response.
    """
    outcome = RouteOutcome()

    def decided() -> None:
        if not outcome.ready.is_set():
            outcome.ready.set()
            if on_outcome is not None:
                on_outcome(outcome)

    def on_accept() -> None:
        outcome.accepted = True
        decided()

    upgrader.on_accept = on_accept

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        outcome.status, outcome.headers = status, list(headers)
        return chunks.append

    chunks: list[bytes] = []

    def run() -> None:
        try:
            result = app(environ, start_response)
            try:
                if not upgrader.accepted:
                    for chunk in result:
                        chunks.append(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BaseException:
            if upgrader.accepted:
                logger.exception("Error after a WebSocket route ended")
            else:
                logger.exception("Error handling a WebSocket upgrade request")
                outcome.status = "500 Internal Server Error"
                outcome.headers = [("Content-Type", "text/plain; charset=utf-8")]
                chunks[:] = [b"Internal Server Error\n"]
            if not isinstance(sys.exc_info()[1], Exception):
                decided()
                raise
        finally:
            outcome.body = b"".join(chunks)
            decided()

    thread = threading.Thread(target=run, name="flask-relay-ws-route", daemon=True)
    thread.start()
    return outcome


def _serialize(outcome: RouteOutcome) -> bytes:
    """The HTTP/1.1 response for an upgrade the application answered in HTTP."""
    try:
        status = int(outcome.status[:3])
        head = response_head(
            outcome.status, outcome.headers, length=len(outcome.body), connection="close"
        )
    except ValueError:
        logger.exception("Invalid HTTP answer to a WebSocket upgrade request")
        return response_bytes(500, [], b"Internal Server Error\n", keep_alive=False)
    return head if bodyless_status(status) else head + outcome.body


class HandleUpgrader(RouteUpgrader):
    """The own server's upgrader: switches the HTTP connection's transport."""

    def __init__(self, hub: Hub, environ: dict[str, Any], handle: UpgradeHandle) -> None:
        super().__init__(hub, environ)
        self._handle = handle

    def start(self, channel: RouteChannel) -> None:
        self.hub.call(self._handle.switch, channel)


def serve_route_upgrade(
    app: Callable[..., Iterable[bytes]],
    environ: dict[str, Any],
    handle: UpgradeHandle,
    hub: Hub,
) -> None:
    """Serve a WebSocket upgrade request with the WSGI ``app`` (on the loop).

    The application runs in a thread of its own (:func:`dispatch_upgrade`);
    when it answers in HTTP instead of accepting (no such route, a refusing
    decorator, a bad handshake) the answer is written and the connection
    closed.
    """
    upgrader = HandleUpgrader(hub, environ, handle)
    environ[UPGRADER_KEY] = upgrader

    def on_outcome(outcome: RouteOutcome) -> None:
        if not outcome.accepted:
            hub.call(handle.write_raw_and_close, _serialize(outcome))

    dispatch_upgrade(app, environ, upgrader, on_outcome)


async def shutdown_routes(
    timeout: float, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down"
) -> None:
    """Close the running loop's route connections; wait (bounded) for the handshakes."""
    loop = asyncio.get_running_loop()
    channels = [c for c in _live if c.runs_on(loop)]
    if not channels:
        return
    for channel in channels:
        channel.close(code, reason)
    deadline = time.monotonic() + timeout
    while any(c in _live for c in channels) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for channel in channels:
        if channel in _live:
            channel.abort()
