"""python-socketio's introspection attributes, as views of the real registry.

Apps written for Flask-SocketIO read the internals of python-socketio and
python-engineio: ``len(socketio.server.manager.rooms['/'])`` to count users
online, ``socketio.server.manager.rooms['/'][room]`` or
``manager.get_participants('/', room)`` to list a room's members,
``manager.get_rooms(sid, '/')``, ``socketio.server.eio.sockets`` and
``socketio.server.eio.ping_timeout``. :class:`ManagerView` and
:class:`EngineView` give those names the same shapes, computed from
:class:`~flask_relay.engine.sio.SocketIOServer`'s registry, so such apps run
unchanged. Nothing here holds state of its own.

The shapes are python-socketio's (``socketio/base_manager.py``):

* ``manager.rooms[namespace][room][sid] == eio_sid``; ``room`` ``None`` holds
  every client of the namespace, and each client has a room named by its sid.
  A client stays listed (in ``None``, its own room and the rooms it had joined)
  until its disconnect handler has run, as there.
* ``manager.get_participants(namespace, room)`` yields ``(sid, eio_sid)``;
  ``room`` may be a list (the union).
* ``eio.sockets[eio_sid]`` is an object with ``sid``, ``closed``,
  ``upgraded``... for every open Engine.IO session of the network endpoints
  (in-process test clients have none, as with Flask-SocketIO).

The mappings are read-only and live: each look-up reads the registry under
its lock (no copy of the whole registry per access), and iteration works on
a snapshot, so the registry may change meanwhile. The manager's actions
(``enter_room``, ``leave_room``, ``close_room``) go through the server's
public methods. The Engine.IO options may be assigned
(``socketio.server.eio.ping_timeout = 60``): the value is stored in the
extension's options, so endpoints built afterwards (``socketio.run``) use it,
and applied to the endpoints already serving.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from .eio import EngineIOServer

if TYPE_CHECKING:
    from .sio import Socket, SocketIOServer

__all__ = ["ENGINE_DEFAULTS", "EngineSocketView", "EngineView", "ManagerView"]

#: The Engine.IO options an app may read (and set) on ``server.eio``, with the
#: defaults of python-engineio (and of :class:`EngineIOServer`).
ENGINE_DEFAULTS: dict[str, Any] = {
    "ping_interval": 25,
    "ping_timeout": 20,
    "max_http_buffer_size": 1_000_000,
    "allow_upgrades": True,
    "http_compression": True,
    "compression_threshold": 1024,
    "cookie": None,
    "cors_allowed_origins": None,
    "cors_credentials": True,
    "transports": ["polling", "websocket"],
    "monitor_clients": True,
}


def _is_room_list(room: Any) -> bool:
    # python-socketio's test: anything with a length that is not a string.
    return hasattr(room, "__len__") and not isinstance(room, str)


class _Members(Mapping[str, str]):
    """The members of one room: ``sid -> eio_sid`` (python-socketio's bidict)."""

    __slots__ = ("_namespace", "_room", "_server")

    def __init__(self, server: SocketIOServer, namespace: str, room: Hashable | None) -> None:
        self._server = server
        self._namespace = namespace
        self._room = room

    def _sockets(self) -> dict[str, Socket]:
        return self._server.room_members(self._namespace, self._room)

    def __getitem__(self, sid: str) -> str:
        sock = self._server.room_member(self._namespace, self._room, sid)
        if sock is None:
            raise KeyError(sid)
        return sock.eio_sid

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._sockets()))

    def __len__(self) -> int:
        return self._server.room_size(self._namespace, self._room)

    def __contains__(self, sid: object) -> bool:
        if not isinstance(sid, str):
            return False
        return self._server.room_member(self._namespace, self._room, sid) is not None

    @property
    def inverse(self) -> dict[str, str]:
        """``eio_sid -> sid`` (bidict's ``inverse``; a snapshot)."""
        return {sock.eio_sid: sid for sid, sock in self._sockets().items()}

    inv = inverse

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


class _NamespaceRooms(Mapping[Hashable, _Members]):
    """The rooms of one namespace: ``room -> members`` (``None``: everyone)."""

    __slots__ = ("_namespace", "_server")

    def __init__(self, server: SocketIOServer, namespace: str) -> None:
        self._server = server
        self._namespace = namespace

    def __getitem__(self, room: Hashable | None) -> _Members:
        if not self._server.room_size(self._namespace, room):
            raise KeyError(room)
        return _Members(self._server, self._namespace, room)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._server.room_names(self._namespace))

    def __len__(self) -> int:
        return self._server.room_count(self._namespace)

    def __contains__(self, room: object) -> bool:
        try:
            return self._server.room_size(self._namespace, room) > 0  # type: ignore[arg-type]
        except TypeError:  # unhashable
            return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({ {r: dict(m) for r, m in self.items()}!r})"


class _Rooms(Mapping[str, _NamespaceRooms]):
    """``namespace -> rooms`` for every namespace with a client."""

    __slots__ = ("_server",)

    def __init__(self, server: SocketIOServer) -> None:
        self._server = server

    def __getitem__(self, namespace: str) -> _NamespaceRooms:
        if namespace not in self._server.active_namespaces():
            raise KeyError(namespace)
        return _NamespaceRooms(self._server, namespace)

    def __iter__(self) -> Iterator[str]:
        return iter(self._server.active_namespaces())

    def __len__(self) -> int:
        return len(self._server.active_namespaces())

    def __contains__(self, namespace: object) -> bool:
        return namespace in self._server.active_namespaces()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({ {ns: dict(r) for ns, r in self.items()}!r})"


class ManagerView:
    """``socketio.server.manager``: python-socketio's client manager, read from
    the server's registry (see the module doc)."""

    __slots__ = ("_server",)

    def __init__(self, server: SocketIOServer) -> None:
        self._server = server

    @property
    def server(self) -> SocketIOServer:
        return self._server

    @property
    def rooms(self) -> Mapping[str, Mapping[Hashable, Mapping[str, str]]]:
        """``rooms[namespace][room][sid] == eio_sid`` (read-only, live)."""
        return _Rooms(self._server)

    def get_namespaces(self) -> list[str]:
        """The namespaces that have clients."""
        return list(self._server.active_namespaces())

    def get_participants(
        self, namespace: str, room: Hashable | Iterable[Hashable] | None
    ) -> Iterator[tuple[str, str]]:
        """``(sid, eio_sid)`` of every client in ``room`` (a list: the union;
        ``None``: the whole namespace), from a snapshot."""
        server = self._server
        if _is_room_list(room):
            members: dict[str, Socket] = {}
            for one in room:  # type: ignore[union-attr]
                members.update(server.room_members(namespace, one))
        else:
            members = server.room_members(namespace, room)  # type: ignore[arg-type]
        for sid, sock in members.items():
            yield sid, sock.eio_sid

    def get_rooms(self, sid: str, namespace: str) -> list[Hashable]:
        """The rooms ``sid`` is in, its own room included (not ``None``)."""
        return self._server.rooms(sid, namespace)

    def is_connected(self, sid: str, namespace: str) -> bool:
        """Connected and accepted, not connecting or leaving (python-socketio's)."""
        sock = self._server.get_socket(sid, namespace)
        return sock is not None and sock.connected

    def sid_from_eio_sid(self, eio_sid: str, namespace: str) -> str | None:
        """The sid of the Engine.IO session ``eio_sid`` in ``namespace``."""
        for sid, sock in self._server.room_members(namespace, None).items():
            if sock.eio_sid == eio_sid:
                return sid
        return None

    def eio_sid_from_sid(self, sid: str, namespace: str) -> str | None:
        sock = self._server.get_socket(sid, namespace)
        return None if sock is None else sock.eio_sid

    def can_disconnect(self, sid: str, namespace: str) -> bool:
        return self.is_connected(sid, namespace)

    # python-socketio's manager actions, through the server's public methods.

    def enter_room(
        self, sid: str, namespace: str, room: Hashable, eio_sid: str | None = None
    ) -> None:
        self._server.enter_room(sid, room, namespace)

    def leave_room(self, sid: str, namespace: str, room: Hashable) -> None:
        self._server.leave_room(sid, room, namespace)

    def close_room(self, room: Hashable, namespace: str) -> None:
        self._server.close_room(room, namespace)

    def __repr__(self) -> str:
        return f"<ManagerView of {self._server!r}>"


class EngineSocketView:
    """One Engine.IO session as python-engineio's ``Socket`` shows it."""

    __slots__ = ("_engine", "_session")

    def __init__(self, engine: EngineIOServer, session: Any) -> None:
        self._engine = engine
        self._session = session

    @property
    def sid(self) -> str:
        return str(self._session.sid)

    @property
    def server(self) -> EngineIOServer:
        return self._engine

    @property
    def connected(self) -> bool:
        return not self._session.closed

    @property
    def closed(self) -> bool:
        return bool(self._session.closed)

    @property
    def closing(self) -> bool:
        # The same as ``closed``: a session leaves the table when it closes.
        return bool(self._session.closed)

    @property
    def upgraded(self) -> bool:
        return bool(self._session.transport == "websocket")

    @property
    def upgrading(self) -> bool:
        return self._session.probe is not None

    @property
    def transport(self) -> str:
        """``"polling"`` or ``"websocket"`` (python-engineio's ``server.transport(sid)``)."""
        return str(self._session.transport)

    def close(self, wait: bool = True, abort: bool = False, reason: str | None = None) -> None:
        """Close the session; the Socket.IO disconnect handlers run as for
        ``disconnect()`` (``wait`` and ``abort`` are accepted and ignored)."""
        self._engine.disconnect(self.sid, "forced close")

    def __repr__(self) -> str:
        return f"<EngineSocketView {self.sid} {self.transport} closed={self.closed}>"


class _EngineSockets(Mapping[str, EngineSocketView]):
    """``eio_sid -> session`` over every network endpoint of the server."""

    __slots__ = ("_server",)

    def __init__(self, server: SocketIOServer) -> None:
        self._server = server

    def network_engines(self) -> list[EngineIOServer]:
        """The Engine.IO servers the Socket.IO server is bound to (no in-process engine)."""
        return [e for e in self._server.engines() if isinstance(e, EngineIOServer)]

    def __getitem__(self, eio_sid: str) -> EngineSocketView:
        for engine in self.network_engines():
            session = engine.session(eio_sid)
            if session is not None:
                return EngineSocketView(engine, session)
        raise KeyError(eio_sid)

    def __iter__(self) -> Iterator[str]:
        sids: list[str] = []
        for engine in self.network_engines():
            sids.extend(engine.session_ids())
        return iter(sids)

    def __len__(self) -> int:
        return sum(engine.session_count for engine in self.network_engines())

    def __contains__(self, eio_sid: object) -> bool:
        sid = cast(str, eio_sid)  # any key: an unhashable one raises, as a dict's would
        return any(engine.session(sid) is not None for engine in self.network_engines())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


class EngineView:
    """``socketio.server.eio``: python-engineio's server, for reading its
    options and sessions (see the module doc)."""

    __slots__ = ("_server",)

    #: python-engineio's async mode name for a threaded server.
    async_mode = "threading"

    def __init__(self, server: SocketIOServer) -> None:
        object.__setattr__(self, "_server", server)

    def _option(self, name: str) -> Any:
        return self._server.engine_options.get(name, ENGINE_DEFAULTS[name])

    def __getattr__(self, name: str) -> Any:
        if name == "ping_interval":
            value = self._option(name)
            return value[0] if isinstance(value, (tuple, list)) else value
        if name == "ping_interval_grace_period":
            value = self._option("ping_interval")
            return value[1] if isinstance(value, (tuple, list)) and len(value) > 1 else 0
        if name in ENGINE_DEFAULTS:
            return self._option(name)
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r} (Flask-Relay offers "
            f"{', '.join(sorted([*ENGINE_DEFAULTS, 'sockets', 'transport', 'async_mode']))})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ENGINE_DEFAULTS:
            raise AttributeError(f"cannot set {name!r} on the Engine.IO server")
        for engine in _EngineSockets(self._server).network_engines():
            engine.set_option(name, value)  # a bad value raises before it is stored
        self._server.engine_options[name] = value

    @property
    def sockets(self) -> Mapping[str, EngineSocketView]:
        """``eio_sid -> session`` for every open Engine.IO session (read-only, live)."""
        return _EngineSockets(self._server)

    def transport(self, sid: str) -> str | None:
        """``"polling"`` or ``"websocket"`` for an open session (``None``: unknown)."""
        view = self.sockets.get(sid)
        return None if view is None else view.transport

    def __repr__(self) -> str:
        return f"<EngineView of {self._server!r}>"
