"""Connection state recovery: Socket.IO 4.6's ``connectionStateRecovery``.

A client whose connection drops (a network change, a laptop lid) normally
comes back as a new socket: a new sid, no rooms, and whatever was emitted to
it meanwhile is lost. With recovery on, the server keeps what it needs to
undo that for a while:

* every socket gets a private session id (``pid``), sent in the ``CONNECT``
  reply next to ``sid``; the official client keeps it;
* every event the server emits without an acknowledgement callback gets an
  *offset* appended as its last argument and is kept here for
  ``max_disconnection_duration`` seconds; the client remembers the offset of
  the last event it processed;
* when a connection ends in a way the client did not choose (transport close
  or error, ping timeout, forced close, shutdown), the socket's sid, rooms and
  ``data`` are kept, after its disconnect handler ran;
* a client that reconnects within the window sends ``{pid, offset}`` in its
  ``CONNECT`` auth and gets back the same sid and rooms, then every kept event
  addressed to it (to its namespace, or to one of its rooms, not excluded by
  ``skip_sid``) that came after ``offset``, in emit order, before anything
  newer. The official client then sets ``socket.recovered``.

This module is the storage side, behind the
:class:`~flask_relay.engine.interfaces.SessionStore` seam, so a
store shared between processes (Redis Streams, as the reference's
``@socket.io/redis-streams-adapter``: :mod:`flask_relay.pubsub.streams`)
can replace :class:`MemorySessionStore`.
Everything here is called by :class:`flask_relay.engine.sio.SocketIOServer`
with its registry lock held, so the in-memory store needs no lock of its own,
and offsets are handed out in the order the packets are sent.

Memory is bounded, unlike the reference's in-memory adapter: at most
``max_packets`` events (all namespaces together) and ``max_sessions``
disconnected sessions are kept, the oldest going first; both also go when
older than the window. A client whose missed events were already dropped
(by age or by count) is not recovered: it gets a fresh socket, as in the
reference when the offset is too old.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from .interfaces import SessionStore

__all__ = [
    "RECOVERABLE_REASONS",
    "KeptSession",
    "MemorySessionStore",
    "RecoveryOptions",
    "Restored",
    "SessionStore",
]

logger = logging.getLogger("flask_relay.sio")

#: The Engine.IO close reasons after which a session is kept (the reference's
#: list). A client's own ``disconnect()`` and the server's ``disconnect(sid)``
#: are deliberate and end the session for good.
RECOVERABLE_REASONS = frozenset(
    ("transport close", "transport error", "ping timeout", "forced close", "server shutting down")
)

Items = list[str | bytes]


@dataclass(frozen=True)
class RecoveryOptions:
    """The ``connection_state_recovery`` option, checked.

    ``max_disconnection_duration`` is in seconds (the reference's
    ``maxDisconnectionDuration`` is in milliseconds); ``skip_middlewares``
    skips the connect handler when a session is recovered. ``max_packets``
    and ``max_sessions`` are Flask-Relay's memory bounds.
    """

    max_disconnection_duration: float = 120.0
    skip_middlewares: bool = True
    max_packets: int = 10_000
    max_sessions: int = 10_000

    @classmethod
    def parse(cls, value: Any) -> RecoveryOptions | None:
        """``None``/``False``: off; ``True``: the defaults; a dict of the fields above."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, RecoveryOptions):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                "connection_state_recovery must be a dict such as "
                "{'max_disconnection_duration': 120, 'skip_middlewares': True}, True or None; "
                f"got {type(value).__name__}"
            )
        known = {"max_disconnection_duration", "skip_middlewares", "max_packets", "max_sessions"}
        unknown = sorted(set(map(str, value)) - known)
        if unknown:
            raise ValueError(
                f"connection_state_recovery: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))} (max_disconnection_duration is in seconds)"
            )
        options = cls(**value)
        duration = options.max_disconnection_duration
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0:
            raise ValueError(
                "connection_state_recovery: max_disconnection_duration must be a positive "
                f"number of seconds, got {duration!r}"
            )
        for name in ("max_packets", "max_sessions"):
            bound = getattr(options, name)
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
                raise ValueError(
                    f"connection_state_recovery: {name} must be a positive integer, got {bound!r}"
                )
        if not isinstance(options.skip_middlewares, bool):
            raise ValueError("connection_state_recovery: skip_middlewares must be True or False")
        return options


@dataclass
class KeptSession:
    """What is kept of a socket whose connection dropped."""

    sid: str
    pid: str
    namespace: str
    rooms: list[Hashable]
    data: dict[str, Any]
    #: The store's position when the socket connected: the replay starts there
    #: for a client that never received an event (it has no offset to send).
    #: An int here, a stream entry id in a shared store.
    mark: Any
    disconnected_at: float = field(default_factory=time.monotonic)


@dataclass
class Restored:
    """A session given back, with the encoded events it missed, in order."""

    session: KeptSession
    missed: list[Items]
    #: A shared store: the log position ``missed`` goes up to (the server
    #: does not deliver to the socket what the log gives back up to there).
    through: Any = None


@dataclass
class _Packet:
    seq: int
    namespace: str
    rooms: frozenset[Hashable] | None  # None: the whole namespace
    skip: frozenset[Hashable]
    items: Items
    at: float


def _room_set(value: Any) -> frozenset[Hashable]:
    if value is None:
        return frozenset()
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(value)
    return frozenset((value,))


class MemorySessionStore:
    """One process's events and sessions, bounded in count and age."""

    shared = False

    def __init__(self, options: RecoveryOptions, clock: Callable[[], float] = time.monotonic):
        self.options = options
        self._clock = clock
        # Offsets name this store: one from before a restart is not mistaken
        # for a position in this one.
        self._epoch = secrets.token_urlsafe(6)
        self._seq = 0
        self._dropped = 0  # the highest seq no longer kept
        self._packets: deque[_Packet] = deque()
        self._sessions: OrderedDict[str, KeptSession] = OrderedDict()  # by pid, oldest first
        self._pids: dict[tuple[str, str], str] = {}  # (sid, namespace) -> pid

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def position(self) -> int:
        return self._seq

    def _offset(self, seq: int) -> str:
        return f"{self._epoch}.{seq:x}"

    def _parse(self, offset: str) -> int | None:
        epoch, _, seq = offset.rpartition(".")
        if epoch != self._epoch:
            return None
        try:
            value = int(seq, 16)
        except ValueError:
            return None
        return value if 0 <= value <= self._seq else None

    def _expire(self) -> None:
        threshold = self._clock() - self.options.max_disconnection_duration
        self._expire_packets(threshold)
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if oldest.disconnected_at >= threshold and len(sessions) <= self.options.max_sessions:
                break
            self._take(oldest.pid)

    def _take(self, pid: str) -> KeptSession | None:
        session = self._sessions.pop(pid, None)
        if session is not None:
            self._pids.pop((session.sid, session.namespace), None)
        return session

    def _expire_packets(self, threshold: float) -> None:
        packets = self._packets
        limit = self.options.max_packets
        while packets and (len(packets) > limit or packets[0].at < threshold):
            self._dropped = packets.popleft().seq

    def record(
        self,
        namespace: str,
        to: Any,
        skip_sid: Any,
        encode: Callable[[str], Items],
        offset: str | None = None,
    ) -> Items:
        seq = self._seq + 1
        items = encode(self._offset(seq))  # may raise: nothing is kept then
        self._seq = seq
        rooms = None if to is None else _room_set(to)
        self._packets.append(
            _Packet(seq, namespace, rooms, _room_set(skip_sid), items, self._clock())
        )
        self._expire_packets(self._clock() - self.options.max_disconnection_duration)
        return items

    def persist(self, session: KeptSession) -> None:
        session.disconnected_at = self._clock()
        self._take(session.pid)
        self._sessions[session.pid] = session
        self._pids[(session.sid, session.namespace)] = session.pid
        self._expire()

    def restore(self, namespace: str, pid: str, offset: str | None) -> Restored | None:
        self._expire()
        session = self._sessions.get(pid)
        if session is None or session.namespace != namespace:
            logger.info("recovery: no session %.40r on %s (unknown or expired)", pid, namespace)
            return None
        # Once only: a second connection with the same pid gets a fresh socket.
        self._take(pid)
        if offset is None:
            start: int | None = session.mark
        else:
            start = self._parse(offset)
        if start is None:
            logger.info("recovery: %s sent an unknown offset %.40r", session.sid, offset)
            return None
        if start < self._dropped:
            logger.info("recovery: events missed by %s are no longer kept", session.sid)
            return None
        rooms = set(session.rooms)
        missed = [
            packet.items
            for packet in self._packets
            if packet.seq > start
            and packet.namespace == namespace
            and (packet.rooms is None or not rooms.isdisjoint(packet.rooms))
            and rooms.isdisjoint(packet.skip)
        ]
        return Restored(session, missed)

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
        raise NotImplementedError("a process-local store has no shared log")

    def replaying(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def newer(self, offset: str, position: Any) -> bool:
        return True

    def discard(self, sid: str, namespace: str) -> bool:
        pid = self._pids.get((sid, namespace))
        return pid is not None and self._take(pid) is not None

    def sessions(self) -> Iterable[KeptSession]:
        return list(self._sessions.values())
