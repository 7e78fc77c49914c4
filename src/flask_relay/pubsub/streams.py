"""One Redis Stream as the message queue, and connection state recovery across processes.

``message_queue="redis+streams://host:6379/0"`` (also ``rediss+streams://``,
``valkey+streams://``, ``valkeys+streams://``) replaces pub/sub with one
Redis Stream named after the channel, as Node's
``@socket.io/redis-streams-adapter`` does: every process appends its
messages (``XADD`` with an approximate ``MAXLEN``) and reads everyone's
(``XREAD`` from the last entry it read). Unlike pub/sub, a process whose
connection to Redis dropped reads on from where it stopped, so it misses
nothing that is still in the stream.

With ``connection_state_recovery`` on, the stream is also the one ordered
log of the emits that carry offsets, whatever process they come from:

* an emit without a callback is not delivered where it is made: it is
  appended (through the queue's outbox), and every process, the emitting one
  included, delivers it when it reads it back, with the entry id as its
  offset. Every client thus sees the log's order, and an offset means the
  same in every process. An emit with ``ignore_queue`` (local only) is in the
  log too, marked for its process only: its clients' offsets are log ids like
  the others', and a recovery elsewhere replays it;
* a socket whose connection drops is saved in Redis (``SET`` with an expiry
  of ``max_disconnection_duration``): sid, pid, rooms, session data, the log
  position at its connect, and the process it was on;
* a client that reconnects to any process with ``{pid, offset}`` gets its
  session back: ``GET`` and ``DEL`` in one ``MULTI`` (one process only wins
  it), then the entries after ``offset`` addressed to its namespace or its
  rooms, not excluded by ``skip_sid``, in log order. While this runs the
  process does not apply the log, and the socket is registered before it goes
  on, so each event reaches it once: replayed up to the log's end at restore
  time, delivered from the log after that.

The price of one order everywhere: an emit reaches even the emitting
process's clients one Redis round trip later, and while Redis is unreachable
emits wait in the outbox (bounded as for every queue, see
:mod:`flask_relay.pubsub`) instead of reaching the local clients at once.

The stream carries Flask-Relay's messages in python-socketio's JSON format
(one field, ``m``), but python-socketio's ``RedisManager`` speaks pub/sub:
processes on ``redis+streams://`` only hear each other (a write-only
``SocketIO(message_queue="redis+streams://...")`` emitter included).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..engine.recovery import Items, KeptSession, RecoveryOptions, Restored
from ..protocol.jsonlib import JSONModule
from .redis import RedisQueue, _redact

if TYPE_CHECKING:
    from ..engine.sio import SocketIOServer

__all__ = ["RedisStreamsQueue", "StreamSessionStore"]

logger = logging.getLogger("flask_relay.pubsub")

# Outbox items that are session operations, not stream entries (JSON text
# never starts with this character).
_OP = "\x1e"
_PERSIST = _OP + "P"
_FORGET = _OP + "F"

# Forget a kept session by sid: the sid key names the pid.
_FORGET_SCRIPT = """
local pid = redis.call('GET', KEYS[1])
if pid then redis.call('DEL', ARGV[1] .. pid) end
redis.call('DEL', KEYS[1])
return pid
"""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def entry_key(entry_id: Any) -> tuple[int, int] | None:
    """A stream entry id (``"1700000000000-3"``) as a comparable pair; ``None`` if malformed."""
    if not isinstance(entry_id, str):
        return None
    ms, sep, seq = entry_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


def _hashable(value: Any) -> Hashable:
    # JSON gives lists for tuples: rooms must be hashable again.
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value  # type: ignore[no-any-return]


def _as_set(value: Any) -> set[Hashable]:
    if value is None:
        return set()
    if isinstance(value, list):
        return {_hashable(v) for v in value}
    return {_hashable(value)}


class RedisStreamsQueue(RedisQueue):
    """The message queue on one Redis Stream (``redis+streams://``).

    ``max_len`` bounds the stream (approximately, ``MAXLEN ~``; with
    recovery on it is ``max_packets``); ``read_count`` entries are read per
    ``XREAD``, which blocks at most ``block_ms``.
    """

    name = "redis-streams"
    max_len = 10_000
    read_count = 100
    block_ms = 1000
    #: The stream keeps what a reconnecting reader missed: no need to wait for
    #: the peers to come back before publishing the outbox after an outage.
    resubscribe_grace = 0.0

    def __init__(
        self,
        url: str,
        channel: str = "flask-socketio",
        write_only: bool = False,
        json: JSONModule | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        scheme, sep, rest = url.partition(":")
        if not scheme.lower().endswith("+streams"):
            raise ValueError(f"not a redis+streams:// URL: {url!r}")
        self.streams_url = url
        super().__init__(
            scheme[: -len("+streams")] + sep + rest,
            channel=channel,
            write_only=write_only,
            json=json,
            options=options,
        )
        #: The stream's key (the channel's name).
        self.stream = channel
        #: Held while an entry is applied, and while a session is restored.
        self.apply_lock = threading.Lock()
        #: The recovery store, when the server has recovery on.
        self.store: StreamSessionStore | None = None
        self._cursor: str | None = None  # the last entry read

    def describe(self) -> str:
        return f"{_redact(self.streams_url)} stream {self.stream!r}"

    # -- what the recovery store uses ------------------------------------------------

    @property
    def client(self) -> Any:
        """The Redis client (a new one in a forked child)."""
        return self._client

    @property
    def response_error(self) -> type[Exception]:
        """The redis package's ``ResponseError`` (an error answer from Redis)."""
        error: type[Exception] = self._redis_module.exceptions.ResponseError
        return error

    def send_operation(self, kind: str, op: dict[str, Any]) -> None:
        """Put a store operation in the outbox, in order with the emits, without
        waiting for room (the store is called with the server's lock held)."""
        self._enqueue(kind + self.json_text(op), wait=False)

    def _reset_backend_after_fork(self) -> None:
        super()._reset_backend_after_fork()
        self._cursor = None
        self.apply_lock = threading.Lock()

    def attach(self, server: SocketIOServer) -> None:
        """Serve ``server``; with recovery on, its store becomes the stream's."""
        if server.recovery is not None:
            self.max_len = server.recovery.max_packets
            self.store = StreamSessionStore(self, server.recovery, server.encode_event)
            server.session_store = self.store
        super().attach(server)

    # -- publishing ------------------------------------------------------------------

    def emit_logged(
        self,
        event: Any,
        args: list[Any],
        *,
        namespace: str,
        room: Any,
        skip_sid: Any,
        volatile: bool,
        local: bool,
    ) -> None:
        """Append an emit that every process (this one included) delivers from the log."""
        message = self._emit_message(event, args, namespace, room, skip_sid)
        message["log"] = True
        if local:
            message["only"] = self.host_id
        if volatile:
            message["volatile"] = True
        self._send(message)

    def _publish(self, data: str) -> Any:
        return self._publish_many([data])

    def _publish_many(self, items: list[str]) -> Any:
        # One MULTI: a batch is appended whole or not at all (a failure
        # resends it, rarely twice when the connection drops after EXEC).
        pipe = self._client.pipeline(transaction=True)
        for item in items:
            if item.startswith(_OP):
                self._session_op(pipe, item)
            else:
                pipe.xadd(self.stream, {"m": item}, maxlen=self.max_len, approximate=True)
        pipe.execute()
        return None

    def _session_op(self, pipe: Any, item: str) -> None:
        op = self.json.loads(item[2:])
        if item.startswith(_PERSIST):
            left = int(op["pxat"]) - int(time.time() * 1000)
            if left <= 0:
                return  # the window ended while the broker was away
            pipe.set(op["key"], op["value"], px=left)
            pipe.set(op["sid_key"], op["pid"], px=left)
        elif item.startswith(_FORGET):
            pipe.eval(_FORGET_SCRIPT, 1, op["sid_key"], op["prefix"])

    # -- listening -------------------------------------------------------------------

    def _listen(self) -> Iterator[Any]:
        delays = self._reconnect_delays()
        client = self._client
        while not self._closed.is_set():
            try:
                if self._cursor is None:
                    # Start after the last entry: what came before is not ours.
                    last = client.xrevrange(self.stream, count=1)
                    self._cursor = _text(last[0][0]) if last else "0-0"
                    if self.store is not None:
                        self.store.start(self._cursor)
                else:
                    client.ping()
                delays = self._reconnect_delays()
                self._subscribed()
                while not self._closed.is_set():
                    reply = client.xread(
                        {self.stream: self._cursor}, count=self.read_count, block=self.block_ms
                    )
                    for _name, entries in reply or ():
                        for entry_id, fields in entries:
                            self._cursor = _text(entry_id)
                            yield (self._cursor, fields.get(b"m", fields.get("m")))
            except (self._redis_module.exceptions.RedisError, OSError) as exc:
                if self._closed.is_set():
                    return
                self._connection_lost(exc)
                self._closed.wait(next(delays))

    def handle(self, raw: Any) -> None:
        """Apply one stream entry ``(id, data)`` (or a message, as every queue)."""
        if not isinstance(raw, tuple):
            super().handle(raw)
            return
        entry_id, data = raw
        with self.apply_lock:
            self._apply_entry(entry_id, data)

    def _apply_entry(self, entry_id: str, data: Any) -> None:
        if data is None:
            return
        try:
            message = self.json.loads(data)
        except Exception:
            logger.warning("ignoring stream entry %s: not JSON", entry_id)
            return
        if not isinstance(message, dict):
            return
        server = self.server
        if not self.is_logged_emit(message):
            super().handle(message)
            return
        only = message.get("only")
        if server is None or (only is not None and only != self.host_id):
            return
        try:
            server.emit_args(
                message["event"],
                self.emit_args_of(message),
                namespace=message.get("namespace") or "/",
                to=message.get("room"),
                skip_sid=message.get("skip_sid"),
                ignore_queue=True,
                volatile=bool(message.get("volatile")),
                offset=entry_id,
            )
        except Exception:
            logger.exception("error applying stream entry %s", entry_id)

    def is_logged_emit(self, message: dict[str, Any]) -> bool:
        """An emit delivered from the log with its entry id as offset: one appended
        with recovery on (by any process), or any other process's emit without a
        callback (a process without recovery, a write-only emitter)."""
        return (
            message.get("method") == "emit"
            and not message.get("callback")
            and (bool(message.get("log")) or message.get("host_id") != self.host_id)
        )


class StreamSessionStore:
    """Connection state recovery on a :class:`RedisStreamsQueue` (shared by processes).

    Offsets are stream entry ids; kept sessions are Redis keys
    ``<channel>:session:<pid>`` (and ``<channel>:sid:<namespace>:<sid>`` naming
    the pid, for ``disconnect(sid)`` while the client is away) that expire
    with the window. Writes go through the queue's outbox (in order with the
    emits, buffered during an outage); :meth:`restore` reads Redis directly.
    """

    shared = True

    def __init__(
        self,
        queue: RedisStreamsQueue,
        options: RecoveryOptions,
        encode: Callable[[str, list[Any], str], Items],
    ) -> None:
        self.queue = queue
        self.options = options
        self._encode = encode
        self._applied: str | None = None  # the last log entry delivered here

    # -- positions -----------------------------------------------------------------

    def start(self, cursor: str) -> None:
        """The listener starts reading after ``cursor``."""
        if self._applied is None:
            self._applied = cursor

    def position(self) -> Any:
        return self._applied

    def newer(self, offset: str, position: Any) -> bool:
        key, than = entry_key(offset), entry_key(position)
        return key is None or than is None or key > than

    def replaying(self) -> AbstractContextManager[Any]:
        return self.queue.apply_lock

    # -- the log ---------------------------------------------------------------------

    def record(
        self,
        namespace: str,
        to: Any,
        skip_sid: Any,
        encode: Callable[[str], Items],
        offset: str | None = None,
    ) -> Items:
        if offset is None:
            raise RuntimeError("a shared store's offsets come from the log")
        items = encode(offset)
        self._applied = offset
        return items

    def append(
        self,
        event: Any,
        args: list[Any],
        *,
        namespace: str,
        to: Any,
        skip_sid: Any,
        volatile: bool,
        local: bool,
    ) -> None:
        self.queue.emit_logged(
            event,
            args,
            namespace=namespace,
            room=to,
            skip_sid=skip_sid,
            volatile=volatile,
            local=local,
        )

    # -- sessions --------------------------------------------------------------------

    def _session_key(self, pid: str) -> str:
        return f"{self.queue.stream}:session:{pid}"

    def _sid_key(self, namespace: str, sid: str) -> str:
        return f"{self.queue.stream}:sid:{namespace}:{sid}"

    def persist(self, session: KeptSession) -> None:
        queue = self.queue
        try:
            value = queue.json_text(
                {
                    "sid": session.sid,
                    "pid": session.pid,
                    "namespace": session.namespace,
                    "rooms": list(session.rooms),
                    "data": session.data,
                    "mark": session.mark,
                    "host": queue.host_id,
                }
            )
        except Exception as exc:
            logger.warning(
                "recovery: the session of %s cannot be kept (its rooms or session data "
                "are not JSON: %s); it will reconnect as a new socket",
                session.sid,
                exc,
            )
            return
        op = {
            "key": self._session_key(session.pid),
            "sid_key": self._sid_key(session.namespace, session.sid),
            "pid": session.pid,
            "value": value,
            "pxat": int((time.time() + self.options.max_disconnection_duration) * 1000),
        }
        queue.send_operation(_PERSIST, op)

    def discard(self, sid: str, namespace: str) -> bool:
        op = {"sid_key": self._sid_key(namespace, sid), "prefix": self._session_key("")}
        self.queue.send_operation(_FORGET, op)
        return False  # not known here: the operation runs in Redis

    def restore(self, namespace: str, pid: str, offset: str | None) -> Restored | None:
        queue = self.queue
        client = queue.client
        pipe = client.pipeline(transaction=True)
        pipe.get(self._session_key(pid))
        pipe.delete(self._session_key(pid))
        raw, _ = pipe.execute()
        if raw is None:
            logger.info("recovery: no session %.40r in Redis (unknown or expired)", pid)
            return None
        try:
            value = queue.json.loads(raw)
            session = KeptSession(
                str(value["sid"]),
                pid,
                str(value["namespace"]),
                [_hashable(room) for room in value["rooms"]],
                dict(value["data"]),
                value.get("mark"),
            )
            host = value.get("host")
        except Exception as exc:
            logger.warning("recovery: unreadable session %.40r in Redis: %s", pid, exc)
            return None
        client.delete(self._sid_key(session.namespace, session.sid))
        if session.namespace != namespace:
            logger.info("recovery: session %.40r is not on %s", pid, namespace)
            return None
        start = offset if offset is not None else session.mark
        if entry_key(start) is None:
            logger.info("recovery: %s sent an unknown offset %.40r", session.sid, start)
            return None
        assert isinstance(start, str)
        if not self._kept_since(start, exact=offset is not None):
            logger.info("recovery: events missed by %s are no longer kept", session.sid)
            return None
        missed, through = self._replay(namespace, set(session.rooms), host, start)
        return Restored(session, missed, through)

    def _kept_since(self, start: str, exact: bool) -> bool:
        """Whether every entry after ``start`` is still in the stream."""
        client = self.queue.client
        stream = self.queue.stream
        if exact:
            # As the reference: the client's last entry must still be there.
            return bool(client.xrange(stream, start, start, count=1))
        redis_errors = self.queue.response_error
        try:
            info = client.xinfo_stream(stream)
        except redis_errors:
            return True  # no stream yet: nothing was trimmed
        deleted = info.get("max-deleted-entry-id")
        if deleted is not None:  # Redis 7
            return entry_key(_text(deleted)) <= entry_key(start)  # type: ignore[operator]
        first = info.get("first-entry")
        return first is None or entry_key(_text(first[0])) <= entry_key(start)  # type: ignore[operator]

    def _replay(
        self, namespace: str, rooms: set[Hashable], host: Any, start: str
    ) -> tuple[list[Items], str]:
        """The encoded events after ``start`` for these rooms, and the last id read."""
        queue = self.queue
        client = queue.client
        last = client.xrevrange(queue.stream, count=1)
        end = _text(last[0][0]) if last else start
        missed: list[Items] = []
        cursor = start
        end_key = entry_key(end)
        assert end_key is not None
        while entry_key(cursor) < end_key:  # type: ignore[operator]
            entries = client.xrange(queue.stream, "(" + cursor, end, count=queue.read_count)
            if not entries:
                break
            for entry_id, fields in entries:
                cursor = _text(entry_id)
                data = fields.get(b"m", fields.get("m"))
                try:
                    message = queue.json.loads(data)
                except Exception:
                    continue
                if isinstance(message, dict) and self._for(message, namespace, rooms, host):
                    args = queue.emit_args_of(message)
                    missed.append(self._encode(namespace, [message["event"], *args], cursor))
        return missed, end if entry_key(end) >= entry_key(start) else start  # type: ignore[operator]

    def _for(
        self, message: dict[str, Any], namespace: str, rooms: set[Hashable], host: Any
    ) -> bool:
        """Whether a log entry was an event for a socket in ``rooms`` of ``namespace``."""
        if message.get("method") != "emit" or message.get("callback"):
            return False
        if (message.get("namespace") or "/") != namespace:
            return False
        only = message.get("only")
        if only is not None and only != host:
            return False
        room = message.get("room")
        if room is not None and rooms.isdisjoint(_as_set(room)):
            return False
        return rooms.isdisjoint(_as_set(message.get("skip_sid")))
