"""Connection state recovery without a network: the in-memory store's bounds and
rules (engine/recovery.py), the option checks, and the server's side through the
in-process test client (a transport drop reported by its engine).

The end-to-end behaviour with the official client is in
tests/integration/test_recovery.py; these pin what is kept, for how long, and
what a refused recovery leaves behind.
"""

from __future__ import annotations

from typing import Any

import flask
import pytest

import flask_relay
from flask_relay import SocketIO
from flask_relay.engine.recovery import KeptSession, MemorySessionStore, RecoveryOptions
from flask_relay.test_client import _local_engine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(**options: Any) -> tuple[MemorySessionStore, Clock]:
    clock = Clock()
    parsed = RecoveryOptions.parse({"max_disconnection_duration": 10, **options})
    assert parsed is not None
    return MemorySessionStore(parsed, clock), clock


def _emit(store: MemorySessionStore, label: str, to: Any = None, skip: Any = None) -> str:
    offsets: list[str] = []

    def encode(offset: str) -> list[str | bytes]:
        offsets.append(offset)
        return [f"2[{label!r},{offset!r}]"]

    store.record("/", to, skip, encode)
    return offsets[0]


def _keep(store: MemorySessionStore, pid: str, rooms: list[str], mark: int = 0) -> None:
    store.persist(KeptSession(pid.upper(), pid, "/", rooms, {}, mark))


def _missed(store: MemorySessionStore, pid: str, offset: str | None) -> list[str] | None:
    restored = store.restore("/", pid, offset)
    return None if restored is None else [str(items[0]) for items in restored.missed]


def test_replays_after_the_offset_by_room_and_skip() -> None:
    store, _ = _store()
    first = _emit(store, "seen", to="r")
    _keep(store, "p", ["P", "r"])
    _emit(store, "to r", to="r")
    _emit(store, "to all")
    _emit(store, "to s", to="s")
    _emit(store, "to r or s", to=["r", "s"])
    _emit(store, "skip P", to="r", skip="P")
    _emit(store, "to P", to="P")
    missed = _missed(store, "p", first)
    assert missed is not None
    assert [m.split("'")[1] for m in missed] == ["to r", "to all", "to r or s", "to P"]
    # Once only: the session was taken.
    assert _missed(store, "p", first) is None


def test_no_offset_replays_from_the_connect_mark() -> None:
    store, _ = _store()
    _emit(store, "before", to="r")
    mark = store.position()
    _emit(store, "after", to="r")
    _keep(store, "p", ["P", "r"], mark)
    assert [m.split("'")[1] for m in _missed(store, "p", None) or []] == ["after"]


def test_unknown_offsets_and_namespaces_are_refused() -> None:
    store, _ = _store()
    offset = _emit(store, "x")
    other, _ = _store()
    foreign = _emit(other, "y")
    for bad in (foreign, "garbage", offset + "0" * 20):
        _keep(store, "p", ["P"])
        assert _missed(store, "p", bad) is None
    _keep(store, "p", ["P"])
    assert store.restore("/chat", "p", offset) is None


def test_packets_bounded_by_count_and_age() -> None:
    store, clock = _store(max_packets=5)
    first = _emit(store, "0")
    _keep(store, "p", ["P"])
    for i in range(1, 8):
        _emit(store, str(i))
    assert len(store) == 5
    # Events the client missed were dropped: no recovery rather than a gap.
    assert _missed(store, "p", first) is None
    clock.now += 11
    _emit(store, "late")
    assert len(store) == 1


def test_sessions_bounded_by_count_and_window() -> None:
    store, clock = _store(max_sessions=3)
    offset = _emit(store, "x")
    for pid in ("a", "b", "c", "d"):
        _keep(store, pid, [pid.upper()])
    assert store.session_count == 3
    assert _missed(store, "a", offset) is None  # the oldest went first
    assert _missed(store, "d", offset) == []
    clock.now += 10.5
    assert _missed(store, "c", offset) is None  # past the window
    assert store.session_count == 0


@pytest.mark.parametrize(
    "value, message",
    [
        ({"maxDisconnectionDuration": 120000}, "unknown option"),
        ({"max_disconnection_duration": 0}, "positive number"),
        ({"max_disconnection_duration": "2m"}, "positive number"),
        ({"max_packets": 0}, "positive integer"),
        ({"skip_middlewares": "yes"}, "True or False"),
        (120, "must be a dict"),
    ],
)
def test_bad_options_are_refused(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SocketIO(flask.Flask(__name__), connection_state_recovery=value)


def test_off_by_default_and_true_gives_the_defaults() -> None:
    app = flask.Flask(__name__)
    assert SocketIO(app).server.session_store is None
    sio = SocketIO(app, connection_state_recovery=True)
    assert sio.server.recovery == RecoveryOptions(120.0, True, 10_000, 10_000)


def test_the_test_client_hides_offsets() -> None:
    app = flask.Flask(__name__)
    sio = SocketIO(app, connection_state_recovery=True)

    @sio.on("hello")
    def hello(name: str) -> None:
        sio.emit("greet", ("hi", name))
        sio.send("plain")

    client = sio.test_client(app)
    assert client.get_sid() is not None
    client.emit("hello", "ann")
    assert client.get_received() == [
        {"name": "greet", "args": ["hi", "ann"], "namespace": "/"},
        {"name": "message", "args": "plain", "namespace": "/"},
    ]
    # Recorded like any emit: a real client would have got the offsets.
    store = sio.server.session_store
    assert store is not None and store.position() == 2


def _dropped(sio: SocketIO, client: Any) -> None:
    """What a transport drop does: the engine reports the connection gone."""
    _local_engine(sio).close_session(client.eio_sid, "transport close")


@pytest.mark.parametrize("always_connect", [False, True])
def test_a_refused_recovery_loses_the_session(always_connect: bool) -> None:
    app = flask.Flask(__name__)
    sio = SocketIO(
        app,
        always_connect=always_connect,
        connection_state_recovery={"skip_middlewares": False},
    )
    allow = {"ok": True}
    seen: list[tuple[str, Any]] = []

    @sio.on("connect")
    def connect(auth: Any) -> bool:
        seen.append(("connect", flask.request.sid))  # type: ignore[attr-defined]
        return allow["ok"]

    @sio.on("disconnect")
    def disconnect(reason: str) -> None:
        seen.append((reason, flask.request.sid))  # type: ignore[attr-defined]

    @sio.on("join")
    def join() -> None:
        flask_relay.join_room("r")

    first = sio.test_client(app)
    sid = first.get_sid()
    first.emit("join")
    _dropped(sio, first)
    store = sio.server.session_store
    assert isinstance(store, MemorySessionStore)
    (kept,) = store.sessions()
    assert (kept.sid, kept.rooms) == (sid, [sid, "r"])

    allow["ok"] = False
    refused = sio.test_client(app, auth={"pid": kept.pid})
    assert not refused.is_connected()
    # The refusal left nothing behind: no room, no socket, no kept session.
    assert sio.server.manager.rooms.get("/", {}).get("r") is None
    assert sio.server.get_socket(sid) is None
    assert store.session_count == 0
    allow["ok"] = True
    fresh = sio.test_client(app, auth={"pid": kept.pid})
    assert fresh.is_connected() and fresh.get_sid() != sid
    # The refused one's disconnect handler does not run (it was never accepted).
    assert seen == [
        ("connect", sid),
        ("transport close", sid),
        ("connect", sid),
        ("connect", fresh.get_sid()),
    ]


def test_recovered_in_process_keeps_rooms_and_data() -> None:
    app = flask.Flask(__name__)
    sio = SocketIO(app, connection_state_recovery=True)
    connects: list[str] = []

    @sio.on("connect")
    def connect() -> None:
        connects.append(flask.request.sid)  # type: ignore[attr-defined]

    @sio.on("join")
    def join() -> None:
        flask_relay.join_room("r")
        sio.server.get_session(flask.request.sid)["n"] = 1  # type: ignore[attr-defined]

    first = sio.test_client(app)
    sid = first.get_sid()
    first.emit("join")
    _dropped(sio, first)
    sio.emit("news", "missed", to="r")
    store = sio.server.session_store
    assert isinstance(store, MemorySessionStore)
    (kept,) = store.sessions()
    again = sio.test_client(app, auth={"pid": kept.pid})
    assert again.get_sid() == sid and connects == [sid]
    assert again.get_received() == [{"name": "news", "args": ["missed"], "namespace": "/"}]
    socket = sio.server.get_socket(sid)
    assert socket is not None and socket.recovered and socket.data == {"n": 1}
    assert sio.server.rooms(sid) == [sid, "r"]


def test_disconnect_while_away_discards_the_kept_session() -> None:
    app = flask.Flask(__name__)
    sio = SocketIO(app, connection_state_recovery=True)
    first = sio.test_client(app)
    sid = first.get_sid()
    assert sid is not None
    _dropped(sio, first)
    store = sio.server.session_store
    assert isinstance(store, MemorySessionStore)
    (kept,) = store.sessions()
    sio.server.disconnect(sid, namespace="/chat")  # another namespace: not this one
    assert store.session_count == 1
    sio.server.disconnect(sid)  # a ban while it is away: no way back
    assert store.session_count == 0
    again = sio.test_client(app, auth={"pid": kept.pid})
    assert again.is_connected() and again.get_sid() != sid


def test_the_sid_index_follows_the_sessions() -> None:
    store, clock = _store(max_sessions=2)
    offset = _emit(store, "x")
    for pid in ("a", "b", "c"):  # "a" goes: over max_sessions
        _keep(store, pid, [pid.upper()])
    assert not store.discard("A", "/")
    assert not store.discard("B", "/chat")
    assert store.discard("B", "/") and not store.discard("B", "/")
    assert _missed(store, "c", offset) == []
    assert not store.discard("C", "/")  # taken by the recovery
    _keep(store, "d", ["D"])
    clock.now += 11
    _emit(store, "y")
    assert store.restore("/", "nobody", None) is None  # expires "d"
    assert not store.discard("D", "/") and store.session_count == 0
