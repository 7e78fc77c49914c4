"""What every door shares to serve WebSocket routes (contracts in :mod:`.wscontract`).

* :class:`RouteChannel`: the loop-side driver of one route connection, an
  ``asyncio.Protocol`` over :class:`~flask_relay.protocol.websocket.WebSocketConnection`
  that implements :class:`~flask_relay.server.wscontract.Channel`. Writes are coalesced: the
  sends a loop iteration brings (a burst from a route thread arrives through one
  :meth:`Hub.call <flask_relay.server.loop.Hub.call>` drain) leave in one
  ``transport.write``. Protocol replies (pongs, close frames) are written as soon
  as the frame that caused them was parsed, before any later message.
* :class:`RouteUpgrader`: the common part of the doors' upgraders (the handshake
  from a WSGI environ); a door adds how the socket reaches the loop.
* :func:`dispatch_upgrade`: run the Flask dispatch of an upgrade request in a
  thread of its own and report, once, either "accepted" or the HTTP response to
  send instead.
* :func:`serve_route_upgrade`: the own HTTP server's door (``server/http.py``
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
from typing import TYPE_CHECKING, Any, cast

from ..protocol import websocket as wsproto
from ..protocol.closecode import CloseCode
from .request import bodyless_status, response_bytes, response_head
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

#: Every route connection whose transport is open, on any loop (for shutdown).
_live: set[RouteChannel] = set()


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


class RouteChannel(asyncio.Protocol):
    """The loop-side driver of one accepted route connection (a :class:`Channel`)."""

    def __init__(
        self,
        conn: wsproto.WebSocketConnection,
        listener: ChannelListener,
        loop: asyncio.AbstractEventLoop,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self._conn = conn
        self._listener = listener
        self._loop = loop
        self._close_timeout = close_timeout
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._finished = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        transport = self._transport
        _live.add(self)
        if self._reading_paused:
            transport.pause_reading()
        self._flush()  # the 101 response and anything sent meanwhile
        if self._conn.closed:
            # Closed before the socket reached the loop (a route that closed
            # at once): the close frame just went out; wait for the reply.
            return
        if self._conn.state is wsproto.State.CLOSING:
            self._arm_close_timer()

    def data_received(self, data: bytes) -> None:
        events = self._conn.receive_data(data)
        self._flush()
        for event in events:
            self._dispatch(event)

    def eof_received(self) -> bool | None:
        events = self._conn.eof_received()
        self._flush()
        for event in events:
            self._dispatch(event)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        _live.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if not self._conn.closed:
            for event in self._conn.eof_received():
                self._dispatch(event)
        self._finish(CloseCode.ABNORMAL, "")

    def pause_writing(self) -> None:
        self._listener.pause_writing()

    def resume_writing(self) -> None:
        self._listener.resume_writing()

    # -- events ------------------------------------------------------------

    def _dispatch(self, event: wsproto.Event) -> None:
        if isinstance(event, (wsproto.TextMessage, wsproto.BinaryMessage)):
            self._listener.message_received(event.data)
        elif isinstance(event, (wsproto.Pong, wsproto.Ping)):
            self._listener.pong_received(event.data)
        elif isinstance(event, wsproto.Closed):
            self._finish(event.code, event.reason)

    def _finish(self, code: int, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._transport is not None and not self._conn.should_close_transport:
            # The peer went away (1006) or we failed the connection: nothing
            # more will come that we want; close after the pending writes.
            self._transport.close()
        try:
            self._listener.connection_closed(code, reason)
        except Exception:  # pragma: no cover - listeners do not raise
            logger.exception("error in connection_closed")

    # -- output ------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None:
            return
        out = self._conn.data_to_send()
        if out:
            transport.write(out)
        if self._conn.should_close_transport:
            transport.close()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self._transport is not None:
            self._close_timer = self._loop.call_later(self._close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self._transport is not None:
            self._transport.abort()

    # -- Channel -----------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self._conn.send_text(data)
        else:
            self._conn.send_binary(data)
        self._schedule_flush()

    def ping(self, data: bytes) -> None:
        self._conn.send_ping(data)
        self._schedule_flush()

    def close(self, code: int, reason: str) -> None:
        self._conn.close(code, reason)
        self._flush()
        if not self._conn.closed:
            self._arm_close_timer()

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        if self._transport is not None and not self._finished:
            self._transport.resume_reading()

    # -- shutdown ----------------------------------------------------------

    def runs_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this connection belongs to ``loop``."""
        return self._loop is loop

    def abort(self) -> None:
        """Drop the TCP connection now (the closing handshake took too long)."""
        if self._transport is not None:
            self._transport.abort()


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
        channel = RouteChannel(result, listener, self.hub.loop)
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
