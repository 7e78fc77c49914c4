"""Forwarding: a request for a session owned by another worker (or host) reaches its owner.

Why: Engine.IO sessions live in the memory of one process. A long-polling
client makes many HTTP requests, and without load-balancer affinity ("sticky
sessions") they land on any worker: every Socket.IO server answers those that
reach the wrong one with 400 "Session ID unknown". Here the wrong worker
forwards the request to the owner instead, so ``gunicorn -w 4`` and a
round-robin load balancer over several hosts work without affinity.

How:

* Each serving process is a *node* with a short random id. Its Engine.IO
  sids start with that id and a dot (``k3x9q2.AbC...``): the sid says who owns
  the session. It never carries an address.
* Each node listens on an *internal* socket: a unix socket in a private
  runtime directory (``0700``, one file per node: workers of one gunicorn
  master find each other there), and, across hosts, a TCP port on an internal
  address the operator chose (``peer_address``). Peers announce their id and
  internal address on the message queue (method ``"flask_relay.peer"``) and
  forward only to addresses learned that way, so a client can never make a
  server connect where it wants: a sid whose node is unknown gets the usual
  400 and the client starts a new session.
* A node says hello (and the others answer with their addresses) only once
  its queue listener is subscribed, and again after each resubscription:
  pub/sub brokers keep nothing, so answers sent before it listens are lost
  and it would know the others only from their next periodic announcement,
  up to ``ANNOUNCE_INTERVAL`` later. Until those answers had time to come
  (``LEARN_WINDOW`` after the hello), a request for a sid of a node it has
  not heard of waits for that node's announcement instead of getting 400: a
  load balancer sends a node that just started requests of existing
  sessions at once. (Seen in the multi-host test: a newly started worker
  answered a POST of a session owned by another host with 400 because the
  hello's answers had come before it subscribed; the client's namespace
  connect then timed out.)
* A polling request for a foreign sid is re-sent to the owner's internal
  socket (same method, target, headers and body; ``Connection: close``;
  marked ``X-Flask-Relay-Forwarded`` so it is never forwarded twice) and the
  owner's answer relayed as it is. A held long-poll stays held at the owner;
  a client that gives up aborts the upstream request, which the owner sees as
  an abandoned GET exactly as if the client had been its own.
* A WebSocket upgrade for a foreign sid is proxied byte for byte: the
  request is re-sent to the owner and, from then on, bytes are copied both
  ways (with back-pressure) until either side closes. Proxying was chosen over
  handing the TCP connection over with ``SCM_RIGHTS``: it is the one
  mechanism that works on one host and across hosts alike, it works when the
  worker terminates TLS itself (a TLS session cannot be handed to another
  process), and it only concerns the few clients that start on long-polling
  and upgrade (each upgrade happens once per client; a WebSocket-first client
  never needs forwarding). The cost is one extra local hop per frame for
  those clients.

The Engine.IO server calls :meth:`Forwarder.forward_request` and
:meth:`Forwarder.forward_upgrade` where it would answer "Session ID unknown";
they return ``False`` when the sid is not for another known node, and the
400 is given as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import secrets
import socket
import stat
import string
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import httptools

from .httpconn import HTTPConnection
from .request import HTTPRequest, Responder, UpgradeHandle
from .serve import Server

__all__ = ["FORWARDED_HEADER", "Forwarder", "node_of", "private_runtime_dir"]

logger = logging.getLogger("flask_relay.forward")

class MessageQueue(Protocol):
    """What the forwarder needs of a message queue (``flask_relay.pubsub``'s
    ``MessageQueue``, a layer above: named here by shape, not imported).

    Its ``ready`` event, when it has one, is set while the listener is
    subscribed."""

    def add_handler(self, method: str, handler: Callable[[dict[str, Any]], None]) -> None: ...

    def publish(self, message: dict[str, Any]) -> None: ...


#: Marks a forwarded request: its receiver never forwards it again.
FORWARDED_HEADER = "X-Flask-Relay-Forwarded"

#: The queue message a node announces itself with (ignored by python-socketio).
PEER_METHOD = "flask_relay.peer"
PEER_GONE_METHOD = "flask_relay.peer_gone"

#: Seconds between two announcements of a node; a peer unheard for
#: ``PEER_TTL_FACTOR`` announcements is forgotten.
ANNOUNCE_INTERVAL = 10.0
PEER_TTL_FACTOR = 3.5

#: Seconds after a node's hello during which a sid of an unknown node waits
#: for that node's announcement (the answers to the hello) rather than 400.
LEARN_WINDOW = 2.0
#: How often the announcer checks the queue's subscription (seconds).
_ANNOUNCE_TICK = 0.05

#: Longest time a forwarded request may take (a held long-poll lasts up to the
#: ping interval, 25 s by default).
REQUEST_TIMEOUT = 120.0
#: Seconds to connect to the owner.
CONNECT_TIMEOUT = 5.0
#: Largest response relayed for a polling request (a long-poll's body).
MAX_RESPONSE = 64 * 1024 * 1024

_NODE_ALPHABET = string.ascii_lowercase + string.digits
_NODE_RE = re.compile(r"^[a-z0-9]{4,16}$")

#: Request headers not copied to the owner (hop by hop, or recomputed).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "expect",  # answered here already (100 Continue)
        FORWARDED_HEADER.lower(),
    }
)


def new_node_id() -> str:
    """A random node id (8 characters of ``[a-z0-9]``)."""
    return "".join(secrets.choice(_NODE_ALPHABET) for _ in range(8))


def node_of(sid: str) -> str | None:
    """The node id a sid starts with, or ``None`` when it has none."""
    node, dot, _ = sid.partition(".")
    if not dot or not _NODE_RE.match(node):
        return None
    return node


def private_runtime_dir(name: str) -> str | None:
    """A directory only this user can enter (created ``0700`` when missing),
    under ``$XDG_RUNTIME_DIR`` or the temporary directory; ``None`` (logged)
    when the path exists but is not ours or is open to others."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = os.path.join(base, name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        logger.error("cannot create the forwarding directory %s: %s", path, exc)
        return None
    info = os.lstat(path)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or info.st_mode & 0o077
    ):
        logger.error(
            "not forwarding through %s: it is not a private directory of this user", path
        )
        return None
    return path


def parse_peer_address(address: str) -> tuple[str, int]:
    """``"10.0.0.2"``, ``"10.0.0.2:7000"``, ``"[fd00::2]:7000"``, ``"fd00::2"`` ->
    (host, port); port 0 when none. :class:`ValueError` for a wildcard
    address: the peers would connect to themselves."""
    host, port = address.strip(), "0"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not port.isdigit() or not host:
        raise ValueError(f"invalid peer address {address!r}: use host or host:port")
    if host in ("0.0.0.0", "::", "*"):
        raise ValueError(
            f"peer address {address!r}: give this host's own address on the internal "
            "network (the peers connect to it), not a wildcard"
        )
    return host, int(port)


class _Peer:
    __slots__ = ("address", "seen")

    def __init__(self, address: tuple[str, int], seen: float) -> None:
        self.address = address
        self.seen = seen


class Forwarder:
    """Forwards requests for sessions of other nodes (see the module docstring).

    :param node_id: this node's id (random when not given).
    :param runtime_dir: a private directory shared by the workers of one host;
        this node listens on ``<runtime_dir>/<node_id>.sock`` and reaches the
        others there.
    :param peer_address: ``"host"`` or ``"host:port"`` on an internal network
        (port 0 or none: any free port): listen there and announce it on
        ``queue`` so that other hosts forward to this node.
    :param queue: the message queue peers announce themselves on (needed to
        forward to other hosts, and to be reached from them).
    """

    def __init__(
        self,
        node_id: str | None = None,
        *,
        runtime_dir: str | None = None,
        peer_address: str | None = None,
        queue: MessageQueue | None = None,
    ) -> None:
        self.node_id = node_id or new_node_id()
        if not _NODE_RE.match(self.node_id):
            raise ValueError(f"invalid node id {self.node_id!r}: 4 to 16 of [a-z0-9]")
        self.runtime_dir = runtime_dir
        self.peer_address = peer_address
        self.queue = queue
        self.peers: dict[str, _Peer] = {}
        self._peers_lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._unix_path: str | None = None
        self._announced: tuple[str, int] | None = None
        self._splices: set[_Splice] = set()
        self._stop = threading.Event()
        self._announcer: threading.Thread | None = None
        # Until when a sid of an unknown node waits for its announcement
        # (monotonic): "forever" until the hello is out, then LEARN_WINDOW
        # after it; 0 without a queue (no peers to learn).
        self._learning_until = float("inf") if queue is not None else 0.0
        self.server: Server | None = None
        if peer_address is not None and queue is None:
            raise ValueError("peer_address needs a message queue to announce it on")

    # -- setting up ----------------------------------------------------------------

    def install(self, server: Server) -> None:
        """Serve ``server``'s Engine.IO mounts with forwarding (before it starts):
        their sids get this node's prefix, the internal sockets are bound now
        (the kernel queues connections until the loop serves them)."""
        self.server = server
        for _, mount in server.mounts:
            if hasattr(mount, "sid_prefix") and hasattr(mount, "forwarder"):
                mount.sid_prefix = self.node_id + "."  # type: ignore[attr-defined]
                mount.forwarder = self  # type: ignore[attr-defined]
        if self.runtime_dir is not None:
            path = os.path.join(self.runtime_dir, self.node_id + ".sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.bind(path)
            unix.listen(1024)
            unix.setblocking(False)
            self._unix_path = path
            self._sockets.append(unix)
        if self.peer_address is not None:
            host, port = parse_peer_address(self.peer_address)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
            tcp.listen(1024)
            tcp.setblocking(False)
            bound = tcp.getsockname()
            self._announced = (str(bound[0]), int(bound[1]))
            self._sockets.append(tcp)
        if self.queue is not None:
            self.queue.add_handler(PEER_METHOD, self._on_peer)
            self.queue.add_handler(PEER_GONE_METHOD, self._on_peer_gone)
        server.hub.call(self._serve_internal)
        logger.info(
            "forwarding as node %s (unix %s, peer address %s)",
            self.node_id,
            self._unix_path,
            self._announced,
        )

    def _serve_internal(self) -> None:
        assert self.server is not None
        server = self.server
        self.server.hub.loop.create_task(self._listen(server))
        if self.queue is not None:
            self._announcer = threading.Thread(
                target=self._announce_loop, name="flask-relay-peers", daemon=True
            )
            self._announcer.start()

    async def _listen(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        # After the public listeners (the server's port is its first listener's).
        deadline = loop.time() + 30
        while not server.listening and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for sock in self._sockets:
            internal = await loop.create_server(lambda: HTTPConnection(server), sock=sock)
            server.add_listener(internal)  # closed with the public listeners

    def close(self) -> None:
        """Stop announcing (tell the peers), remove the unix socket, end the proxies
        (after the server stopped)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self.queue is not None and self._announced is not None:
            try:
                self.queue.publish({"method": PEER_GONE_METHOD, "node": self.node_id})
            except Exception as exc:
                logger.warning("could not tell the peers node %s leaves: %s", self.node_id, exc)
        for sock in self._sockets:
            # The loop may have stopped before its listeners were closed.
            sock.close()
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)
            with contextlib.suppress(OSError):  # the last worker out removes the directory
                os.rmdir(os.path.dirname(self._unix_path))
        for splice in list(self._splices):
            splice.close()

    # -- peers through the queue ---------------------------------------------------

    def _announce_loop(self) -> None:
        # A hello once the listener is subscribed (so that the answers are
        # heard), and again after each resubscription; periodic
        # announcements in between.
        ready = getattr(self.queue, "ready", None)
        subscribed = False
        next_round = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if ready is not None and not ready.is_set():
                subscribed = False
            elif not subscribed:
                subscribed = True
                self._announce(hello=True)
                self._learning_until = time.monotonic() + LEARN_WINDOW
                next_round = now + ANNOUNCE_INTERVAL
            elif now >= next_round:
                if self._announced is not None:
                    self._announce()
                next_round = now + ANNOUNCE_INTERVAL
            self._stop.wait(_ANNOUNCE_TICK)

    def _announce(self, hello: bool = False) -> None:
        queue = self.queue
        if queue is None:
            return
        message: dict[str, Any] = {"method": PEER_METHOD, "node": self.node_id, "hello": hello}
        if self._announced is not None:
            message["address"] = list(self._announced)
        try:
            queue.publish(message)
        except Exception as exc:
            logger.warning("could not announce node %s on the queue: %s", self.node_id, exc)

    def _on_peer(self, message: dict[str, Any]) -> None:
        node = message.get("node")
        if not isinstance(node, str) or node == self.node_id or not _NODE_RE.match(node):
            return
        address = message.get("address")
        if (
            isinstance(address, list)
            and len(address) == 2
            and isinstance(address[0], str)
            and isinstance(address[1], int)
        ):
            with self._peers_lock:
                known = node in self.peers
                self.peers[node] = _Peer((address[0], address[1]), time.monotonic())
            if not known:
                logger.info("peer %s at %s:%d", node, address[0], address[1])
        if message.get("hello") and self._announced is not None:
            # A newcomer: tell it where we are without waiting for the next round.
            threading.Thread(target=self._announce, daemon=True).start()

    def _on_peer_gone(self, message: dict[str, Any]) -> None:
        node = message.get("node")
        if isinstance(node, str):
            with self._peers_lock:
                if self.peers.pop(node, None) is not None:
                    logger.info("peer %s left", node)

    def _peer_address(self, node: str) -> tuple[str, int] | None:
        with self._peers_lock:
            peer = self.peers.get(node)
            if peer is None:
                return None
            if time.monotonic() - peer.seen > ANNOUNCE_INTERVAL * PEER_TTL_FACTOR:
                del self.peers[node]
                logger.info("peer %s not heard from: forgotten", node)
                return None
            return peer.address

    # -- where a sid's owner is ------------------------------------------------------

    def _other_node(self, sid: str, request: HTTPRequest) -> str | None:
        """The node ``sid`` names when it is another one and the request was
        not forwarded already."""
        node = node_of(sid)
        if node is None or node == self.node_id:
            return None
        if request.header(FORWARDED_HEADER) is not None:
            return None
        return node

    def _locate(self, node: str) -> tuple[str | None, tuple[str, int] | None]:
        """(unix path, tcp address) of ``node``, both ``None`` when unknown."""
        if self.runtime_dir is not None:
            path = os.path.join(self.runtime_dir, node + ".sock")
            if os.path.exists(path):
                return path, None
        address = self._peer_address(node)
        if address is not None:
            return None, address
        return None, None

    def _may_learn(self) -> bool:
        """Are the answers to this node's hello possibly still on their way?"""
        return time.monotonic() < self._learning_until

    async def _learn(self, node: str) -> tuple[str | None, tuple[str, int] | None]:
        """Wait (at most until the learning window closes, and ``LEARN_WINDOW``)
        for ``node`` to announce itself; its location, or ``(None, None)``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEARN_WINDOW
        while True:
            path, address = self._locate(node)
            if path is not None or address is not None:
                logger.info("node %s learned while a request waited for it", node)
                return path, address
            if not self._may_learn() or loop.time() >= deadline or self._stop.is_set():
                return None, None
            await asyncio.sleep(_ANNOUNCE_TICK)

    async def _connect(
        self, path: str | None, address: tuple[str, int] | None, protocol: Callable[[], Any]
    ) -> tuple[asyncio.Transport, Any]:
        loop = asyncio.get_running_loop()
        if path is not None:
            coro = loop.create_unix_connection(protocol, path)
        else:
            assert address is not None
            coro = loop.create_connection(protocol, address[0], address[1])
        transport, proto = await asyncio.wait_for(coro, CONNECT_TIMEOUT)
        return transport, proto

    # -- polling -----------------------------------------------------------------------

    def forward_request(
        self,
        sid: str,
        request: HTTPRequest,
        responder: Responder,
        fallback: Callable[[], None],
    ) -> bool:
        """Forward a polling request for ``sid`` to its owner (on the loop);
        ``False`` when it is not for another known node (or one this node may
        still hear of: see the module docstring). ``fallback()`` gives the
        usual answer when the owner cannot be reached."""
        node = self._other_node(sid, request)
        if node is None:
            return False
        path, address = self._locate(node)
        if path is None and address is None and not self._may_learn():
            return False
        if request.body_too_large:
            # The body was not read: nothing to forward.
            responder.respond(413, [("Content-Type", "text/plain")], b"Payload too large\n")
            return True
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            self._relay(node, path, address, request, responder, fallback)
        )

        def abort() -> None:
            task.cancel()

        responder.on_abort = abort
        return True

    async def _relay(
        self,
        node: str,
        path: str | None,
        address: tuple[str, int] | None,
        request: HTTPRequest,
        responder: Responder,
        fallback: Callable[[], None],
    ) -> None:
        upstream: asyncio.Transport | None = None
        try:
            if path is None and address is None:
                path, address = await self._learn(node)
                if path is None and address is None:
                    if not responder.done:
                        fallback()
                    return
            logger.debug(
                "forwarding %s %s to %s", request.method, request.target, path or address
            )
            reader = _ResponseReader()
            try:
                upstream, _ = await self._connect(path, address, lambda: reader)
            except (OSError, asyncio.TimeoutError) as exc:
                self._unreachable(path, address, exc)
                if not responder.done:
                    fallback()
                return
            upstream.write(_request_head(request, close=True) + request.body)
            status, headers, body = await asyncio.wait_for(reader.result, REQUEST_TIMEOUT)
            if not responder.done:
                responder.respond(status, headers, body)
        except asyncio.CancelledError:
            pass  # the client went away: closing upstream tells the owner
        except ConnectionError as exc:
            # The owner went away mid-request (killed): its sessions are gone.
            logger.warning("forwarding %s to %s failed: %s", request.target, path or address, exc)
            if not responder.done:
                fallback()
        except Exception as exc:
            logger.warning("forwarding %s to %s failed: %r", request.target, path or address, exc)
            if not responder.done:
                responder.respond(504, [("Content-Type", "text/plain")], b"Gateway timeout\n")
        finally:
            if upstream is not None:
                upstream.close()

    def _unreachable(
        self, path: str | None, address: tuple[str, int] | None, exc: BaseException
    ) -> None:
        if path is not None and isinstance(exc, OSError) and exc.errno in (
            errno.ECONNREFUSED,
            errno.ENOENT,
        ):
            # A worker that died leaves its socket file: remove it.
            with contextlib.suppress(OSError):
                os.unlink(path)
        logger.info("owner at %s unreachable (%s): session unknown", path or address, exc)

    # -- WebSocket upgrades ------------------------------------------------------------

    def forward_upgrade(
        self,
        sid: str,
        request: HTTPRequest,
        handle: UpgradeHandle,
        fallback: Callable[[], None],
    ) -> bool:
        """Proxy a WebSocket upgrade for ``sid`` to its owner (on the loop);
        ``False`` when it is not for another known node (or one this node may
        still hear of)."""
        node = self._other_node(sid, request)
        if node is None:
            return False
        path, address = self._locate(node)
        if path is None and address is None and not self._may_learn():
            return False
        asyncio.get_running_loop().create_task(
            self._splice(node, path, address, request, handle, fallback)
        )
        return True

    async def _splice(
        self,
        node: str,
        path: str | None,
        address: tuple[str, int] | None,
        request: HTTPRequest,
        handle: UpgradeHandle,
        fallback: Callable[[], None],
    ) -> None:
        if path is None and address is None:
            path, address = await self._learn(node)
            if path is None and address is None:
                fallback()
                return
        logger.debug("forwarding the upgrade %s to %s", request.target, path or address)
        splice = _Splice(self._splices)
        try:
            await self._connect(path, address, lambda: splice.upstream)
        except (OSError, asyncio.TimeoutError) as exc:
            self._unreachable(path, address, exc)
            fallback()
            return
        splice.upstream.write(_request_head(request, close=False))
        self._splices.add(splice)
        handle.switch(splice.client)


def _request_head(request: HTTPRequest, *, close: bool) -> bytes:
    """The request line and headers to send upstream."""
    lines = [f"{request.method} {request.target} HTTP/1.1"]
    upgrade = not close
    for name, value in request.headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP and not (upgrade and lower == "connection"):
            continue
        lines.append(f"{name}: {value}")
    if close:
        lines.append(f"Content-Length: {len(request.body)}")
        lines.append("Connection: close")
    client = request.client
    if client is not None:
        lines.append(f"X-Forwarded-For: {client[0]}")
    lines.append(f"{FORWARDED_HEADER}: 1")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _ResponseReader(asyncio.Protocol):
    """Reads one HTTP response (until the upstream closes) with httptools."""

    def __init__(self) -> None:
        self.result: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] = (
            asyncio.get_running_loop().create_future()
        )
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response from the owner: {exc}"))

    def eof_received(self) -> bool | None:
        if not self.result.done():
            try:
                self.parser.feed_data(b"")  # ends a response delimited by the close
            except httptools.HttpParserError:
                pass
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the owner closed the connection before answering"))

    def _fail(self, exc: Exception) -> None:
        if not self.result.done():
            self.result.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in (b"content-length", b"connection", b"transfer-encoding", b"keep-alive"):
            return
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE:
            self._fail(ConnectionError("response from the owner too large"))
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.result.done():
            self.result.set_result(
                (int(self.parser.get_status_code()), self.headers, b"".join(self.body))
            )


class _Side(asyncio.Protocol):
    """One side of a spliced connection: what it receives goes to the other."""

    def __init__(self, splice: _Splice) -> None:
        self.splice = splice
        self.transport: asyncio.Transport | None = None
        self.other: _Side | None = None
        self.pending: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.pending:
            self.transport.write(b"".join(self.pending))
            self.pending = []

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        assert self.other is not None
        self.other.write(data)

    def eof_received(self) -> bool | None:
        assert self.other is not None
        other = self.other.transport
        if other is not None and not other.is_closing() and other.can_write_eof():
            other.write_eof()
            return True  # half-close: keep copying the other way
        self.splice.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.splice.close()

    # back-pressure: a side whose output is full stops the other side's reading
    def pause_writing(self) -> None:
        assert self.other is not None
        if self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.other is not None
        if self.other.transport is not None and not self.other.transport.is_closing():
            self.other.transport.resume_reading()


class _Splice:
    """A client connection and its owner-side connection, copied both ways."""

    def __init__(self, live: set[_Splice]) -> None:
        #: The forwarder's open splices (closed at shutdown): this one leaves it on close.
        self.live = live
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.client.other = self.upstream
        self.upstream.other = self.client
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.live.discard(self)
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()


def find_queue(server: Server) -> MessageQueue | None:
    """The message queue of the Socket.IO server behind ``server``'s mounts, if any."""
    for _, mount in server.mounts:
        sio = getattr(getattr(mount, "handler", None), "server", None)
        queue = getattr(sio, "queue", None)
        if queue is not None:
            return cast("MessageQueue", queue)
    return None


def enable(
    server: Server, *, runtime_dir: str | None = None, peer_address: str | None = None
) -> Forwarder:
    """Install a :class:`Forwarder` on ``server`` (before it starts).

    ``peer_address`` (``FLASK_RELAY_PEER_ADDRESS`` when not given) needs the
    app's ``SocketIO(message_queue=...)``: :class:`ValueError` otherwise."""
    if peer_address is None:
        peer_address = os.environ.get("FLASK_RELAY_PEER_ADDRESS") or None
    queue = find_queue(server)
    if peer_address is not None and queue is None:
        raise ValueError(
            "peer_address (FLASK_RELAY_PEER_ADDRESS) needs a message queue: "
            "SocketIO(app, message_queue='redis://...')"
        )
    forwarder = Forwarder(runtime_dir=runtime_dir, peer_address=peer_address, queue=queue)
    forwarder.install(server)
    return forwarder
