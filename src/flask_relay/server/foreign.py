"""The door for foreign WSGI servers: ``flask run``, ``app.run()``, gunicorn sync/gthread.

A foreign server owns the accept loop and calls the WSGI application in its own
threads. :class:`ForeignMiddleware` wraps the application (``Sock.init_app`` and
``SocketIO.init_app`` install it) and, for a WebSocket upgrade, takes the raw
TCP socket away from the server and gives it to the event loop of this process
(a :class:`~flask_relay.server.loop.Hub` running in a daemon thread, started on
first use: :func:`shared_hub`).

Socket takeover
---------------
The server passes its socket in the environ (``werkzeug.socket``,
``gunicorn.socket``). At the moment the upgrade is accepted we

1. ``dup()`` its file descriptor; the duplicate goes to the loop, which writes
   the ``101`` response and runs the WebSocket connection from then on;
2. ``dup2()`` a dead socket (one end of a socket pair whose other end is
   closed) over the server's descriptor number.

Whatever the server does afterwards with "its" socket, it does to the dead
one: the response it writes (Werkzeug writes one after every request, which is
how Flask-Sock ends up putting ``HTTP/1.1 200 OK`` on the wire after a
WebSocket session) fails with ``EPIPE``, which both servers treat as a client
that went away, and its ``close()`` closes the dead socket. The real
connection is closed by the loop, right after the closing handshake.

The server's thread is held only until the route *accepts* the upgrade (its
first use of ``ws``): then the middleware returns, the thread goes back to the
server's pool, and the route goes on in a thread of its own. So a gunicorn
gthread worker with ``--threads 4`` serves any number of WebSocket routes, not
four (Flask-Sock #78, #39).

The Socket.IO endpoint
----------------------
Requests under a *mount* (the endpoints in the app's registry,
:mod:`flask_relay.server.mounts`: the Engine.IO endpoints of a
:class:`flask_relay.SocketIO` and of a :class:`flask_relay.engineio.EngineIO`;
or mounts given to :func:`install`) are served
by the same mount objects the own server uses (``server/request.py``). The
socket is taken over as above for those requests too: a polling request's
body is read in the server's thread, then the loop answers it (a long-poll
waits there, holding no server thread) and closes that connection, so even
gunicorn's sync worker serves long-polling clients; a WebSocket upgrade is
run by the mount on the loop. Under a server that exposes no raw socket
(TLS terminated by the WSGI server), a polling request waits in the server's
thread instead, and the WebSocket transport is refused with 400.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, cast

from .loop import Hub
from .monkey import monkey_patch_problem, warn_monkey_patch
from .mounts import registry
from .request import HTTPRequest, Mount, bodyless_status, reason_phrase, response_bytes
from .wscontract import UPGRADER_KEY
from .wsroute import (
    RouteChannel,
    RouteUpgrader,
    dispatch_upgrade,
    environ_headers,
    is_websocket_upgrade,
    shutdown_routes,
)

__all__ = [
    "ForeignMiddleware",
    "SocketTakeover",
    "TakenSocketHandle",
    "install",
    "raw_socket",
    "shared_hub",
    "take_socket",
]

logger = logging.getLogger("flask_relay.server")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_hub_lock = threading.Lock()
_hub: Hub | None = None
_hub_pid = 0


def shared_hub() -> Hub:
    """This process's hub for connections taken from a foreign server.

    Started on first use in a daemon thread. A forked child (gunicorn workers
    after ``--preload``) gets a new one: a loop does not survive ``fork``.
    """
    global _hub, _hub_pid
    hub = _hub
    if hub is not None and _hub_pid == os.getpid():
        return hub
    with _hub_lock:
        if _hub is None or _hub_pid != os.getpid():
            hub = Hub()
            hub.start(name="flask-relay-loop")
            _hub, _hub_pid = hub, os.getpid()
            atexit.register(_close_at_exit, hub)
        assert _hub is not None
        return _hub


#: Seconds the process waits at exit for clients to answer the 1001 close frames.
EXIT_CLOSE_TIMEOUT = 2.0


def _close_at_exit(hub: Hub) -> None:
    """At interpreter exit (Ctrl-C on ``flask run``, a gunicorn worker that
    stops), close Socket.IO sessions ("server shutting down") and route
    connections (1001) instead of dropping them."""
    if not hub.running or os.getpid() != _hub_pid:
        return

    async def close_all() -> None:
        for mount in list(_attached_mounts):
            try:
                await asyncio.wait_for(mount.shutdown(), EXIT_CLOSE_TIMEOUT)
            except Exception:
                logger.exception("Error while shutting down %r", mount)
        await shutdown_routes(EXIT_CLOSE_TIMEOUT)

    try:
        hub.submit(close_all()).result(2 * EXIT_CLOSE_TIMEOUT + 1)
    except Exception:  # the loop is going away anyway
        pass


#: Mounts attached to this process's shared hub (closed at exit).
_attached_mounts: list[Mount] = []


def raw_socket(environ: dict[str, Any]) -> socket.socket | None:
    """The client socket a foreign server exposes in the environ, if usable."""
    for key in ("gunicorn.socket", "werkzeug.socket"):
        sock = environ.get(key)
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            return sock
    return None


def take_socket(sock: socket.socket) -> socket.socket:
    """Take the connection under ``sock`` away from its owner (see module doc).

    Returns a new socket object on a duplicate of the descriptor; ``sock``'s
    descriptor number now refers to a dead socket.
    """
    fd = sock.fileno()
    new_fd = os.dup(fd)
    try:
        dead, peer = socket.socketpair()
        peer.close()
        try:
            os.dup2(dead.fileno(), fd)
        finally:
            dead.close()
        taken = socket.socket(fileno=new_fd)
    except BaseException:
        os.close(new_fd)
        raise
    taken.setblocking(False)
    return taken


class SocketTakeover(RouteUpgrader):
    """The upgrader a foreign server's request gets: takes the socket over."""

    def __init__(self, hub: Hub, environ: dict[str, Any], sock: socket.socket) -> None:
        super().__init__(hub, environ)
        self._sock = sock

    def start(self, channel: RouteChannel) -> None:
        taken = take_socket(self._sock)
        self.hub.call(_connect, self.hub.loop, taken, channel)


def _connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.BaseProtocol
) -> None:
    async def run() -> None:
        try:
            await loop.connect_accepted_socket(lambda: protocol, sock)
        except OSError as exc:
            sock.close()
            protocol.connection_lost(exc)

    task = loop.create_task(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task[None]] = set()


class _WriteAndClose(asyncio.Protocol):
    """Writes one prepared response on a taken socket, then closes it."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._data)  # type: ignore[attr-defined]
        transport.close()


class _EarlyTransport(asyncio.Transport):
    """Stands for a taken socket's transport before the loop has made it.

    The own server's ``UpgradeHandle.switch`` calls ``connection_made``
    during the call, and mounts rely on it; a taken socket only gets its
    transport from ``connect_accepted_socket`` a moment later. This object is
    handed to the protocol at once: it buffers writes and remembers
    ``close``/``abort``/``pause_reading`` until the real transport exists,
    then forwards everything to it (and its events back to the protocol).
    """

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._protocol = protocol
        self._real: asyncio.Transport | None = None
        self._buffer: list[bytes] = []
        self._closing = False
        self._aborted = False
        self._paused = False
        self._limits: tuple[int | None, int | None] | None = None

    # -- transport side (what the protocol calls) ----------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._real is not None:
            self._real.write(data)
        elif not self._closing:
            self._buffer.append(bytes(data))

    def close(self) -> None:
        if self._real is not None:
            self._real.close()
        self._closing = True

    def abort(self) -> None:
        if self._real is not None:
            self._real.abort()
        self._closing = self._aborted = True

    def is_closing(self) -> bool:
        return self._real.is_closing() if self._real is not None else self._closing

    def pause_reading(self) -> None:
        if self._real is not None:
            self._real.pause_reading()
        self._paused = True

    def resume_reading(self) -> None:
        if self._real is not None:
            self._real.resume_reading()
        self._paused = False

    def is_reading(self) -> bool:
        return self._real.is_reading() if self._real is not None else not self._paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._real is not None:
            self._real.set_write_buffer_limits(high, low)
        self._limits = (high, low)

    def get_write_buffer_size(self) -> int:
        if self._real is not None:
            return self._real.get_write_buffer_size()
        return sum(len(b) for b in self._buffer)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._real is not None:
            return self._real.get_extra_info(name, default)
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- the real transport arrives ---------------------------------------------

    def attach(self, real: asyncio.Transport) -> None:
        self._real = real
        if self._limits is not None:
            real.set_write_buffer_limits(*self._limits)
        if self._paused:
            real.pause_reading()
        for chunk in self._buffer:
            real.write(chunk)
        self._buffer = []
        if self._aborted:
            real.abort()
        elif self._closing:
            real.close()


class _Relay(asyncio.Protocol):
    """The loop's protocol for a taken socket: passes events on to the real one."""

    def __init__(self, early: _EarlyTransport) -> None:
        self._early = early

    @property
    def _protocol(self) -> asyncio.Protocol:
        # Looked up each time: the protocol may switch (set_protocol).
        return cast(asyncio.Protocol, self._early.get_protocol())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._early.attach(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return self._protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


class TakenSocketHandle:
    """An :class:`~flask_relay.server.request.UpgradeHandle` over a socket taken
    from a foreign server (used on the loop thread, like the own server's).

    As with the own server, ``switch`` calls ``protocol.connection_made``
    before it returns (with an :class:`_EarlyTransport` that forwards to the
    real transport once the loop has made it).
    """

    def __init__(self, hub: Hub, sock: socket.socket) -> None:
        self._hub = hub
        self._sock: socket.socket | None = sock

    def _give(self, protocol: asyncio.BaseProtocol) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            raise RuntimeError("the upgrade was already answered")
        _connect(self._hub.loop, sock, protocol)

    def reject(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.write_raw_and_close(response_bytes(status, headers, body, keep_alive=False))

    def write_raw_and_close(self, data: bytes) -> None:
        if self._sock is not None:
            self._give(_WriteAndClose(data))

    def switch(self, protocol: Any) -> None:
        early = _EarlyTransport(protocol)
        self._give(_Relay(early))
        protocol.connection_made(early)


class _HeldRequest(asyncio.Protocol):
    """A mount request whose socket was taken from the foreign server.

    A :class:`~flask_relay.server.request.Responder`: the answer is written
    on the loop whenever the mount gives it (a long-poll may wait), with
    ``Connection: close``, and the connection is closed after it. The server
    thread that received the request was released at once. A client that goes
    away before the answer triggers the mount's ``on_abort``.
    """

    def __init__(self, head_only: bool = False) -> None:
        self.on_abort: Callable[[], None] | None = None
        self._done = False
        self._head_only = head_only
        self._transport: asyncio.Transport | None = None
        self._pending: bytes | None = None

    @property
    def done(self) -> bool:
        return self._done

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self._done:
            return
        self._done = True
        try:
            data = response_bytes(
                status, headers, body, keep_alive=False, head_only=self._head_only
            )
        except ValueError:
            logger.exception("A mount answered with an invalid response")
            data = response_bytes(500, [], b"", keep_alive=False)
        if self._transport is None:
            self._pending = data
        else:
            self._transport.write(data)
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._pending is not None:
            self._transport.write(self._pending)
            self._transport.close()
            self._pending = None

    def data_received(self, data: bytes) -> None:
        pass  # nothing may follow: the response closes the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self._done:
            self._done = True
            if self.on_abort is not None:
                try:
                    self.on_abort()
                except Exception:
                    logger.exception("Error in a mount's abort callback")


class _WaitingResponder:
    """A mount's :class:`~flask_relay.server.request.Responder` for a request
    whose server thread waits for the answer."""

    def __init__(self) -> None:
        self.on_abort: Callable[[], None] | None = None
        self._done = False
        self.ready = threading.Event()
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.body = b""

    @property
    def done(self) -> bool:
        return self._done

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self._done:
            return
        self._done = True
        self.status, self.headers, self.body = status, list(headers), body
        self.ready.set()


#: Longest a server thread waits for a mount's answer (a long-poll answers
#: within the ping interval; this only bounds a mount that never answers).
MOUNT_ANSWER_TIMEOUT = 120.0


def _http_request(environ: dict[str, Any]) -> HTTPRequest:
    """The mount-side view of a WSGI request (without its body)."""
    headers = [(name, value) for name, value in environ_headers(environ)]
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", str(environ["CONTENT_TYPE"])))
    if environ.get("CONTENT_LENGTH"):
        headers.append(("Content-Length", str(environ["CONTENT_LENGTH"])))
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    client = None
    if environ.get("REMOTE_ADDR"):
        try:
            client = (str(environ["REMOTE_ADDR"]), int(environ.get("REMOTE_PORT") or 0))
        except ValueError:
            client = (str(environ["REMOTE_ADDR"]), 0)
    try:
        server_port = int(environ.get("SERVER_PORT") or 80)
    except ValueError:
        server_port = 80
    version = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).partition("/")[2] or "1.1"
    return HTTPRequest(
        str(environ.get("REQUEST_METHOD", "GET")),
        path,
        str(environ.get("QUERY_STRING", "")),
        headers,
        http_version=version,
        client=client,
        server=(str(environ.get("SERVER_NAME", "127.0.0.1")), server_port),
        scheme=str(environ.get("wsgi.url_scheme", "http")),
        upgrade=is_websocket_upgrade(environ),
    )


def _read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The request body, or ``None`` when it is longer than ``limit``."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            size = 0
        if size > limit:
            return None
        return bytes(stream.read(size)) if size > 0 else b""
    if environ.get("wsgi.input_terminated"):
        data = bytes(stream.read(limit + 1))
        return None if len(data) > limit else data
    return b""


class ForeignMiddleware:
    """WSGI middleware: WebSocket routes and the Socket.IO endpoint under a
    foreign server.

    Requests under a mount go to the mount (see the module doc); WebSocket
    upgrades elsewhere go to the application with an upgrader for its routes;
    everything else (and every request that arrives through Flask-Relay's own
    server, which offers its own upgrader and serves mounts itself) goes to
    the wrapped application unchanged.
    """

    def __init__(
        self,
        wsgi_app: WSGIApp,
        hub: Callable[[], Hub] = shared_hub,
        mounts: dict[str, Mount] | None = None,
        flask_app: Any = None,
    ) -> None:
        self.wsgi_app = wsgi_app
        self._hub = hub
        self._mounts: dict[str, Mount] = {
            "/" + prefix.strip("/"): mount for prefix, mount in (mounts or {}).items()
        }
        self._flask_app = flask_app
        self._discovered = False
        self._attached: set[int] = set()
        self._lock = threading.Lock()

    def add_mount(self, prefix: str, mount: Mount) -> None:
        """Serve ``mount`` under ``prefix`` in this process."""
        with self._lock:
            self._mounts["/" + prefix.strip("/")] = mount

    def _discover(self) -> None:
        # The app's registered endpoints (server/mounts.py) are built on first
        # use, so that the extensions may be created in any order.
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            found = registry(self._flask_app, create=False) if self._flask_app else None
            if found is None:
                return
            for prefix, factory in found.factories().items():
                if prefix in self._mounts:
                    continue
                try:
                    self._mounts[prefix] = factory()
                except Exception:
                    logger.exception("Cannot serve the endpoint at %s under this server", prefix)

    def _find_mount(self, path: str) -> tuple[str, Mount] | None:
        if not self._discovered:
            self._discover()
        for prefix in sorted(self._mounts, key=len, reverse=True):
            if path == prefix or path.startswith(prefix + "/"):
                return prefix, self._mounts[prefix]
        return None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if "flask_relay.server" in environ or UPGRADER_KEY in environ:
            return self.wsgi_app(environ, start_response)
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        found = self._find_mount(path)
        if found is None and not is_websocket_upgrade(environ):
            return self.wsgi_app(environ, start_response)
        problem = monkey_patch_problem()
        if problem is not None:  # the loop cannot run: say why, on every such request
            warn_monkey_patch()
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [problem.encode()]
        if found is not None:
            return self._serve_mount(found[1], environ, start_response)
        sock = raw_socket(environ)
        if sock is None:
            # The route explains that no door can take this socket.
            return self.wsgi_app(environ, start_response)
        upgrader = SocketTakeover(self._hub(), environ, sock)
        environ[UPGRADER_KEY] = upgrader
        outcome = dispatch_upgrade(self.wsgi_app, environ, upgrader)
        outcome.ready.wait()
        if outcome.accepted:
            # The server writes this on the dead socket (see the module doc).
            start_response("101 Switching Protocols", [("Connection", "close")])
            return []
        start_response(outcome.status, outcome.headers)
        return [outcome.body]

    def _serve_mount(
        self, mount: Mount, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        hub = self._hub()
        key = id(mount) ^ id(hub)
        if key not in self._attached:
            with self._lock:
                if key not in self._attached:
                    hub.run_sync(lambda: mount.attach(hub), timeout=10)
                    self._attached.add(key)
                    _attached_mounts.append(mount)
        request = _http_request(environ)
        if request.upgrade:
            sock = raw_socket(environ)
            if sock is None:
                refusal = b"WebSocket is not available under this server (no raw socket)\n"
                start_response(
                    "400 Bad Request",
                    [("Content-Type", "text/plain"), ("Content-Length", str(len(refusal)))],
                )
                return [refusal]
            handle = TakenSocketHandle(hub, take_socket(sock))
            hub.call(mount.handle_upgrade, request, handle)
            start_response("101 Switching Protocols", [("Connection", "close")])
            return []
        body = _read_body(environ, mount.max_body_size)
        if body is None:
            request.body_too_large = True
            request.keep_alive = False
        else:
            request.body = body
        sock = raw_socket(environ)
        if sock is not None:
            # Answer on the loop: a long-poll holds no server thread.
            request.keep_alive = False
            held = _HeldRequest(head_only=request.method == "HEAD")
            taken = take_socket(sock)
            hub.call(_hold, hub, mount, request, held, taken)
            start_response("200 OK", [("Connection", "close")])  # to the dead socket
            return []
        responder = _WaitingResponder()
        hub.call(mount.handle_request, request, responder)
        if not responder.ready.wait(MOUNT_ANSWER_TIMEOUT):
            hub.call(_abort, responder)
            start_response("504 Gateway Timeout", [("Content-Length", "0")])
            return []
        if not responder.done or (body is None and responder.status < 400):
            responder.status = 413
        headers = [(k, v) for k, v in responder.headers if k.lower() != "content-length"]
        if not bodyless_status(responder.status):
            headers.append(("Content-Length", str(len(responder.body))))
        start_response(f"{responder.status} {reason_phrase(responder.status)}", headers)
        return [responder.body]


def _hold(
    hub: Hub, mount: Mount, request: HTTPRequest, held: _HeldRequest, sock: socket.socket
) -> None:
    _connect(hub.loop, sock, held)
    mount.handle_request(request, held)


def _abort(responder: _WaitingResponder) -> None:
    if not responder.done:
        responder.respond(504, [], b"")
        if responder.on_abort is not None:
            responder.on_abort()


def install(app: Any, mounts: dict[str, Mount] | None = None) -> ForeignMiddleware:
    """Wrap ``app.wsgi_app`` in :class:`ForeignMiddleware` (once); returns it.

    ``Sock.init_app``, ``SocketIO.init_app`` and ``EngineIO.init_app`` call
    it, so that an app also runs under ``flask run`` and gunicorn's
    sync/gthread workers (the endpoints are found in the app's registry,
    :mod:`flask_relay.server.mounts`, at the first request).

    In a process monkey-patched by eventlet or gevent it logs why nothing will
    connect (at start-up, rather than clients that never connect), and the
    middleware answers the requests that need the loop with a 500 saying so.
    """
    warn_monkey_patch()
    probe = app.wsgi_app
    while probe is not None:
        if isinstance(probe, ForeignMiddleware):
            for prefix, mount in (mounts or {}).items():
                probe.add_mount(prefix, mount)
            return probe
        probe = getattr(probe, "wsgi_app", None)
    middleware = ForeignMiddleware(app.wsgi_app, mounts=mounts, flask_app=app)
    app.wsgi_app = middleware
    return middleware
