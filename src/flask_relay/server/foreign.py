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
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..sock import UPGRADER_KEY
from .loop import Hub
from .wsroute import RouteChannel, RouteUpgrader, dispatch_upgrade, is_websocket_upgrade

__all__ = [
    "ForeignMiddleware",
    "SocketTakeover",
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
        assert _hub is not None
        return _hub


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
    loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol
) -> None:
    async def run() -> None:
        try:
            await loop.connect_accepted_socket(lambda: protocol, sock)
        except OSError as exc:
            sock.close()
            protocol.connection_lost(exc)

    loop.create_task(run())


class ForeignMiddleware:
    """WSGI middleware that serves WebSocket routes under a foreign server.

    Every request that is not a WebSocket upgrade (or that arrives through
    Flask-Relay's own server, which offers its own upgrader) goes to the
    wrapped application unchanged.
    """

    def __init__(self, wsgi_app: WSGIApp, hub: Callable[[], Hub] = shared_hub) -> None:
        self.wsgi_app = wsgi_app
        self._hub = hub

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if UPGRADER_KEY in environ or not is_websocket_upgrade(environ):
            return self.wsgi_app(environ, start_response)
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


def install(app: Any) -> None:
    """Wrap ``app.wsgi_app`` in :class:`ForeignMiddleware` (once)."""
    wsgi_app = app.wsgi_app
    probe = wsgi_app
    while probe is not None:
        if isinstance(probe, ForeignMiddleware):
            return
        probe = getattr(probe, "wsgi_app", None)
    app.wsgi_app = ForeignMiddleware(wsgi_app)
