"""One loop-side WebSocket channel for every user: routes and Engine.IO.

:class:`WSChannel` drives one accepted connection: it is the
``asyncio.Protocol`` over a sans-I/O
:class:`~flask_relay.protocol.websocket.WebSocketConnection`, as websockets
puts one ``Connection`` over its ``Protocol``. What the connection means is
its :class:`WSListener`'s business: a WebSocket route hands messages to a
route thread (:mod:`.wsroute`), the Engine.IO server decodes packets
(:mod:`flask_relay.engine.eio`).

The channel owns what both share: coalesced writes (the sends a loop
iteration brings leave in one ``transport.write``; protocol replies as soon
as the frame that caused them was parsed), the closing handshake with its
timeout (``close_timeout``: 10 s for routes, 5 s for Engine.IO), read pausing,
the count of bytes written and accepted by the kernel, and, when given a
``slow_consumer_timeout``, the slow-consumer watch of a connection on its own
(a route). The Engine.IO server keeps its watch per session, over polling
and WebSocket alike: it passes ``untracked`` instead and hears, through
:meth:`WSListener.data_written`, of every write that leaves a backlog.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol, cast

from ..protocol import websocket as wsproto
from ..protocol.closecode import CloseCode

__all__ = ["CLOSE_SLOW_CONSUMER", "WSChannel", "WSListener"]

logger = logging.getLogger("flask_relay.sock")

#: WebSocket close code for a slow consumer: a policy violation (RFC 6455 7.4.1).
CLOSE_SLOW_CONSUMER = CloseCode.POLICY_VIOLATION


class WSListener(Protocol):
    """What a :class:`WSChannel` reports, on the loop thread.

    It extends :class:`~flask_relay.server.wscontract.ChannelListener` (what a
    route's WebSocket object implements) with the two calls a multi-transport
    user needs.
    """

    def message_received(self, data: str | bytes) -> None: ...

    def pong_received(self, data: bytes) -> None: ...

    def connection_closed(self, code: int, reason: str) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class WSAccounting(WSListener, Protocol):
    """A listener that keeps its own output accounting (``untracked`` channels)."""

    def data_written(self, channel: WSChannel, buffered: int, n: int) -> None:
        """``n`` bytes were written and ``buffered`` wait in the transport
        (called when that is over ``untracked``, or ``channel.tracked`` is set)."""


class _Flushes:
    """The channels of one loop with output to write this iteration, flushed
    by one callback: one ``call_soon`` per iteration instead of one per channel.

    A broadcast to 19,000 clients used to schedule 19,000 handles (each two
    objects the cyclic garbage collector tracks; the collector promoted them
    while they waited and then ran full collections of ~0.5 s over every
    connection's objects in the middle of bursts); now it schedules one. Order
    is kept: channels are flushed in the order their first send of the
    iteration came. It holds no reference to its loop (the registry below is
    keyed by the loop, weakly): a finished loop is freed with it.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[WSChannel] = []

    def add(self, channel: WSChannel) -> None:
        pending = self.pending
        pending.append(channel)
        if len(pending) == 1:
            channel.loop.call_soon(self.run)

    def run(self) -> None:
        pending = self.pending
        self.pending = []
        for channel in pending:
            if channel._flush_scheduled:  # not flushed directly meanwhile
                try:
                    channel.flush()
                except Exception:  # one channel's failure must not strand the others
                    logger.exception("writing to a WebSocket failed")


_FLUSHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flushes] = (
    weakref.WeakKeyDictionary()
)


def _flushes_for(loop: asyncio.AbstractEventLoop) -> _Flushes:
    flushes = _FLUSHES.get(loop)
    if flushes is None:
        flushes = _FLUSHES[loop] = _Flushes()
    return flushes


class WSChannel(asyncio.Protocol):
    """The loop-side driver of one accepted WebSocket connection."""

    # Slots: one per connection, touched per recipient of every broadcast.
    __slots__ = (
        "_close_timeout",
        "_close_timer",
        "_flush_at_once",
        "_flush_scheduled",
        "_flushes",
        "_live",
        "_progress_mark",
        "_progress_time",
        "_reading_paused",
        "_slow_consumer_timeout",
        "_unflushed",
        "_untracked",
        "_watch_timer",
        "_write_limits",
        "conn",
        "finished",
        "listener",
        "loop",
        "tracked",
        "transport",
        "written",
    )

    def __init__(
        self,
        conn: wsproto.WebSocketConnection,
        listener: WSListener,
        loop: asyncio.AbstractEventLoop,
        *,
        close_timeout: float,
        slow_consumer_timeout: float | None = None,
        flush_at_once: int | None = None,
        write_limits: tuple[int, int] | None = None,
        untracked: int | None = None,
        live: set[WSChannel] | None = None,
    ) -> None:
        self.conn = conn
        self.listener = listener
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.finished = False
        #: Bytes written while a backlog was tracked (minus the transport's
        #: buffer: what the kernel accepted, which grows while the client reads).
        self.written = 0
        #: Report every write to an accounting listener (its output is counted).
        self.tracked = False
        self._close_timeout = close_timeout
        self._slow_consumer_timeout = slow_consumer_timeout
        self._flush_at_once = flush_at_once
        self._write_limits = write_limits
        self._untracked = untracked
        self._live = live
        self._unflushed = 0  # bytes sent since the last flush
        self._watch_timer: asyncio.TimerHandle | None = None
        self._progress_mark = 0
        self._progress_time = 0.0
        self._flush_scheduled = False
        self._flushes = _flushes_for(loop)
        self._close_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if self._live is not None:
            self._live.add(self)
        if self._write_limits is not None:
            # pause_writing() when the client is over its bound, resume_writing()
            # once it drained to the low mark.
            high, low = self._write_limits
            try:
                self.transport.set_write_buffer_limits(high=high, low=low)
            except (AttributeError, NotImplementedError):  # pragma: no cover - odd transports
                pass
        if self._reading_paused:
            self.transport.pause_reading()
        self.flush()  # the 101 response and anything sent meanwhile
        if not self.conn.closed and self.conn.state is wsproto.State.CLOSING:
            # Closed before the socket reached the loop: the close frame just
            # went out; wait (bounded) for the reply.
            self._arm_close_timer()

    def data_received(self, data: bytes) -> None:
        events = self.conn.receive_data(data)
        self.flush()
        for event in events:
            self._dispatch(event)

    def eof_received(self) -> bool | None:
        events = self.conn.eof_received()
        self.flush()
        for event in events:
            self._dispatch(event)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._live is not None:
            self._live.discard(self)
        self._stop_watch()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if not self.conn.closed:
            for event in self.conn.eof_received():
                self._dispatch(event)
        self._finish(CloseCode.ABNORMAL, "")

    def pause_writing(self) -> None:
        self.listener.pause_writing()
        if (
            self._slow_consumer_timeout is not None
            and self._watch_timer is None
            and self.transport is not None
        ):
            self._progress_mark = self.accepted()
            self._progress_time = self.loop.time()
            self._watch_timer = self.loop.call_later(self._watch_tick(), self._watch)

    def resume_writing(self) -> None:
        self._stop_watch()
        self.listener.resume_writing()

    # -- output accounting -------------------------------------------------

    def buffered(self) -> int:
        """Bytes written and not yet accepted by the kernel (the transport's buffer)."""
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def accepted(self) -> int:
        """Bytes the kernel took so far while counted (grows while the client reads)."""
        transport = self.transport
        return self.written - (transport.get_write_buffer_size() if transport else 0)

    # -- slow consumers (a channel on its own) -----------------------------

    def _watch_tick(self) -> float:
        assert self._slow_consumer_timeout is not None
        return min(0.5, self._slow_consumer_timeout / 4)

    def _stop_watch(self) -> None:
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None

    def _watch(self) -> None:
        self._watch_timer = None
        transport = self.transport
        timeout = self._slow_consumer_timeout
        if transport is None or self.finished or timeout is None:
            return
        mark = self.accepted()
        now = self.loop.time()
        if mark != self._progress_mark:
            self._progress_mark, self._progress_time = mark, now
        elif now - self._progress_time >= timeout:
            self._slow_consumer(transport, now - self._progress_time, timeout)
            return
        self._watch_timer = self.loop.call_later(self._watch_tick(), self._watch)

    def _slow_consumer(self, transport: asyncio.Transport, idle: float, timeout: float) -> None:
        peer = transport.get_extra_info("peername")
        logger.warning(
            "Closing a WebSocket route connection from %s: slow consumer: %d bytes "
            "queued, no byte read for %.1f s (slow_consumer_timeout=%g)",
            f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else peer,
            transport.get_write_buffer_size(),
            idle,
            timeout,
        )
        if self.conn.open:
            # Queued behind the unread data: a client that wakes up may see it.
            self.conn.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            self.flush()
        self._finish(CLOSE_SLOW_CONSUMER, "slow consumer")
        # The close handshake cannot complete through a full buffer: drop the TCP.
        transport.abort()

    # -- events ------------------------------------------------------------

    def _dispatch(self, event: wsproto.Event) -> None:
        if isinstance(event, (wsproto.TextMessage, wsproto.BinaryMessage)):
            self.listener.message_received(event.data)
        elif isinstance(event, (wsproto.Pong, wsproto.Ping)):
            self.listener.pong_received(event.data)
        elif isinstance(event, wsproto.Closed):
            self._finish(event.code, event.reason)

    def _finish(self, code: int, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self.transport is not None and not self.conn.should_close_transport:
            # The peer went away (1006) or we failed the connection: nothing
            # more will come that we want; close after the pending writes.
            self.transport.close()
        try:
            self.listener.connection_closed(code, reason)
        except Exception:  # pragma: no cover - listeners do not raise
            logger.exception("error in connection_closed")

    # -- output ------------------------------------------------------------

    def flush(self) -> None:
        """Write what the connection has to send now."""
        self._flush_scheduled = False
        transport = self.transport
        if transport is None:
            return
        out = self.conn.data_to_send()
        if out:
            transport.write(out)
            untracked = self._untracked
            if untracked is not None:
                # An accounting listener's channel. This runs per recipient of
                # every broadcast: the usual case (the kernel took it all, as it
                # had taken the previous writes) costs one call and two tests.
                size = transport.get_write_buffer_size()
                if size > untracked or self.tracked:
                    cast(WSAccounting, self.listener).data_written(self, size, len(out))
            elif self._watch_timer is not None:  # only the watch needs it
                self.written += len(out)
        self._unflushed = 0
        if self.conn.should_close_transport:
            transport.close()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._flushes.add(self)

    def send(self, data: str | bytes) -> None:
        """Send one message (text for ``str``), written at the next flush."""
        if isinstance(data, str):
            self.conn.send_text(data)
        else:
            self.conn.send_binary(data)
        limit = self._flush_at_once
        if limit is not None:
            self._unflushed += len(data)
            if self._unflushed >= limit:
                # Big output goes to the transport now, so that its pause_writing()
                # reaches the sender before its next send (an ``async def`` route
                # that never yields would otherwise queue without bound).
                self.flush()
                return
        self._schedule_flush()

    def send_frames(self, frames: bytes) -> None:
        """Send frames built already (one broadcast's, shared by its recipients)."""
        self.conn.send_frame(frames)
        self._schedule_flush()

    def ping(self, data: bytes) -> None:
        self.conn.send_ping(data)
        self._schedule_flush()

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; drop the TCP if it takes ``close_timeout``."""
        self.conn.close(code, reason)
        self.flush()
        if not self.conn.closed:
            self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self.transport is not None:
            self._close_timer = self.loop.call_later(self._close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        if self.transport is not None and not self.finished:
            self.transport.resume_reading()

    # -- shutdown ----------------------------------------------------------

    def runs_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this connection belongs to ``loop``."""
        return self.loop is loop

    def abort(self) -> None:
        """Drop the TCP connection now (the closing handshake took too long)."""
        if self.transport is not None:
            self.transport.abort()
