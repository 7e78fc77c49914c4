"""The broker-independent part of every message queue: :class:`MessageQueue`.

Each process keeps its own clients and rooms. An operation that may concern
clients of other processes (an emit, ``close_room``, a disconnect or a room
change for a sid that is not local) is applied locally, then published on the
queue's channel; the other processes apply it to their own clients.

The messages are python-socketio's (JSON since python-socketio 5.14), on the
channel ``"flask-socketio"`` by default, so a Flask-Relay process, a
Flask-SocketIO process and an external emitter such as
``socketio.RedisManager(url, channel="flask-socketio", write_only=True)``
interoperate. Acknowledgement callbacks cross processes too: the process whose
client acknowledges publishes a ``callback`` message for the emitting process.

Publishing never blocks or fails in the caller (an emit inside a handler must
not raise because the broker is down): messages go to a bounded *outbox* that
one publisher thread per queue drains in order. When the broker is
unreachable (a restart, a network cut), the first failure is logged once at
ERROR, the outbox keeps what is emitted meanwhile (at most
:attr:`MessageQueue.max_buffered` messages: past that the oldest are dropped,
with a WARNING), the listener reconnects with a backoff, and once it has
resubscribed the outbox is published, followed by an INFO line. Local clients
are served throughout: the local part of an emit never waits for the broker.

Publishing what was buffered right after the broker comes back would lose it
for the processes whose listeners have not resubscribed yet (pub/sub brokers
keep nothing for absent subscribers). So Flask-Relay processes announce
themselves on the channel (``flask-relay-hello`` messages, which
python-socketio ignores), and after an outage a process holds its outbox until
every peer it knew has announced itself again, or
:attr:`MessageQueue.resubscribe_grace` seconds have passed.

A backend (``redis.py``, ``streams.py``, ``amqp.py``, ``nats.py``, ``zmq.py``)
subclasses :class:`MessageQueue` from this module and implements
:meth:`MessageQueue._publish` and :meth:`MessageQueue._listen`;
:func:`flask_relay.pubsub.from_url` picks one from the URL. The backends import
this module, not the package, so the package can import them without a cycle.
"""

from __future__ import annotations

import atexit
import base64
import collections
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..protocol.jsonlib import JSONModule, default_json
from ..protocol.socketio import deconstruct_binary as _deconstruct
from ..protocol.socketio import reconstruct_binary as _reconstruct

if TYPE_CHECKING:
    from ..engine.sio import SocketIOServer

__all__ = ["MessageQueue", "PartialPublish"]

logger = logging.getLogger("flask_relay.pubsub")

_BINARY = (bytes, bytearray, memoryview)

# Control messages between Flask-Relay processes (python-socketio ignores
# methods it does not know).
HELLO = "flask-relay-hello"
BYE = "flask-relay-bye"
PROBE = "flask-relay-probe"


class PartialPublish(Exception):
    """Publishing a batch failed after ``done`` messages (the cause is chained)."""

    def __init__(self, done: int) -> None:
        super().__init__(f"published {done} messages of a batch")
        self.done = done


def _has_binary(data: Any) -> bool:
    if isinstance(data, _BINARY):
        return True
    if isinstance(data, (list, tuple)):
        return any(_has_binary(item) for item in data)
    if isinstance(data, dict):
        return any(_has_binary(value) for value in data.values())
    return False


_live: weakref.WeakSet[MessageQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_live):
        try:
            queue._after_fork()
        except Exception:  # pragma: no cover - logged, the child goes on
            logger.exception("%s message queue: cannot restart after fork", queue.name)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    # A write-only emitter (a script that emits and exits) must not lose what
    # its publisher thread has not sent yet.
    for queue in list(_live):
        try:
            queue.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass


class MessageQueue:
    """The broker-independent part: message format, routing, remote acks, outages.

    Subclasses implement :meth:`_publish` (called by the publisher thread
    only) and :meth:`_listen` (an iterator of raw messages, or of lists of
    the raw messages that one read brought, at most :attr:`listen_batch`,
    run by the listener thread). ``_listen`` reconnects by itself: it calls
    :meth:`_subscribed` each time it is (again) subscribed and
    :meth:`_connection_lost` when the connection drops, and waits
    the delays of :meth:`_reconnect_delays` between attempts.

    :param channel: the pub/sub channel shared by every process.
    :param write_only: only publish (an external emitter): no listener thread.
    """

    name = "pubsub"

    #: Callbacks kept for acknowledgements from other processes.
    max_pending_callbacks = 10_000
    #: Messages the outbox holds while the broker is unreachable (or slower
    #: than the emitters); past it the oldest are dropped, with a WARNING.
    max_buffered = 10_000
    #: Bytes the outbox holds, the same way.
    max_buffered_bytes = 64 * 1024 * 1024
    #: While the broker is up, seconds an emitter waits for room in a full
    #: outbox before the oldest message is dropped.
    full_wait = 5.0
    #: After an outage, seconds to wait for the known peers to resubscribe
    #: before publishing the outbox anyway.
    resubscribe_grace = 5.0
    #: Messages the publisher thread sends at once when the outbox has several.
    publish_batch = 100
    #: Messages the listener applies at once when several arrived together.
    listen_batch = 1000
    #: Reconnection backoff: first delay, doubled up to the maximum (seconds).
    reconnect_delay_initial = 0.25
    reconnect_delay_max = 5.0
    #: ``close()`` waits at most this long for the outbox to be published.
    close_timeout = 5.0

    def __init__(
        self,
        channel: str = "flask-socketio",
        write_only: bool = False,
        json: JSONModule | None = None,
    ) -> None:
        self.channel = channel
        self.write_only = write_only
        self.json: JSONModule = json or default_json
        self.server: SocketIOServer | None = None
        self._thread: threading.Thread | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._init_state()
        _live.add(self)

    def _init_state(self) -> None:
        """Identity, locks, outbox and outage state (again in a forked child)."""
        self.host_id = uuid.uuid4().hex
        self._ack_ids = itertools.count(1)
        # Callbacks waiting for another process's acknowledgement, oldest first;
        # bounded: past max_pending_callbacks the oldest are forgotten.
        self._callbacks: collections.OrderedDict[int, Callable[..., Any]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self._closed = threading.Event()
        #: Set once the listener is subscribed (messages published from then on arrive).
        self.ready = threading.Event()
        # The outbox and the outage state, under _cond.
        self._cond = threading.Condition()
        self._outbox: collections.deque[str] = collections.deque()
        self._outbox_bytes = 0
        # (method, data): HELLO/BYE/PROBE, sent ahead of the outbox.
        self._control: collections.deque[tuple[str, str]] = collections.deque(maxlen=64)
        self._publisher: threading.Thread | None = None
        self._publishing = False  # the publisher holds a message it is sending
        self._down_since: float | None = None
        self._dropped = 0
        self._listener_up = False
        self._grace_deadline: float | None = None
        # Flask-Relay peers (host id -> last heard, monotonic) and, during an
        # outage, those not heard from since.
        self._peers: dict[str, float] = {}
        # Subscribers that got our last publication, when the broker says (Redis).
        self._receivers: int | None = None
        self._receivers_before: int | None = None
        self._waiting_peers: set[str] = set()

    def _after_fork(self) -> None:
        """In a forked child (gunicorn ``--preload``, a server forking workers).

        Threads do not survive a fork, and the parent's connections belong to
        the parent: the child gets a host id, an outbox and connections of its
        own. It listens again once it serves clients (:meth:`ensure_listening`,
        called when an endpoint is built), so a child forked for other work
        (``multiprocessing``) only publishes.
        """
        closed = self._closed.is_set()
        self._init_state()
        self._thread = None
        self._reset_backend_after_fork()
        if closed:
            self._closed.set()

    def _reset_backend_after_fork(self) -> None:
        """Forget the parent's connections (without closing them: they are the parent's)."""

    # -- wiring --------------------------------------------------------------------

    def attach(self, server: SocketIOServer) -> None:
        """Serve ``server``: start listening unless write-only."""
        self.server = server
        self.ensure_listening()

    def ensure_listening(self) -> None:
        """Start the listener thread unless write-only, closed or already running."""
        with self._lock:
            if (
                self.write_only
                or self.server is None
                or self._closed.is_set()
                or (self._thread is not None and self._thread.is_alive())
            ):
                return
            self._thread = threading.Thread(
                target=self._run, name=f"flask-relay-{self.name}", daemon=True
            )
            self._thread.start()

    def listen(self) -> None:
        """Start the listener thread (once) without a Socket.IO server: for
        queues that carry only :meth:`add_handler` messages."""
        if not self.write_only and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"flask-relay-{self.name}", daemon=True
            )
            self._thread.start()

    def add_handler(self, method: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Call ``handler(message)`` (on the listener thread; it must not block
        long) for other processes' messages of ``method`` (not this one's own)."""
        self._handlers[method] = handler

    def publish(self, message: dict[str, Any]) -> None:
        """Publish a message of a method given to :meth:`add_handler` (a
        ``method`` python-socketio ignores). It goes through the outbox like the
        emits, so it is buffered during outages."""
        self._send(dict(message))

    def close(self) -> None:
        """Publish what the outbox holds (unless the broker is down), then stop."""
        if self._closed.is_set():
            return
        if not self.write_only and self._thread is not None:
            self._send_control({"method": BYE})
        with self._cond:
            if self._publisher is not None:
                deadline = time.monotonic() + self.close_timeout
                while (
                    (self._outbox or self._control or self._publishing)
                    and self._down_since is None
                    and self._publisher.is_alive()
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            left_over = len(self._outbox)
            self._closed.set()
            self._cond.notify_all()
        if left_over:
            logger.warning(
                "%s message queue closed with %d messages never published", self.name, left_over
            )
        self._close_backend()

    def _close_backend(self) -> None:
        """Release the backend's connections (after :meth:`close`)."""

    # -- extension points for other parts of Flask-Relay ------------------------

    @property
    def peers(self) -> list[str]:
        """Host ids of the other Flask-Relay processes heard on the channel."""
        with self._cond:
            return list(self._peers)

    @property
    def buffered(self) -> int:
        """Messages waiting in the outbox."""
        with self._cond:
            return len(self._outbox)

    @property
    def connected(self) -> bool:
        """False while an outage is in progress (from its first failure to the flush)."""
        with self._cond:
            return self._down_since is None

    # -- publishing (called by SocketIOServer after the local part) ----------------

    def emit(
        self,
        event: Any,
        args: list[Any],
        *,
        namespace: str,
        room: Any,
        skip_sid: Any,
        callback: Callable[..., Any] | None = None,
    ) -> None:
        """Publish an emit for the clients of the other processes."""
        self._send(self._emit_message(event, args, namespace, room, skip_sid, callback))

    def _emit_message(
        self,
        event: Any,
        args: list[Any],
        namespace: str,
        room: Any,
        skip_sid: Any,
        callback: Callable[..., Any] | None = None,
    ) -> dict[str, Any]:
        """The ``emit`` message (python-socketio's format); binary args in base64."""
        callback_ref = None
        if callback is not None:
            if room is None:
                raise ValueError("an emit with a callback through a message queue needs a room")
            ack_id = next(self._ack_ids)
            with self._lock:
                self._callbacks[ack_id] = callback
                if len(self._callbacks) > self.max_pending_callbacks:
                    self._callbacks.popitem(last=False)
                    logger.warning(
                        "more than %d emits wait for acknowledgements from other "
                        "processes: forgetting the oldest",
                        self.max_pending_callbacks,
                    )
            callback_ref = [room, namespace, ack_id]
        binary = _has_binary(args)
        data: list[Any] = list(args)
        if binary:
            buffers: list[bytes] = []
            structure = _deconstruct(data, buffers)
            data = [structure, *[base64.b64encode(b).decode("ascii") for b in buffers]]
        return {
            "method": "emit",
            "event": event,
            "data": data,
            "binary": binary,
            "namespace": namespace,
            "room": list(room) if isinstance(room, (tuple, set, frozenset)) else room,
            "skip_sid": list(skip_sid)
            if isinstance(skip_sid, (tuple, set, frozenset))
            else skip_sid,
            "callback": callback_ref,
        }

    def disconnect(self, sid: str, namespace: str) -> None:
        self._send({"method": "disconnect", "sid": sid, "namespace": namespace})

    def enter_room(self, sid: str, room: Any, namespace: str) -> None:
        self._send({"method": "enter_room", "sid": sid, "room": room, "namespace": namespace})

    def leave_room(self, sid: str, room: Any, namespace: str) -> None:
        self._send({"method": "leave_room", "sid": sid, "room": room, "namespace": namespace})

    def close_room(self, room: Any, namespace: str) -> None:
        self._send({"method": "close_room", "room": room, "namespace": namespace})

    def _send(self, message: dict[str, Any], wait: bool = True) -> None:
        """Encode (errors raise here, in the caller) and put in the outbox."""
        message.setdefault("host_id", self.host_id)
        self._enqueue(self.json_text(message), wait)

    def _enqueue(self, data: str, wait: bool = True) -> None:
        """Put ``data`` in the outbox; with ``wait``, wait a while for room in a
        full outbox while the broker is up (back-pressure)."""
        with self._cond:
            if self._closed.is_set():
                logger.warning("%s message queue is closed: message not published", self.name)
                return
            if wait and self._full() and self._down_since is None:
                # The broker is up but slower than the emitters: the emitting
                # thread waits for room (back-pressure), for a while.
                self._start_publisher()
                deadline = time.monotonic() + self.full_wait
                while self._full() and self._down_since is None and not self._closed.is_set():
                    if threading.current_thread() is self._publisher:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            self._outbox.append(data)
            self._outbox_bytes += len(data)
            if len(self._outbox) > self.max_buffered or (
                self._outbox_bytes > self.max_buffered_bytes and len(self._outbox) > 1
            ):
                dropped = self._outbox.popleft()
                self._outbox_bytes -= len(dropped)
                self._dropped += 1
                if self._dropped == 1:
                    logger.warning(
                        "%s message queue outbox full (%d messages, %d bytes): dropping the "
                        "oldest messages until the broker takes them again",
                        self.name,
                        self.max_buffered,
                        self._outbox_bytes,
                    )
            self._start_publisher()
            self._cond.notify_all()

    def _full(self) -> bool:
        return len(self._outbox) >= self.max_buffered or (
            self._outbox_bytes >= self.max_buffered_bytes and bool(self._outbox)
        )

    def _send_control(self, message: dict[str, Any]) -> None:
        """A control message: ahead of the outbox, sent even while it is held."""
        message.setdefault("host_id", self.host_id)
        data = self.json_text(message)
        with self._cond:
            self._control.append((message["method"], data))
            self._start_publisher()
            self._cond.notify_all()

    # -- the publisher thread -----------------------------------------------------------

    def _start_publisher(self) -> None:
        # Under _cond.
        if self._publisher is None and not self._closed.is_set():
            self._publisher = threading.Thread(
                target=self._publish_loop, name=f"flask-relay-{self.name}-publisher", daemon=True
            )
            self._publisher.start()

    def _publish_loop(self) -> None:
        try:
            self._publish_until_closed()
        finally:
            self._publisher_stopped()

    def _publisher_stopped(self) -> None:
        """Called by the publisher thread as it ends: release what only it used."""

    def _publish_until_closed(self) -> None:
        delay = self.reconnect_delay_initial
        while not self._closed.is_set():
            with self._cond:
                kind, item = self._next_item()
                if item is None:
                    self._cond.wait(self._wait_time())
                    continue
                batch = (
                    list(itertools.islice(self._outbox, self.publish_batch))
                    if kind == "emit"
                    else [item]
                )
                self._publishing = True
            try:
                receivers = self._publish_many(batch) if kind == "emit" else self._publish(item)
            except Exception as exc:
                done = exc.done if isinstance(exc, PartialPublish) else 0
                with self._cond:
                    self._publishing = False
                    if kind == "emit":
                        self._forget(batch[:done])
                    elif kind != PROBE:
                        self._control.appendleft((kind, item))
                    self._cond.notify_all()
                cause = exc.__cause__ if isinstance(exc, PartialPublish) else exc
                self._mark_down(cause or exc, "publish")
                self._closed.wait(delay)
                delay = min(delay * 2, self.reconnect_delay_max)
                continue
            delay = self.reconnect_delay_initial
            pace = False
            with self._cond:
                self._publishing = False
                if kind == "emit":
                    self._forget(batch)
                    if isinstance(receivers, int):
                        self._receivers = receivers
                elif self._down_since is not None:
                    if self.write_only:
                        pace = not self._write_only_may_flush(receivers)
                    elif kind == HELLO and self._grace_deadline is None:
                        # The broker takes our messages again: give the peers
                        # the grace period to resubscribe from now.
                        self._grace_deadline = time.monotonic() + self.resubscribe_grace
                self._cond.notify_all()
            if pace:
                self._closed.wait(self.reconnect_delay_initial)

    def _write_only_may_flush(self, receivers: Any) -> bool:
        """After an outage, may a write-only emitter (which hears nobody) publish?

        When the broker counts the receivers of a publication (Redis), as soon
        as there are as many as before the outage; otherwise after the grace
        period. Under _cond; recovers when the answer is yes.
        """
        now = time.monotonic()
        if self._grace_deadline is None:
            self._grace_deadline = now + self.resubscribe_grace
        before = self._receivers_before
        if (
            isinstance(receivers, int) and before is not None and receivers >= before
        ) or now >= self._grace_deadline:
            self._recovered()
            return True
        return False

    def _forget(self, published: list[str]) -> None:
        # Under _cond: take what was published off the outbox (unless the
        # bound dropped it meanwhile).
        for item in published:
            if self._outbox and self._outbox[0] is item:
                self._outbox_bytes -= len(item)
                self._outbox.popleft()
        if not self._outbox and self._dropped and self._down_since is None:
            logger.warning(
                "%s message queue outbox drained; %d messages had been dropped",
                self.name,
                self._dropped,
            )
            self._dropped = 0

    def _next_item(self) -> tuple[str, str | None]:
        """What to publish now (under _cond): a control message, else the outbox head."""
        if self._down_since is not None:
            if self.write_only:
                # Nobody to wait for: probe until the broker answers.
                if self._control:
                    return self._control.popleft()
                return PROBE, self.json_text({"method": PROBE, "host_id": self.host_id})
            if not self._listener_up:
                return "", None  # the listener tells when the broker is back
            if self._control:
                return self._control.popleft()
            if self._grace_deadline is None:
                # Announce ourselves (the peers answer): that also tests the
                # publishing connection.
                hello = {"method": HELLO, "host_id": self.host_id, "reply": True}
                return HELLO, self.json_text(hello)
            if self._waiting_peers and time.monotonic() < self._grace_deadline:
                return "", None
            self._recovered()
        if self._control:
            return self._control.popleft()
        if self._outbox:
            return "emit", self._outbox[0]
        return "", None

    def json_text(self, message: Any) -> str:
        """``message`` as JSON text."""
        data = self.json.dumps(message)
        return data.decode("utf-8") if isinstance(data, bytes) else data

    def _wait_time(self) -> float:
        if self._down_since is not None and self._grace_deadline is not None and self._listener_up:
            return max(0.01, min(1.0, self._grace_deadline - time.monotonic()))
        return 1.0

    def _mark_down(self, exc: BaseException | None, where: str) -> None:
        """An outage began (logged once), or goes on."""
        with self._cond:
            if where == "listen":
                self._listener_up = False
                self._grace_deadline = None
                self.ready.clear()
            if self._down_since is not None or self._closed.is_set():
                return
            self._down_since = time.monotonic()
            self._receivers_before = self._receivers
            self._waiting_peers = set(self._peers)
            self._grace_deadline = None
            self._dropped = 0
            buffered = len(self._outbox)
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "connection lost"
        logger.error(
            "%s message queue %s unreachable (%s, on %s): buffering messages for other "
            "processes (at most %d) until it is back; local clients are still served",
            self.name,
            self.describe(),
            reason,
            where,
            self.max_buffered,
        )
        if buffered:
            logger.info("%d messages already waited in the outbox", buffered)

    def _recovered(self) -> None:
        # Under _cond.
        assert self._down_since is not None
        elapsed = time.monotonic() - self._down_since
        gone = self._waiting_peers
        for host in gone:
            self._peers.pop(host, None)
        logger.info(
            "%s message queue %s is back after %.1f s: publishing %d buffered messages%s%s",
            self.name,
            self.describe(),
            elapsed,
            len(self._outbox),
            f" ({self._dropped} dropped: the outbox was full)" if self._dropped else "",
            f"; {len(gone)} peers did not come back within {self.resubscribe_grace:.0f} s"
            if gone
            else "",
        )
        self._down_since = None
        self._waiting_peers = set()
        self._grace_deadline = None
        self._dropped = 0

    def describe(self) -> str:
        """The broker, for log lines (no password)."""
        return repr(self.channel)

    # -- the backend -----------------------------------------------------------------

    def _publish(self, data: str) -> Any:
        """Publish one message; may return the number of subscribers that got it."""
        raise NotImplementedError

    def _publish_many(self, items: list[str]) -> Any:
        """Publish ``items`` in order; :class:`PartialPublish` says how many went out.

        Backends override it to send a batch at once (a Redis pipeline).
        Returns what the last ``_publish`` returned.
        """
        result = None
        for done, item in enumerate(items):
            try:
                result = self._publish(item)
            except Exception as exc:
                raise PartialPublish(done) from exc
        return result

    def _listen(self) -> Any:
        raise NotImplementedError

    def _reconnect_delays(self) -> Iterator[float]:
        """Delays between reconnection attempts: doubling up to the maximum."""
        delay = self.reconnect_delay_initial
        while True:
            yield delay
            delay = min(delay * 2, self.reconnect_delay_max)

    def _subscribed(self) -> None:
        """The listener is (again) subscribed: announce this process."""
        with self._cond:
            again = self._down_since is not None
            self._listener_up = True
            self._grace_deadline = None
            self.ready.set()
            self._cond.notify_all()
        logger.info("%s listening on %s%s", self.name, self.describe(), " again" if again else "")
        self._send_control({"method": HELLO, "reply": True})

    def _connection_lost(self, exc: BaseException | None) -> None:
        """The listener's connection dropped (the backend reconnects)."""
        self._mark_down(exc, "listen")

    # -- receiving ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                for raw in self._listen():
                    if self._closed.is_set():
                        return
                    if isinstance(raw, list):
                        self._handle_batch(raw)
                    else:
                        self.handle(raw)
                return
            except Exception as exc:
                if self._closed.is_set():
                    return
                logger.exception("%s listener failed; restarting it", self.name)
                self._mark_down(exc, "listen")
                self._closed.wait(1.0)

    def _handle_batch(self, batch: list[Any]) -> None:
        """Apply messages received together, in order, so that what they send
        reaches the loop in one turn (one write per connection for the batch:
        ``SocketIOServer.batched``)."""
        server = self.server
        if server is None or len(batch) == 1:
            for raw in batch:
                self.handle(raw)
            return
        with server.batched():
            for raw in batch:
                self.handle(raw)

    def handle(self, raw: str | bytes | dict[str, Any]) -> None:
        """Apply one message from the channel to this process's clients."""
        server = self.server
        if server is None and not self._handlers:
            return
        try:
            message = raw if isinstance(raw, dict) else self.json.loads(raw)
        except Exception:
            logger.warning("ignoring a message that is not JSON on %r", self.channel)
            return
        if isinstance(message, str):
            # kombu's JSON serializer wraps python-socketio's JSON text once more.
            try:
                message = self.json.loads(message)
            except Exception:
                logger.warning("ignoring a message that is not JSON on %r", self.channel)
                return
        if not isinstance(message, dict) or "method" not in message:
            return
        method = message["method"]
        extra = self._handlers.get(method) if isinstance(method, str) else None
        if extra is not None:
            if message.get("host_id") == self.host_id:
                return  # our own publication
            try:
                extra(message)
            except Exception:
                logger.exception("error applying a %r message from the queue", method)
            return
        if server is None:
            return
        try:
            if method == "callback":
                if message.get("host_id") == self.host_id:
                    self._run_callback(message)
                return
            if message.get("host_id") == self.host_id:
                return  # our own publication, already applied locally
            namespace = message.get("namespace") or "/"
            if method == "emit":
                self._apply_emit(server, message, namespace)
            elif method == "disconnect":
                server.disconnect(message["sid"], namespace, ignore_queue=True)
            elif method == "enter_room":
                server.enter_room(message["sid"], message["room"], namespace, ignore_queue=True)
            elif method == "leave_room":
                server.leave_room(message["sid"], message["room"], namespace, ignore_queue=True)
            elif method == "close_room":
                server.close_room(message["room"], namespace, ignore_queue=True)
            elif method == HELLO:
                self._peer_hello(message)
            elif method == BYE:
                self._peer_bye(message)
        except Exception:
            logger.exception("error applying a %r message from the queue", method)

    def _peer_hello(self, message: dict[str, Any]) -> None:
        host = message.get("host_id")
        if not isinstance(host, str):
            return
        with self._cond:
            if host not in self._peers and len(self._peers) >= 10_000:
                return
            self._peers[host] = time.monotonic()
            self._waiting_peers.discard(host)
            self._cond.notify_all()
        if message.get("reply"):
            self._send_control({"method": HELLO, "reply": False})

    def _peer_bye(self, message: dict[str, Any]) -> None:
        host = message.get("host_id")
        with self._cond:
            self._peers.pop(host, None)  # type: ignore[arg-type]
            self._waiting_peers.discard(host)  # type: ignore[arg-type]
            self._cond.notify_all()

    @staticmethod
    def emit_args_of(message: dict[str, Any]) -> list[Any]:
        """The arguments of an ``emit`` message (binary ones decoded)."""
        data = message.get("data")
        if message.get("binary") and isinstance(data, list) and data:
            buffers = [base64.b64decode(item) for item in data[1:]]
            data = _reconstruct(data[0], buffers)
        if not isinstance(data, list):
            data = [] if data is None else [data]
        return data

    def _apply_emit(self, server: SocketIOServer, message: dict[str, Any], namespace: str) -> None:
        data = self.emit_args_of(message)
        callback = None
        remote = message.get("callback")
        if isinstance(remote, list) and len(remote) == 3:
            origin = message.get("host_id")
            room, cb_namespace, ack_id = remote

            def callback(*args: Any) -> None:
                self._send(
                    {
                        "method": "callback",
                        "host_id": origin,
                        "sid": room,
                        "namespace": cb_namespace,
                        "id": ack_id,
                        "args": list(args),
                    }
                )

        room = message.get("room")
        server.emit_args(
            message["event"],
            data,
            namespace=namespace,
            to=room,
            skip_sid=message.get("skip_sid"),
            callback=callback,
            ignore_queue=True,
        )

    def _run_callback(self, message: dict[str, Any]) -> None:
        with self._lock:
            callback = self._callbacks.pop(message.get("id"), None)  # type: ignore[arg-type]
        if callback is None:
            return
        args = list(message.get("args") or ())
        server = self.server
        if server is not None:
            # User code: not on the listener thread.
            server.dispatcher.submit(("pubsub-callback", self.host_id), callback, *args)
        else:
            callback(*args)
