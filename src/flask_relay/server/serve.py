"""The life of the package's own HTTP server: listen, serve, stop, signals.

:class:`Server` binds its sockets (:func:`listen_or_exit` turns a failure into
a one-line reason and a non-zero exit), runs one :class:`~.httpconn.HTTPConnection`
per client on the hub's loop, and shuts down gracefully (mounts and WebSocket
routes first, then the connections) on :meth:`Server.stop` or SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl as ssl_module
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ..protocol.errors import FlaskRelayError
from .httpconn import HTTPConnection, HTTPLimits
from .loop import Hub
from .pool import DaemonThreadPool
from .request import (
    Mount,
)
from .wsgi import WSGIApp
from .wsroute import shutdown_routes

__all__ = ["ListenError", "Server", "listen_or_exit"]

logger = logging.getLogger("flask_relay.server")
#: One INFO line per answered WSGI request, like Werkzeug's request log (seen
#: with ``socketio.run(log_output=True)``, which sets ``flask_relay.server`` to INFO).
access_logger = logging.getLogger("flask_relay.server.access")


class ListenError(FlaskRelayError, OSError):
    """The server cannot listen on its address (in use, not ours, unknown host).

    ``str()`` is a one-line reason: ``cannot listen on 127.0.0.1:5000: address
    already in use``.
    """

    def __init__(self, host: str, port: int, reason: str) -> None:
        where = f"[{host}]" if ":" in host else (host or "*")
        super().__init__(f"cannot listen on {where}:{port}: {reason}")
        self.host = host
        self.port = port


def listen_or_exit(server: Server) -> None:
    """Bind ``server``'s address, or exit with status 1 and a one-line reason.

    For the ``run()`` entry points: a process that cannot serve must not look
    like it does (a supervisor restarts it, a developer sees why at once).
    """
    try:
        server.bind()
    except ListenError as exc:
        logger.debug("Cannot listen", exc_info=True)
        print(f"flask-relay: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _bind_sockets(host: str, port: int, *, backlog: int, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets for every address of ``host``, as ``loop.create_server``
    would make them, but here, so that failures are known before serving."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(host, port, str(exc.strerror or exc).lower()) from None
    listeners: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # Like asyncio: "::" does not also take the IPv4 port.
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(backlog)
            listener.setblocking(False)
    except OSError as exc:
        for listener in listeners:
            listener.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(host, port, reason) from None
    return listeners



def _normalize_prefix(prefix: str) -> str:
    prefix = "/" + prefix.strip("/")
    return prefix



class Server:
    """The HTTP/1.1 server: WSGI app plus natively served mounts, on one port.

    ``mounts`` maps a path prefix (``"/socket.io"``) to a :class:`Mount`;
    a request whose path is the prefix or starts with ``prefix + "/"`` goes
    to the mount, every other request to ``wsgi_app`` (404 without one).

    ``ssl`` is an :class:`ssl.SSLContext`, or give ``certfile``/``keyfile``.
    ``port=0`` picks a free port (read :attr:`port` after :meth:`start`).

    Run it with :meth:`serve_forever` (blocks, stops on SIGINT/SIGTERM), or
    :meth:`start` and :meth:`stop` (a background loop thread). Stopping is
    graceful: the listener closes, each mount closes its sessions ("server
    shutting down"; clients see a restart and reconnect), requests in
    progress get up to ``shutdown_timeout`` seconds, then every connection
    closes.
    """

    def __init__(
        self,
        wsgi_app: WSGIApp | None = None,
        mounts: Mapping[str, Mount] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 5000,
        ssl: ssl_module.SSLContext | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        wsgi_threads: int = 16,
        limits: HTTPLimits | None = None,
        hub: Hub | None = None,
        backlog: int = 2048,
        shutdown_timeout: float = 10.0,
        server_name: str | None = None,
        reuse_port: bool = False,
        sockets: Iterable[socket.socket] | None = None,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.host = host
        self._port = port
        if ssl is None and certfile is not None:
            ssl = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
            ssl.load_cert_chain(certfile, keyfile)
        self.ssl = ssl
        self.limits = limits or HTTPLimits()
        self.hub = hub or Hub()
        self.backlog = backlog
        self.shutdown_timeout = shutdown_timeout
        self.server_name = server_name
        self.reuse_port = reuse_port
        #: Listening sockets to serve instead of binding host:port (gunicorn's).
        self.sockets = list(sockets) if sockets is not None else None
        self.wsgi_threads = wsgi_threads
        # Daemon threads: a view that never returns cannot hold the process at exit.
        self.executor = DaemonThreadPool(
            max_workers=wsgi_threads,
            thread_name_prefix="flask-relay-wsgi",
            on_saturated=self._warn_wsgi_saturated,
        )
        self._mounts: list[tuple[str, Mount]] = []
        for prefix, mount in (mounts or {}).items():
            self.add_mount(prefix, mount)
        #: Open client connections (each adds and removes itself; shutdown closes them).
        self.connections: set[HTTPConnection] = set()
        self._servers: list[asyncio.Server] = []
        self._stopping = False
        self._stopped = asyncio.Event  # type: ignore[assignment]
        self._owns_hub = hub is None
        self._started = False
        self._bound: list[socket.socket] = []
        self._main_error: BaseException | None = None

    def _warn_wsgi_saturated(self, waiting: int) -> None:
        logger.warning(
            "all %d WSGI threads are busy in Flask views that have not returned "
            "(streaming responses such as Server-Sent Events, slow I/O): %d requests wait "
            "for a free thread; raise wsgi_threads (socketio.run(app, wsgi_threads=...), "
            "gunicorn --threads) or make those views return sooner. The Socket.IO and "
            "WebSocket endpoints do not use these threads.",
            self.wsgi_threads,
            waiting,
        )

    # -- configuration -------------------------------------------------------------

    def add_mount(self, prefix: str, mount: Mount) -> None:
        """Serve ``mount`` under ``prefix`` (before the server starts)."""
        self._mounts.append((_normalize_prefix(prefix), mount))
        # Longest prefix first so "/a/b" wins over "/a".
        self._mounts.sort(key=lambda item: len(item[0]), reverse=True)

    def find_mount(self, path: str) -> Mount | None:
        for prefix, mount in self._mounts:
            if path == prefix or path.startswith(prefix + "/") or prefix == "/":
                return mount
        return None

    @property
    def mounts(self) -> list[tuple[str, Mount]]:
        """The ``(prefix, mount)`` pairs served natively, longest prefix first."""
        return list(self._mounts)

    @property
    def listening(self) -> bool:
        """Whether the public listeners are open (the loop started serving)."""
        return bool(self._servers)

    def add_listener(self, listener: asyncio.Server) -> None:
        """Close ``listener`` with the server's own (an internal port it also serves)."""
        self._servers.append(listener)

    @property
    def port(self) -> int:
        """The bound port (the real one when ``port=0`` was asked)."""
        for server in self._servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{self.host}:{self.port}"

    # -- running -------------------------------------------------------------------

    def bind(self) -> None:
        """Create the listening sockets now, in the caller's thread.

        Raises :class:`ListenError` (address in use, not available, unknown
        host) before anything is served, so a caller can report it and exit.
        :meth:`start` and :meth:`serve_forever` call it when it was not called.
        Does nothing when serving inherited ``sockets``.
        """
        if self.sockets is not None or self._bound:
            return
        self._bound = _bind_sockets(
            self.host, self._port, backlog=self.backlog, reuse_port=self.reuse_port
        )

    async def _listen(self) -> None:
        for _, mount in self._mounts:
            mount.attach(self.hub)
        loop = asyncio.get_running_loop()
        if self._bound:
            for listener in self._bound:
                self._servers.append(
                    await loop.create_server(
                        lambda: HTTPConnection(self), sock=listener, ssl=self.ssl,
                        backlog=self.backlog,
                    )
                )
            logger.info("Serving on %s", self.url)
            return
        if self.sockets is not None:
            for listener in self.sockets:
                self._servers.append(
                    await loop.create_server(
                        lambda: HTTPConnection(self), sock=listener, ssl=self.ssl,
                        backlog=self.backlog,
                    )
                )
            logger.info("Serving on %d inherited socket(s)", len(self.sockets))
            return
        server = await loop.create_server(
            lambda: HTTPConnection(self),
            self.host,
            self._port,
            ssl=self.ssl,
            backlog=self.backlog,
            reuse_port=self.reuse_port or None,
        )
        self._servers.append(server)
        logger.info("Serving on %s", self.url)

    def start(self) -> None:
        """Listen and serve from a background loop thread; returns when listening."""
        if self._started:
            raise RuntimeError("the server was already started")
        self.bind()
        self._started = True
        if not self.hub.running:
            self.hub.start()
        self.hub.submit(self._listen()).result()

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop from another thread (see the class docstring)."""
        if not self._started or self._stopping:
            return
        timeout = self.shutdown_timeout + 5 if timeout is None else timeout
        if self.hub.in_loop_thread():
            raise RuntimeError("stop() must not be called on the loop thread")
        try:
            self.hub.submit(self.shutdown()).result(timeout)
        except Exception:
            logger.exception("Error during shutdown")
        if self._owns_hub:
            self.hub.stop()

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (or :meth:`stop` from another thread)."""
        if self._started:
            raise RuntimeError("the server was already started")
        self.bind()
        self._started = True
        self.hub.run(self._main())
        if self._main_error is not None:
            error, self._main_error = self._main_error, None
            raise error

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        self._done_event = done

        shutting_down: list[asyncio.Task[None]] = []

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            if shutting_down:
                # A second signal (Ctrl-C reaches a whole process group, a supervisor
                # may follow up with SIGTERM) must not cut the first shutdown short.
                logger.info("Received %s, already shutting down", name)
                return
            logger.info("Received %s, shutting down", name)
            shutting_down.append(loop.create_task(self._shutdown_and_exit()))

        installed: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
                try:
                    loop.add_signal_handler(signum, on_signal, signum)
                    installed.append(signum)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        try:
            try:
                await self._listen()
            except Exception as exc:
                # serve_forever() raises it once the loop has stopped.
                self._main_error = exc
                loop.stop()
                return
            await done.wait()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    async def _shutdown_and_exit(self) -> None:
        try:
            await self.shutdown()
        finally:
            self.hub.loop.stop()

    async def shutdown(self) -> None:
        """Stop accepting, close mounts' sessions, finish requests, close connections."""
        if self._stopping:
            return
        self._stopping = True
        for server in self._servers:
            server.close()
        for prefix, mount in self._mounts:
            try:
                await asyncio.wait_for(mount.shutdown(), self.shutdown_timeout)
            except Exception:
                logger.exception("Error while shutting down the mount at %s", prefix)
        await shutdown_routes(self.shutdown_timeout)
        for conn in list(self.connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self.executor.shutdown(wait=False)
        logger.info("Server stopped")
