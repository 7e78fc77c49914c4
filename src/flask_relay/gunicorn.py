"""A gunicorn worker class that runs Flask-Relay's own server.

::

    gunicorn -k flask_relay.gunicorn.Worker -w 1 --bind 127.0.0.1:8000 app:app

Each worker process serves gunicorn's listening sockets from one event loop
(the package's HTTP/1.1 server): the endpoints registered on the app (the
Engine.IO endpoints of :class:`flask_relay.SocketIO` and
:class:`flask_relay.engineio.EngineIO`) and WebSocket routes
(:class:`flask_relay.Sock`) natively, every other request through the Flask
app in a thread pool. Unlike the sync and gthread workers, a WebSocket or a
long-poll does not hold a worker thread, so ``--threads`` does not cap the
number of clients (it sizes the pool for ordinary requests; at least 16).

Signals follow gunicorn's conventions: ``SIGTERM`` (sent by the arbiter on
stop, ``SIGHUP`` reload and worker count changes) is a graceful shutdown: the
listeners close, Socket.IO sessions end ("server shutting down" for the
disconnect handlers) the way every official client takes for a restart, so
they reconnect to the new workers on their own (a 1001 close frame, a 503 for
a held long-poll; no Engine.IO close packet), WebSocket routes get a 1001
close frame, requests in progress get up to ``--graceful-timeout`` seconds.
``SIGQUIT`` and ``SIGINT`` exit at once, as in the other workers. The worker
tells the arbiter it is alive every second from the loop (a loop blocked for
``--timeout`` seconds gets the worker restarted, which is what that timeout is
for), and stops gracefully when its parent process goes away or ``--reload``
sees a changed file.

Several workers (``-w N``) need no sticky sessions: each worker's Engine.IO
sids name the worker, and a long-poll (or the WebSocket upgrade of a polling
session) that reaches another worker is forwarded to the owner over a unix
socket in a private runtime directory (see :mod:`flask_relay.server.forward`).
Broadcasts and rooms across workers still need ``SocketIO(app,
message_queue=...)``. Across hosts, set ``FLASK_RELAY_PEER_ADDRESS`` to this
host's internal address (``10.0.0.2`` or ``10.0.0.2:7000``): each worker
listens there and announces itself on the message queue, so a load balancer
without affinity works too.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from gunicorn.workers.base import Worker as _BaseWorker

from .server.forward import Forwarder, enable, private_runtime_dir
from .server.http import HTTPLimits, Server
from .server.monkey import refuse_monkey_patch
from .server.mounts import build_mounts

__all__ = ["Worker"]

#: Seconds between two heartbeats (well under gunicorn's --timeout, default 30).
HEARTBEAT_INTERVAL = 1.0

#: Smallest WSGI thread pool the worker runs (gunicorn's ``--threads`` defaults to 1).
MIN_WSGI_THREADS = 16


def _build_server(app: Any, **kwargs: Any) -> Server:
    """The server for ``app``: with every endpoint registered on it (the
    Engine.IO endpoints of its ``SocketIO`` and ``EngineIO``, see
    :mod:`flask_relay.server.mounts`)."""
    return Server(app, build_mounts(app), **kwargs)


class Worker(_BaseWorker):  # type: ignore[misc]
    """gunicorn worker serving the app with Flask-Relay's event-loop server."""

    server: Server | None = None

    def init_signals(self) -> None:
        super().init_signals()
        # SIGTERM is handled on the loop (graceful shutdown); until the loop
        # runs, gunicorn's handler only marks the worker as not alive.

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # Before the worker counts as booted: gunicorn then stops with "Worker
        # failed to boot" and this message, instead of restarting it forever.
        refuse_monkey_patch()

    def _limits(self) -> HTTPLimits:
        cfg = self.cfg
        limits = HTTPLimits()
        if cfg.limit_request_line:
            limits.max_target_size = int(cfg.limit_request_line)
        if cfg.limit_request_fields:
            limits.max_headers = int(cfg.limit_request_fields)
        if cfg.keepalive:
            limits.keep_alive_timeout = float(cfg.keepalive)
        return limits

    def run(self) -> None:
        cfg = self.cfg
        ssl_context = None
        if cfg.is_ssl:
            from gunicorn.sock import ssl_context as gunicorn_ssl_context

            ssl_context = gunicorn_ssl_context(cfg)
        host, port = "127.0.0.1", 0
        for listener in self.sockets:
            address = listener.sock.getsockname()
            if isinstance(address, tuple):
                host, port = str(address[0]), int(address[1])
                break
        server = _build_server(
            self.wsgi,
            host=host,
            port=port,
            sockets=[listener.sock for listener in self.sockets],
            ssl=ssl_context,
            wsgi_threads=max(int(cfg.threads or 1), MIN_WSGI_THREADS),
            limits=self._limits(),
            shutdown_timeout=max(1.0, float(cfg.graceful_timeout) - 1.0),
        )
        self.server = server
        if not self.alive:
            return  # SIGTERM arrived while the app was loading
        forwarder = self._forwarder(server)
        server.hub.call(self._on_loop_start)
        # serve_forever() installs SIGTERM and SIGINT handlers on the loop that
        # shut down gracefully; gunicorn's SIGINT means "now", restored below.
        try:
            server.serve_forever()
        finally:
            if forwarder is not None:
                forwarder.close()

    def _forwarder(self, server: Server) -> Forwarder | None:
        """Forwarding between this master's workers (and, with
        ``FLASK_RELAY_PEER_ADDRESS``, other hosts), when there are several."""
        peer_address = os.environ.get("FLASK_RELAY_PEER_ADDRESS") or None
        if int(self.cfg.workers or 1) < 2 and peer_address is None:
            return None
        runtime_dir = private_runtime_dir(f"flask-relay-{os.getuid()}-{self.ppid}")
        if runtime_dir is None:
            sys.exit(3)  # logged; gunicorn stops: "Worker failed to boot"
        try:
            return enable(server, runtime_dir=runtime_dir, peer_address=peer_address)
        except (OSError, ValueError) as exc:
            # Exit status 3 (gunicorn's WORKER_BOOT_ERROR) stops the arbiter
            # ("Worker failed to boot") instead of restarting workers forever.
            self.log.error("Flask-Relay forwarding: %s", exc)
            sys.exit(3)

    # -- on the loop -------------------------------------------------------------

    def _on_loop_start(self) -> None:
        assert self.server is not None
        loop = self.server.hub.loop
        loop.add_signal_handler(signal.SIGQUIT, self._quit)
        loop.add_signal_handler(signal.SIGINT, self._quit)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        self._heartbeat()

    def _quit(self) -> None:
        self.alive = False
        self.cfg.worker_int(self)
        sys.exit(0)

    def _heartbeat(self) -> None:
        # Once a second: tell the arbiter we are alive, and stop gracefully
        # when gunicorn's code reloader (--reload) cleared ``alive`` or the
        # parent process is gone.
        assert self.server is not None
        if not self.alive or self.ppid != os.getppid():
            if self.alive:
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's graceful shutdown
            return
        self.notify()
        self.server.hub.loop.call_later(HEARTBEAT_INTERVAL, self._heartbeat)
