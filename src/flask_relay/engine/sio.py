"""The Socket.IO v5 server: namespaces, rooms, acknowledgements, emit targeting.

This layer sits between an Engine.IO server and an *application* (the Flask
face, or anything implementing :class:`SocketIOApplication`). It imports no
Flask. Its threading model:

* The Engine.IO server calls :class:`EngineBinding`'s ``on_connect``,
  ``on_message`` and ``on_disconnect`` on its event loop. Those only decode the
  packet (fast) and hand the application call to a dispatcher keyed by the
  Engine.IO connection, so the loop never runs user code, the quick events of
  one client run one at a time and in order, a handler that blocks cannot stall
  its own client's later events, and different clients run concurrently (the
  rule is in :mod:`flask_relay.engine.dispatch`; the connect handler is a
  barrier that the client's events never overtake).
* Emits, room changes, ``call()`` and disconnects are safe from any thread: the
  registry of sockets and rooms is guarded by one re-entrant lock, and the
  Engine.IO server's send methods are themselves thread-safe. Sends happen
  under that lock, so two emits to the same client arrive in the order their
  callers took the lock, and the packets of a binary message stay together.

One :class:`SocketIOServer` can serve several Engine.IO servers at once
(:meth:`SocketIOServer.attach` returns one :class:`EngineBinding` per engine):
the network server and the in-process test client share the same namespaces,
rooms and handlers, and a broadcast reaches the clients of both.

Broadcasts are encoded once: an emit without a callback builds the Socket.IO
packet once (one :meth:`Encoder.encode`) and, per engine, calls
``engine.prepare`` once and ``engine.send_prepared`` for all its recipients.

What a client sees, in order, for a namespace connection:

1. ``CONNECT`` (``40/ns,{auth}``) from the client. Unknown namespaces get
   ``CONNECT_ERROR {"message": "Invalid namespace"}`` at once.
2. The application's ``on_connect`` runs in a worker. Anything it emits to
   the new socket is held back and sent right after the ``CONNECT`` reply,
   which is what clients expect (the reference server runs ``connection``
   handlers after the reply). A refusal (``False`` or
   :class:`ConnectionRefusedError`) sends ``CONNECT_ERROR`` with
   ``{"message": ..., "data": ...}`` and drops what was held back.
3. Events, acks, then a ``DISCONNECT`` from either side or the end of the
   Engine.IO connection; the application's ``on_disconnect`` runs after every
   event handler already queued for that client, and only if the connection
   had been accepted.

Engine.IO connections that send no ``CONNECT`` within ``connect_timeout``
seconds (default 45, like the reference) are closed.

With connection state recovery (``recovery=``, :mod:`flask_relay.engine.recovery`)
the ``CONNECT`` reply also carries a ``pid``, ack-less emits carry an offset
as their last argument, a socket lost to a transport failure is kept after
its disconnect handler, and a ``CONNECT`` whose auth names a kept ``pid``
takes that socket's sid, rooms and data back, with the events it missed held
back like step 2's output.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from ..protocol.codecs import PacketDecoder, PacketEncoder, make_codec
from ..protocol.errors import ConnectionRefusedError, ProtocolError
from ..protocol.jsonlib import JSONModule
from ..protocol.socketio import Packet, PacketType
from .admin import AdminUI
from .admin import instrument as instrument_admin
from .dispatch import (
    DEFAULT_MAX_WORKERS,
    ORDER_WINDOW,
    Dispatcher,
    DispatcherClosed,
    DispatchQueueFull,
)
from .interfaces import DispatcherLike, EngineLike, QueuePublisher, SessionStore
from .observers import ServerObserver
from .recovery import (
    RECOVERABLE_REASONS,
    KeptSession,
    MemorySessionStore,
    RecoveryOptions,
    Restored,
)
from .views import EngineView, ManagerView

__all__ = [
    "NOT_HANDLED",
    "ConnectionRefusedError",
    "DisconnectReason",
    "EngineBinding",
    "EngineLike",
    "Socket",
    "SocketIOApplication",
    "SocketIOServer",
]

logger = logging.getLogger("flask_relay.sio")

_CONNECT = PacketType.CONNECT
_DISCONNECT = PacketType.DISCONNECT
_EVENT = PacketType.EVENT
_ACK = PacketType.ACK
_CONNECT_ERROR = PacketType.CONNECT_ERROR

#: Returned by :meth:`SocketIOApplication.on_event` when no handler exists: no
#: acknowledgement is sent (python-socketio does the same).
NOT_HANDLED: Any = type("NotHandled", (), {"__repr__": lambda self: "NOT_HANDLED"})()


class DisconnectReason:
    """The reasons given to disconnect handlers (python-socketio's strings)."""

    #: The server called ``disconnect()``.
    SERVER_DISCONNECT = "server disconnect"
    #: The client left the namespace (``socket.disconnect()``).
    CLIENT_DISCONNECT = "client disconnect"
    #: The client stopped answering pings.
    PING_TIMEOUT = "ping timeout"
    #: The connection was closed (the browser tab was closed, for example).
    TRANSPORT_CLOSE = "transport close"
    #: The connection failed, or the client sent something unparsable.
    TRANSPORT_ERROR = "transport error"


# Engine.IO close reasons (the reference's) -> the reasons handlers get.
_EIO_REASONS = {
    "transport close": DisconnectReason.TRANSPORT_CLOSE,
    "transport error": DisconnectReason.TRANSPORT_ERROR,
    "ping timeout": DisconnectReason.PING_TIMEOUT,
    "parse error": DisconnectReason.TRANSPORT_ERROR,
    "forced close": DisconnectReason.SERVER_DISCONNECT,
    "server shutting down": DisconnectReason.SERVER_DISCONNECT,
    "client disconnect": DisconnectReason.CLIENT_DISCONNECT,
}


class SocketIOApplication(Protocol):
    """The user-facing side: called in worker threads (except the optional
    ``event_coroutine`` below and the coroutines it returns, on the loop)."""

    def has_namespace(self, namespace: str) -> bool:
        """Whether handlers exist for ``namespace`` (so connecting to it is allowed)."""
        ...

    def on_connect(self, socket: Socket, auth: Any) -> Any:
        """Return ``False`` or raise :class:`ConnectionRefusedError` to refuse."""
        ...

    def on_event(self, socket: Socket, event: Any, args: list[Any]) -> Any:
        """Return the acknowledgement (``None``: empty, tuple: several args)."""
        ...

    def on_disconnect(self, socket: Socket, reason: str) -> None: ...

    # Optional (looked up with getattr, not part of the shape):
    # ``event_coroutine(socket, event) -> runner | None``, called on the loop for
    # every event: a ``runner(socket, event, args)`` returning a coroutine that
    # runs the event's handler and returns its acknowledgement, when that handler
    # may run on the loop (an ``async def`` handler); ``None`` runs ``on_event``
    # in a worker.


# Socket states.
CONNECTING = 0  # CONNECT received, connect handler not finished
CONNECTED = 1  # CONNECT reply sent
DISCONNECTING = 2  # left every index but rooms()/environ; disconnect handler pending
DISCONNECTED = 3


class _Waiter:
    """A blocking ``call()`` waiting for its acknowledgement."""

    __slots__ = ("event", "args", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.args: tuple[Any, ...] = ()
        self.error: BaseException | None = None


_Ack = Callable[..., Any] | _Waiter


class Socket:
    """One client's connection to one namespace.

    ``sid`` is a fresh random id, never the (secret) Engine.IO session id.
    ``environ`` is the WSGI environ of the connection's handshake request
    (shared by every namespace of that connection). ``data`` is free for the
    application to use.
    """

    __slots__ = (
        "sid",
        "namespace",
        "connection",
        "state",
        "rooms",
        "pending",
        "next_ack_id",
        "acks",
        "accepted",
        "data",
        "pid",
        "recovered",
        "mark",
        "keep",
        "replayed_to",
    )

    def __init__(self, sid: str, namespace: str, connection: Connection) -> None:
        self.sid = sid
        self.namespace = namespace
        self.connection = connection
        self.state = CONNECTING
        #: Rooms joined, own room first; dict for insertion order.
        self.rooms: dict[Hashable, None] = {sid: None}
        #: Output held back until the CONNECT reply is sent.
        self.pending: list[list[str | bytes]] | None = []
        self.next_ack_id = 0
        self.acks: dict[int, _Ack] = {}
        self.accepted = False
        self.data: dict[str, Any] = {}
        #: Connection state recovery (engine/recovery.py): the private session
        #: id, whether this socket took over a kept session, the store position
        #: at connect, and whether to keep the session when it goes.
        self.pid: str | None = None
        self.recovered = False
        self.mark: Any = 0
        self.keep = False
        #: A socket recovered from a shared store: the log position its replay
        #: went up to (the log's entries up to there are not delivered again).
        self.replayed_to: Any = None

    @property
    def environ(self) -> dict[str, Any]:
        return self.connection.environ

    @property
    def eio_sid(self) -> str:
        return self.connection.eio_sid

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    def __repr__(self) -> str:
        return f"<Socket {self.sid} {self.namespace} state={self.state}>"


class Connection:
    """One Engine.IO connection and its namespace sockets."""

    __slots__ = ("binding", "eio_sid", "environ", "decoder", "sockets", "timer", "closed")

    def __init__(
        self,
        binding: EngineBinding,
        eio_sid: str,
        environ: dict[str, Any],
        decoder: PacketDecoder,
    ) -> None:
        self.binding = binding
        self.eio_sid = eio_sid
        self.environ = environ
        self.decoder = decoder
        self.sockets: dict[str, Socket] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<Connection {self.eio_sid}>"


def data_to_args(data: Any) -> list[Any]:
    """python-socketio's ``data`` convention: ``None`` none, tuple several, else one.

    Also how a handler's return value becomes acknowledgement arguments."""
    if data is None:
        return []
    if isinstance(data, tuple):
        return list(data)
    return [data]


def _unwrap(args: tuple[Any, ...]) -> Any:
    """What ``call()`` returns: nothing -> None, one -> it, several -> the tuple."""
    if not args:
        return None
    if len(args) == 1:
        return args[0]
    return args


def _recovery_pid(auth: Any) -> str | None:
    """The private session id a reconnecting client names in its auth, if any."""
    if isinstance(auth, dict):
        pid = auth.get("pid")
        if isinstance(pid, str):
            return pid
    return None


def _start_task(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task on the running loop whose first step runs now (Python 3.12+), so a
    handler that never waits finishes without a trip through the loop's queue."""
    loop = asyncio.get_running_loop()
    if _EAGER:
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task(coro)


_EAGER = sys.version_info >= (3, 12)


def _new_sid() -> str:
    return secrets.token_urlsafe(15)


class EngineBinding:
    """One Engine.IO server served by a :class:`SocketIOServer`: the engine,
    the dispatcher its clients' handlers run in, and the
    :class:`~flask_relay.engine.interfaces.EngineHandler` given to the engine.

    Create it with :meth:`SocketIOServer.attach`. ``engine`` may be set after
    construction, for Engine.IO servers that need their handler first.
    ``on_message`` and ``on_disconnect`` are the server's own
    :meth:`~SocketIOServer.engine_message` and
    :meth:`~SocketIOServer.engine_disconnected` (an Engine.IO sid is random and
    names one connection whatever its engine), so a message goes from the
    engine to the Socket.IO decoder with no call in between; ``on_connect``
    records which engine the new connection belongs to.
    """

    __slots__ = ("dispatcher", "engine", "on_disconnect", "on_message", "server")

    def __init__(
        self, server: SocketIOServer, engine: EngineLike | None, dispatcher: DispatcherLike
    ) -> None:
        self.server = server
        self.engine: EngineLike = engine  # type: ignore[assignment]
        self.dispatcher = dispatcher
        # EngineHandler: called on the engine's loop (or the test client's thread).
        self.on_message = server.engine_message
        self.on_disconnect = server.engine_disconnected

    def on_connect(self, sid: str, environ: dict[str, Any]) -> None:
        self.server.engine_connected(self, sid, environ)


class SocketIOServer:
    """A Socket.IO server independent of any web framework.

    :param application: receives connects, events and disconnects (may be set
        later through the ``application`` attribute).
    :param namespaces: namespaces accepted in addition to those the
        application has handlers for; ``"*"`` accepts any. Default ``["/"]``.
    :param json: the JSON module for packets (see :mod:`flask_relay.protocol.jsonlib`).
    :param always_connect: send the ``CONNECT`` reply before the connect
        handler runs; a refusal then becomes a ``DISCONNECT``.
    :param connect_timeout: seconds an Engine.IO connection may stay without
        any namespace ``CONNECT`` before it is closed.
    :param max_attachments: binary attachments allowed in one packet.
    :param serializer: the packet format: ``"default"`` (JSON text with binary
        attachments) or ``"msgpack"`` (``socket.io-msgpack-parser``'s); see
        :mod:`flask_relay.protocol.codecs`.
    :param async_handlers: ``True`` (the default): a client's handler that runs
        longer than :data:`ORDER_WINDOW` lets that client's later events run beside
        it; quicker handlers of one client run one at a time, in arrival order.
        ``False``: strictly one handler at a time per client, in order.
    :param max_workers: the cap on the default dispatcher's worker threads; the
        pool grows to it only while handlers block.
    :param logger: ``True`` logs connections and events at INFO level, a
        :class:`logging.Logger` is used as is; errors are always logged.
    :param recovery: connection state recovery (:mod:`flask_relay.engine.recovery`);
        ``None``: off.
    :param session_store: where recovery keeps events and sessions (default:
        a :class:`~flask_relay.engine.recovery.MemorySessionStore`).
    """

    reason = DisconnectReason

    def __init__(
        self,
        application: SocketIOApplication | None = None,
        *,
        namespaces: list[str] | str | None = None,
        json: JSONModule | None = None,
        always_connect: bool = False,
        connect_timeout: float = 45.0,
        max_attachments: int = 10,
        async_handlers: bool = True,
        max_workers: int = DEFAULT_MAX_WORKERS,
        logger: bool | logging.Logger = False,
        serializer: str = "default",
        recovery: RecoveryOptions | None = None,
        session_store: SessionStore | None = None,
    ) -> None:
        self.application = application
        self.recovery = recovery
        if recovery is not None and session_store is None:
            session_store = MemorySessionStore(recovery)
        self.session_store = session_store if recovery is not None else None
        if namespaces == "*" or namespaces == ["*"]:
            self.namespaces: list[str] | str = "*"
        else:
            self.namespaces = list(namespaces) if namespaces else ["/"]
        self.json = json
        self.always_connect = always_connect
        self.connect_timeout = connect_timeout
        self.max_attachments = max_attachments
        self.async_handlers = async_handlers
        self.max_workers = max_workers
        # The serializer hook: one shared encoder, one decoder per connection.
        self.codec = make_codec(serializer, json, max_attachments)
        self._encoder: PacketEncoder = self.codec.encoder
        #: Watchers called after connects, room changes and events
        #: (engine/observers.py; the admin UI of engine/admin.py is one).
        self.observers: list[ServerObserver] = []
        #: Applications serving one namespace instead of ``application`` (the
        #: admin UI's namespace is one); they also make the namespace accepted.
        self.namespace_apps: dict[str, SocketIOApplication] = {}
        self._lock = threading.RLock()
        self._sockets: dict[str, Socket] = {}
        # namespace -> sid -> socket, for broadcasts to a whole namespace
        self._namespace_sockets: dict[str, dict[str, Socket]] = {}
        # namespace -> room -> sid -> socket
        self._rooms: dict[str, dict[Hashable, dict[str, Socket]]] = {}
        # namespace -> sid -> socket, for sockets out of the indexes above whose
        # disconnect handler has not finished (python-socketio still lists them
        # in manager.rooms: see engine/views.py)
        self._leaving: dict[str, dict[str, Socket]] = {}
        #: The Engine.IO options (``server.eio``'s; the extension shares its
        #: options dict here, so that assignments reach the endpoints it builds).
        self.engine_options: dict[str, Any] = {}
        self._dispatcher: Dispatcher | None = None
        # ``async def`` handlers running on the loop (strong references).
        self._loop_tasks: set[asyncio.Task[None]] = set()
        self.bindings: list[EngineBinding] = []
        #: Engine.IO sid -> connection, over every binding (written on the
        #: engines' loops; sids are random, so engines never share one).
        self._connections: dict[str, Connection] = {}
        #: The message queue shared with other processes (see :mod:`flask_relay.pubsub`).
        self.queue: QueuePublisher | None = None
        if isinstance(logger, logging.Logger):
            self.logger = logger
        else:
            self.logger = globals()["logger"]
            if logger:
                if self.logger.level == logging.NOTSET or self.logger.level > logging.INFO:
                    self.logger.setLevel(logging.INFO)
                if not self.logger.hasHandlers():
                    self.logger.addHandler(logging.StreamHandler())

    # -- wiring ------------------------------------------------------------------

    @property
    def dispatcher(self) -> Dispatcher:
        """The worker pool used by bindings created without their own dispatcher."""
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = Dispatcher(
                    self.max_workers,
                    order_window=ORDER_WINDOW if self.async_handlers else None,
                )
            return self._dispatcher

    def attach(
        self, engine: EngineLike | None = None, dispatcher: DispatcherLike | None = None
    ) -> EngineBinding:
        """Serve the clients of ``engine``; returns the handler to give it."""
        binding = EngineBinding(self, engine, dispatcher or self.dispatcher)
        with self._lock:
            self.bindings.append(binding)
        if self.queue is not None:
            # In a process forked after the queue was made (gunicorn --preload,
            # forked workers), the listener starts again here.
            self.queue.ensure_listening()
        return binding

    def detach(self, binding: EngineBinding) -> None:
        """Forget ``binding`` (its connections should be gone)."""
        with self._lock:
            if binding in self.bindings:
                self.bindings.remove(binding)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the default dispatcher's workers (after the queued calls ran)."""
        with self._lock:
            dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.shutdown(wait=wait)

    def _observe(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every observer (engine/observers.py); never raises."""
        for observer in list(self.observers):
            try:
                getattr(observer, hook)(*args)
            except Exception:
                self.logger.exception("observer %r failed in %s", observer, hook)

    def _app_for(self, namespace: str) -> SocketIOApplication | None:
        return self.namespace_apps.get(namespace, self.application)

    def instrument(self, **options: Any) -> AdminUI:
        """Serve the Socket.IO Admin UI; see :func:`flask_relay.engine.admin.instrument`."""
        return instrument_admin(self, **options)

    # -- the loop side -----------------------------------------------------------
    # Called by the engines (EngineBinding is their EngineHandler) on their loop: decode,
    # update the registry, hand user code to the dispatcher; never block.

    def engine_connected(
        self, binding: EngineBinding, eio_sid: str, environ: dict[str, Any]
    ) -> None:
        """An Engine.IO connection opened (no namespace yet: wait for CONNECT)."""
        conn = Connection(binding, eio_sid, environ, self.codec.new_decoder())
        self._connections[eio_sid] = conn
        if self.observers:
            self._observe("connection_opened", conn)
        if self.connect_timeout is not None and self.connect_timeout > 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None  # in-process engine: the client connects at once
            if loop is not None:
                conn.timer = loop.call_later(self.connect_timeout, self._connect_timed_out, conn)

    def _connect_timed_out(self, conn: Connection) -> None:
        conn.timer = None
        if not conn.sockets and not conn.closed:
            self.logger.info("%s sent no CONNECT in time: closing", conn.eio_sid)
            conn.binding.engine.disconnect(conn.eio_sid, "forced close")

    def _submit(
        self, conn: Connection, fn: Callable[..., Any], *args: Any, barrier: bool = False
    ) -> bool:
        dispatcher = conn.binding.dispatcher
        try:
            if barrier:
                dispatcher.submit_barrier(conn, fn, *args)
            else:
                dispatcher.submit(conn, fn, *args)
        except DispatchQueueFull as exc:
            self.logger.error("closing %s: %s", conn.eio_sid, exc)
            conn.binding.engine.disconnect(conn.eio_sid, "forced close")
            return False
        except DispatcherClosed as exc:
            self.logger.warning("dropping work for %s: %s", conn.eio_sid, exc)
            return False
        return True

    def connection(self, eio_sid: str) -> Connection | None:
        """The open Engine.IO connection ``eio_sid`` (of any engine), or ``None``."""
        return self._connections.get(eio_sid)

    def engine_message(self, eio_sid: str, data: str | bytes) -> None:
        """One Engine.IO message: a Socket.IO packet (or a part); the engine's
        ``on_message`` (see :class:`EngineBinding`)."""
        conn = self._connections.get(eio_sid)
        if conn is None:
            return
        if self.observers:
            self._observe("message_received", conn, data)
        try:
            packet = conn.decoder.feed(data)
        except ProtocolError as exc:
            self.logger.warning("closing %s: %s", conn.eio_sid, exc.reason)
            conn.binding.engine.disconnect(conn.eio_sid, "parse error")
            return
        if packet is None:
            return
        ptype = packet.type
        namespace = packet.namespace
        if ptype is _EVENT:
            sock = conn.sockets.get(namespace)
            if sock is None:
                self.logger.info("%s: event for unconnected namespace %s", conn.eio_sid, namespace)
                return
            if not self._run_on_loop(conn, sock, packet.data, packet.id):
                self._submit(conn, self._run_event, sock, packet.data, packet.id)
        elif ptype is _ACK:
            sock = conn.sockets.get(namespace)
            if sock is None or packet.id is None:
                return
            with self._lock:
                ack = sock.acks.pop(packet.id, None)
            if ack is None:
                self.logger.info("%s: unknown ack id %s", sock.sid, packet.id)
            elif isinstance(ack, _Waiter):
                ack.args = tuple(packet.data)
                ack.event.set()
            else:
                self._submit(conn, ack, *packet.data)
        elif ptype is _CONNECT:
            self._handle_connect(conn, namespace, packet.data)
        elif ptype is _DISCONNECT:
            with self._lock:
                sock = conn.sockets.get(namespace)
                if sock is None:
                    return
                self._begin_disconnect(sock)
            if not self._submit(
                conn, self._finish_disconnect, sock, DisconnectReason.CLIENT_DISCONNECT
            ):
                self._forget(sock)
        else:  # CONNECT_ERROR: only servers send it
            self.logger.warning("closing %s: unexpected %s packet", conn.eio_sid, ptype.name)
            conn.binding.engine.disconnect(conn.eio_sid, "parse error")

    def _accepts(self, namespace: str) -> bool:
        if self.namespaces == "*" or namespace in self.namespaces:
            return True
        if namespace in self.namespace_apps:
            return True
        app = self.application
        return app is not None and app.has_namespace(namespace)

    def _handle_connect(self, conn: Connection, namespace: str, auth: Any) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        with self._lock:
            if namespace in conn.sockets:
                self.logger.info("%s: already connected to %s", conn.eio_sid, namespace)
                return
            if not self._accepts(namespace):
                self.logger.info("%s: refused unknown namespace %s", conn.eio_sid, namespace)
                self._send_raw(
                    conn,
                    Packet(_CONNECT_ERROR, namespace, {"message": "Invalid namespace"}),
                )
                return
            store = self.session_store
            if store is not None and store.shared and _recovery_pid(auth) is not None:
                # A shared store does I/O: a worker restores the session (the
                # client sends nothing on this namespace before the reply).
                self._submit(conn, self._connect_shared, conn, namespace, auth, barrier=True)
                return
            sock = self._recover(conn, namespace, auth) if self.recovery else None
            if sock is None:
                sock = self._new_socket(conn, namespace)
            self._register(conn, sock)
        if sock.recovered and self.recovery is not None and self.recovery.skip_middlewares:
            # The reference skips its middlewares; here that is the connect handler.
            self._submit(conn, self._run_recovered, sock, barrier=True)
            return
        # A barrier: the client's events must not overtake its connect handler.
        self._submit(conn, self._run_connect, sock, auth, barrier=True)

    def _new_socket(self, conn: Connection, namespace: str) -> Socket:
        sock = Socket(_new_sid(), namespace, conn)
        if self.session_store is not None:
            sock.pid = _new_sid()
            sock.mark = self.session_store.position()
        return sock

    def _register(self, conn: Connection, sock: Socket) -> None:
        """Put ``sock`` in the indexes (with the lock held)."""
        namespace = sock.namespace
        conn.sockets[namespace] = sock
        self._sockets[sock.sid] = sock
        self._namespace_sockets.setdefault(namespace, {})[sock.sid] = sock
        rooms = self._rooms.setdefault(namespace, {})
        for room in sock.rooms:
            rooms.setdefault(room, {})[sock.sid] = sock

    def _connect_shared(self, conn: Connection, namespace: str, auth: Any) -> None:
        """A ``CONNECT`` naming a kept session of a shared store (in a worker).

        The store restores the session (Redis I/O, off the loop thread) while
        the log is not applied, and the socket is registered before the log
        goes on: the events up to the replay's end come in the replay, the
        later ones from the log, each once.
        """
        store = self.session_store
        assert store is not None
        pid = _recovery_pid(auth)
        assert pid is not None
        offset = auth.get("offset")
        if not isinstance(offset, str):
            offset = None
        with store.replaying():
            try:
                restored = store.restore(namespace, pid, offset)
            except Exception as exc:  # the store is unreachable: a fresh socket
                self.logger.warning("recovery: cannot restore %.40r: %s", pid, exc)
                restored = None
            with self._lock:
                if conn.closed or namespace in conn.sockets:
                    if restored is not None:  # not lost: kept again for the window
                        store.persist(restored.session)
                    return
                sock = None if restored is None else self._adopt(conn, namespace, restored)
                if sock is None:
                    sock = self._new_socket(conn, namespace)
                self._register(conn, sock)
        if sock.recovered and self.recovery is not None and self.recovery.skip_middlewares:
            self._run_recovered(sock)
        else:
            self._run_connect(sock, auth)

    def _recover(self, conn: Connection, namespace: str, auth: Any) -> Socket | None:
        """A socket that takes over the kept session named in ``auth``, or ``None``.

        Call with the lock held. The events the client missed become the
        socket's held-back output, so they follow the ``CONNECT`` reply and
        precede anything emitted to it from now on.
        """
        store = self.session_store
        if store is None or not isinstance(auth, dict) or not isinstance(auth.get("pid"), str):
            return None
        offset = auth.get("offset")
        if not isinstance(offset, str):
            offset = None  # no event received yet: replay from its connect
        restored = store.restore(namespace, auth["pid"], offset)
        if restored is None:
            return None
        return self._adopt(conn, namespace, restored)

    def _adopt(self, conn: Connection, namespace: str, restored: Restored) -> Socket | None:
        """The socket taking over ``restored`` (with the lock held), or ``None``."""
        store = self.session_store
        assert store is not None
        kept = restored.session
        if kept.sid in self._sockets:  # its old socket is still there: cannot happen twice
            self.logger.warning("recovery: %s is still connected; new socket instead", kept.sid)
            return None
        sock = Socket(kept.sid, namespace, conn)
        sock.pid = kept.pid
        sock.data = kept.data
        sock.rooms.update(dict.fromkeys(kept.rooms))
        sock.recovered = True
        sock.mark = store.position()
        sock.pending = list(restored.missed)
        sock.replayed_to = restored.through
        self.logger.info(
            "%s recovered on %s: %d missed event(s)", sock.sid, namespace, len(restored.missed)
        )
        return sock

    def engine_disconnected(self, eio_sid: str, reason: str) -> None:
        """Engine.IO connection ``eio_sid`` ended (an Engine.IO close reason);
        the engine's ``on_disconnect`` (see :class:`EngineBinding`)."""
        conn = self._connections.pop(eio_sid, None)
        if conn is None:
            return
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        mapped = _EIO_REASONS.get(reason, reason)
        if self.observers:
            self._observe("connection_closed", conn, reason)
        keep = self.session_store is not None and reason in RECOVERABLE_REASONS
        with self._lock:
            conn.closed = True
            socks = list(conn.sockets.values())
            for sock in socks:
                # Kept (in _forget, after the disconnect handler) if it was connected.
                sock.keep = keep and sock.state == CONNECTED
                self._begin_disconnect(sock)
        for sock in socks:
            if not self._submit(conn, self._finish_disconnect, sock, mapped):
                self._forget(sock)

    # -- the worker side ---------------------------------------------------------

    def _run_connect(self, sock: Socket, auth: Any) -> None:
        if sock.state != CONNECTING:
            return  # the client left before its turn came
        if self.always_connect:
            self._accept(sock)
        refusal: dict[str, Any] | None = None
        app = self._app_for(sock.namespace)
        try:
            result = True if app is None else app.on_connect(sock, auth)
        except ConnectionRefusedError as exc:
            refusal = exc.error_args
        except builtins.ConnectionRefusedError:
            refusal = {"message": "Connection refused by server"}
        except BaseException:
            self._refuse(sock, {"message": "Connection rejected by server"})
            raise
        else:
            if result is False:
                refusal = {"message": "Connection rejected by server"}
        if refusal is not None:
            self._refuse(sock, refusal)
            return
        if sock.state > CONNECTED:
            # disconnect() was called during the connect handler: the client
            # was refused, so no disconnect handler for it.
            return
        sock.accepted = True
        if not self.always_connect:
            self._accept(sock)
        if self.observers:
            self._observe("socket_connected", sock)
        self.logger.info("%s connected to %s", sock.sid, sock.namespace)

    def _run_recovered(self, sock: Socket) -> None:
        """A recovered socket with ``skip_middlewares``: accepted without the handler."""
        if sock.state != CONNECTING:
            return
        sock.accepted = True
        self._accept(sock)

    def _accept(self, sock: Socket) -> None:
        with self._lock:
            if sock.state != CONNECTING:
                return
            reply: dict[str, Any] = {"sid": sock.sid}
            if sock.pid is not None:
                reply["pid"] = sock.pid
            items = self._encoder.encode(Packet(_CONNECT, sock.namespace, reply))
            pending = sock.pending or ()
            sock.pending = None
            sock.state = CONNECTED
            for held in pending:
                items.extend(held)
            self._send_items(sock.connection, items)

    def _refuse(self, sock: Socket, error: dict[str, Any]) -> None:
        with self._lock:
            state = sock.state
            if state == CONNECTED:  # always_connect: already told it was connected
                self._send_raw(sock.connection, Packet(_DISCONNECT, sock.namespace))
            elif state == CONNECTING:
                self._send_raw(sock.connection, Packet(_CONNECT_ERROR, sock.namespace, error))
            if state in (CONNECTING, CONNECTED):
                self._begin_disconnect(sock)
            self._forget(sock)
        self.logger.info("%s refused on %s: %s", sock.sid, sock.namespace, error)

    def _run_event(self, sock: Socket, data: list[Any], ack_id: int | None) -> None:
        if sock.state != CONNECTED:
            return
        if self.observers:
            self._observe("event_received", sock, data)
        app = self._app_for(sock.namespace)
        if app is None:
            return
        event = data[0]
        self.logger.info("%s: event %r on %s", sock.sid, event, sock.namespace)
        result = app.on_event(sock, event, data[1:])
        if ack_id is not None and result is not NOT_HANDLED:
            with self._lock:
                if sock.state == CONNECTED:
                    self._send_raw(
                        sock.connection, Packet(_ACK, sock.namespace, data_to_args(result), ack_id)
                    )

    # -- ``async def`` event handlers: on the loop, no thread ------------------------

    def _run_on_loop(
        self, conn: Connection, sock: Socket, data: list[Any], ack_id: int | None
    ) -> bool:
        """Start the event's handler on this loop if the application has a coroutine
        for it (an ``async def`` handler); ``False``: run it in a worker as usual.

        The dispatcher keeps the client's order: the handler starts now only if
        the client has no call queued or running, else it waits its turn there
        and starts on the loop when that comes (see ``docs/handlers.md``).
        """
        dispatcher: Any = conn.binding.dispatcher  # hold/submit_elsewhere: Dispatcher's
        hold = getattr(dispatcher, "hold", None)
        app = self._app_for(sock.namespace)
        runner_for = getattr(app, "event_coroutine", None)
        if hold is None or runner_for is None or not data:
            return False
        runner = runner_for(sock, data[0])
        if runner is None:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False  # no loop here (an in-process engine): a worker runs it
        try:
            token = hold(conn)
            if token is None:
                dispatcher.submit_elsewhere(
                    conn, self._start_from_queue, loop, conn, sock, runner, data, ack_id
                )
                return True
        except DispatchQueueFull as exc:
            self.logger.error("closing %s: %s", conn.eio_sid, exc)
            conn.binding.engine.disconnect(conn.eio_sid, "forced close")
            return True
        except DispatcherClosed as exc:
            self.logger.warning("dropping work for %s: %s", conn.eio_sid, exc)
            return True
        self._start_loop_event(token, conn, sock, runner, data, ack_id)
        return True

    def _start_from_queue(
        self, token: object, loop: asyncio.AbstractEventLoop, *args: Any
    ) -> None:
        # The dispatcher's turn came (in a worker, or in release() on the loop):
        # start the handler on the loop, never here and now (no recursion).
        loop.call_soon_threadsafe(self._start_loop_event, token, *args)

    def _start_loop_event(
        self,
        token: object,
        conn: Connection,
        sock: Socket,
        runner: Callable[..., Any],
        data: list[Any],
        ack_id: int | None,
    ) -> None:
        task = _start_task(self._run_loop_event(token, conn, sock, runner, data, ack_id))
        if not task.done():  # the loop keeps only weak references to tasks
            self._loop_tasks.add(task)
            task.add_done_callback(self._loop_tasks.discard)

    async def _run_loop_event(
        self,
        token: object,
        conn: Connection,
        sock: Socket,
        runner: Callable[..., Any],
        data: list[Any],
        ack_id: int | None,
    ) -> None:
        try:
            if sock.state != CONNECTED:
                return
            if self.observers:
                self._observe("event_received", sock, data)
            event = data[0]
            self.logger.info("%s: event %r on %s (on the loop)", sock.sid, event, sock.namespace)
            try:
                result = await runner(sock, event, data[1:])
            except Exception:
                self.logger.exception(
                    "Unhandled exception in the async handler of %r (%s)", event, sock.sid
                )
                return
            if ack_id is not None and result is not NOT_HANDLED:
                with self._lock:
                    if sock.state == CONNECTED:
                        self._send_raw(
                            sock.connection,
                            Packet(_ACK, sock.namespace, data_to_args(result), ack_id),
                        )
        finally:
            conn.binding.dispatcher.release(conn, token)  # type: ignore[attr-defined]

    def _finish_disconnect(self, sock: Socket, reason: str) -> None:
        app = self._app_for(sock.namespace)
        try:
            if sock.accepted and app is not None:
                self.logger.info("%s left %s: %s", sock.sid, sock.namespace, reason)
                app.on_disconnect(sock, reason)
        finally:
            self._forget(sock)
            if sock.accepted and self.observers:
                self._observe("socket_disconnected", sock, reason)

    # -- registry (call with the lock held) --------------------------------------

    def _begin_disconnect(self, sock: Socket) -> None:
        """Take ``sock`` out of every index emits use; wake its pending calls."""
        if sock.state >= DISCONNECTING:
            return
        sock.state = DISCONNECTING
        sock.pending = None
        conn = sock.connection
        if conn.sockets.get(sock.namespace) is sock:
            del conn.sockets[sock.namespace]
        ns_sockets = self._namespace_sockets.get(sock.namespace)
        if ns_sockets is not None:
            ns_sockets.pop(sock.sid, None)
            if not ns_sockets:
                del self._namespace_sockets[sock.namespace]
        rooms = self._rooms.get(sock.namespace)
        if rooms is not None:
            for room in sock.rooms:
                members = rooms.get(room)
                if members is not None:
                    members.pop(sock.sid, None)
                    if not members:
                        del rooms[room]
            if not rooms:
                del self._rooms[sock.namespace]
        self._leaving.setdefault(sock.namespace, {})[sock.sid] = sock
        acks, sock.acks = sock.acks, {}
        for ack in acks.values():
            if isinstance(ack, _Waiter):
                ack.error = TimeoutError(f"client {sock.sid} disconnected before acknowledging")
                ack.event.set()

    def _forget(self, sock: Socket) -> None:
        with self._lock:
            if sock.state < DISCONNECTING:
                self._begin_disconnect(sock)
            sock.state = DISCONNECTED
            if self._sockets.get(sock.sid) is sock:
                del self._sockets[sock.sid]
            if sock.keep and sock.accepted and self.session_store is not None:
                sock.keep = False
                self.session_store.persist(
                    KeptSession(
                        sock.sid,
                        sock.pid or "",
                        sock.namespace,
                        list(sock.rooms),
                        sock.data,
                        sock.mark,
                    )
                )
            leaving = self._leaving.get(sock.namespace)
            if leaving is not None and leaving.pop(sock.sid, None) is not None and not leaving:
                del self._leaving[sock.namespace]

    def _send_raw(self, conn: Connection, packet: Packet) -> None:
        self._send_items(conn, self._encoder.encode(packet))

    def _send_items(self, conn: Connection, items: list[str | bytes]) -> None:
        if conn.closed:
            return
        if self.observers:
            self._observe("messages_sent", 1, items)
        engine = conn.binding.engine
        if len(items) == 1:
            engine.send(conn.eio_sid, items[0])
        else:
            engine.send_many(conn.eio_sid, items)

    def _deliver(self, sock: Socket, items: list[str | bytes]) -> None:
        state = sock.state
        if state == CONNECTED:
            self._send_items(sock.connection, items)
        elif state == CONNECTING and sock.pending is not None:
            sock.pending.append(items)

    def _deliver_many(self, socks: list[Socket], items: list[str | bytes]) -> None:
        if len(socks) == 1:
            self._deliver(socks[0], items)
            return
        by_binding: dict[EngineBinding, list[str]] = {}
        for sock in socks:
            state = sock.state
            if state == CONNECTED:
                conn = sock.connection
                if not conn.closed:
                    sids = by_binding.get(conn.binding)
                    if sids is None:
                        by_binding[conn.binding] = [conn.eio_sid]
                    else:
                        sids.append(conn.eio_sid)
            elif state == CONNECTING and sock.pending is not None:
                sock.pending.append(items)
        for binding, sids in by_binding.items():
            engine = binding.engine
            if len(sids) == 1:
                if len(items) == 1:
                    engine.send(sids[0], items[0])
                else:
                    engine.send_many(sids[0], items)
            else:
                engine.send_prepared(sids, engine.prepare(items))
            if self.observers:
                self._observe("messages_sent", len(sids), items)

    def _targets(self, namespace: str, to: Any, skip_sid: Any) -> list[Socket]:
        if to is None:
            members: Iterable[Socket] = self._namespace_sockets.get(namespace, {}).values()
        elif isinstance(to, (list, tuple, set, frozenset)):
            rooms = self._rooms.get(namespace, {})
            union: dict[str, Socket] = {}
            for room in to:
                union.update(rooms.get(room, ()))
            members = union.values()
        else:
            members = self._rooms.get(namespace, {}).get(to, {}).values()
        if skip_sid is None:
            return list(members)
        if isinstance(skip_sid, str):
            return [s for s in members if s.sid != skip_sid]
        skip = set(skip_sid)
        return [s for s in members if s.sid not in skip]

    # -- public API (any thread) -------------------------------------------------

    def emit(
        self,
        event: Any,
        data: Any = None,
        to: Any = None,
        room: Any = None,
        skip_sid: Any = None,
        namespace: str | None = None,
        callback: Callable[..., Any] | None = None,
        ignore_queue: bool = False,
    ) -> None:
        """Emit ``event`` (python-socketio's signature).

        ``data`` is one argument, or a tuple of several; ``to``/``room`` a sid,
        a room or a list of rooms (``None``: the whole namespace); ``skip_sid``
        a sid or a list of sids. With ``callback`` every recipient gets its own
        ack id and the callback runs (in a worker) once per recipient that
        acknowledges.
        """
        self.emit_args(
            event,
            data_to_args(data),
            namespace=namespace or "/",
            to=to if to is not None else room,
            skip_sid=skip_sid,
            callback=callback,
            ignore_queue=ignore_queue,
        )

    def emit_args(
        self,
        event: Any,
        args: list[Any],
        *,
        namespace: str = "/",
        to: Any = None,
        skip_sid: Any = None,
        callback: Callable[..., Any] | None = None,
        ignore_queue: bool = False,
        volatile: bool = False,
        offset: str | None = None,
    ) -> int:
        """Emit with the arguments as a list; returns the number of local recipients.

        With a message queue the emit is also published for the other
        processes' clients, unless ``ignore_queue``. A ``volatile`` emit skips
        the local clients that are over their output bound and never waits
        for room (other processes deliver it as a normal emit).

        With recovery on a shared log (:attr:`SessionStore.shared
        <flask_relay.engine.interfaces.SessionStore.shared>`), an emit without
        a callback goes to the log, and is delivered here too when the log
        gives it back: the log calls this with the entry's ``offset``.
        """
        data = [event, *args]
        store = self.session_store
        if callback is None and store is not None and store.shared and offset is None:
            store.append(
                event,
                args,
                namespace=namespace,
                to=to,
                skip_sid=skip_sid,
                volatile=volatile,
                local=ignore_queue,
            )
            with self._lock:
                socks = self._targets(namespace, to, skip_sid)
            if not volatile:
                self._wait_for_room(socks)
            return len(socks)
        if callback is None and store is not None:
            # Recovery: the offset is the last argument, handed out under the
            # lock so that offsets follow the order of sends.
            def encode(offset: str) -> list[str | bytes]:
                return self._encoder.encode(Packet(_EVENT, namespace, [*data, offset]))

            with self._lock:
                items = store.record(namespace, to, skip_sid, encode, offset)
                socks = self._targets(namespace, to, skip_sid)
                if offset is not None:
                    socks = [
                        s
                        for s in socks
                        if s.replayed_to is None or store.newer(offset, s.replayed_to)
                    ]
                if volatile:
                    socks = self._not_over_bound(socks)
                self._deliver_many(socks, items)
            if self.queue is not None and not ignore_queue and offset is None:
                self.queue.emit(event, args, namespace=namespace, room=to, skip_sid=skip_sid)
            if not volatile:
                self._wait_for_room(socks)
            return len(socks)
        if callback is None:
            # Encoding first: an unencodable payload raises here, in the caller.
            items = self._encoder.encode(Packet(_EVENT, namespace, data))
            with self._lock:
                socks = self._targets(namespace, to, skip_sid)
                if volatile:
                    socks = self._not_over_bound(socks)
                self._deliver_many(socks, items)
            if self.observers:
                self._observe("event_sent", socks, data)
            if self.queue is not None and not ignore_queue:
                self.queue.emit(event, args, namespace=namespace, room=to, skip_sid=skip_sid)
            if not volatile:
                self._wait_for_room(socks)
            return len(socks)
        if (
            self.queue is not None
            and not ignore_queue
            and to is not None
            and not (isinstance(to, str) and to in self._sockets)  # a local sid: no one else
        ):
            self.queue.emit(
                event, args, namespace=namespace, room=to, skip_sid=skip_sid, callback=callback
            )
        with self._lock:
            socks = self._targets(namespace, to, skip_sid)
            if volatile:
                socks = self._not_over_bound(socks)
            for sock in socks:
                ack_id = self._new_ack(sock, callback)
                try:
                    items = self._encoder.encode(Packet(_EVENT, namespace, data, ack_id))
                except BaseException:
                    sock.acks.pop(ack_id, None)
                    raise
                self._deliver(sock, items)
        if self.observers:
            self._observe("event_sent", socks, data)
        if not volatile:
            self._wait_for_room(socks)
        return len(socks)

    def encode_event(self, namespace: str, data: list[Any], offset: str) -> list[str | bytes]:
        """The encoded ``EVENT`` packet of ``data`` (event name first) with ``offset``
        appended: how a shared recovery store replays a kept event."""
        return self._encoder.encode(Packet(_EVENT, namespace, [*data, offset]))

    def _not_over_bound(self, socks: list[Socket]) -> list[Socket]:
        """The recipients of a volatile emit: those not over their output bound."""
        kept = []
        for sock in socks:
            conn = sock.connection
            over = getattr(conn.binding.engine, "over_bound", None)
            if over is not None and over(conn.eio_sid):
                self.logger.debug("volatile emit dropped for %s: over its output bound", sock.sid)
            else:
                kept.append(sock)
        return kept

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Sends this thread makes inside the block reach the loop in one turn.

        For a thread that applies several messages at once (the message
        queue's listener): each connection then gets one write for the batch
        rather than one per message (the engines' hubs' ``hold()``). Order is
        kept.
        """
        with contextlib.ExitStack() as stack:
            for binding in list(self.bindings):
                hold = getattr(getattr(binding.engine, "hub", None), "hold", None)
                if hold is not None:
                    stack.enter_context(hold())
            yield

    def _wait_for_room(self, socks: list[Socket]) -> None:
        """Back-pressure: wait (outside the lock) while a recipient's output is over its
        bound (see :meth:`EngineIOServer.wait_for_room
        <flask_relay.engine.eio.EngineIOServer.wait_for_room>`); no-op on the loop."""
        if not socks:
            return
        bindings = list(self.bindings)
        start = time.monotonic() if len(bindings) > 1 else 0.0
        for binding in bindings:
            wait = getattr(binding.engine, "wait_for_room", None)
            if wait is None:
                continue
            timeout = None
            if start:  # several engines: one budget per emit, whatever the engines
                default = getattr(binding.engine, "slow_consumer_timeout", 10.0) + 1.0
                timeout = max(0.0, default - (time.monotonic() - start))
            wait(
                (s.connection.eio_sid for s in socks if s.connection.binding is binding),
                timeout,
            )

    def send(
        self,
        data: Any,
        to: Any = None,
        room: Any = None,
        skip_sid: Any = None,
        namespace: str | None = None,
        callback: Callable[..., Any] | None = None,
        ignore_queue: bool = False,
    ) -> None:
        """Emit a ``message`` event."""
        self.emit("message", data, to, room, skip_sid, namespace, callback, ignore_queue)

    @staticmethod
    def _new_ack(sock: Socket, ack: _Ack) -> int:
        ack_id = sock.next_ack_id
        sock.next_ack_id = ack_id + 1
        sock.acks[ack_id] = ack
        return ack_id

    def call(
        self,
        event: Any,
        data: Any = None,
        to: Any = None,
        sid: Any = None,
        namespace: str | None = None,
        timeout: float | None = 60,
        ignore_queue: bool = False,
    ) -> Any:
        """Emit to one client and wait for its acknowledgement.

        Returns ``None``, the single argument, or a tuple of the arguments the
        client acknowledged with. Raises :class:`TimeoutError` when no ack
        arrives within ``timeout`` seconds, or as soon as the client
        disconnects; :class:`ValueError` without a recipient.

        Do not call it from a connect handler for the connecting client: the
        event is held back until the handler returns, so it would time out.
        """
        return self.call_args(
            event,
            data_to_args(data),
            to=to if to is not None else sid,
            namespace=namespace or "/",
            timeout=timeout,
            ignore_queue=ignore_queue,
        )

    def call_args(
        self,
        event: Any,
        args: list[Any],
        *,
        to: Any,
        namespace: str = "/",
        timeout: float | None = 60,
        ignore_queue: bool = False,
    ) -> Any:
        """:meth:`call` with the arguments as a list."""
        if to is None:
            raise ValueError("Cannot use call() to broadcast: give a recipient (to=sid)")
        if self._in_a_loop_thread():
            raise RuntimeError(
                "call() waits for the acknowledgement and would block the event loop "
                "(an async def handler runs on it): use emit(..., callback=...) there"
            )
        waiter = _Waiter()
        if self.queue is not None and not ignore_queue:
            with self._lock:
                local = any(s.state <= CONNECTED for s in self._targets(namespace, to, None))
            if not local:
                return self._call_remote(event, args, to, namespace, timeout)
        with self._lock:
            socks = self._targets(namespace, to, None)
            socks = [s for s in socks if s.state <= CONNECTED]
            if not socks:
                raise TimeoutError(f"no client {to!r} connected to namespace {namespace!r}")
            if len(socks) > 1:
                raise ValueError("call() needs a single recipient, not a room")
            sock = socks[0]
            ack_id = self._new_ack(sock, waiter)
            try:
                items = self._encoder.encode(Packet(_EVENT, namespace, [event, *args], ack_id))
            except BaseException:
                sock.acks.pop(ack_id, None)
                raise
            self._deliver(sock, items)
        if self.observers:
            self._observe("event_sent", [sock], [event, *args])
        if not waiter.event.wait(timeout):
            with self._lock:
                sock.acks.pop(ack_id, None)
            if not waiter.event.is_set():
                raise TimeoutError(f"no acknowledgement from {sock.sid} within {timeout} s")
        if waiter.error is not None:
            raise waiter.error
        return _unwrap(waiter.args)

    def _in_a_loop_thread(self) -> bool:
        for binding in self.bindings:
            hub = getattr(binding.engine, "hub", None)
            if hub is not None and hub.in_loop_thread():
                return True
        return False

    def _call_remote(
        self, event: Any, args: list[Any], to: Any, namespace: str, timeout: float | None
    ) -> Any:
        """``call()`` for a client of another process, through the message queue."""
        assert self.queue is not None
        waiter = _Waiter()

        def answered(*ack: Any) -> None:
            waiter.args = ack
            waiter.event.set()

        self.queue.emit(event, args, namespace=namespace, room=to, skip_sid=None, callback=answered)
        if not waiter.event.wait(timeout):
            raise TimeoutError(f"no acknowledgement from {to!r} within {timeout} s")
        return _unwrap(waiter.args)

    def _socket(self, sid: str, namespace: str | None) -> Socket | None:
        sock = self._sockets.get(sid)
        if sock is None or sock.namespace != (namespace or "/"):
            return None
        return sock

    def enter_room(
        self, sid: str, room: Hashable, namespace: str | None = None, ignore_queue: bool = False
    ) -> None:
        """Put ``sid`` in ``room`` (created on first use).

        A sid of another process is handled there, through the message queue;
        without one, unknown sids are ignored.
        """
        with self._lock:
            sock = self._socket(sid, namespace)
            remote = sock is None and self.queue is not None and not ignore_queue
            joined = False
            if sock is not None and sock.state <= CONNECTED:
                joined = room not in sock.rooms
                sock.rooms[room] = None
                rooms = self._rooms.setdefault(sock.namespace, {})
                members = rooms.get(room)
                if members is None:
                    rooms[room] = {sid: sock}
                else:
                    members[sid] = sock
        if remote and self.queue is not None:
            # Outside the lock: publishing may wait for room in the outbox.
            self.queue.enter_room(sid, room, namespace or "/")
        elif joined and sock is not None and self.observers:
            self._observe("room_joined", sock, room)

    def leave_room(
        self, sid: str, room: Hashable, namespace: str | None = None, ignore_queue: bool = False
    ) -> None:
        """Take ``sid`` out of ``room``; empty rooms disappear."""
        with self._lock:
            sock = self._socket(sid, namespace)
            remote = sock is None and self.queue is not None and not ignore_queue
            left = False
            if sock is not None and sock.state <= CONNECTED:
                left = room in sock.rooms
                sock.rooms.pop(room, None)
                rooms = self._rooms.get(sock.namespace)
                members = None if rooms is None else rooms.get(room)
                if rooms is not None and members is not None:
                    members.pop(sid, None)
                    if not members:
                        del rooms[room]
        if remote and self.queue is not None:
            self.queue.leave_room(sid, room, namespace or "/")
        elif left and sock is not None and self.observers:
            self._observe("room_left", sock, room)

    def close_room(
        self, room: Hashable, namespace: str | None = None, ignore_queue: bool = False
    ) -> None:
        """Take every member out of ``room`` (in every process, with a message queue)."""
        namespace = namespace or "/"
        if self.queue is not None and not ignore_queue:
            self.queue.close_room(room, namespace)
        with self._lock:
            rooms = self._rooms.get(namespace)
            if rooms is None:
                return
            members = rooms.pop(room, None)
            for sock in (members or {}).values():
                sock.rooms.pop(room, None)
        if members and self.observers:
            for sock in members.values():
                self._observe("room_left", sock, room)

    def rooms(self, sid: str, namespace: str | None = None) -> list[Hashable]:
        """The rooms ``sid`` is in, its own room first (also in its disconnect handler)."""
        with self._lock:
            sock = self._socket(sid, namespace)
            return [] if sock is None else list(sock.rooms)

    def get_environ(self, sid: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The WSGI environ of the client's handshake request."""
        with self._lock:
            sock = self._socket(sid, namespace)
            return None if sock is None else sock.environ

    @property
    def environ(self) -> dict[str, dict[str, Any]]:
        """The handshake environ of every connection, by Engine.IO sid (a snapshot).

        python-socketio's ``server.environ``; tests written for Flask-SocketIO
        read ``socketio.server.environ[client.eio_sid]``.
        """
        return {eio_sid: conn.environ for eio_sid, conn in list(self._connections.items())}

    # -- python-socketio's introspection attributes (engine/views.py) -----------

    @property
    def manager(self) -> ManagerView:
        """python-socketio's ``server.manager``: ``rooms``, ``get_participants``,
        ``get_rooms``... as read-only views of this server's registry."""
        return ManagerView(self)

    @property
    def eio(self) -> EngineView:
        """python-socketio's ``server.eio``: the Engine.IO options and ``sockets``."""
        return EngineView(self)

    @property
    def namespace_handlers(self) -> Mapping[str, Any]:
        """python-socketio's ``server.namespace_handlers``: namespace -> the
        class-based namespace object the application registered (read-only).

        Apps and their tests reach a ``Namespace`` instance this way to call
        its methods (``socketio.server.namespace_handlers['/chat'].emit(...)``).
        """
        handlers = getattr(self.application, "namespace_handlers", None)
        return MappingProxyType(handlers if handlers is not None else {})

    # Registry queries for the python-socketio views (engine/views.py).

    def engines(self) -> list[Any]:
        """The engines of every binding."""
        with self._lock:
            return [binding.engine for binding in self.bindings]

    def active_namespaces(self) -> list[str]:
        """Namespaces with a client (or one whose disconnect handler is pending)."""
        with self._lock:
            names = list(self._namespace_sockets)
            names.extend(ns for ns in self._leaving if ns not in self._namespace_sockets)
            return names

    def room_members(self, namespace: str, room: Hashable | None) -> dict[str, Socket]:
        """A snapshot of ``room``'s members (``None``: the namespace's clients),
        those whose disconnect handler is pending included."""
        with self._lock:
            if room is None:
                members = dict(self._namespace_sockets.get(namespace, ()))
            else:
                members = dict(self._rooms.get(namespace, {}).get(room, ()))
            for sid, sock in self._leaving.get(namespace, {}).items():
                if room is None or room in sock.rooms:
                    members[sid] = sock
            return members

    def room_member(self, namespace: str, room: Hashable | None, sid: str) -> Socket | None:
        """``sid``'s socket if it is in ``room`` (one look-up, no snapshot)."""
        with self._lock:
            if room is None:
                sock = self._namespace_sockets.get(namespace, {}).get(sid)
            else:
                sock = self._rooms.get(namespace, {}).get(room, {}).get(sid)
            if sock is None:
                sock = self._leaving.get(namespace, {}).get(sid)
                if sock is not None and room is not None and room not in sock.rooms:
                    sock = None
            return sock

    def room_size(self, namespace: str, room: Hashable | None) -> int:
        """``len(manager.rooms[namespace][room])`` without a snapshot."""
        with self._lock:
            if room is None:
                size = len(self._namespace_sockets.get(namespace, ()))
            else:
                size = len(self._rooms.get(namespace, {}).get(room, ()))
            for sock in self._leaving.get(namespace, {}).values():
                if room is None or room in sock.rooms:
                    size += 1
            return size

    def room_count(self, namespace: str) -> int:
        """``len(manager.rooms[namespace])``: cheap unless clients are leaving."""
        with self._lock:
            if self._leaving.get(namespace):
                return len(self.room_names(namespace))
            if namespace not in self._namespace_sockets:
                return 0
            return 1 + len(self._rooms.get(namespace, ()))

    def room_names(self, namespace: str) -> list[Hashable | None]:
        """``None`` then every room of ``namespace`` (python-socketio's keys)."""
        with self._lock:
            rooms = self._rooms.get(namespace, {})
            leaving = self._leaving.get(namespace, {})
            if not rooms and not leaving and namespace not in self._namespace_sockets:
                return []
            names: dict[Hashable | None, None] = {None: None}
            names.update(dict.fromkeys(rooms))
            for sock in leaving.values():
                names.update(dict.fromkeys(sock.rooms))
            return list(names)

    def lookup(self, sid: str) -> Socket | None:
        """The :class:`Socket` for ``sid`` whatever its namespace (sids are unique)."""
        with self._lock:
            return self._sockets.get(sid)

    def get_socket(self, sid: str, namespace: str | None = None) -> Socket | None:
        """The :class:`Socket` for ``sid`` (still there during its disconnect handler)."""
        with self._lock:
            return self._socket(sid, namespace)

    def get_session(self, sid: str, namespace: str | None = None) -> dict[str, Any]:
        """The user session of ``sid`` (python-socketio's ``get_session``).

        A dict that lives as long as the namespace connection; it is not the
        Flask session. Raises :class:`KeyError` for an unknown sid.
        """
        with self._lock:
            sock = self._socket(sid, namespace)
            if sock is None:
                raise KeyError(f"no session for {sid!r}: not connected")
            return sock.data

    def save_session(self, sid: str, session: dict[str, Any], namespace: str | None = None) -> None:
        """Replace the user session of ``sid`` (python-socketio's ``save_session``)."""
        with self._lock:
            sock = self._socket(sid, namespace)
            if sock is None:
                raise KeyError(f"no session for {sid!r}: not connected")
            sock.data = session

    @contextlib.contextmanager
    def session(self, sid: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """``with server.session(sid) as s:`` reads the user session and saves it after."""
        data = self.get_session(sid, namespace)
        yield data
        self.save_session(sid, data, namespace)

    def participants(self, namespace: str = "/", room: Hashable | None = None) -> list[str]:
        """Sids connected to ``namespace`` (or in ``room`` of it)."""
        with self._lock:
            return [s.sid for s in self._targets(namespace, room, None) if s.state == CONNECTED]

    def disconnect(
        self, sid: str, namespace: str | None = None, ignore_queue: bool = False
    ) -> None:
        """Disconnect ``sid`` from ``namespace``: the client gets ``DISCONNECT``.

        The disconnect handler runs in a worker after the handlers already
        queued for that client, with reason ``"server disconnect"``. The
        Engine.IO connection stays open for its other namespaces, as in the
        reference; clients close it when no namespace is left.
        """
        with self._lock:
            sock = self._socket(sid, namespace)
            store = self.session_store
            # Away, with its session kept for recovery: that ends here.
            if sock is None and store is not None and store.discard(sid, namespace or "/"):
                self.logger.info("%s: kept session discarded by disconnect()", sid)
            remote = sock is None and self.queue is not None and not ignore_queue
        if remote and self.queue is not None:
            # Outside the lock: publishing may wait for room in the outbox.
            self.queue.disconnect(sid, namespace or "/")
            return
        with self._lock:
            sock = self._socket(sid, namespace)
            if sock is None or sock.state > CONNECTED:
                return
            if sock.state == CONNECTED:
                self._send_raw(sock.connection, Packet(_DISCONNECT, sock.namespace))
            else:
                self._send_raw(
                    sock.connection,
                    Packet(
                        _CONNECT_ERROR, sock.namespace, {"message": "Connection rejected by server"}
                    ),
                )
            self._begin_disconnect(sock)
        if not self._submit(
            sock.connection, self._finish_disconnect, sock, DisconnectReason.SERVER_DISCONNECT
        ):
            self._forget(sock)
