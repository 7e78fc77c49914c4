"""The Engine.IO layer on its own, as a public API (like npm's standalone ``engine.io``).

Use it when a client speaks plain Engine.IO (``engine.io-client``) and needs
no Socket.IO namespaces, rooms or acknowledgements::

    from flask import Flask
    from flask_relay.engineio import EngineIO

    app = Flask(__name__)
    eio = EngineIO(app)            # served at /engine.io/

    @eio.on("message")
    def message(sid, data):        # data is str or bytes
        eio.send(sid, data)

    eio.run(app, port=5000)

Handlers run in worker threads, never on the event loop: one client's
events run one at a time and in order (its ``disconnect`` last), different
clients' run concurrently. With an application given, each handler runs
inside its application context. :meth:`EngineIO.send` and
:meth:`EngineIO.disconnect` are safe from any thread.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from .engine.dispatch import (
    DEFAULT_MAX_WORKERS,
    ORDER_WINDOW,
    Dispatcher,
    DispatcherClosed,
    DispatchQueueFull,
)
from .engine.eio import EngineIOServer
from .server.foreign import install
from .server.http import Server, listen_or_exit
from .server.monkey import monkey_patch_problem
from .server.mounts import build_mounts, registry

__all__ = ["EngineIO"]

logger = logging.getLogger("flask_relay.engineio")

F = TypeVar("F", bound=Callable[..., Any])

_EVENTS = ("connect", "message", "disconnect")


class _Bridge:
    """The engine's handler: hands every event to the dispatcher (on the loop)."""

    def __init__(self, submit: Callable[..., None]) -> None:
        self.submit = submit  # EngineIO._submit(sid, event, *args)
        self.connected: set[str] = set()

    def on_connect(self, sid: str, environ: dict[str, Any]) -> None:
        self.connected.add(sid)
        self.submit(sid, "connect", sid, environ)

    def on_message(self, sid: str, data: str | bytes) -> None:
        self.submit(sid, "message", sid, data)

    def on_disconnect(self, sid: str, reason: str) -> None:
        self.connected.discard(sid)
        self.submit(sid, "disconnect", sid, reason)


class EngineIO:
    """A standalone Engine.IO server for a Flask app (or any WSGI app).

    ``options`` are the engine's, with Flask-SocketIO's names and defaults
    (see :class:`flask_relay.engine.eio.EngineIOServer`): ``ping_interval``,
    ``ping_timeout``, ``max_http_buffer_size``, ``allow_upgrades``,
    ``transports``, ``cookie``, ``cors_allowed_origins``,
    ``cors_credentials``, ``http_compression``, ``compression_threshold``.
    ``max_workers`` caps the handler thread pool (default 2,000) and
    ``async_handlers`` sets the order rule, as for ``SocketIO`` (see
    ``docs/handlers.md``): the connect handler always finishes before that
    client's messages run.
    """

    def __init__(
        self,
        app: Any = None,
        path: str = "/engine.io",
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        async_handlers: bool = True,
        **options: Any,
    ) -> None:
        self.path = "/" + path.strip("/")
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.dispatcher = Dispatcher(
            max_workers,
            order_window=ORDER_WINDOW if async_handlers else None,
            thread_name_prefix="flask-relay-eio",
        )
        self.bridge = _Bridge(self._submit)
        self.engine = EngineIOServer(self.bridge, **options)
        self.app: Any = None
        self.server: Server | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Register with a Flask app (``app.extensions["engineio"]``).

        The endpoint joins the app's mount registry, so every door serves it:
        ``eio.run``, ``socketio.run`` of a :class:`~flask_relay.SocketIO` on the
        same app, the gunicorn worker, ``flask run`` and gunicorn sync/gthread.
        """
        self.app = app
        extensions = getattr(app, "extensions", None)
        if isinstance(extensions, dict):
            extensions["engineio"] = self
            found = registry(app)
            assert found is not None
            found.register(self.path, self._mount)
            if hasattr(app, "wsgi_app"):
                # Foreign WSGI servers (flask run, gunicorn sync/gthread).
                install(app)

    def _mount(self) -> EngineIOServer:
        """The mount factory of the registry: the one engine of this extension."""
        return self.engine

    # -- handlers ----------------------------------------------------------------------

    def on(self, event: str, handler: Callable[..., Any] | None = None) -> Any:
        """Register a handler: ``connect(sid, environ)``, ``message(sid, data)``,
        ``disconnect(sid, reason)``. Use as ``@eio.on("message")`` or
        ``eio.on("message", fn)``. A connect handler that returns ``False``
        closes the connection.
        """
        if event not in _EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(_EVENTS)}")

        def register(fn: F) -> F:
            self.handlers[event] = fn
            return fn

        if handler is not None:
            return register(handler)
        return register

    def _submit(self, sid: str, event: str, *args: Any) -> None:
        if event not in self.handlers:
            return
        try:
            if event == "connect":
                self.dispatcher.submit_barrier(sid, self._run, event, args)
            else:
                self.dispatcher.submit(sid, self._run, event, args)
        except DispatchQueueFull as exc:
            logger.warning("Closing %s: %s", sid, exc)
            self.engine.disconnect(sid, "transport error")
        except DispatcherClosed:
            pass

    def _run(self, event: str, args: tuple[Any, ...]) -> None:
        handler = self.handlers.get(event)
        if handler is None:
            return
        try:
            if self.app is not None and hasattr(self.app, "app_context"):
                with self.app.app_context():
                    result = handler(*args)
            else:
                result = handler(*args)
        except Exception:
            logger.exception("Error in the %s handler for %s", event, args[0])
            return
        if event == "connect" and result is False:
            self.engine.disconnect(args[0], "forced close")

    # -- sending -----------------------------------------------------------------------

    def send(self, sid: str, data: str | bytes) -> None:
        """Send one message (text or binary) to a client; safe from any thread."""
        if not isinstance(data, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
        self.engine.send(sid, data if isinstance(data, str) else bytes(data))
        # Back-pressure: a client over max_send_buffer makes the sender wait
        # (bounded by slow_consumer_timeout; never on the loop).
        self.engine.wait_for_room((sid,))

    def disconnect(self, sid: str) -> None:
        """Close a client's connection; its disconnect handler gets "forced close"."""
        self.engine.disconnect(sid, "forced close")

    # -- serving -----------------------------------------------------------------------

    def make_server(
        self, app: Any = None, host: str = "127.0.0.1", port: int = 5000, **kwargs: Any
    ) -> Server:
        """Build (not start) the HTTP server: ``app`` for every other path."""
        if app is not None and self.app is None:
            self.init_app(app)
        wsgi_app = app if app is not None else self.app
        # Every endpoint registered on the app (a SocketIO's too), and this one.
        mounts = build_mounts(wsgi_app, {self.path: self._mount})
        server = Server(wsgi_app, mounts, host=host, port=port, **kwargs)
        self.server = server
        return server

    def run(
        self, app: Any = None, host: str = "127.0.0.1", port: int = 5000, **kwargs: Any
    ) -> None:
        """Serve until Ctrl-C or SIGTERM; disconnect handlers run, clients reconnect.

        A process monkey-patched by eventlet or gevent exits with status 1 and a
        one-line reason.
        """
        problem = monkey_patch_problem()
        if problem is not None:
            sys.exit(f"Flask-Relay: {problem}")
        server = self.make_server(app, host, port, **kwargs)
        listen_or_exit(server)
        try:
            server.serve_forever()
        finally:
            self.dispatcher.shutdown(wait=True)

    def stop(self) -> None:
        """Stop a server started by :meth:`make_server` + ``start()`` or :meth:`run`."""
        server = self.server
        if server is not None:
            server.stop()
