"""The ``ws`` objects of WebSocket routes, and running a route over them.

:class:`WebSocket` (a blocking route, simple-websocket's ``Server`` API) and
:class:`AsyncWebSocket` (an ``async def`` route) are the
:class:`~flask_relay.server.wscontract.ChannelListener` of one connection: the
door's :class:`~flask_relay.server.wscontract.Channel` calls them on the loop,
the route calls them from its thread (or, async, on the loop). They hand
messages to and from the loop and never touch the socket.

:func:`run_blocking_route` and :func:`start_async_route` hold the rules of a
route's life (lazy handshake, an answer in HTTP when the route refused before
touching ``ws``, 1000/1011 when it returns or raises); the Flask face
(:mod:`flask_relay.sock`) only turns their outcome into a Flask response. No
Flask here.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ..protocol.closecode import CloseCode, check_close_code
from ..server.wscontract import (
    Channel,
    ConnectionClosed,
    Data,
    HandshakeRejected,
    Upgrader,
    WebSocketOptions,
    requested_subprotocols,
)
from .interfaces import GroupRegistry

__all__ = [
    "MAX_GROUP_BACKLOG",
    "SEND_HIGH_WATER",
    "AsyncWebSocket",
    "GroupSource",
    "NotUpgraded",
    "RouteOutcome",
    "WebSocket",
    "coerce_message",
    "run_blocking_route",
    "start_async_route",
]

logger = logging.getLogger("flask_relay.sock")

#: A blocking ``send`` waits while more than this many bytes are on their way to
#: the socket (queued for the loop or in the transport's buffer while it is
#: paused): the bound that keeps a fast producer from filling memory.
SEND_HIGH_WATER = 1024 * 1024

#: Bytes on their way to one group member past which a group send closes it
#: (1013) instead of queueing more (flask_relay.groups).
MAX_GROUP_BACKLOG = 16 * 1024 * 1024

#: Gives the app's group registry (``functools.partial(groups_for, app)``).
GroupSource = Callable[[], "GroupRegistry"]

ExcInfo = Any  # the sys.exc_info() triple
LogError = Callable[[ExcInfo], None]


@dataclass(frozen=True, slots=True)
class NotUpgraded:
    """The route answered before touching ``ws`` (a view decorator refused):
    ``result`` is its return value, to be sent as an HTTP response."""

    result: Any


#: What a route's run ends in: ``None`` (the connection was upgraded, or the
#: client went away: the door ignores the WSGI response), a
#: :class:`HandshakeRejected` to answer in HTTP, or :class:`NotUpgraded`.
RouteOutcome = HandshakeRejected | NotUpgraded | None

#: Tasks of running ``async def`` routes (a task needs a strong reference).
_tasks: set[asyncio.Task[None]] = set()


def coerce_message(data: Any) -> Data:
    """Flask-Sock's rule: bytes-like -> binary frame, anything else ``str()`` -> text."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    return data if isinstance(data, str) else str(data)


class _BaseWebSocket:
    """State shared by the blocking and the awaitable ws objects."""

    #: simple-websocket's ``mode`` names the WSGI server; here it is the door.
    mode = "flask-relay"

    def __init__(
        self,
        environ: dict[str, Any],
        upgrader: Upgrader,
        options: WebSocketOptions,
        groups: GroupSource | None = None,
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
        #: Where ``join_room`` finds the app's rooms (given by the Flask face).
        self._group_source = groups
        self._groups: GroupRegistry | None = None

    # -- groups (flask_relay.groups) -----------------------------------------

    def _group_registry(self) -> GroupRegistry:
        if self._groups is None:
            if self._group_source is None:
                raise RuntimeError(
                    "ws.join_room() needs the route's Flask app: use it in a Sock or "
                    "Sockets route"
                )
            self._groups = self._group_source()
        return self._groups

    def join_room(self, room: Hashable) -> None:
        """Join the group ``room``: ``sock.send(data, to=room)`` on any
        process reaches this connection until it leaves or closes."""
        if not self._open:
            raise self._closed_error()
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
            self._channel.close(CloseCode.POLICY_VIOLATION, "Ping/Pong timeout")
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

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self._close_reason or CloseCode.NO_STATUS, self._close_message)

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
        self,
        environ: dict[str, Any],
        upgrader: Upgrader,
        options: WebSocketOptions,
        groups: GroupSource | None = None,
    ) -> None:
        super().__init__(environ, upgrader, options, groups)
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
            if self._in_flight > MAX_GROUP_BACKLOG:
                logger.warning(
                    "Closing a WebSocket of %s: over %d bytes of group messages wait for it",
                    self.environ.get("PATH_INFO"),
                    MAX_GROUP_BACKLOG,
                )
                self._open = False
                self._cond.notify_all()
                self._call(self._channel.close, CloseCode.TRY_AGAIN_LATER, "too far behind")
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

    def _run_route(self, route: Callable[[WebSocket], Any], log_error: LogError) -> RouteOutcome:
        # See run_blocking_route().
        try:
            result = route(self)
        except ConnectionClosed:
            result = None
        except Exception:
            if self._rejection is not None:
                return self._rejection
            if not self._accepted:
                raise
            log_error(sys.exc_info())
            self._close_quietly(CloseCode.INTERNAL_ERROR)
            return None
        if self._rejection is not None:
            return self._rejection
        if not self._accepted:
            if result is not None:
                return NotUpgraded(result)
            try:
                self.accept()
            except HandshakeRejected as exc:
                return exc
            except ConnectionClosed:
                return None
        self._close_quietly(CloseCode.NORMAL)
        return None

    def _close_quietly(self, code: int) -> None:
        try:
            self.close(code, "")
        except ConnectionClosed:
            pass

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
                raise self._closed_error()
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
                    raise self._closed_error()
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
        text. Waits while more than 1 MiB is on its way to a slow client (one
        that reads nothing for ``slow_consumer_timeout`` seconds is closed).
        Raises :class:`ConnectionClosed` when the connection is closed."""
        self.accept()
        payload = coerce_message(data)
        with self._cond:
            while self._open and (self._in_flight > SEND_HIGH_WATER or self._write_paused):
                self._send_waiters += 1
                try:
                    self._cond.wait()
                finally:
                    self._send_waiters -= 1
            if not self._open:
                raise self._closed_error()
            self._in_flight += len(payload)
            self._call(self._send_on_loop, payload)

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Start the closing handshake with ``reason`` (default 1000) and
        ``message``. Raises :class:`ConnectionClosed` if already closed."""
        code = CloseCode.NORMAL if reason is None else reason
        check_close_code(code)
        self.accept()
        with self._cond:
            if not self._open:
                raise self._closed_error()
            self._open = False
            self._cond.notify_all()
            channel = self._channel
            assert channel is not None
            self._call(channel.close, code, message or "")


class AsyncWebSocket(_BaseWebSocket):
    """The ``ws`` object of an ``async def`` route; its methods run on the loop.

    The handshake is completed before the coroutine starts, so the route never
    waits for it.
    """

    def __init__(
        self,
        environ: dict[str, Any],
        upgrader: Upgrader,
        options: WebSocketOptions,
        groups: GroupSource | None = None,
    ) -> None:
        super().__init__(environ, upgrader, options, groups)
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
                raise self._closed_error()
            if timeout is not None and timeout <= 0:
                return None
            waiter = self._waiter = self._loop.create_future()
            try:
                if timeout is None:
                    # The usual call: no timer, no shield (wait_for and shield
                    # cost ~12% of an echo route's CPU). _wake skips a waiter
                    # cancelled with the route's task.
                    await waiter
                else:
                    await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except asyncio.TimeoutError:
                return None
            finally:
                self._waiter = None
            if not self._inbox:
                raise self._closed_error()
        data = self._inbox.popleft()
        if self._reading_paused and len(self._inbox) <= self._options.max_queued_messages // 2:
            self._reading_paused = False
            assert self._channel is not None
            self._channel.resume_reading()
        return data

    async def send(self, data: Any) -> None:
        """Send a message; waits while the transport's write buffer is full."""
        if not self._open:
            raise self._closed_error()
        assert self._channel is not None
        self._channel.send(coerce_message(data))
        if self._write_paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    async def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Start the closing handshake (default code 1000)."""
        code = CloseCode.NORMAL if reason is None else reason
        check_close_code(code)
        if not self._open:
            raise self._closed_error()
        self._open = False
        self._wake()
        assert self._channel is not None
        self._channel.close(code, message or "")

    async def _drive(self, awaitable: Awaitable[Any], log_error: LogError) -> None:
        """Await the route's coroutine, then close (1000; 1001 if cancelled,
        1011 after an exception, which ``log_error`` gets)."""
        code = CloseCode.NORMAL
        try:
            await awaitable
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            code = CloseCode.GOING_AWAY
        except Exception:
            code = CloseCode.INTERNAL_ERROR
            log_error(sys.exc_info())
        if self._open:
            self._open = False
            assert self._channel is not None
            self._channel.close(code, "")

    def _start_route(self, result: Any, log_error: LogError) -> RouteOutcome:
        # See start_async_route().
        if not inspect.isawaitable(result):
            return NotUpgraded(result)
        try:
            self._accept_from_thread()
        except HandshakeRejected as exc:
            _discard(result)
            return exc
        except ConnectionClosed:
            _discard(result)
            return None
        context = contextvars.copy_context()
        self._call(context.run, self._spawn, result, log_error)
        return None

    def _spawn(self, awaitable: Awaitable[Any], log_error: LogError) -> None:
        # Runs on the loop inside the route's copied context, which the task inherits.
        task = self._loop.create_task(self._drive(awaitable, log_error))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


# --------------------------------------------------------------------------
# Running a route
# --------------------------------------------------------------------------


def run_blocking_route(
    ws: WebSocket, route: Callable[[WebSocket], Any], log_error: LogError
) -> RouteOutcome:
    """Run ``route(ws)`` in this thread, then close the connection (1000, or
    1011 after an exception, which ``log_error`` gets). An exception raised
    before the handshake propagates (``abort(403)``: an HTTP answer)."""
    return ws._run_route(route, log_error)


def start_async_route(ws: AsyncWebSocket, result: Any, log_error: LogError) -> RouteOutcome:
    """Complete the handshake, then run the coroutine ``result`` (what the
    ``async def`` route returned) on the loop, in a copy of this thread's
    context variables (so it keeps the app and request contexts). Returns at
    once. A ``result`` that is not awaitable is a decorator's answer."""
    return ws._start_route(result, log_error)


def _discard(awaitable: Any) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()
