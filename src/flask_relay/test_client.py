"""The in-process Socket.IO test client (Flask-SocketIO's, and more).

``socketio.test_client(app)`` connects at once, without a network or threads::

    client = socketio.test_client(app, auth={"token": "t"})
    assert client.is_connected()
    ack = client.emit("add", 2, 3, callback=True)     # the handler's return value
    assert client.get_received() == [{"name": "sum", "args": [5], "namespace": "/"}]

It talks to the real Socket.IO server of the extension (same encoder,
decoder, namespaces, rooms and handlers as network clients; a broadcast
reaches both) through an in-process Engine.IO stand-in. Handlers run
synchronously in the calling thread, so their exceptions surface in
:meth:`SocketIOTestClient.emit` and everything they send has arrived when
``emit`` returns. Events that are not JSON-serializable raise in the caller,
as on the network.

Beyond Flask-SocketIO's test client:

* the server can ask the client for acknowledgements: register a client-side
  handler with :meth:`SocketIOTestClient.on`, whose return value answers
  ``socketio.call()`` or an ``emit(..., callback=...)``; unanswered requests
  wait in :meth:`SocketIOTestClient.pending_acks`;
* a refused connection's payload is readable with
  :meth:`SocketIOTestClient.get_connect_error`;
* each namespace's server-side sid is in :meth:`SocketIOTestClient.get_sid`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from werkzeug.test import EnvironBuilder

from .engine.dispatch import InlineDispatcher
from .engine.local import LocalEngine, LocalSession
from .engine.sio import EngineBinding, SocketIOServer, data_to_args
from .protocol.codecs import PacketDecoder, PacketEncoder
from .protocol.socketio import Packet, PacketType

if TYPE_CHECKING:
    import flask

    from .extension import SocketIO

__all__ = ["PendingAck", "SocketIOTestClient"]

F = TypeVar("F", bound=Callable[..., Any])

_EVENTS = (PacketType.EVENT, PacketType.BINARY_EVENT)
_ACKS = (PacketType.ACK, PacketType.BINARY_ACK)


#: Each Socket.IO server's in-process engine binding (one for all its test clients).
_bindings: weakref.WeakKeyDictionary[SocketIOServer, EngineBinding] = weakref.WeakKeyDictionary()


def _local_binding(server: SocketIOServer) -> EngineBinding:
    binding = _bindings.get(server)
    if binding is None:
        engine = LocalEngine()
        binding = server.attach(engine, InlineDispatcher())
        engine.handler = binding
        _bindings[server] = binding
    return binding


def _server(socketio: SocketIO) -> SocketIOServer:
    """``socketio``'s Socket.IO server; a clear error before ``init_app``."""
    server = socketio.server
    if server is None:
        raise RuntimeError("SocketIO is not initialized: call init_app(app) first")
    return server


def _local_engine(socketio: SocketIO) -> LocalEngine:
    """The in-process engine of ``socketio``'s current server (one for all test clients)."""
    engine = _local_binding(_server(socketio)).engine
    assert isinstance(engine, LocalEngine)
    return engine


class PendingAck:
    """An event from the server that asked for an acknowledgement not yet given."""

    def __init__(
        self, client: SocketIOTestClient, namespace: str, ack_id: int, name: str, args: list[Any]
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.id = ack_id
        self.name = name
        self.args = args

    def ack(self, *args: Any) -> None:
        """Acknowledge with ``args`` (what the server's callback or ``call()`` gets)."""
        self.client.acknowledge(self, *args)

    def __repr__(self) -> str:
        return f"<PendingAck {self.name!r} id={self.id} on {self.namespace}>"


class SocketIOTestClient:
    """A Socket.IO client living in the test's own thread.

    :param app: the Flask application (its request context wraps the handlers).
    :param socketio: the application's :class:`~flask_relay.SocketIO`.
    :param namespace: the namespace to connect to first (``"/"``).
    :param query_string: added to the handshake URL (``request.args``).
    :param headers: handshake request headers (``request.headers``).
    :param auth: the ``auth`` payload given to the connect handler.
    :param flask_test_client: a Flask test client whose cookies (and so the
        Flask session) the connection carries.
    """

    #: Every client of the process, by Engine.IO session id (as in Flask-SocketIO).
    clients: ClassVar[dict[str, SocketIOTestClient]] = {}

    def __init__(
        self,
        app: flask.Flask,
        socketio: SocketIO,
        namespace: str | None = None,
        query_string: str | None = None,
        headers: Any = None,
        auth: Any = None,
        flask_test_client: Any = None,
    ) -> None:
        self.app = app
        self.socketio = socketio
        self.flask_test_client = flask_test_client
        self.eio_sid: str | None = None
        #: namespace -> connected?
        self.connected: dict[str, bool] = {}
        #: Received events not yet taken by :meth:`get_received`.
        self.queue: list[dict[str, Any]] = []
        #: The last acknowledgement received: ``{"args": [...], "namespace": ns}``.
        self.acks: dict[str, Any] | None = None
        self.callback_counter = 0
        self._sids: dict[str, str] = {}
        self._connect_errors: dict[str, Any] = {}
        self._ack_results: dict[int, list[Any]] = {}
        self._ack_callbacks: dict[int, Callable[..., Any]] = {}
        self._handlers: dict[str, dict[str, Callable[..., Any]]] = {}
        self._pending_acks: list[PendingAck] = []
        self._lock = threading.RLock()
        codec = _server(socketio).codec  # the server's serializer
        self._encoder: PacketEncoder = codec.encoder
        self._decoder: PacketDecoder = codec.new_decoder()
        self._session: LocalSession | None = None
        self.connect(namespace=namespace, query_string=query_string, headers=headers, auth=auth)

    # -- connection ----------------------------------------------------------------

    def _environ(self, query_string: str | None, headers: Any) -> dict[str, Any]:
        url = "/" + self.socketio.path + "/"
        if query_string:
            url += query_string if query_string.startswith("?") else "?" + query_string
        header_list = list(headers.items()) if isinstance(headers, dict) else headers
        builder = EnvironBuilder(url, headers=header_list)
        environ: dict[str, Any] = builder.get_environ()
        environ["flask.app"] = self.app
        ftc = self.flask_test_client
        if ftc is not None:
            add_cookies = getattr(ftc, "_add_cookies_to_wsgi", None)
            if add_cookies is not None:
                add_cookies(environ)
            else:  # Werkzeug < 2.3
                ftc.cookie_jar.inject_wsgi(environ)
        return environ

    def connect(
        self,
        namespace: str | None = None,
        query_string: str | None = None,
        headers: Any = None,
        auth: Any = None,
    ) -> None:
        """Connect to ``namespace`` (the constructor already connected the first one).

        A refusal leaves :meth:`is_connected` false and its payload in
        :meth:`get_connect_error`. An exception in the connect handler
        propagates here.
        """
        ns = namespace or "/"
        session = self._session
        engine = _local_engine(self.socketio)
        if session is None or session.closed or session.engine is not engine:
            environ = self._environ(query_string, headers)
            with self._lock:
                self._decoder = _server(self.socketio).codec.new_decoder()
            session = engine.open(environ, self._receive, self._on_closed)
            self._session = session
            self.eio_sid = session.sid
            self.clients[session.sid] = self
        elif query_string or headers:
            # Flask-SocketIO rebuilds the handshake environ on every connect();
            # keep that (and the connection's Flask session copy).
            server = self.socketio.server
            conn = server.connection(session.sid) if server is not None else None
            if conn is not None:
                environ = self._environ(query_string, headers)
                if "saved_session" in conn.environ:
                    environ["saved_session"] = conn.environ["saved_session"]
                conn.environ = environ
        with self._lock:
            self._connect_errors.pop(ns, None)
        self._send(Packet(PacketType.CONNECT, ns, auth))

    def disconnect(self, namespace: str | None = None) -> None:
        """Leave ``namespace``; the disconnect handler runs before this returns."""
        ns = namespace or "/"
        if not self.is_connected(ns):
            raise RuntimeError("not connected")
        self._send(Packet(PacketType.DISCONNECT, ns))
        with self._lock:
            self.connected.pop(ns, None)
            self._sids.pop(ns, None)
            anything_left = any(self.connected.values())
        if not anything_left and self._session is not None:
            self._session.close("client disconnect")

    def is_connected(self, namespace: str | None = None) -> bool:
        """Whether ``namespace`` is connected."""
        return self.connected.get(namespace or "/", False)

    def get_sid(self, namespace: str | None = None) -> str | None:
        """The server-side sid of this client in ``namespace`` (``request.sid`` there)."""
        return self._sids.get(namespace or "/")

    @property
    def sid(self) -> str | None:
        """The sid in the default namespace."""
        return self.get_sid("/")

    def get_connect_error(self, namespace: str | None = None) -> Any:
        """The payload of the last refused connect to ``namespace``, else ``None``.

        ``{"message": "..."}`` plus ``"data"`` when ``ConnectionRefusedError``
        got more than one argument, as real clients see it.
        """
        return self._connect_errors.get(namespace or "/")

    # -- sending -------------------------------------------------------------------

    def _send(self, packet: Packet) -> None:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("not connected")
        for item in self._encoder.encode(packet):
            session.send(item)

    def emit(self, event: str, *args: Any, **kwargs: Any) -> Any:
        """Emit ``event`` with ``args``; the handler runs before this returns.

        ``callback=True`` returns the acknowledgement (a single argument
        unwrapped, several as a list, ``None`` if none came); a callable
        ``callback`` is called with the acknowledgement's arguments.
        ``namespace`` picks the namespace; other keyword arguments (such as
        ``broadcast``) are ignored, as in Flask-SocketIO.
        """
        namespace = kwargs.pop("namespace", None) or "/"
        callback = kwargs.pop("callback", False)
        if not self.is_connected(namespace):
            raise RuntimeError("not connected")
        ack_id = None
        if callback:
            with self._lock:
                self.callback_counter += 1
                ack_id = self.callback_counter
                if callable(callback):
                    self._ack_callbacks[ack_id] = callback
        self._send(Packet(PacketType.EVENT, namespace, [event, *args], ack_id))
        if ack_id is None or callable(callback):
            return None
        with self._lock:
            result = self._ack_results.pop(ack_id, None)
        if result is None:
            return None
        return result[0] if len(result) == 1 else result

    def send(
        self,
        data: Any,
        json: bool = False,
        callback: Any = False,
        namespace: str | None = None,
    ) -> Any:
        """Send a ``message`` (``json=True``: ``json``) event; see :meth:`emit`."""
        return self.emit(
            "json" if json else "message", data, callback=callback, namespace=namespace
        )

    # -- receiving -----------------------------------------------------------------

    def get_received(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Take the events received in ``namespace``: ``{"name", "args", "namespace"}``.

        ``args`` is a list of the event's arguments, except for ``message``
        and ``json`` events, where it is the single payload.
        """
        ns = namespace or "/"
        if not self.is_connected(ns):
            raise RuntimeError("not connected")
        with self._lock:
            taken = [item for item in self.queue if item["namespace"] == ns]
            self.queue = [item for item in self.queue if item["namespace"] != ns]
        return taken

    def on(
        self, event: str, handler: Callable[..., Any] | None = None, namespace: str | None = None
    ) -> Any:
        """Register a client-side handler for ``event`` (``"*"``: any event).

        Usable as ``client.on("ask", fn)`` or as a decorator. It is called
        with the event's arguments (a ``"*"`` handler gets the name first) in
        the thread that emitted; when the server asked for an acknowledgement
        (``socketio.call()``, ``emit(..., callback=...)``), the return value
        is the answer (``None``: no arguments, a tuple: several). Events
        still appear in :meth:`get_received`.
        """
        ns = namespace or "/"

        def register(fn: F) -> F:
            with self._lock:
                self._handlers.setdefault(ns, {})[event] = fn
            return fn

        if handler is None:
            return register
        register(handler)
        return handler

    def pending_acks(self, namespace: str | None = None) -> list[PendingAck]:
        """Server events waiting for an acknowledgement no handler gave; ``.ack(*args)`` them."""
        ns = namespace or "/"
        with self._lock:
            return [p for p in self._pending_acks if p.namespace == ns]

    def _recovery_offsets(self) -> bool:
        server = self.socketio.server
        return server is not None and server.session_store is not None

    def _send_ack(self, namespace: str, ack_id: int, args: list[Any]) -> None:
        self._send(Packet(PacketType.ACK, namespace, args, ack_id))

    def acknowledge(self, pending: PendingAck, *args: Any) -> None:
        """Acknowledge ``pending`` with ``args`` (``pending.ack(*args)``): send
        the ACK, then it is no longer pending."""
        self._send_ack(pending.namespace, pending.id, list(args))
        with self._lock:
            if pending in self._pending_acks:
                self._pending_acks.remove(pending)

    def _on_closed(self, reason: str) -> None:
        with self._lock:
            for ns in list(self.connected):
                self.connected[ns] = False
            session = self._session
        if session is not None and self.clients.get(session.sid) is self:
            del self.clients[session.sid]

    def _receive(self, data: str | bytes) -> None:
        """Everything the server sends arrives here, in the sending thread."""
        with self._lock:
            packet = self._decoder.feed(data)
            if packet is None:
                return
            ns = packet.namespace
            ptype = packet.type
            if ptype is PacketType.CONNECT:
                self.connected[ns] = True
                if isinstance(packet.data, dict) and "sid" in packet.data:
                    self._sids[ns] = packet.data["sid"]
                return
            if ptype is PacketType.CONNECT_ERROR:
                self.connected[ns] = False
                self._connect_errors[ns] = packet.data
                return
            if ptype is PacketType.DISCONNECT:
                self.connected[ns] = False
                return
            if ptype in _ACKS:
                args = list(packet.data or [])
                self.acks = {"args": args, "namespace": ns}
                if packet.id is not None:
                    callback = self._ack_callbacks.pop(packet.id, None)
                    if callback is None:
                        self._ack_results[packet.id] = args
                else:
                    callback = None
            elif ptype in _EVENTS:
                callback = None
                name = packet.data[0]
                args = list(packet.data[1:])
                if packet.id is None and args and self._recovery_offsets():
                    # Connection state recovery appends an offset to every
                    # event without an ack; this client cannot reconnect, so
                    # it hides them (the JavaScript client shows them).
                    args.pop()
                if name in ("message", "json"):
                    shown: Any = args[0] if args else None
                else:
                    shown = args
                self.queue.append({"name": name, "args": shown, "namespace": ns})
            else:
                return
        # Outside the lock: user code runs below.
        if ptype in _ACKS:
            if callback is not None:
                callback(*args)
            return
        handlers = self._handlers.get(ns, {})
        handler = handlers.get(name)
        call_args = args
        if handler is None and "*" in handlers:
            handler = handlers["*"]
            call_args = [name, *args]
        if handler is None:
            if packet.id is not None:
                with self._lock:
                    self._pending_acks.append(PendingAck(self, ns, packet.id, name, args))
            return
        result = handler(*call_args)
        if packet.id is not None:
            self._send_ack(ns, packet.id, data_to_args(result))
