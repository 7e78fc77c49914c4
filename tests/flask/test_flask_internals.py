"""The python-socketio internals apps read: ``socketio.server.manager``, ``.eio``,
``socketio.server_options``.

Each scenario runs twice: on a Flask-Relay server and on python-socketio's own
``socketio.Server`` (the server under Flask-SocketIO, threading mode, Werkzeug),
both with python-socketio clients over the network, and what the app would read
is compared after replacing the random ids by labels: the same keys, the same
nesting, the same members, the same counts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import socketio as socketio_client
from flask import Flask, request
from flask_face_peers import free_port, wait_until
from werkzeug.serving import make_server

from flask_relay import Namespace, SocketIO, join_room, leave_room

NAMESPACES = ["/", "/chat"]


class Reference:
    """python-socketio's server, the one Flask-SocketIO wraps."""

    def __init__(self, **options: Any) -> None:
        self.server = socketio_client.Server(async_mode="threading", namespaces="*", **options)
        self.seen: dict[str, Any] = {}
        server = self.server
        for ns in NAMESPACES:
            self._handlers(ns)
        port = free_port()
        self.http = make_server("127.0.0.1", port, socketio_client.WSGIApp(server), threaded=True)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def _handlers(self, ns: str) -> None:
        server = self.server

        @server.on("join", namespace=ns)
        def join(sid: str, room: str) -> str:
            server.enter_room(sid, room, namespace=ns)
            return "ok"

        @server.on("leave", namespace=ns)
        def leave(sid: str, room: str) -> None:
            server.leave_room(sid, room, namespace=ns)

        @server.on("disconnect", namespace=ns)
        def disconnect(sid: str, *args: Any) -> None:
            if ns == "/":
                self.seen["at_disconnect"] = _at_disconnect(server.manager, sid)

    def stop(self) -> None:
        self.http.shutdown()
        self.thread.join(5)


def _at_disconnect(manager: Any, sid: str) -> Any:
    """What a disconnect handler reads about the leaving client."""
    return (
        len(manager.rooms["/"]),
        sid in manager.rooms["/"][None],
        sorted("<own>" if r == sid else str(r) for r in manager.get_rooms(sid, "/")),
        len(list(manager.get_participants("/", "lobby"))),
    )


class Ours:
    """The same handlers on Flask-Relay, served by ``socketio.make_server``."""

    def __init__(self, **options: Any) -> None:
        self.app = Flask(__name__)
        self.sio = SocketIO(self.app, namespaces="*", **options)
        self.seen: dict[str, Any] = {}
        sio = self.sio
        for ns in NAMESPACES:
            sio.on("join", namespace=ns)(lambda room: join_room(room) or "ok")
            sio.on("leave", namespace=ns)(lambda room: leave_room(room))
        sio.on("disconnect")(self._disconnect)
        self.server = sio.make_server(self.app, "127.0.0.1", free_port())
        self.server.start()
        self.url = self.server.url

    def _disconnect(self, *args: Any) -> None:
        manager = self.sio.server.manager
        self.seen["at_disconnect"] = _at_disconnect(manager, request.sid)  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(params=["reference", "ours"])
def side(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _start(kind: str, **options: Any) -> Reference | Ours:
    return Reference(**options) if kind == "reference" else Ours(**options)


def _manager(served: Reference | Ours) -> Any:
    return served.server.manager if isinstance(served, Reference) else served.sio.server.manager


def _eio(served: Reference | Ours) -> Any:
    return served.server.eio if isinstance(served, Reference) else served.sio.server.eio


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for client in made:
        if client.connected:
            client.disconnect()


def _connect(url: str, made: list[Any], transports: list[str] | None = None) -> Any:
    client = socketio_client.Client(reconnection=False, handle_sigint=False)
    client.connect(url, namespaces=NAMESPACES, transports=transports, wait_timeout=5)
    made.append(client)
    return client


def _labels(clients: list[Any]) -> dict[Any, str]:
    labels: dict[Any, str] = {}
    for i, client in enumerate(clients):
        labels[client.eio.sid] = f"eio{i}"
        for ns in NAMESPACES:
            labels[client.get_sid(ns)] = f"c{i}{ns}"
    return labels


def _shape(rooms: Any, labels: dict[Any, str]) -> dict[str, Any]:
    """``rooms`` with the random ids replaced by labels (plain dicts)."""
    return {
        ns: {
            labels.get(room, room): {labels[sid]: labels[eio] for sid, eio in members.items()}
            for room, members in by_room.items()
        }
        for ns, by_room in rooms.items()
    }


def _scenario(served: Reference | Ours, made: list[Any]) -> dict[str, Any]:
    """Three clients, rooms on two namespaces; what an app reads, with labels."""
    a, b, c = (_connect(served.url, made, t) for t in (["websocket"], ["polling"], None))
    for client, ns, room in [
        (a, "/", "lobby"), (a, "/", "red"), (b, "/", "lobby"), (a, "/chat", "lobby"),
        (c, "/", "blue"),
    ]:
        assert client.call("join", room, namespace=ns, timeout=5) == "ok"
    c.call("leave", "blue", timeout=5)  # the room disappears when empty
    manager = _manager(served)
    labels = _labels([a, b, c])
    sid_a, sid_b = a.get_sid("/"), b.get_sid("/")
    result = {
        "rooms": _shape(manager.rooms, labels),
        "count": len(manager.rooms["/"]),
        "in": ("lobby" in manager.rooms["/"], "blue" in manager.rooms["/"]),
        "lobby": sorted(labels[s] for s in manager.rooms["/"]["lobby"]),
        "namespaces": sorted(manager.get_namespaces()),
        "participants": sorted(
            (labels[s], labels[e]) for s, e in manager.get_participants("/", "lobby")
        ),
        "union": sorted(labels[s] for s, _ in manager.get_participants("/", ["lobby", "red"])),
        "everyone": sorted(labels[s] for s, _ in manager.get_participants("/", None)),
        "nobody": list(manager.get_participants("/", "nowhere")),
        "get_rooms": sorted(labels.get(r, r) for r in manager.get_rooms(sid_a, "/")),
        "connected": (manager.is_connected(sid_a, "/"), manager.is_connected("nope", "/")),
        "sid_from_eio": labels[manager.sid_from_eio_sid(a.eio.sid, "/chat")],
        "eio_from_sid": labels[manager.eio_sid_from_sid(sid_b, "/")],
        "get": manager.rooms.get("/missing", {}) == {},
    }
    # The leaving client is still listed while its disconnect handler runs.
    b.disconnect()
    wait_until(lambda: "at_disconnect" in served.seen, what="the disconnect handler")
    result["at_disconnect"] = served.seen["at_disconnect"]
    # Gone from both namespaces: each has its own disconnect, and "after" reads both.
    wait_until(
        lambda: all(len(manager.rooms[ns][None]) == 2 for ns in NAMESPACES), what="b gone"
    )
    result["after"] = _shape(manager.rooms, labels)
    return result


def test_manager_views_match_python_socketio(clients: list[Any]) -> None:
    results = {}
    for kind in ("reference", "ours"):
        served = _start(kind)
        try:
            results[kind] = _scenario(served, clients)
        finally:
            for client in clients:
                if client.connected:
                    client.disconnect()
            clients.clear()
            served.stop()
    ours, reference = results["ours"], results["reference"]
    assert ours == reference
    # And what that is, spelled out (so the test cannot pass on two empty results).
    assert ours["rooms"]["/"]["lobby"] == {"c0/": "eio0", "c1/": "eio1"}
    assert ours["rooms"]["/"][None] == {"c0/": "eio0", "c1/": "eio1", "c2/": "eio2"}
    assert ours["rooms"]["/chat"]["lobby"] == {"c0/chat": "eio0"}
    assert "blue" not in ours["rooms"]["/"]
    assert ours["count"] == 1 + 3 + 2  # None, three own rooms, lobby and red
    assert ours["get_rooms"] == ["c0/", "lobby", "red"]
    assert ours["at_disconnect"] == (6, True, ["<own>", "lobby"], 2)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "ping_interval": (10, 3), "ping_timeout": 7, "allow_upgrades": False,
            "cors_allowed_origins": ["http://a.example"], "max_http_buffer_size": 5000,
            "transports": ["websocket"], "http_compression": False, "cookie": "io",
        },
    ],
)
def test_engine_options_match_python_engineio(options: dict[str, Any]) -> None:
    names = [
        "ping_interval", "ping_interval_grace_period", "ping_timeout", "allow_upgrades",
        "cors_allowed_origins", "cors_credentials", "max_http_buffer_size", "transports",
        "http_compression", "compression_threshold", "cookie", "async_mode",
    ]
    reference = socketio_client.Server(async_mode="threading", **options).eio
    app = Flask(__name__)
    ours = SocketIO(app, **options).server.eio
    assert {n: getattr(ours, n) for n in names} == {n: getattr(reference, n) for n in names}


def test_eio_sockets_and_live_options(clients: list[Any]) -> None:
    served = Ours()
    try:
        eio = served.sio.server.eio
        assert len(eio.sockets) == 0
        a = _connect(served.url, clients, ["websocket"])
        b = _connect(served.url, clients, ["polling"])
        assert set(eio.sockets) == {a.eio.sid, b.eio.sid}
        assert len(eio.sockets) == 2
        assert (eio.sockets[a.eio.sid].upgraded, eio.sockets[b.eio.sid].upgraded) == (True, False)
        assert eio.transport(b.eio.sid) == "polling"
        assert not eio.sockets[a.eio.sid].closed
        assert "nope" not in eio.sockets and eio.sockets.get("nope") is None
        # Assigning an option reaches the endpoint already serving and the
        # extension's options (endpoints built later).
        eio.ping_interval = 0.3
        assert served.sio.server_options["ping_interval"] == 0.3
        c = _connect(served.url, clients, ["websocket"])
        assert c.eio.ping_interval == 0.3
        with pytest.raises(AttributeError):
            eio.sockets_count = 1
        # Closing a session from the app: the client sees the disconnect.
        eio.sockets[a.eio.sid].close(wait=False, abort=True)
        wait_until(lambda: not a.connected, what="a disconnected")
        wait_until(lambda: a.eio.sid not in eio.sockets, what="a's session gone")
    finally:
        for client in clients:
            if client.connected:
                client.disconnect()
        served.stop()


def test_options_set_before_run_are_used(clients: list[Any]) -> None:
    # Apps tune the server after SocketIO(app) and before run: through
    # server_options (Flask-SocketIO's dict) or the Engine.IO attributes.
    app = Flask(__name__)
    sio = SocketIO(app, namespaces="*")
    sio.server_options["allow_upgrades"] = False
    sio.server.eio.ping_timeout = 3
    assert sio.server_options["ping_timeout"] == 3
    assert sio.server.eio.allow_upgrades is False
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        client = _connect(server.url, clients, ["polling", "websocket"])
        assert client.eio.upgrades == []
        assert client.eio.ping_timeout == 3
        client.disconnect()
    finally:
        server.stop()


def test_views_with_the_test_client() -> None:
    app = Flask(__name__)
    sio = SocketIO(app)
    sio.on("join")(lambda room: join_room(room))
    sio.on("count")(lambda: len(sio.server.manager.rooms["/"][None]))
    a, b = sio.test_client(app), sio.test_client(app)
    a.emit("join", "lobby")
    b.emit("join", "lobby")
    manager = sio.server.manager
    sid_a, sid_b = a.get_sid(), b.get_sid()
    assert set(manager.rooms["/"]["lobby"]) == {sid_a, sid_b}
    assert a.emit("count", callback=True) == 2
    assert sorted(manager.get_rooms(sid_a, "/"), key=str) == sorted([sid_a, "lobby"])
    assert {s for s, _ in manager.get_participants("/", "lobby")} == {sid_a, sid_b}
    assert a.eio_sid == manager.eio_sid_from_sid(sid_a, "/")
    assert manager.sid_from_eio_sid(a.eio_sid, "/") == sid_a
    # Test clients have no Engine.IO socket, as with Flask-SocketIO.
    assert len(sio.server.eio.sockets) == 0
    # manager.enter_room / leave_room / close_room act on the real rooms.
    manager.enter_room(sid_a, "/", "red")
    assert set(manager.rooms["/"]["red"]) == {sid_a}
    manager.close_room("lobby", "/")
    assert "lobby" not in manager.rooms["/"]
    a.disconnect()
    assert sid_a not in manager.rooms["/"][None]
    assert "red" not in manager.rooms["/"]
    b.disconnect()
    assert "/" not in manager.rooms and len(manager.rooms) == 0
    with pytest.raises(TypeError):
        manager.rooms["/"] = {}  # type: ignore[index]


def test_namespace_handlers_lists_the_registered_namespace_objects() -> None:
    # python-socketio's server.namespace_handlers maps each namespace to the
    # object registered for it; apps (and their tests) call its methods.
    class Downloads(Namespace):
        def on_connect(self) -> None:
            self.emit("init", {"items": []})

    reference = socketio_client.Server(async_mode="threading")
    reference.register_namespace(socketio_client.Namespace("/downloads"))

    app = Flask(__name__)
    sio = SocketIO()
    before = Downloads("/downloads")
    sio.on_namespace(before)  # registered before init_app, as app factories do
    sio.init_app(app)
    after = Downloads("/after")
    sio.on_namespace(after)
    handlers = sio.server.namespace_handlers
    assert set(handlers) == set(reference.namespace_handlers) | {"/after"}
    assert handlers["/downloads"] is before and handlers["/after"] is after
    with pytest.raises(TypeError):
        handlers["/x"] = after  # type: ignore[index]

    client = sio.test_client(app, namespace="/downloads")
    client.get_received("/downloads")
    handlers["/downloads"].emit("update", {"id": 1})  # outside any handler
    assert client.get_received("/downloads") == [
        {"name": "update", "args": [{"id": 1}], "namespace": "/downloads"}
    ]
    client.disconnect("/downloads")
