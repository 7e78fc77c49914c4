"""The seams between the engines, in one place.

* :class:`EngineHandler`: what an Engine.IO server (``eio.py``, or the
  in-process ``local.py``) calls about its sessions, on its loop thread;
  :class:`~flask_relay.engine.sio.EngineBinding` is the Socket.IO server's.
* :class:`EngineLike`: what the Socket.IO server needs from an Engine.IO
  server to send (safe from any thread).
* :class:`DispatcherLike`: where handler calls go (``dispatch.py``).
* :class:`GroupRegistry`: the rooms of plain WebSocket connections
  (``flask_relay.groups`` implements it; the ws objects join and leave).
* :class:`QueuePublisher`: what the Socket.IO server publishes for the other
  processes (``flask_relay.pubsub`` implements it; the engine never imports it).
* :class:`SessionStore`: where connection state recovery keeps events and
  disconnected sessions (``recovery.py``'s ``MemorySessionStore``, or the
  Redis Streams store of ``flask_relay.pubsub.streams``, shared by processes).

Only ``typing.Protocol`` classes: an implementation satisfies one by shape.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .recovery import Items, KeptSession, Restored

__all__ = [
    "DispatcherLike",
    "EngineHandler",
    "EngineLike",
    "GroupRegistry",
    "QueuePublisher",
    "SessionStore",
]


class EngineHandler(Protocol):
    """Receives an Engine.IO server's session events, on the loop thread.

    Must not block: decode and hand work to a dispatcher.
    """

    def on_connect(self, sid: str, environ: dict[str, Any]) -> None: ...

    def on_message(self, sid: str, data: str | bytes) -> None: ...

    def on_disconnect(self, sid: str, reason: str) -> None: ...


class EngineLike(Protocol):
    """What the Socket.IO layer needs from an Engine.IO server (any thread)."""

    def send(self, sid: str, data: str | bytes) -> None: ...

    def send_many(self, sid: str, items: list[str | bytes]) -> None: ...

    def prepare(self, items: list[str | bytes]) -> Any: ...

    def send_prepared(self, sids: Iterable[str], prepared: Any) -> None: ...

    def disconnect(self, sid: str, reason: str = "forced close") -> None: ...


class DispatcherLike(Protocol):
    """Runs handler calls in worker threads, in order per key."""

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None: ...

    def submit_barrier(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None: ...


class QueuePublisher(Protocol):
    """The message queue as the Socket.IO server sees it: it publishes what
    concerns other processes' clients (:class:`flask_relay.pubsub.MessageQueue`)."""

    def emit(
        self,
        event: Any,
        args: list[Any],
        *,
        namespace: str,
        room: Any,
        skip_sid: Any,
        callback: Callable[..., Any] | None = None,
    ) -> None: ...

    def disconnect(self, sid: str, namespace: str) -> None: ...

    def enter_room(self, sid: str, room: Any, namespace: str) -> None: ...

    def leave_room(self, sid: str, room: Any, namespace: str) -> None: ...

    def close_room(self, room: Any, namespace: str) -> None: ...

    def close(self) -> None:
        """Stop listening (the server got another queue, or shuts down)."""

    def ensure_listening(self) -> None:
        """Start listening if it does not (again in a forked child)."""


class GroupRegistry(Protocol):
    """One app's rooms of WebSocket connections (thread-safe)."""

    def join(self, member: Any, room: Hashable) -> None: ...

    def leave(self, member: Any, room: Hashable) -> None: ...

    def leave_all(self, member: Any) -> None: ...

    def rooms_of(self, member: Any) -> set[Hashable]: ...


class SessionStore(Protocol):
    """Where recovery keeps events and sessions.

    A process-local store (``shared`` false, ``recovery.py``'s
    ``MemorySessionStore``) hands out offsets itself; every method is called
    with the server's registry lock held and must not block.

    A store shared between processes (``shared`` true,
    ``flask_relay.pubsub.streams``) orders emits in one log: the server hands
    an emit to :meth:`append` instead of delivering it, and delivers it when
    the log gives it back, through :meth:`record` with the log's offset.
    :meth:`restore` then does I/O: the server calls it from a worker, without
    its lock, inside :meth:`replaying`, and registers the socket before
    leaving that block.
    """

    shared: bool

    def position(self) -> Any:
        """The current position: events recorded later are after it."""
        ...

    def record(
        self,
        namespace: str,
        to: Any,
        skip_sid: Any,
        encode: Callable[[str], Items],
        offset: str | None = None,
    ) -> Items:
        """Give the next offset (or the log's ``offset``) to ``encode``, keep its packet,
        return it."""
        ...

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
        """Put an emit in the shared log (``local``: only this process delivers it)."""
        ...

    def persist(self, session: KeptSession) -> None:
        """Keep ``session`` for the recovery window."""
        ...

    def restore(self, namespace: str, pid: str, offset: str | None) -> Restored | None:
        """Take back the session ``pid`` with what it missed after ``offset``, or ``None``."""
        ...

    def replaying(self) -> AbstractContextManager[Any]:
        """Held while a restored socket is registered: the log is not applied meanwhile."""
        ...

    def newer(self, offset: str, position: Any) -> bool:
        """Whether ``offset`` comes after ``position`` (a :attr:`Restored.through`)."""
        ...

    def discard(self, sid: str, namespace: str) -> bool:
        """Forget the kept session of ``sid`` (the server disconnected it for good)."""
        ...
