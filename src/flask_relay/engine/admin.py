"""The server side of the Socket.IO Admin UI (npm ``@socket.io/admin-ui``).

``socketio.instrument(auth={"username": "admin", "password": "..."})`` (or
python-socketio's spelling, ``socketio.server.instrument(...)``) serves the
namespace the official dashboard connects to (``/admin`` by default) and
reports to it what Node's ``instrument()`` reports:

* on connect, ``config`` (the features the dashboard may use) and, in
  ``development`` mode, ``all_sockets``;
* every ``server_stats_interval`` seconds while a dashboard is connected,
  ``server_stats``: server id, host, pid, uptime, Engine.IO clients (polling
  ones apart), per-namespace socket counts, and the aggregated counts of
  connections, disconnections and messages in and out (Socket.IO messages:
  Engine.IO pings and handshakes are not counted, unlike Node's);
* in ``development`` mode, as they happen: ``socket_connected``,
  ``socket_updated`` (a transport upgrade, noticed at the next stats tick),
  ``socket_disconnected``, ``room_joined``, ``room_left``, ``event_received``
  and ``event_sent`` (none for the admin namespace's own events).

Unless ``read_only``, the dashboard's commands work: ``emit``, ``join``,
``leave`` and ``_disconnect`` (``close=True`` closes the whole connection), each
for a namespace and optionally a room or sid. ``mode="production"`` sends only
``config`` and ``server_stats``, as Node does.

Authentication is python-socketio's: ``auth`` is the dict the dashboard's login
form sends (``{"username": ..., "password": ...}``), a list of such dicts, a
callable taking that dict and returning true to accept, or ``False`` for none;
it is required, so that a dashboard is never open by accident. A refusal is a
``CONNECT_ERROR`` ``invalid credentials`` (Node's message, which the dashboard
recognizes; python-socketio says ``authentication failed``) and a log line. As
in Node, an accepted login gets a ``session`` id that the dashboard sends instead
of the password when it reconnects (kept in memory, for this process's life).

It is built on the server's observer hooks (:mod:`flask_relay.engine.observers`)
and its per-namespace applications (``server.namespace_apps``): an engine module,
it needs no Flask and patches nothing.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import socket as _socket
import threading
import time
from collections.abc import Hashable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..protocol.errors import ConnectionRefusedError
from .observers import ServerObserver

if TYPE_CHECKING:
    from .sio import Connection, Socket, SocketIOServer

__all__ = ["AdminUI", "instrument"]

logger = logging.getLogger("flask_relay.admin")

HOSTNAME = _socket.gethostname()
MODES = ("development", "production")
_COMMANDS = ("emit", "join", "leave", "_disconnect")
#: JavaScript's ``Date.toString()`` in UTC (Node's ``handshake.time``).
_JS_DATE = "%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)"


def _iso(t: float | None = None) -> str:
    """A timestamp as JavaScript's ``Date.toJSON()`` writes it."""
    moment = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _room_name(room: Hashable) -> Any:
    return room if isinstance(room, str) else str(room)


class _EventBuffer:
    """Counts per second and type, as Node's ``EventBuffer`` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, str, str | None], int] = {}

    def push(self, kind: str, sub_type: str | None = None, count: int = 1) -> None:
        key = (int(time.time()) * 1000, kind, sub_type)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + count

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            counts, self._counts = self._counts, {}
        events = []
        for (timestamp, kind, sub_type), count in counts.items():
            event: dict[str, Any] = {"timestamp": timestamp, "type": kind, "count": count}
            if sub_type is not None:
                event["subType"] = sub_type
            events.append(event)
        return events


class _AdminNamespace:
    """The :class:`~flask_relay.engine.sio.SocketIOApplication` of the admin namespace."""

    def __init__(self, admin: AdminUI) -> None:
        self.admin = admin

    def has_namespace(self, namespace: str) -> bool:
        return namespace == self.admin.namespace

    def on_connect(self, sock: Socket, auth: Any) -> Any:
        return self.admin.accept(sock, auth)

    def on_event(self, sock: Socket, event: Any, args: list[Any]) -> Any:
        return self.admin.command(sock, event, args)

    def on_disconnect(self, sock: Socket, reason: str) -> None:
        return None


class AdminUI(ServerObserver):
    """The admin namespace and the reports to it; see the module doc."""

    def __init__(
        self,
        server: SocketIOServer,
        *,
        auth: Any,
        namespace: str = "/admin",
        mode: str = "development",
        read_only: bool = False,
        server_id: str | None = None,
        server_stats_interval: float = 2,
    ) -> None:
        if auth is None:
            raise ValueError(
                "instrument() needs auth: {'username': ..., 'password': ...}, a list of "
                "those, a callable, or False for an open dashboard"
            )
        if not (auth is False or isinstance(auth, (dict, list)) or callable(auth)):
            raise ValueError(f"auth must be a dict, a list, a callable or False, not {auth!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be 'development' or 'production', not {mode!r}")
        if not isinstance(namespace, str) or not namespace.startswith("/"):
            raise ValueError(f"namespace must start with '/', not {namespace!r}")
        if not server_stats_interval > 0:
            raise ValueError("server_stats_interval must be positive")
        self.server = server
        self.auth = auth
        self.namespace = namespace
        self.mode = mode
        self.read_only = read_only
        self.server_id = server_id or HOSTNAME
        self.server_stats_interval = float(server_stats_interval)
        self.verbose = mode == "development"
        self.started = time.monotonic()
        self.events = _EventBuffer()
        self._lock = threading.Lock()
        self._issued: dict[str, float] = {}  # sid -> connect time
        self._transports: dict[str, str] = {}  # sid -> transport last reported
        self._stats_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sessions: set[str] = set()

    # -- wiring --------------------------------------------------------------------

    def install(self) -> AdminUI:
        server = self.server
        server.namespace_apps[self.namespace] = _AdminNamespace(self)
        server.observers.append(self)
        return self

    def shutdown(self) -> None:
        """Stop reporting and serving the admin namespace (connected dashboards stay)."""
        self._stop.set()
        server = self.server
        if self in server.observers:
            server.observers.remove(self)
        app = server.namespace_apps.get(self.namespace)
        if isinstance(app, _AdminNamespace) and app.admin is self:
            del server.namespace_apps[self.namespace]
        thread = self._stats_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    @property
    def features(self) -> list[str]:
        """The ``supportedFeatures`` of the ``config`` event."""
        features = [] if self.read_only else ["EMIT", "JOIN", "LEAVE", "DISCONNECT"]
        if not self.read_only:
            features += ["MJOIN", "MLEAVE", "MDISCONNECT"]
        features.append("AGGREGATED_EVENTS")
        if self.verbose:
            features.append("ALL_EVENTS")
        return features

    def _emit(self, event: str, *args: Any, to: Any = None) -> None:
        if to is None and not self.server.participants(self.namespace):
            return
        self.server.emit_args(event, list(args), namespace=self.namespace, to=to, ignore_queue=True)

    # -- the admin namespace ------------------------------------------------------

    def authenticated(self, client_auth: Any) -> bool:
        auth = self.auth
        if auth is False:
            return True
        if callable(auth):
            return bool(auth(client_auth))
        candidates = auth if isinstance(auth, list) else [auth]
        return any(_same_credentials(expected, client_auth) for expected in candidates)

    def _known_session(self, client_auth: Any) -> bool:
        session = client_auth.get("sessionId") if isinstance(client_auth, dict) else None
        if not isinstance(session, str):
            return False
        with self._lock:
            known = list(self._sessions)
        return any(hmac.compare_digest(session.encode(), s.encode()) for s in known)

    def accept(self, sock: Socket, client_auth: Any) -> Any:
        if self.auth is not False and self._known_session(client_auth):
            pass  # a dashboard reconnecting with the session id it was given
        elif self.authenticated(client_auth):
            if self.auth is not False:
                session = secrets.token_urlsafe(16)
                with self._lock:
                    self._sessions.add(session)
                self._emit("session", session, to=sock.sid)
        else:
            logger.warning(
                "admin UI: refused %s on %s (from %s): invalid credentials",
                sock.sid,
                self.namespace,
                sock.environ.get("REMOTE_ADDR", "?"),
            )
            raise ConnectionRefusedError("invalid credentials")
        # Held back by the server until the CONNECT reply is out, then sent in order.
        self._emit("config", {"supportedFeatures": self.features}, to=sock.sid)
        if self.verbose:
            # The dashboard itself included, as in Node (it is not accepted yet).
            everyone = [*self._all_sockets(), self.serialize(sock)]
            self._emit("all_sockets", everyone, to=sock.sid)
        self._start_stats()
        return None  # the first server_stats goes once accepted (socket_connected)

    def command(self, sock: Socket, event: Any, args: list[Any]) -> Any:
        if self.read_only or event not in _COMMANDS:
            logger.warning("admin UI: %s sent %r, which is not served here", sock.sid, event)
            return None
        if not args or not isinstance(args[0], str) or not args[0].startswith("/"):
            logger.warning("admin UI: %s sent %r without a namespace", sock.sid, event)
            return None
        nsp = args[0]
        server = self.server
        if event == "emit":
            if len(args) < 3:
                logger.warning("admin UI: %s sent emit without an event name", sock.sid)
                return None
            target = args[1] or None
            server.emit_args(args[2], list(args[3:]), namespace=nsp, to=target)
            return None
        if event == "_disconnect":
            close = bool(args[1]) if len(args) > 1 else False
            target = (args[2] if len(args) > 2 else None) or None
            for sid in server.participants(nsp, target):
                if close:
                    found = server.get_socket(sid, nsp)
                    if found is not None:
                        conn = found.connection
                        conn.binding.engine.disconnect(conn.eio_sid, "forced close")
                else:
                    server.disconnect(sid, nsp)
            return None
        if len(args) < 2:
            logger.warning("admin UI: %s sent %s without a room", sock.sid, event)
            return None
        room = args[1]
        target = (args[2] if len(args) > 2 else None) or None
        for sid in server.participants(nsp, target):
            if event == "join":
                server.enter_room(sid, room, nsp)
            else:
                server.leave_room(sid, room, nsp)
        return None

    # -- serializing -------------------------------------------------------------

    def _transport(self, eio_sid: str) -> str:
        try:
            return str(self.server.eio.sockets[eio_sid].transport)
        except KeyError:
            return "polling"  # the in-process test client's sessions

    def serialize(self, sock: Socket) -> dict[str, Any]:
        environ = sock.environ
        headers = {
            key[5:].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        }
        query = {
            key: values[0] if len(values) == 1 else values
            for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()
        }
        issued = self._issued.get(sock.sid) or time.time()
        address = (
            headers.get("cf-connecting-ip")
            or headers.get("x-forwarded-for")
            or environ.get("REMOTE_ADDR", "")
        )
        url = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            url += "?" + environ["QUERY_STRING"]
        moment = datetime.fromtimestamp(issued, timezone.utc)
        return {
            "id": sock.sid,
            "clientId": sock.eio_sid[:12],
            "transport": self._transport(sock.eio_sid),
            "nsp": sock.namespace,
            "data": {},
            "handshake": {
                "address": address,
                "headers": headers,
                "query": query,
                "issued": int(issued * 1000),
                "secure": environ.get("wsgi.url_scheme") == "https",
                "time": moment.strftime(
                    "%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)"
                ),
                "url": url,
                "xdomain": "HTTP_ORIGIN" in environ,
            },
            "rooms": [_room_name(room) for room in list(sock.rooms)],
        }

    def _all_sockets(self) -> list[dict[str, Any]]:
        server = self.server
        found = []
        for nsp in self._namespaces():
            for sid in server.participants(nsp):
                sock = server.get_socket(sid, nsp)
                if sock is not None:
                    found.append(self.serialize(sock))
        return found

    def _namespaces(self) -> list[str]:
        server = self.server
        names = dict.fromkeys(server.namespaces if isinstance(server.namespaces, list) else [])
        names.update(dict.fromkeys(server.namespace_apps))
        names.update(dict.fromkeys(server.active_namespaces()))
        return sorted(names)

    def _stats(self, take_events: bool = True) -> dict[str, Any]:
        server = self.server
        sessions = server.eio.sockets
        transports = [view.transport for view in list(sessions.values())]
        return {
            "serverId": self.server_id,
            "hostname": HOSTNAME,
            "pid": os.getpid(),
            "uptime": time.monotonic() - self.started,
            "clientsCount": len(transports),
            "pollingClientsCount": sum(1 for t in transports if t == "polling"),
            "aggregatedEvents": self.events.take() if take_events else [],
            "namespaces": [
                {"name": nsp, "socketsCount": len(server.participants(nsp))}
                for nsp in self._namespaces()
            ],
        }

    # -- the stats loop ------------------------------------------------------------

    def _start_stats(self) -> None:
        with self._lock:
            thread = self._stats_thread
            if thread is not None and thread.is_alive():
                return
            self._stop.clear()
            thread = threading.Thread(
                target=self._stats_loop, name="flask-relay-admin-stats", daemon=True
            )
            self._stats_thread = thread
        thread.start()

    def _stats_loop(self) -> None:
        """Send ``server_stats`` while a dashboard is connected; then end."""
        while not self._stop.wait(self.server_stats_interval):
            if not self.server.participants(self.namespace):
                with self._lock:
                    self._stats_thread = None
                return
            try:
                self._emit("server_stats", self._stats())
                if self.verbose:
                    self._report_upgrades()
            except Exception:
                logger.exception("admin UI: sending server_stats failed")

    def _report_upgrades(self) -> None:
        server = self.server
        with self._lock:
            watched = list(self._transports.items())
        for sid, transport in watched:
            sock = server.lookup(sid)
            if sock is None:
                continue
            now = self._transport(sock.eio_sid)
            if now != transport:
                with self._lock:
                    self._transports[sid] = now
                self._emit("socket_updated", {"id": sid, "nsp": sock.namespace, "transport": now})

    # -- observer hooks (engine/observers.py) ----------------------------------------

    def connection_opened(self, conn: Connection) -> None:
        self.events.push("rawConnection")

    def connection_closed(self, conn: Connection, reason: str) -> None:
        self.events.push("rawDisconnection", reason)

    def message_received(self, conn: Connection, data: str | bytes) -> None:
        self.events.push("packetsIn")
        self.events.push("bytesIn", None, len(data))

    def messages_sent(self, recipients: int, items: list[str | bytes]) -> None:
        self.events.push("packetsOut", None, recipients * len(items))
        self.events.push("bytesOut", None, recipients * sum(len(item) for item in items))

    def socket_connected(self, sock: Socket) -> None:
        now = time.time()
        with self._lock:
            self._issued[sock.sid] = now
        if sock.namespace == self.namespace and sock.accepted:
            # A new dashboard: stats at once (counting it), not after an interval.
            self._emit("server_stats", self._stats(take_events=False), to=sock.sid)
        if not self.verbose:
            return
        serialized = self.serialize(sock)
        with self._lock:
            self._transports[sock.sid] = serialized["transport"]
        self._emit("socket_connected", serialized, _iso(now))

    def socket_disconnected(self, sock: Socket, reason: str) -> None:
        with self._lock:
            self._issued.pop(sock.sid, None)
            self._transports.pop(sock.sid, None)
        if self.verbose:
            self._emit("socket_disconnected", sock.namespace, sock.sid, reason, _iso())

    def room_joined(self, sock: Socket, room: Hashable) -> None:
        if self.verbose:
            self._emit("room_joined", sock.namespace, _room_name(room), sock.sid, _iso())

    def room_left(self, sock: Socket, room: Hashable) -> None:
        if self.verbose:
            self._emit("room_left", sock.namespace, _room_name(room), sock.sid, _iso())

    def event_received(self, sock: Socket, data: list[Any]) -> None:
        if sock.namespace == self.namespace:
            return
        if self.verbose:
            self._emit("event_received", sock.namespace, sock.sid, data, _iso())

    def event_sent(self, socks: list[Socket], data: list[Any]) -> None:
        if not socks or socks[0].namespace == self.namespace:
            return
        if self.verbose:
            stamp = _iso()
            for sock in socks:
                self._emit("event_sent", sock.namespace, sock.sid, data, stamp)


def _same_credentials(expected: Any, given: Any) -> bool:
    """``given == expected`` for two credential dicts, comparing values in constant time."""
    if not isinstance(expected, dict) or not isinstance(given, dict):
        return False
    if set(expected) != set(given):
        return False
    same = True
    for key, value in expected.items():
        other = given[key]
        if type(other) is not type(value) or not hmac.compare_digest(
            str(value).encode(), str(other).encode()
        ):
            same = False
    return same


def instrument(
    server: SocketIOServer,
    auth: Any = None,
    mode: str = "development",
    read_only: bool = False,
    server_id: str | None = None,
    namespace: str = "/admin",
    server_stats_interval: float = 2,
) -> AdminUI:
    """Serve the Socket.IO Admin UI on ``server`` (python-socketio's ``instrument``).

    Returns the :class:`AdminUI`; its ``shutdown()`` stops it. Raises
    :class:`ValueError` for a missing ``auth`` or a bad option.
    """
    return AdminUI(
        server,
        auth=auth,
        namespace=namespace,
        mode=mode,
        read_only=read_only,
        server_id=server_id,
        server_stats_interval=server_stats_interval,
    ).install()
