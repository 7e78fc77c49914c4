"""The ``SocketIO`` Flask extension: a drop-in for Flask-SocketIO 5.x.

Switching from Flask-SocketIO is one line::

    from flask_relay import SocketIO, emit      # was: from flask_socketio import ...

    socketio = SocketIO(app)                    # or SocketIO() + socketio.init_app(app)

    @socketio.on("chat")
    def chat(message):
        emit("chat", message, broadcast=True)
        return "delivered"                      # the acknowledgement

    if __name__ == "__main__":
        socketio.run(app)

The constructor and ``init_app`` take Flask-SocketIO's options with the same
names and defaults. What differs is underneath: handlers run in a pool of
worker threads (no eventlet, no gevent, no monkey patching), the events of one
client run one at a time and in order while different clients run
concurrently, and ``run()`` serves the application with Flask-Relay's own
HTTP server, which is meant for production (no ``allow_unsafe_werkzeug``).

Handlers run like Flask views: inside the application context and the request
context of the connection's handshake request (``request.args``,
``request.headers``, ``request.cookies``, ``session``, ``g``,
``current_app``), with ``request.sid``, ``request.namespace`` and
``request.event`` (``{"message": name, "args": args}``) set. Handlers may
be ``async def`` (each runs to completion in its worker thread). Flask's
``before_request``/``after_request`` hooks do not run, as in Flask-SocketIO.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import flask
from flask.sessions import SessionMixin

from .engine.dispatch import DEFAULT_MAX_WORKERS
from .engine.eio import EngineIOServer
from .engine.recovery import RecoveryOptions
from .engine.sio import (
    NOT_HANDLED,
    ConnectionRefusedError,
    DisconnectReason,
    Socket,
    SocketIOServer,
)
from .engine.views import ENGINE_DEFAULTS
from .namespace import Namespace
from .protocol.codecs import SERIALIZERS, make_codec
from .protocol.errors import FlaskRelayError
from .protocol.jsonlib import JSONModule
from .pubsub import MessageQueue, QueueNotAvailable, check_url, from_url
from .server.clientfiles import ClientFilesMount
from .server.foreign import install
from .server.forward import enable
from .server.http import Server, listen_or_exit
from .server.monkey import monkey_patch_problem
from .server.mounts import build_mounts, registry
from .test_client import SocketIOTestClient

if TYPE_CHECKING:
    from .engine.admin import AdminUI

__all__ = ["DEFAULT_OPTIONS", "SocketIO"]

logger = logging.getLogger("flask_relay")

F = TypeVar("F", bound=Callable[..., Any])

#: Every option the constructor and ``init_app`` know, with its default
#: (Flask-SocketIO's defaults; the Engine.IO ones are the reference server's).
DEFAULT_OPTIONS: dict[str, Any] = {
    # Flask-SocketIO
    "manage_session": True,
    "message_queue": None,
    "channel": "flask-socketio",
    "path": "socket.io",
    # python-socketio
    "client_manager": None,
    "logger": False,
    "serializer": "default",
    "json": None,
    "async_handlers": True,
    "always_connect": False,
    "namespaces": None,
    # Engine.IO (the endpoint's own defaults have one home: engine/views.py)
    "async_mode": None,
    **ENGINE_DEFAULTS,
    "engineio_logger": False,
    # Flask-Relay
    "connect_timeout": 45,
    "max_workers": DEFAULT_MAX_WORKERS,
    "redis_options": None,
    # Node's socket.io
    "serve_client": True,
    "connection_state_recovery": None,
}

#: Options given to the Engine.IO endpoint when the server starts.
ENGINEIO_OPTIONS = (
    "ping_interval",
    "ping_timeout",
    "max_http_buffer_size",
    "allow_upgrades",
    "http_compression",
    "compression_threshold",
    "cookie",
    "cors_allowed_origins",
    "cors_credentials",
    "monitor_clients",
    "transports",
)

#: Flask-Relay's own Engine.IO options, passed on only when given.
ENGINEIO_EXTRA_OPTIONS = (
    "upgrade_timeout",
    "max_send_buffer",
    "slow_consumer_timeout",
    "max_total_send_buffer",
    "websocket_compression",
)

_ACCEPTED_ASYNC_MODES = (None, "threading", "relay", "flask_relay", "flask-relay")
_GREEN_ASYNC_MODES = ("eventlet", "gevent", "gevent_uwsgi")

# Events python-socketio never routes to a catch-all ('*') handler.
_RESERVED_EVENTS = frozenset(("connect", "connect_error", "disconnect", "__disconnect_final"))


class MessageQueueNotSupported(FlaskRelayError, NotImplementedError):
    """A ``message_queue`` URL (Kafka, unknown schemes) or ``client_manager`` refused."""


class _ManagedSession(dict[str, Any], SessionMixin):
    """The per-connection copy of the Flask session (``manage_session=True``).

    A plain dict with Flask's session attributes, forked from the cookie
    session when the connection's first handler runs. Changes stay with the
    connection: HTTP routes do not see them (use ``manage_session=False`` and
    a server-side session interface to share).
    """


_CTX_KEY = "flask_relay.request_context"


class _CachedContext:
    """A connection's reusable request context and the lock of its one user."""

    __slots__ = ("app", "ctx", "fresh", "lock")

    def __init__(self, app: flask.Flask, ctx: Any) -> None:
        self.app = app
        self.ctx = ctx
        self.fresh = True
        self.lock = threading.Lock()


def _no_match() -> None:
    return None


class _FlaskJSON:
    """``flask.json`` as a packet JSON module: compact, inside an app context.

    ``flask.json`` uses the current app's JSON provider, so encoding pushes
    the extension's app context when none is active (emits from background
    threads, for instance).
    """

    def __init__(self, socketio: SocketIO) -> None:
        self._socketio = socketio

    def _context(self) -> Any:
        app = self._socketio.app
        if flask.has_app_context() or app is None:
            return _NullContext()
        return app.app_context()

    def dumps(self, obj: Any) -> str:
        with self._context():
            return flask.json.dumps(obj, separators=(",", ":"))

    def loads(self, s: str | bytes) -> Any:
        with self._context():
            return flask.json.loads(s)


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _set_session(ctx: Any, session: Any) -> None:
    """Make ``session`` the request context's session (before or after push)."""
    if "_session" in vars(ctx):  # Flask >= 3.1: read-only property over _session
        ctx._session = session
    else:
        ctx.session = session


def _call_with_optional(handler: Callable[..., Any], *args: Any) -> Any:
    """Call ``handler(*args)``, or ``handler()`` if it takes no argument.

    Flask-SocketIO retries after any ``TypeError``, which also swallows
    ``TypeError`` raised *inside* the handler; checking the signature does not.
    """
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        try:
            return handler(*args)
        except TypeError:
            return handler()
    try:
        signature.bind(*args)
    except TypeError:
        return handler()
    return handler(*args)


def _event_args(args: tuple[Any, ...]) -> list[Any]:
    """Positional emit arguments as the event's arguments.

    Flask-SocketIO's convention is kept (one argument, a tuple for several,
    ``None`` for none), and several positional arguments also work.
    """
    if len(args) == 1:
        only = args[0]
        if only is None:
            return []
        if isinstance(only, tuple):
            return list(only)
        return [only]
    return list(args)


class _Application:
    """The :class:`SocketIOApplication` the server calls; routes to the extension.

    A separate object because Flask-SocketIO's public ``on_event`` has another
    meaning than the server interface's.
    """

    __slots__ = ("on_event", "socketio", "trigger")

    def __init__(
        self, socketio: SocketIO, trigger: Callable[[Socket, Any, Sequence[Any]], Any]
    ) -> None:
        self.socketio = socketio
        self.trigger = trigger  # SocketIO._trigger: find the handler and run it
        #: An event goes straight to ``trigger`` (no call in between).
        self.on_event = trigger

    @property
    def namespace_handlers(self) -> dict[str, Namespace]:
        """Read by ``SocketIOServer.namespace_handlers`` (python-socketio's name)."""
        return self.socketio.namespace_handlers

    def has_namespace(self, namespace: str) -> bool:
        sio = self.socketio
        return (
            namespace in sio.handlers
            or namespace in sio.namespace_handlers
            or "*" in sio.handlers
            or "*" in sio.namespace_handlers
        )

    def on_connect(self, socket: Socket, auth: Any) -> Any:
        result = self.trigger(socket, "connect", (socket.environ, auth))
        return True if result is NOT_HANDLED else result

    def event_coroutine(self, socket: Socket, event: Any) -> Callable[..., Any] | None:
        """On the loop: the runner of ``event``'s handler if it is ``async def``."""
        return self.socketio._loop_runner(socket.namespace, event)

    def on_disconnect(self, socket: Socket, reason: str) -> None:
        self.trigger(socket, "disconnect", (reason,))


class SocketIO:
    """The Socket.IO server of a Flask application.

    ``SocketIO(app, **options)``, or ``SocketIO(**options)`` then
    ``init_app(app, **more_options)`` (the two sets are merged). The options
    and their defaults are Flask-SocketIO's (see :data:`DEFAULT_OPTIONS`):

    ``manage_session`` (``True``)
        ``True``: each connection gets its own copy of the Flask session,
        taken when it connects. ``False``: Flask's session interface is used
        and saved after every handler, so a server-side session is shared with
        HTTP routes. May be changed at run time.
    ``message_queue`` (``None``), ``channel`` (``"flask-socketio"``), ``client_manager``
        Rooms and broadcasts across processes through a broker: a Redis URL
        (``redis://``, ``rediss://``, ``unix://``, ``valkey://``,
        ``redis+sentinel://``, with ``redis_options`` for the client), a
        RabbitMQ (``amqp://``), NATS (``nats://``) or ZeroMQ (``zmq+tcp://``)
        URL; or a :class:`flask_relay.pubsub.MessageQueue` as
        ``client_manager``. See ``docs/queues.md``.
        ``SocketIO(message_queue=url)`` without an app is a write-only
        emitter for other programs (Celery workers, scripts). The messages
        are python-socketio's, so Flask-SocketIO processes and external
        python-socketio emitters on the same channel interoperate.
    ``path`` (``"socket.io"``, alias ``resource``)
        The endpoint's URL path.
    ``logger``, ``engineio_logger`` (``False``)
        ``True`` logs connections and events, or give a :class:`logging.Logger`.
    ``json``
        A module with ``dumps`` and ``loads`` for packets (``flask.json`` works).
    ``always_connect`` (``False``)
        Accept connections before the connect handler runs.
    ``async_handlers`` (``True``)
        Handlers run in worker threads. ``True``: one client's quick handlers
        run one at a time, in arrival order, and a handler that runs longer
        than 0.25 s lets the client's later events run beside it (so a handler
        may wait for a later event of its own client). ``False``: strictly one
        handler at a time per client. See ``docs/handlers.md``.
    ``async_mode`` (``None``)
        May be ``None`` or ``"threading"``; ``"eventlet"`` and ``"gevent"`` are
        refused because nothing here needs them.
    ``namespaces`` (``None``)
        Namespaces accepted besides those with handlers; ``"*"`` for any.
    ``ping_interval`` (25), ``ping_timeout`` (20), ``max_http_buffer_size``
    (1,000,000), ``allow_upgrades``, ``http_compression``,
    ``compression_threshold``, ``cookie``, ``cors_allowed_origins``,
    ``cors_credentials``, ``monitor_clients``, ``transports``
        The Engine.IO endpoint's options.
    ``max_send_buffer`` (16 MiB), ``slow_consumer_timeout`` (10),
    ``max_total_send_buffer`` (256 MiB)
        Flow control: an emit waits while a recipient has more than
        ``max_send_buffer`` bytes queued (or all clients together more than
        ``max_total_send_buffer``); a client over its bound that reads nothing
        for ``slow_consumer_timeout`` seconds is closed ("slow consumer",
        see docs/handlers.md).
    ``connect_timeout`` (45)
        Seconds a client may stay connected without joining a namespace.
    ``max_workers`` (2,000)
        The cap on worker threads running handlers. The pool grows past its
        busy threads only while handlers block, and shrinks when idle.
    ``serve_client`` (``True``)
        Serve the Socket.IO browser client of the matching release under the
        endpoint's path, as the Node server's ``serveClient`` does:
        ``/socket.io/socket.io.js``, ``socket.io.min.js``,
        ``socket.io.esm.min.js``, ``socket.io.msgpack.min.js`` and their
        ``.map`` files (``ETag``, ``Cache-Control: public, max-age=0``, 304
        on ``If-None-Match``, gzip). ``False`` leaves those paths to the
        Engine.IO endpoint (400), as Flask-SocketIO has no such option.
    ``connection_state_recovery`` (``None``)
        Node's ``connectionStateRecovery``: ``{'max_disconnection_duration':
        120, 'skip_middlewares': True}`` (seconds; also ``max_packets`` and
        ``max_sessions``, 10,000 each) or ``True`` for those defaults. A
        client whose connection drops gets its sid, rooms and missed events
        back when it reconnects within the window. See ``docs/recovery.md``.
    """

    #: Disconnect reasons given to disconnect handlers.
    reason = DisconnectReason

    def __init__(self, app: flask.Flask | None = None, **kwargs: Any) -> None:
        self.app: flask.Flask | None = None
        self.server: SocketIOServer = None  # type: ignore[assignment]
        self.server_options: dict[str, Any] = {}
        #: namespace -> event -> handler (decorator handlers)
        self.handlers: dict[str, dict[str, Callable[..., Any]]] = {}
        # handler (function) -> whether it is ``async def`` (asked on the loop per event)
        self._async_handlers: dict[Callable[..., Any], bool] = {}
        #: namespace -> :class:`Namespace` instance
        self.namespace_handlers: dict[str, Namespace] = {}
        #: namespace -> error handler
        self.exception_handlers: dict[str, Callable[[BaseException], Any]] = {}
        self.default_exception_handler: Callable[[BaseException], Any] | None = None
        self.manage_session = True
        self.async_mode = "threading"
        self._http_server: Server | None = None
        # id(app) -> the prefix this endpoint is registered under there.
        self._registered: dict[int, str] = {}
        # instrument()'s options, applied again to the server init_app builds.
        self._instrument_options: dict[str, Any] | None = None
        # The queue init_app built from ``message_queue`` (not one the app gave).
        self._built_queue: MessageQueue | None = None
        if app is not None or "message_queue" in kwargs:
            self.init_app(app, **kwargs)
        else:
            self._check_options(kwargs)
            self.server_options.update(kwargs)

    # -- configuration -------------------------------------------------------------

    @staticmethod
    def _check_options(options: dict[str, Any]) -> None:
        mode = options.get("async_mode")
        if mode in _GREEN_ASYNC_MODES:
            raise ValueError(
                f"async_mode={mode!r} is not needed with Flask-Relay: handlers run in "
                "ordinary worker threads and the network runs on its own event loop, so "
                "there is nothing to monkey patch. Remove the async_mode argument (or use "
                "'threading') and uninstall eventlet/gevent if nothing else needs them."
            )
        if mode not in _ACCEPTED_ASYNC_MODES:
            raise ValueError(f"unknown async_mode {mode!r}: use None or 'threading'")
        manager = options.get("client_manager")
        if manager is not None and not isinstance(manager, MessageQueue):
            raise MessageQueueNotSupported(
                "client_manager must be a flask_relay.pubsub.MessageQueue (python-socketio "
                "managers do not plug in here); or give message_queue='redis://...' "
                "(amqp://, nats://, zmq+tcp://)"
            )
        url = options.get("message_queue")
        if url is not None and manager is None:
            try:
                check_url(str(url))
            except QueueNotAvailable as exc:
                raise MessageQueueNotSupported(str(exc)) from None
        RecoveryOptions.parse(options.get("connection_state_recovery"))
        serializer = options.get("serializer", "default")
        if serializer is not None and serializer not in SERIALIZERS:
            raise ValueError(
                f"serializer={serializer!r} is not supported: use 'default' (JSON) or "
                "'msgpack' (the socket.io-msgpack-parser format)"
            )
        if serializer == "msgpack":
            make_codec("msgpack")  # a missing msgpack package fails here, at construction

    def init_app(self, app: flask.Flask | None, **kwargs: Any) -> None:
        """Attach to ``app``: options given here are merged over the constructor's.

        Sets ``app.extensions['socketio']`` and builds a fresh :attr:`server`.
        """
        options = dict(self.server_options)
        options.update(kwargs)
        if "resource" in options:
            options["path"] = options.pop("resource")
        self._check_options(options)
        self.server_options = options
        if app is not None:
            if not hasattr(app, "extensions"):
                app.extensions = {}
            app.extensions["socketio"] = self
            self.app = app
            # Every door serves what the app's registry holds (server/mounts.py).
            self._register_mount(app)
            # Serve the endpoint under foreign WSGI servers too (flask run,
            # app.run(), gunicorn sync/gthread): a pass-through otherwise.
            install(app)
        previous = self.server
        self.manage_session = bool(self._option("manage_session"))
        json = self._option("json")
        if json is flask.json:
            json = _FlaskJSON(self)
        self.server = SocketIOServer(
            _Application(self, self._trigger),
            namespaces=self._option("namespaces"),
            json=json,
            always_connect=bool(self._option("always_connect")),
            connect_timeout=float(self._option("connect_timeout")),
            async_handlers=bool(self._option("async_handlers")),
            max_workers=int(self._option("max_workers")),
            logger=self._option("logger"),
            serializer=self._option("serializer") or "default",
            recovery=RecoveryOptions.parse(self._option("connection_state_recovery")),
        )
        # The same dict: ``socketio.server.eio.ping_timeout = 60`` reaches the
        # endpoints built afterwards (server/mounts.py builds them at run time).
        self.server.engine_options = self.server_options
        if self._instrument_options is not None:
            self.server.instrument(**self._instrument_options)
        queue = self._option("client_manager")
        if queue is not None and queue is self._built_queue and "client_manager" not in kwargs:
            # Built by an earlier init_app from message_queue: build again, so
            # SocketIO(message_queue=url) then init_app(app) is no longer write-only.
            queue = None
        url = self._option("message_queue")
        if queue is None and url is not None:
            queue = from_url(
                str(url),
                channel=str(self._option("channel")),
                write_only=app is None,
                json=json,
                options=self._option("redis_options")
                if check_url(str(url)) == "redis"
                else None,
            )
            # Where Flask-SocketIO keeps it (apps and its tests read
            # server_options['client_manager'].write_only).
            self._built_queue = queue
            options["client_manager"] = queue
        if previous is not None and previous.queue is not None and previous.queue is not queue:
            previous.queue.close()
        if queue is not None:
            queue.attach(self.server)
            self.server.queue = queue

    def _option(self, name: str) -> Any:
        return self.server_options.get(name, DEFAULT_OPTIONS[name])

    def _register_mount(self, app: flask.Flask) -> None:
        """Put this endpoint in ``app``'s mount registry (under its current path)."""
        found = registry(app)
        if found is None:
            return
        old = self._registered.get(id(app))
        prefix = "/" + self.path
        if old is not None and old != prefix:
            found.unregister(old, self._engine_mount)
        found.register(prefix, self._engine_mount)
        self._registered[id(app)] = prefix

    @property
    def path(self) -> str:
        """The Socket.IO endpoint's path, without slashes (``"socket.io"``)."""
        return str(self._option("path")).strip("/")

    def _require_server(self) -> SocketIOServer:
        if self.server is None:
            raise RuntimeError("SocketIO is not initialized: call init_app(app) first")
        return self.server

    # -- registering handlers ------------------------------------------------------

    def on(self, message: str, namespace: str | None = None) -> Callable[[F], F]:
        """Decorator: ``handler`` runs for event ``message`` in ``namespace``.

        ``"connect"`` handlers may take ``auth``; ``"disconnect"`` handlers
        may take the reason; ``"*"`` catches every event that has no handler
        (the handler gets the event name first); ``namespace="*"`` catches
        every namespace without handlers of its own. Decorators can be stacked.
        """
        ns = namespace or "/"

        def decorator(handler: F) -> F:
            self.handlers.setdefault(ns, {})[message] = handler
            return handler

        return decorator

    def event(self, *args: Any, **kwargs: Any) -> Any:
        """Decorator using the handler's name: ``@socketio.event`` or ``@socketio.event(...)``."""
        if len(args) == 1 and not kwargs and callable(args[0]):
            handler = args[0]
            return self.on(handler.__name__)(handler)

        def decorator(handler: F) -> F:
            return self.on(handler.__name__, *args, **kwargs)(handler)

        return decorator

    def on_event(
        self, message: str, handler: Callable[..., Any], namespace: str | None = None
    ) -> None:
        """``on`` without the decorator syntax."""
        self.on(message, namespace)(handler)

    def on_error(self, namespace: str | None = None) -> Callable[[F], F]:
        """Decorator: handles exceptions of ``namespace``'s handlers (its return is the ack)."""
        ns = namespace or "/"

        def decorator(handler: F) -> F:
            if not callable(handler):
                raise ValueError("exception_handler must be callable")
            self.exception_handlers[ns] = handler
            return handler

        return decorator

    def on_error_default(self, exception_handler: F) -> F:
        """Decorator: handles exceptions of namespaces without their own handler."""
        if not callable(exception_handler):
            raise ValueError("exception_handler must be callable")
        self.default_exception_handler = exception_handler
        return exception_handler

    def on_namespace(self, namespace_handler: Namespace) -> None:
        """Register a class-based :class:`~flask_relay.Namespace` instance."""
        if not isinstance(namespace_handler, Namespace):
            raise ValueError("Not a namespace instance.")
        namespace_handler._set_socketio(self)
        self.namespace_handlers[namespace_handler.namespace] = namespace_handler

    # -- dispatch (called by the server in worker threads) -------------------------

    def _trigger(self, sock: Socket, event: Any, args: Sequence[Any]) -> Any:
        """Find the handler the way python-socketio does and run it."""
        namespace = sock.namespace
        sid = sock.sid
        if not isinstance(event, str):
            return NOT_HANDLED
        for ns in (namespace, "*"):
            handlers = self.handlers.get(ns)
            if handlers is not None:
                handler = handlers.get(event)
                if handler is not None:
                    return self._handle_event(handler, event, namespace, sid, *args)
                if event not in _RESERVED_EVENTS:
                    catch_all = handlers.get("*")
                    if catch_all is not None:
                        return self._handle_event(catch_all, event, namespace, sid, event, *args)
            ns_handler = self.namespace_handlers.get(ns)
            if ns_handler is not None:
                return ns_handler.trigger_event(event, sid, *args)
        return NOT_HANDLED

    def _loop_runner(self, namespace: str, event: Any) -> Callable[..., Any] | None:
        """The runner of an ``async def`` event handler, for the event loop.

        Called on the loop for every event: finds the handler as :meth:`_trigger`
        would and returns ``runner(sock, event, args)`` (a coroutine) when the
        handler is a coroutine function, ``None`` otherwise (a worker runs it).
        A :class:`~flask_relay.Namespace` whose ``trigger_event`` is overridden
        always runs in a worker: its dispatch is the user's.
        """
        if not isinstance(event, str) or event in _RESERVED_EVENTS:
            return None
        for ns in (namespace, "*"):
            handlers = self.handlers.get(ns)
            if handlers is not None:
                handler = handlers.get(event)
                with_name = False
                if handler is None:
                    handler = handlers.get("*")
                    with_name = True
                if handler is not None:
                    if not self._is_async(handler):
                        return None
                    return self._runner(handler, with_name, None)
            ns_handler = self.namespace_handlers.get(ns)
            if ns_handler is not None:
                if type(ns_handler).trigger_event is not Namespace.trigger_event:
                    return None
                method = getattr(ns_handler, "on_" + event, None)
                if method is None or not self._is_async(method):
                    return None
                error_handler = None
                if type(ns_handler).error is not Namespace.error:
                    error_handler = ns_handler.error
                return self._runner(method, False, error_handler)
        return None

    def _is_async(self, handler: Callable[..., Any]) -> bool:
        key = getattr(handler, "__func__", handler)  # bound methods: one entry
        known = self._async_handlers.get(key)
        if known is None:
            known = self._async_handlers[key] = inspect.iscoroutinefunction(handler)
        return known

    def _runner(
        self,
        handler: Callable[..., Any],
        with_name: bool,
        error_handler: Callable[[BaseException], Any] | None,
    ) -> Callable[..., Any]:
        async def run(sock: Socket, event: str, args: list[Any]) -> Any:
            call_args = (event, *args) if with_name else tuple(args)
            return await self._handle_event_async(
                handler, event, sock, call_args, error_handler
            )

        return run

    def _handle_event(
        self,
        handler: Callable[..., Any],
        message: str | None,
        namespace: str | None,
        sid: str | None,
        *args: Any,
        error_handler: Callable[[BaseException], Any] | None = None,
    ) -> Any:
        """Run ``handler`` like a view of the connection's handshake request.

        ``args`` follow python-socketio: ``(environ, auth)`` for connect,
        ``(reason,)`` for disconnect, the event's arguments otherwise.
        """
        server = self._require_server()
        sock = server.lookup(sid) if sid is not None else None
        if sock is None or (namespace not in (None, "*") and sock.namespace != namespace):
            return "", 400
        namespace = sock.namespace
        environ = sock.environ
        app, ctx, lock = self._context_for(environ)
        try:
            return self._run_in_context(
                app, ctx, environ, handler, message, namespace, sid, args, error_handler
            )
        finally:
            if lock is not None:
                lock.release()

    async def _handle_event_async(
        self,
        handler: Callable[..., Any],
        message: str,
        sock: Socket,
        args: tuple[Any, ...],
        error_handler: Callable[[BaseException], Any] | None,
    ) -> Any:
        """:meth:`_handle_event` for an ``async def`` event handler, on the loop.

        The request context is pushed inside the handler's own task (each task
        has its own copy of the context variables Flask keeps it in), so
        ``request.sid``, ``session`` and ``g`` work as in a blocking handler
        while other tasks run between its awaits.
        """
        environ = sock.environ
        app, ctx, lock = self._context_for(environ)
        try:
            managed, saved = self._session_before_push(ctx, environ)
            with ctx:
                session_obj = self._bind_request(
                    ctx, environ, managed, saved, sock.sid, sock.namespace, message, args
                )
                try:
                    result = await handler(*args)
                except builtins.ConnectionRefusedError:
                    raise
                except Exception as exc:
                    handled = self._handle_error(exc, error_handler, sock.namespace)
                    if inspect.iscoroutine(handled):
                        handled = await handled
                    return handled
                self._save_session(app, managed, session_obj)
                return result
        finally:
            if lock is not None:
                lock.release()

    def _context_for(self, environ: dict[str, Any]) -> tuple[flask.Flask, Any, Any]:
        """The Flask app, a request context of the connection, and the lock to
        release after use (``None`` for a context built for this call only)."""
        app = environ.get("flask.app") or self.app
        if app is None:
            raise RuntimeError("no Flask application: call init_app(app) or run(app)")
        # One request context per connection, reused while nobody else has it
        # (an ack callback may run beside the connection's own handler):
        # building a Request and its URL adapter is most of the per-event cost.
        cached: _CachedContext | None = environ.get(_CTX_KEY)
        if cached is None:
            cached = _CachedContext(app, app.request_context(environ))
            environ[_CTX_KEY] = cached
        elif cached.fresh:
            # Its Request already holds the URL match (url_rule, view_args or
            # routing_exception) of this unchanging environ: skip redoing it.
            cached.fresh = False
            cached.ctx.match_request = _no_match
        if cached.app is app and cached.lock.acquire(blocking=False):
            return app, cached.ctx, cached.lock
        return app, app.request_context(environ), None

    def _run_in_context(
        self,
        app: flask.Flask,
        ctx: Any,
        environ: dict[str, Any],
        handler: Callable[..., Any],
        message: str | None,
        namespace: str,
        sid: str | None,
        args: tuple[Any, ...],
        error_handler: Callable[[BaseException], Any] | None,
    ) -> Any:
        managed, saved = self._session_before_push(ctx, environ)
        with ctx:
            session_obj = self._bind_request(
                ctx, environ, managed, saved, sid, namespace, message, args
            )
            try:
                if message == "connect":
                    auth = args[1] if len(args) > 1 else None
                    result = _call_with_optional(handler, auth)
                elif message == "disconnect":
                    result = _call_with_optional(handler, *args)
                else:
                    result = handler(*args)
                if inspect.iscoroutine(result):
                    # An ``async def`` handler: run it to completion here, in
                    # this worker thread, with the request context still active.
                    result = asyncio.run(result)
            except builtins.ConnectionRefusedError:
                raise  # a refusal, never an error for the error handlers
            except Exception as exc:
                handled = self._handle_error(exc, error_handler, namespace)
                if inspect.iscoroutine(handled):
                    handled = asyncio.run(handled)
                return handled
            self._save_session(app, managed, session_obj)
            return result

    def _session_before_push(
        self, ctx: Any, environ: dict[str, Any]
    ) -> tuple[bool, _ManagedSession | None]:
        managed = self.manage_session
        saved: _ManagedSession | None = environ.get("saved_session") if managed else None
        # Set before push: the connection's copy (Flask does not reopen the
        # cookie), or None so Flask opens the session afresh.
        _set_session(ctx, saved)
        return managed, saved

    @staticmethod
    def _bind_request(
        ctx: Any,
        environ: dict[str, Any],
        managed: bool,
        saved: _ManagedSession | None,
        sid: str | None,
        namespace: str,
        message: str | None,
        args: tuple[Any, ...],
    ) -> Any:
        """After the push: the session in use, and the request's Socket.IO attributes."""
        if managed:
            if saved is None:
                saved = _ManagedSession(flask.session)
                environ["saved_session"] = saved
                _set_session(ctx, saved)
            session_obj: Any = saved
        else:
            session_obj = ctx.session
        request: Any = ctx.request
        unmatched = request.routing_exception
        if unmatched is not None and unmatched.__traceback__ is not None:
            # The handshake URL is no view's (``/socket.io/`` seldom is): Flask
            # keeps the NotFound on the request, and its traceback would hold
            # this handler call's frames (arguments included) for as long as
            # the connection's cached context lives, ~20 objects for the
            # garbage collector to scan per connection, in a reference cycle
            # through the context. Nothing reads that traceback (nor those of
            # the exceptions it was raised in the handling of).
            exc: BaseException | None = unmatched
            while exc is not None and exc.__traceback__ is not None:
                exc.__traceback__ = None
                exc = exc.__context__
        request.sid = sid
        request.namespace = namespace
        request.event = {"message": message, "args": args}
        return session_obj

    def _handle_error(
        self,
        exc: Exception,
        error_handler: Callable[[BaseException], Any] | None,
        namespace: str,
    ) -> Any:
        """The error handler's answer to ``exc`` (re-raised when there is none)."""
        handle = error_handler
        if handle is None:
            handle = self.exception_handlers.get(namespace, self.default_exception_handler)
        if handle is None:
            raise exc
        return handle(exc)

    @staticmethod
    def _save_session(app: flask.Flask, managed: bool, session_obj: Any) -> None:
        if not managed and getattr(session_obj, "modified", True):
            app.session_interface.save_session(app, session_obj, app.response_class())

    # -- sending -------------------------------------------------------------------

    def _wrap_callback(self, callback: Callable[..., Any] | None) -> Callable[..., Any] | None:
        """Run an ack callback in the request context of the client that emitted."""
        if callback is None or not flask.has_request_context():
            return callback
        sid = getattr(flask.request, "sid", None)
        if not sid:
            return callback
        namespace = getattr(flask.request, "namespace", None)
        original = callback

        def in_context(*args: Any) -> Any:
            return self._handle_event(original, None, namespace, sid, *args)

        return in_context

    def emit(
        self,
        event: str,
        *args: Any,
        namespace: str | None = "/",
        to: Any = None,
        room: Any = None,
        include_self: bool = True,
        skip_sid: Any = None,
        callback: Callable[..., Any] | None = None,
        ignore_queue: bool = False,
        broadcast: bool = False,
        volatile: bool = False,
    ) -> None:
        """Emit ``event`` from the server (usable anywhere, in any thread).

        Without ``to``/``room`` every client of ``namespace`` receives it. One
        positional argument is one event argument (a tuple: several);
        ``include_self=False`` skips the client whose handler is running;
        ``skip_sid`` is a sid or a list; ``callback`` runs once per client that
        acknowledges, in that handler's request context if the emit came from
        a handler. ``broadcast`` is accepted (Flask-SocketIO 4 code passes it)
        and changes nothing: without ``to`` a server emit goes to everyone.
        ``volatile=True`` (Flask-Relay's, like Node's ``socket.volatile``) skips
        clients that are over their output bound and never waits for room.
        """
        server = self._require_server()
        if not include_self and not skip_sid:
            skip_sid = flask.request.sid  # type: ignore[attr-defined]
        server.emit_args(
            event,
            _event_args(args),
            namespace=namespace or "/",
            to=to if to is not None else room,
            skip_sid=skip_sid,
            callback=self._wrap_callback(callback),
            ignore_queue=ignore_queue,
            volatile=volatile,
        )

    def send(
        self,
        data: Any,
        json: bool = False,
        namespace: str | None = None,
        to: Any = None,
        callback: Callable[..., Any] | None = None,
        include_self: bool = True,
        skip_sid: Any = None,
        room: Any = None,
        ignore_queue: bool = False,
        broadcast: bool = False,
    ) -> None:
        """Send a ``message`` event (``json=True``: a ``json`` event)."""
        if not include_self and not skip_sid:
            skip_sid = flask.request.sid  # type: ignore[attr-defined]
        self.emit(
            "json" if json else "message",
            data,
            namespace=namespace,
            to=to,
            room=room,
            skip_sid=skip_sid,
            callback=callback,
            ignore_queue=ignore_queue,
        )

    def call(
        self,
        event: str,
        *args: Any,
        namespace: str | None = "/",
        to: Any = None,
        room: Any = None,
        timeout: float | None = 60,
        ignore_queue: bool = False,
    ) -> Any:
        """Emit to one client and block until it acknowledges; return the ack.

        Returns ``None``, the single argument, or a tuple of the arguments.
        Raises :class:`TimeoutError` after ``timeout`` seconds, or at once if
        the client disconnects. Works from handlers too (the acknowledgement
        is read by the event loop, not by a handler thread).
        """
        server = self._require_server()
        return server.call_args(
            event,
            _event_args(args),
            to=to if to is not None else room,
            namespace=namespace or "/",
            timeout=timeout,
            ignore_queue=ignore_queue,
        )

    def close_room(self, room: Hashable, namespace: str | None = None) -> None:
        """Take every client out of ``room``."""
        self._require_server().close_room(room, namespace or "/")

    # -- tasks ---------------------------------------------------------------------

    def start_background_task(
        self, target: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> threading.Thread:
        """Run ``target(*args, **kwargs)`` in a daemon thread; returns it (``join()``).

        A plain thread: it may block and sleep, and its emits go out at once.
        """
        thread = threading.Thread(target=target, args=args, kwargs=kwargs, daemon=True)
        thread.start()
        return thread

    def instrument(
        self,
        auth: Any = None,
        mode: str = "development",
        read_only: bool = False,
        server_id: str | None = None,
        namespace: str = "/admin",
        server_stats_interval: float = 2,
    ) -> AdminUI:
        """Serve the Socket.IO Admin UI dashboard (npm ``@socket.io/admin-ui``).

        python-socketio's ``Server.instrument``; see :mod:`flask_relay.engine.admin`.
        ``auth`` is required: ``{"username": ..., "password": ...}``, a list of
        those, a callable, or ``False``. Returns the :class:`~flask_relay.engine.admin.AdminUI`.
        """
        options: dict[str, Any] = {
            "auth": auth,
            "mode": mode,
            "read_only": read_only,
            "server_id": server_id,
            "namespace": namespace,
            "server_stats_interval": server_stats_interval,
        }
        admin = self._require_server().instrument(**options)
        self._instrument_options = options
        return admin

    def sleep(self, seconds: float = 0) -> None:
        """``time.sleep`` (kept for Flask-SocketIO code that yields to other tasks)."""
        time.sleep(seconds)

    # -- serving -------------------------------------------------------------------

    def make_server(
        self,
        app: flask.Flask,
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        debug: bool = False,
        **kwargs: Any,
    ) -> Server:
        """Build (without starting) the HTTP server :meth:`run` uses.

        Call ``start()``/``stop()`` on it to serve from a background thread
        (tests, embedding) or ``serve_forever()``. ``kwargs`` go to
        :class:`flask_relay.server.http.Server` (``certfile``, ``keyfile``,
        ``ssl``, ``wsgi_threads``, ``limits``, ``backlog``,
        ``shutdown_timeout``, ``reuse_port``).
        """
        if self.server is None or self.app is None:
            self.init_app(app)
        self.app = app
        wsgi_app: Any = app
        if debug:
            from werkzeug.debug import DebuggedApplication

            wsgi_app = DebuggedApplication(app, evalex=True)
        # Every endpoint registered on the app (a standalone EngineIO too), and
        # this one even when it was attached to another app.
        mounts = build_mounts(app, {self.path: self._engine_mount})
        return Server(wsgi_app, mounts, host=host, port=port, **kwargs)

    def _engine_mount(self) -> Any:
        """The Engine.IO endpoint bound to this Socket.IO server."""
        options = {name: self._option(name) for name in ENGINEIO_OPTIONS}
        for name in ENGINEIO_EXTRA_OPTIONS:
            if name in self.server_options:
                options[name] = self.server_options[name]
        engine = EngineIOServer(logger=self._option("engineio_logger"), **options)
        binding = self._require_server().attach(engine)
        engine.handler = binding
        if self._option("serve_client"):
            return ClientFilesMount(engine, self.path)
        return engine

    def run(
        self,
        app: flask.Flask,
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Serve ``app`` and the Socket.IO endpoint until Ctrl-C (or :meth:`stop`).

        Flask-SocketIO's arguments: ``host`` (``127.0.0.1``), ``port`` (from
        ``SERVER_NAME``, else 5000), ``debug`` (``app.debug``),
        ``use_reloader`` (= debug), ``reloader_options``, ``extra_files``,
        ``log_output`` (= debug), ``certfile``/``keyfile`` for HTTPS.
        ``peer_address`` (``$FLASK_RELAY_PEER_ADDRESS``): this host's internal
        address (``"10.0.0.2"``, ``"10.0.0.2:7000"``) for several hosts behind
        a load balancer without affinity (needs ``message_queue``; see
        ``docs/deployment.md``). There is no ``workers=`` option: run
        ``gunicorn -k flask_relay.gunicorn.Worker -w N`` for several workers.
        ``allow_unsafe_werkzeug`` is accepted and unneeded: Werkzeug's
        development server is not used. A process monkey-patched by eventlet
        or gevent exits with status 1 and a one-line reason.
        """
        problem = monkey_patch_problem()
        if problem is not None:
            sys.exit(f"Flask-Relay: {problem}")
        if host is None:
            host = "127.0.0.1"
        if port is None:
            server_name = app.config.get("SERVER_NAME")
            if server_name and ":" in server_name:
                port = int(server_name.rsplit(":", 1)[1])
            else:
                port = 5000
        debug = bool(kwargs.pop("debug", app.debug))
        log_output = bool(kwargs.pop("log_output", debug))
        use_reloader = bool(kwargs.pop("use_reloader", debug))
        reloader_options = dict(kwargs.pop("reloader_options", None) or {})
        extra_files = kwargs.pop("extra_files", None)
        if extra_files:
            reloader_options["extra_files"] = extra_files
        kwargs.pop("allow_unsafe_werkzeug", None)
        peer_address = kwargs.pop("peer_address", None) or os.environ.get(
            "FLASK_RELAY_PEER_ADDRESS"
        )
        server_kwargs = {}
        for name in (
            "certfile",
            "keyfile",
            "ssl",
            "wsgi_threads",
            "limits",
            "backlog",
            "shutdown_timeout",
            "reuse_port",
        ):
            if name in kwargs:
                server_kwargs[name] = kwargs.pop(name)
        if kwargs:
            logger.warning("run(): ignoring options %s", ", ".join(sorted(kwargs)))
        app.debug = debug
        if log_output:
            server_logger = logging.getLogger("flask_relay.server")
            server_logger.setLevel(logging.INFO)
            if not server_logger.hasHandlers():
                server_logger.addHandler(logging.StreamHandler(sys.stderr))

        def bound() -> Server:
            server = self.make_server(app, host, port, debug=debug, **server_kwargs)
            listen_or_exit(server)
            return server

        def serve(server: Server) -> None:
            forwarder = None
            if peer_address:
                # Several hosts behind a load balancer without affinity: requests
                # for sessions of other hosts are forwarded (server/forward.py).
                try:
                    forwarder = enable(server, peer_address=peer_address)
                except (OSError, ValueError) as exc:
                    sys.exit(f"Flask-Relay: peer_address {peer_address!r}: {exc}")
            self._http_server = server
            print(f" * Flask-Relay serving {server.url}/ (Ctrl-C to stop)", file=sys.stderr)
            try:
                server.serve_forever()
            finally:
                self._http_server = None
                if forwarder is not None:
                    forwarder.close()

        if use_reloader:
            if os.environ.get("WERKZEUG_RUN_MAIN") != "true":
                sys.exit(_reloader_parent(reloader_options.get("reloader_type", "auto")))
            # Bound before the file watcher starts: a child that cannot listen
            # exits with its one line and no watcher thread racing the exit.
            server = bound()
            sys.exit(self._reloader_child(lambda: serve(server), reloader_options))
        else:
            serve(bound())

    def _reloader_child(self, serve: Callable[[], None], options: dict[str, Any]) -> int:
        """The reloader's child: the server in the main thread, the file watcher in another.

        Werkzeug's ``run_with_reloader`` does the reverse (the server in a thread), so the
        server could not install its SIGINT/SIGTERM handlers and a signal arriving during
        the shutdown cut it short. Here the server owns the signals as without the
        reloader (clients get a close, disconnect handlers run); a changed file stops the
        server the same way and the child exits with 3, which asks the parent to restart.
        """
        from werkzeug._reloader import reloader_loops

        reloader = reloader_loops[options.get("reloader_type", "auto")](
            extra_files=options.get("extra_files"),
            exclude_patterns=options.get("exclude_patterns"),
            interval=options.get("interval", 1),
        )
        exit_code = 0

        def watch() -> None:
            nonlocal exit_code
            try:
                reloader.run()
            except SystemExit as exc:  # trigger_reload() calls sys.exit(3)
                exit_code = exc.code if isinstance(exc.code, int) else 3
            while True:  # the server may still be starting
                server = self._http_server
                if server is not None:
                    server.stop()
                    return
                time.sleep(0.05)

        # Entering takes the first snapshot of the watched files: before the server
        # starts, so that an edit made as soon as it answers is seen as a change.
        with reloader:
            threading.Thread(target=watch, name="flask-relay-reloader", daemon=True).start()
            serve()
        return exit_code

    def stop(self) -> None:
        """Stop the server :meth:`run` started (from a handler or another thread)."""
        server = self._http_server
        if server is None:
            raise RuntimeError("Cannot stop unknown web server: run() is not serving")
        threading.Thread(target=server.stop, daemon=True).start()

    # -- testing -------------------------------------------------------------------

    def test_client(
        self,
        app: flask.Flask,
        namespace: str | None = None,
        query_string: str | None = None,
        headers: dict[str, str] | None = None,
        auth: Any = None,
        flask_test_client: Any = None,
    ) -> SocketIOTestClient:
        """An in-process client (see :class:`flask_relay.SocketIOTestClient`)."""
        return SocketIOTestClient(
            app,
            self,
            namespace=namespace,
            query_string=query_string,
            headers=headers,
            auth=auth,
            flask_test_client=flask_test_client,
        )


def _reloader_name(reloader_type: str) -> str:
    """The name Werkzeug prints for a reloader: ``stat``, ``watchdog (inotify)``...

    The watchdog loop sets its name in ``__init__`` (the class attribute is
    empty), so an instance is made, as Werkzeug's parent process does too.
    """
    from werkzeug._reloader import reloader_loops

    return str(reloader_loops[reloader_type]().name)


def _reloader_parent(reloader_type: str) -> int:
    """Werkzeug's restart loop (the reloader's parent process), kinder to the child.

    Werkzeug's own loop kills the child 0.25 s after Ctrl-C and at once on
    SIGTERM, before the server in it can close its clients. Here SIGINT and
    SIGTERM are passed on to the child as SIGTERM and the parent waits for it.
    """
    from werkzeug._reloader import _get_args_for_reloading

    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: Any) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            name = _reloader_name(reloader_type)
            print(f" * Restarting with {name}", file=sys.stderr, flush=True)
            env = {**os.environ, "WERKZEUG_RUN_MAIN": "true"}
            child = subprocess.Popen(_get_args_for_reloading(), env=env, close_fds=False)
            code = child.wait()
            if code != 3:  # 3: the child asks for a reload
                return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ += ["ConnectionRefusedError", "JSONModule", "MessageQueueNotSupported"]
