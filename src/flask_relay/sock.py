"""Plain WebSocket routes for Flask, compatible with Flask-Sock.

::

    from flask_relay import Sock

    sock = Sock(app)

    @sock.route("/echo/<room>")
    def echo(ws, room):
        while True:
            ws.send(ws.receive())

How a route runs
----------------
A route is an ordinary Flask view registered with ``websocket=True``, so URL
variables, blueprints, ``before_request``/``after_request`` hooks and view
decorators (``login_required``, ...) apply exactly as they do to HTTP views.

The *door* that received the upgrade request (the package's own server, the
WSGI middleware for foreign servers, or the in-process test client) runs the
whole Flask dispatch for it in a **thread of its own**, never in the Socket.IO
handler pool, so a thousand blocking routes cannot starve Socket.IO handlers.
It puts an :class:`Upgrader` in ``environ["flask_relay.websocket"]``. The network
I/O of the connection stays on the event loop: the ``ws`` object a route sees
only hands messages to and from the loop.

The handshake is completed *lazily*, when the route first uses ``ws`` (any
method or attribute) or returns. So a view decorator below ``@sock.route`` that
refuses the request (``login_required`` returning a redirect, ``abort(403)``)
refuses the *upgrade* with a real HTTP response, instead of accepting the socket
and closing it at once as Flask-Sock does. Call :meth:`WebSocket.accept` to
complete the handshake early in a route that blocks before touching ``ws``.

An ``async def`` route runs on the event loop with an :class:`AsyncWebSocket`
(``await ws.receive()``): the view (hooks, decorators) still runs in a thread,
which is released as soon as the route's coroutine is scheduled, so thousands of
idle async routes cost no thread. Such a coroutine must not block.

Origin check
------------
Unlike Flask-Sock, a route refuses a browser page on another origin (HTTP 403
and a warning naming the setting that would allow it): browsers send cookies
with every WebSocket handshake, so accepting any origin lets another site act
as the user. The policy is Socket.IO's (:mod:`flask_relay.protocol.origin`):
``Sock(app, allowed_origins=...)``, else ``app.config["SOCK_ALLOWED_ORIGINS"]``,
else the same origin only; clients that send no ``Origin`` pass.

Options (``app.config["SOCK_SERVER_OPTIONS"]``)
-----------------------------------------------
``ping_interval`` (default ``None``: no pings)
    Seconds between server pings. When no pong (or any other frame) arrived
    since the previous ping, the connection is closed with 1008
    ``"Ping/Pong timeout"``, like simple-websocket does.
``max_message_size`` (default 16 MiB)
    Largest message accepted; a bigger one closes the connection with 1009.
    ``None`` lifts the limit (Flask-Sock's default; not recommended).
``subprotocols`` (default none)
    Subprotocols the server supports; the first one the client offers that is in
    this list is chosen (``ws.subprotocol``).
``compression`` (default ``False``)
    Negotiate permessage-deflate. Off by default: it costs memory per connection
    and CPU per message, and most WebSocket traffic is small.
``max_queued_messages`` (default 64)
    Received messages buffered for a route that is not calling ``receive()``;
    past it, the loop stops reading that socket (TCP back-pressure) until the
    route catches up.

Flask-Sock's ``receive_bytes``, ``thread_class``, ``event_class`` and
``selector_class`` are accepted and ignored: the loop does the reading.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from flask import Blueprint, Flask, Response, current_app, request

from .groups import MAX_BACKLOG, WebSocketGroups, groups_for
from .protocol.origin import OriginPolicy, environ_origin_allowed

if TYPE_CHECKING:
    from flask.blueprints import BlueprintSetupState
    from werkzeug.wrappers import Response as BaseResponse

    from .server.loop import Hub
    from .ws_testing import WebSocketTestClient

__all__ = [
    "UPGRADER_KEY",
    "AsyncWebSocket",
    "Channel",
    "ChannelListener",
    "ConnectionClosed",
    "Sock",
    "Upgrader",
    "WebSocket",
    "WebSocketError",
    "WebSocketOptions",
]

logger = logging.getLogger("flask_relay.sock")

#: The environ key under which a door offers to upgrade the request.
UPGRADER_KEY = "flask_relay.websocket"

#: Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

#: A blocking ``send`` waits while more than this many bytes are on their way to
#: the socket (queued for the loop or in the transport's buffer while it is
#: paused): the bound that keeps a fast producer from filling memory.
SEND_HIGH_WATER = 1024 * 1024

Data = str | bytes
F = TypeVar("F", bound=Callable[..., Any])


class WebSocketError(RuntimeError):
    """Base class of this module's errors (simple-websocket's ``SimpleWebsocketError``)."""


class ConnectionClosed(WebSocketError):
    """The WebSocket connection is closed; raised by ``receive``, ``send`` and ``close``.

    ``reason`` is the close code the peer sent (1005 when it sent none, 1006
    when the TCP connection was lost without a closing handshake) and
    ``message`` its close reason text, as in simple-websocket.
    """

    def __init__(self, reason: int = CLOSE_NO_STATUS, message: str | None = None) -> None:
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
        super().__init__(CLOSE_ABNORMAL, body.decode("utf-8", "replace").strip())
        self.status = status
        self.headers = headers
        self.body = body


def check_close_code(code: int) -> None:
    """Raise ``ValueError`` unless ``code`` may be sent in a close frame."""
    if not (code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(f"{code} is not a close code an endpoint may send")


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


# --------------------------------------------------------------------------
# The contract between the ws objects and the doors (all loop-side calls)
# --------------------------------------------------------------------------


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


def _coerce(data: Any) -> Data:
    # Flask-Sock: bytes-like -> binary frame, anything else str() -> text frame.
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    return data if isinstance(data, str) else str(data)


# --------------------------------------------------------------------------
# The blocking ws object
# --------------------------------------------------------------------------


class _BaseWebSocket:
    """State shared by the blocking and the awaitable ws objects."""

    #: simple-websocket's ``mode`` names the WSGI server; here it is the door.
    mode = "flask-relay"

    def __init__(
        self, environ: dict[str, Any], upgrader: Upgrader, options: WebSocketOptions
    ) -> None:
        self.environ = environ
        self._upgrader = upgrader
        self._hub = upgrader.hub
        self._call = upgrader.hub.call
        self._loop = upgrader.hub.loop
        self._rejection: HandshakeRejected | None = None
        self._options = options
        self._subprotocol = options.choose_subprotocol(requested_subprotocols(environ))
        self._channel: Channel | None = None
        self._accepted = False
        #: True until either side closed (or the connection was lost).
        self._open = True
        self._close_reason: int | None = None
        self._close_message: str | None = None
        self._inbox: collections.deque[Data] = collections.deque()
        self._reading_paused = False
        self._alive = True  # a frame arrived since the last ping
        self._ping_handle: asyncio.TimerHandle | None = None
        #: The app whose room registry ``join_room`` uses (set by the route runner).
        self._app: Flask | None = None
        self._groups: WebSocketGroups | None = None

    # -- groups (flask_relay.groups) -----------------------------------------

    def _group_registry(self) -> WebSocketGroups:
        if self._groups is None:
            app = self._app or current_app._get_current_object()  # type: ignore[attr-defined]
            self._groups = groups_for(app)
        return self._groups

    def join_room(self, room: Hashable) -> None:
        """Join the group ``room``: ``sock.send(data, to=room)`` on any
        process reaches this connection until it leaves or closes."""
        if not self._open:
            raise ConnectionClosed(self._close_reason or CLOSE_NO_STATUS, self._close_message)
        self._group_registry().join(self, room)
        if not self._open:  # closed meanwhile: connection_closed may have run first
            self._group_registry().leave_all(self)

    def leave_room(self, room: Hashable) -> None:
        """Leave the group ``room`` (nothing happens if not a member)."""
        if self._groups is not None:
            self._groups.leave(self, room)

    @property
    def rooms(self) -> set[Hashable]:
        """The groups this connection is in."""
        return self._groups.rooms_of(self) if self._groups is not None else set()

    def _left(self) -> None:
        if self._groups is not None:
            self._groups.leave_all(self)

    def _post(self, payload: str | bytes) -> bool:
        raise NotImplementedError

    # -- loop side: ChannelListener ------------------------------------------

    def _start_pinging(self) -> None:
        if self._options.ping_interval is not None:
            self._ping_handle = self._loop.call_later(self._options.ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_handle = None
        if self._channel is None or self._close_reason is not None:
            return
        if not self._alive:
            self._channel.close(CLOSE_POLICY_VIOLATION, "Ping/Pong timeout")
            return
        self._alive = False
        self._channel.ping(b"")
        self._start_pinging()

    def pong_received(self, data: bytes) -> None:
        self._alive = True

    def _stop_pinging(self) -> None:
        if self._ping_handle is not None:
            self._ping_handle.cancel()
            self._ping_handle = None

    # -- properties --------------------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol, or ``None``."""
        return self._subprotocol

    @property
    def close_reason(self) -> int | None:
        """The close code the peer sent, once the connection is closed."""
        return self._close_reason

    @property
    def close_message(self) -> str | None:
        """The close reason text the peer sent, once the connection is closed."""
        return self._close_message


class WebSocket(_BaseWebSocket):
    """The ``ws`` object of a blocking route (simple-websocket's ``Server`` API).

    Every method is safe from any thread: ``send`` from eight threads at once
    produces eight whole frames, because frames are built and written only by
    the loop, in the order the calls were made.
    """

    def __init__(
        self, environ: dict[str, Any], upgrader: Upgrader, options: WebSocketOptions
    ) -> None:
        super().__init__(environ, upgrader, options)
        self._cond = threading.Condition(threading.Lock())
        self._accept_lock = threading.Lock()
        self._in_flight = 0  # bytes queued for the loop, not yet handed to the transport
        self._write_paused = False
        self._send_waiters = 0

    # -- handshake ---------------------------------------------------------

    def accept(self) -> None:
        """Complete the handshake now (it is otherwise done on first use).

        Raises :class:`ConnectionClosed` when that failed (the client is gone,
        or :class:`HandshakeRejected` for an invalid handshake)."""
        if not self._accepted:
            with self._accept_lock:
                if not self._accepted:
                    self._do_accept()
        if self._rejection is not None:
            raise self._rejection

    def _do_accept(self) -> None:
        try:
            channel = self._upgrader.accept(self, self._options, self._subprotocol)
        except ConnectionClosed as exc:
            with self._cond:
                self._open = False
                self._close_reason, self._close_message = exc.reason, exc.message
                if isinstance(exc, HandshakeRejected):
                    self._rejection = exc
            self._accepted = True
            if not isinstance(exc, HandshakeRejected):
                raise
            return
        self._channel = channel
        self._accepted = True
        self._call(self._start_pinging)

    # -- loop side ---------------------------------------------------------

    def message_received(self, data: Data) -> None:
        self._alive = True
        with self._cond:
            self._inbox.append(data)
            if len(self._inbox) >= self._options.max_queued_messages and not self._reading_paused:
                self._reading_paused = True
                assert self._channel is not None
                self._channel.pause_reading()
            self._cond.notify_all()

    def connection_closed(self, code: int, reason: str) -> None:
        self._stop_pinging()
        with self._cond:
            self._open = False
            self._close_reason, self._close_message = code, reason
            self._cond.notify_all()
        self._left()

    def _post(self, payload: str | bytes) -> bool:
        # A group send: never waits; a member too far behind is closed (1013).
        with self._cond:
            if not self._open or not self._accepted or self._channel is None:
                return False
            if self._in_flight > MAX_BACKLOG:
                logger.warning(
                    "Closing a WebSocket of %s: over %d bytes of group messages wait for it",
                    self.environ.get("PATH_INFO"),
                    MAX_BACKLOG,
                )
                self._open = False
                self._cond.notify_all()
                self._call(self._channel.close, 1013, "too far behind")
                return False
            self._in_flight += len(payload)
            self._call(self._send_on_loop, payload)
            return True

    def pause_writing(self) -> None:
        with self._cond:
            self._write_paused = True

    def resume_writing(self) -> None:
        with self._cond:
            self._write_paused = False
            if self._send_waiters:
                self._cond.notify_all()

    def _resume_reading(self) -> None:
        if self._channel is not None:
            self._channel.resume_reading()

    def _send_on_loop(self, data: Data) -> None:
        channel = self._channel
        if channel is not None and self._close_reason is None:
            channel.send(data)
        with self._cond:
            self._in_flight -= len(data)
            if self._send_waiters:
                self._cond.notify_all()

    # -- public API --------------------------------------------------------

    @property
    def connected(self) -> bool:
        """``True`` until either side closed the connection."""
        self._accept_for_attribute()
        return self._open

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol, or ``None``."""
        self._accept_for_attribute()
        return self._subprotocol

    @property
    def drained(self) -> bool:
        """``True`` once the connection is closed and every message received
        before was returned by :meth:`receive`."""
        self._accept_for_attribute()
        with self._cond:
            return not self._open and not self._inbox

    def _send_ping(self, data: bytes = b"") -> None:
        """Queue a ping frame (gevent-websocket's ``send_frame(data, OPCODE_PING)``)."""
        self.accept()
        with self._cond:
            if not self._open:
                raise ConnectionClosed(self._close_reason or CLOSE_NO_STATUS, self._close_message)
            channel = self._channel
            assert channel is not None
            self._call(channel.ping, bytes(data))

    def _accept_for_attribute(self) -> None:
        if not self._accepted:
            try:
                self.accept()
            except ConnectionClosed:
                pass

    def receive(self, timeout: float | None = None) -> Data | None:
        """The next message (``str`` or ``bytes``), or ``None`` after ``timeout``
        seconds (``0`` polls). Raises :class:`ConnectionClosed` once the
        connection is closed and every message received before was returned."""
        self.accept()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._inbox:
                if not self._open:
                    raise ConnectionClosed(
                        self._close_reason or CLOSE_NO_STATUS, self._close_message
                    )
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
            data = self._inbox.popleft()
            if self._reading_paused and len(self._inbox) <= self._options.max_queued_messages // 2:
                self._reading_paused = False
                self._call(self._resume_reading)
            return data

    def send(self, data: Any) -> None:
        """Send a message: ``bytes``-like as binary, anything else ``str()``-ed as
        text. Waits while more than 1 MiB is on its way to a slow client.
        Raises :class:`ConnectionClosed` when the connection is closed."""
        self.accept()
        payload = _coerce(data)
        with self._cond:
            while self._open and (self._in_flight > SEND_HIGH_WATER or self._write_paused):
                self._send_waiters += 1
                try:
                    self._cond.wait()
                finally:
                    self._send_waiters -= 1
            if not self._open:
                raise ConnectionClosed(self._close_reason or CLOSE_NO_STATUS, self._close_message)
            self._in_flight += len(payload)
            self._call(self._send_on_loop, payload)

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Start the closing handshake with ``reason`` (default 1000) and
        ``message``. Raises :class:`ConnectionClosed` if already closed."""
        code = CLOSE_NORMAL if reason is None else reason
        check_close_code(code)
        self.accept()
        with self._cond:
            if not self._open:
                raise ConnectionClosed(self._close_reason or CLOSE_NO_STATUS, self._close_message)
            self._open = False
            self._cond.notify_all()
            channel = self._channel
            assert channel is not None
            self._call(channel.close, code, message or "")


# --------------------------------------------------------------------------
# The awaitable ws object
# --------------------------------------------------------------------------


class AsyncWebSocket(_BaseWebSocket):
    """The ``ws`` object of an ``async def`` route; its methods run on the loop.

    The handshake is completed before the coroutine starts, so the route never
    waits for it.
    """

    def __init__(
        self, environ: dict[str, Any], upgrader: Upgrader, options: WebSocketOptions
    ) -> None:
        super().__init__(environ, upgrader, options)
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False

    def _accept_from_thread(self) -> None:
        self._accepted = True
        self._channel = self._upgrader.accept(self, self._options, self._subprotocol)
        self._call(self._start_pinging)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def message_received(self, data: Data) -> None:
        self._alive = True
        self._inbox.append(data)
        if len(self._inbox) >= self._options.max_queued_messages and not self._reading_paused:
            self._reading_paused = True
            assert self._channel is not None
            self._channel.pause_reading()
        self._wake()

    def connection_closed(self, code: int, reason: str) -> None:
        self._stop_pinging()
        self._open = False
        self._close_reason, self._close_message = code, reason
        self._wake()
        self.resume_writing()
        self._left()

    def _post(self, payload: str | bytes) -> bool:
        # A group send, from any thread: the frame is written on the loop.
        if not self._open or self._channel is None:
            return False
        self._call(self._post_on_loop, payload)
        return True

    def _post_on_loop(self, payload: str | bytes) -> None:
        if self._open and self._channel is not None:
            self._channel.send(payload)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    @property
    def connected(self) -> bool:
        """``True`` until either side closed the connection."""
        return self._open

    async def receive(self, timeout: float | None = None) -> Data | None:
        """The next message, or ``None`` after ``timeout`` seconds."""
        if not self._inbox:
            if not self._open:
                raise ConnectionClosed(self._close_reason or CLOSE_NO_STATUS, self._close_message)
            if timeout is not None and timeout <= 0:
                return None
            self._waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
            except asyncio.TimeoutError:
                return None
            finally:
                self._waiter = None
            if not self._inbox:
                raise ConnectionClosed(self._close_reason or CLOSE_NO_STATUS, self._close_message)
        data = self._inbox.popleft()
        if self._reading_paused and len(self._inbox) <= self._options.max_queued_messages // 2:
            self._reading_paused = False
            assert self._channel is not None
            self._channel.resume_reading()
        return data

    async def send(self, data: Any) -> None:
        """Send a message; waits while the transport's write buffer is full."""
        if not self._open:
            raise ConnectionClosed(self._close_reason or CLOSE_NO_STATUS, self._close_message)
        assert self._channel is not None
        self._channel.send(_coerce(data))
        if self._write_paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    async def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Start the closing handshake (default code 1000)."""
        code = CLOSE_NORMAL if reason is None else reason
        check_close_code(code)
        if not self._open:
            raise ConnectionClosed(self._close_reason or CLOSE_NO_STATUS, self._close_message)
        self._open = False
        self._wake()
        assert self._channel is not None
        self._channel.close(code, message or "")


# --------------------------------------------------------------------------
# Running a route as a Flask view
# --------------------------------------------------------------------------


class _UpgradedResponse(Response):
    """What a route's view returns once the connection was upgraded.

    Doors ignore the WSGI response of an accepted upgrade; this one exists so
    that ``after_request`` hooks receive a response object as usual.
    """


def _upgrader_for(environ: dict[str, Any]) -> Upgrader:
    upgrader: Upgrader | None = environ.get(UPGRADER_KEY)
    if upgrader is None:
        raise RuntimeError(
            "A WebSocket route was reached without a Flask-Relay server: run the app "
            "with flask_relay's server (socketio.run, the gunicorn worker class) or "
            "under a WSGI server through Sock(app) / flask_relay.server.foreign, "
            "which installs the middleware that takes over the socket."
        )
    return upgrader


def _log_route_error(exc_info: Any) -> None:
    try:
        current_app.log_exception(exc_info)
    except Exception:  # pragma: no cover - no app context
        logger.error("Exception in WebSocket route", exc_info=exc_info)


def _rejection_response(exc: HandshakeRejected) -> BaseResponse:
    return Response(exc.body, status=exc.status, headers=exc.headers)


def _run_blocking_route(
    f: Callable[..., Any], options: WebSocketOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> BaseResponse:
    environ = request.environ
    ws = WebSocket(environ, _upgrader_for(environ), options)
    ws._app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        result = f(ws, *args, **kwargs)
    except ConnectionClosed:
        result = None
    except Exception:
        if ws._rejection is not None:
            return _rejection_response(ws._rejection)
        if not ws._accepted:
            raise  # abort(403) or an error before the handshake: an HTTP answer
        _log_route_error(sys.exc_info())
        _close_quietly(ws, CLOSE_INTERNAL_ERROR, "")
        return _UpgradedResponse()
    if ws._rejection is not None:
        return _rejection_response(ws._rejection)
    if not ws._accepted:
        if result is not None:
            # A view decorator refused before the route touched ws: answer in HTTP.
            return current_app.make_response(result)
        try:
            ws.accept()
        except HandshakeRejected as exc:
            return _rejection_response(exc)
        except ConnectionClosed:
            return _UpgradedResponse()
    _close_quietly(ws, CLOSE_NORMAL, "")
    return _UpgradedResponse()


def _close_quietly(ws: WebSocket, code: int, message: str) -> None:
    try:
        ws.close(code, message)
    except ConnectionClosed:
        pass


def _run_async_route(
    f: Callable[..., Any], options: WebSocketOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> BaseResponse:
    environ = request.environ
    ws = AsyncWebSocket(environ, _upgrader_for(environ), options)
    ws._app = current_app._get_current_object()  # type: ignore[attr-defined]
    result = f(ws, *args, **kwargs)
    if not inspect.isawaitable(result):
        # A decorator answered instead of calling the coroutine function.
        return current_app.make_response(result)
    try:
        ws._accept_from_thread()
    except HandshakeRejected as exc:
        _discard(result)
        return _rejection_response(exc)
    except ConnectionClosed:
        _discard(result)
        return _UpgradedResponse()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    # The coroutine keeps this thread's app and request contexts (a copy of
    # the context variables), although the thread pops them right away.
    context = contextvars.copy_context()
    ws._call(context.run, _spawn_async_route, app, ws, result)
    return _UpgradedResponse()


def _discard(awaitable: Any) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()


_tasks: set[asyncio.Task[None]] = set()


def _spawn_async_route(app: Flask, ws: AsyncWebSocket, awaitable: Awaitable[Any]) -> None:
    # Runs on the loop inside the route's copied context, which the task inherits.
    task = ws._loop.create_task(_drive_async_route(app, ws, awaitable))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _drive_async_route(app: Flask, ws: AsyncWebSocket, awaitable: Awaitable[Any]) -> None:
    code = CLOSE_NORMAL
    try:
        await awaitable
    except ConnectionClosed:
        pass
    except asyncio.CancelledError:
        code = 1001
    except Exception:
        code = CLOSE_INTERNAL_ERROR
        app.log_exception(sys.exc_info())  # type: ignore[arg-type]
    if ws._open:
        ws._open = False
        assert ws._channel is not None
        ws._channel.close(code, "")


# --------------------------------------------------------------------------
# The Origin check
# --------------------------------------------------------------------------


class _Unset:
    """The type of :data:`UNSET`: an option not given (the app config decides)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()

#: The app config key holding the allowed origins of WebSocket routes.
ORIGINS_CONFIG_KEY = "SOCK_ALLOWED_ORIGINS"


def origin_policy(app: Flask, given: OriginPolicy | _Unset) -> OriginPolicy:
    """The policy for ``app``: the extension's argument, else the app config."""
    if not isinstance(given, _Unset):
        return given
    policy: OriginPolicy = app.config.get(ORIGINS_CONFIG_KEY)
    return policy


def check_origin(
    environ: Mapping[str, Any], policy: OriginPolicy, owner: str, app_config: bool = True
) -> BaseResponse | None:
    """``None`` when the request's ``Origin`` may open a WebSocket, else the
    403 response; a refusal is logged with the setting that would allow it
    (``owner`` names the extension: ``Sock``, ``Sockets``...; ``app_config``:
    whether the app config key applies too)."""
    if environ_origin_allowed(environ, policy) is not False:
        return None
    origin = str(environ.get("HTTP_ORIGIN"))
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    if policy is None:
        why = "it is not this server's origin"
        wanted: list[str] = [origin]
    elif callable(policy):
        why = "the allowed_origins callable refused it"
        wanted = [origin]
    else:
        why = "it is not in allowed_origins"
        wanted = [policy] if isinstance(policy, str) else [*policy]
        wanted.append(origin)
    fix = f"{owner}(app, allowed_origins={wanted!r})"
    if app_config:
        fix += f" or app.config[{ORIGINS_CONFIG_KEY!r}] = {wanted!r}"
    logger.warning(
        "Refused WebSocket %s from Origin %s (%s). To allow it: %s", path, origin, why, fix
    )
    return Response(
        f"Origin {origin} is not allowed to open this WebSocket\n",
        status=403,
        content_type="text/plain; charset=utf-8",
    )


def websocket_view(
    f: Callable[..., Any], policy: Callable[[Flask], OriginPolicy], owner: str
) -> Callable[..., BaseResponse]:
    """The Flask view that runs ``f(ws, **url_variables)`` as a WebSocket route:
    the Origin check, then a blocking or an ``async def`` route."""
    is_async = inspect.iscoroutinefunction(inspect.unwrap(f))
    runner = _run_async_route if is_async else _run_blocking_route

    @functools.wraps(f)
    def websocket_route(*args: Any, **kw: Any) -> BaseResponse:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        refusal = check_origin(request.environ, policy(app), owner)
        if refusal is not None:
            return refusal
        return runner(f, _options_for(app), args, kw)

    return websocket_route


def install_when_registered(bp: Blueprint) -> None:
    """Install the foreign-server middleware on every app ``bp`` is registered
    on (a blueprint of WebSocket routes whose app never met the extension)."""
    if getattr(bp, "_flask_relay_install", False) or bp._got_registered_once:
        return
    bp._flask_relay_install = True  # type: ignore[attr-defined]

    def on_register(state: BlueprintSetupState) -> None:
        from .server.foreign import install

        install(state.app)

    bp.record_once(on_register)


# --------------------------------------------------------------------------
# The Flask extension
# --------------------------------------------------------------------------


class Sock:
    """Add WebSocket routes to a Flask application (Flask-Sock's ``Sock``).

    Set up the way Flask-Sock is:

    * ``Sock(app)``: routes go on the app;
    * ``sock = Sock()``, routes, then ``sock.init_app(app)``: the routes wait on
      a private blueprint (:attr:`bp`) registered on every app ``init_app``
      gets; routes declared after ``init_app`` go on that app (:attr:`app`);
    * ``Sock(blueprint)`` or ``init_app(blueprint)``: routes go on the
      blueprint, under its prefix once the app registers it;
    * ``@sock.route(path, bp=blueprint)``: that route goes on the blueprint.

    ``init_app`` (or the registration of such a blueprint) also wraps the
    app's ``wsgi_app`` in the middleware that lets foreign WSGI servers
    (``flask run``, ``app.run()``, gunicorn sync/gthread) serve the routes.

    ``allowed_origins`` is the Origin policy of the routes (unlike Flask-Sock,
    which accepts any): default same origin only, ``"*"`` any, an origin or a
    list of origins, a callable ``(origin[, environ]) -> bool``; clients that
    send no ``Origin`` (not browsers) always pass. Left out, the app config
    key ``SOCK_ALLOWED_ORIGINS`` decides (same values).

    Groups (beyond Flask-Sock): a route calls ``ws.join_room(name)`` /
    ``ws.leave_room(name)`` (a closed connection leaves its rooms), and
    :meth:`send` ``(data, to=name)`` reaches every member. Across processes
    the sends travel on ``message_queue`` (a ``redis://`` URL, on
    ``channel``), or else on the app's ``SocketIO(message_queue=...)`` queue
    (see :mod:`flask_relay.groups`).
    """

    def __init__(
        self,
        app: Flask | Blueprint | None = None,
        *,
        allowed_origins: OriginPolicy | _Unset = UNSET,
        message_queue: str | None = None,
        channel: str = "flask-socketio",
    ) -> None:
        self.app: Flask | Blueprint | None = None
        self.bp: Blueprint | None = None
        self.allowed_origins = allowed_origins
        self.message_queue = message_queue
        self.channel = channel
        if app is not None:
            self.app = app
            self.init_app(app)

    def init_app(self, app: Flask | Blueprint) -> None:
        """Register the extension (and the routes declared before) with ``app``
        (a Flask app, or a blueprint the app registers later)."""
        if self.bp is not None and not (
            isinstance(app, Flask) and any(bp is self.bp for bp in app.blueprints.values())
        ):
            options: dict[str, Any] = {}
            if isinstance(app, Flask) and self.bp.name in app.blueprints:
                # Another Sock() had routes waiting too (Flask-Sock raises ValueError).
                options["name"] = f"{self.bp.name}_{len(app.blueprints)}"
            app.register_blueprint(self.bp, **options)
        if isinstance(app, Blueprint):
            install_when_registered(app)
        else:
            app.extensions["sock"] = self
            from .server.foreign import install

            install(app)
            if self.message_queue is not None:
                from .pubsub import from_url

                groups_for(app).use_queue(from_url(self.message_queue, channel=self.channel))
        self.app = app

    def send(self, data: Any, to: Hashable, skip: Any = None) -> int:
        """Send ``data`` (``bytes``-like as binary, anything else ``str()``-ed as
        text) to every connection in the group ``to`` (``ws.join_room``), on
        this process and, through the message queue, on the others; ``skip``:
        a ``ws`` left out. Never waits. Returns how many members were reached
        on this process."""
        app = self.app if isinstance(self.app, Flask) else None
        if app is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        return groups_for(app).send(_coerce(data), to, skip)

    def _policy(self, app: Flask) -> OriginPolicy:
        return origin_policy(app, self.allowed_origins)

    def route(self, path: str, bp: Blueprint | None = None, **kwargs: Any) -> Callable[[F], F]:
        """Register ``f(ws, **url_variables)`` as the WebSocket route ``path``
        (on ``bp`` when given). Keyword arguments go to ``Flask.route``."""

        def decorator(f: F) -> F:
            view = websocket_view(f, self._policy, type(self).__name__)
            kwargs["websocket"] = True
            target: Flask | Blueprint
            if bp is not None:
                target = bp
            elif self.app is not None:
                target = self.app
            else:
                if self.bp is None:
                    self.bp = Blueprint("__flask_sock", __name__)
                target = self.bp
            target.route(path, **kwargs)(view)
            if isinstance(target, Blueprint) and target is not self.bp:
                install_when_registered(target)
            return view  # type: ignore[return-value]

        return decorator

    def test_client(
        self, app: Flask | None = None, flask_test_client: Any = None, timeout: float = 5.0
    ) -> WebSocketTestClient:
        """An in-process client for this extension's routes
        (:class:`flask_relay.ws_testing.WebSocketTestClient`)."""
        from .ws_testing import WebSocketTestClient

        target = app or self.app
        if not isinstance(target, Flask):
            raise RuntimeError(
                "test_client() needs the Flask app (Sock was given none, or a blueprint): "
                "sock.test_client(app)"
            )
        return WebSocketTestClient(target, flask_test_client, timeout=timeout)


def _options_for(app: Flask) -> WebSocketOptions:
    return WebSocketOptions.from_config(app.config.get("SOCK_SERVER_OPTIONS"))
