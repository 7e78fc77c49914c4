"""The Redis Streams recovery store (pubsub/streams.py) against the machine's Redis.

Two ``SocketIO`` objects in this process stand for two server processes: each
has its own queue (its own host id, listener and publisher threads) on one
stream, under a channel name of the test's own. The clients are Flask-Relay's
test client; the end-to-end test with the official client over the network
is test_queue_streams_recovery.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from brokers import channel, wait_for

from flask_relay import SocketIO, join_room
from flask_relay.engine.recovery import KeptSession
from flask_relay.pubsub.streams import RedisStreamsQueue, StreamSessionStore

URL = "redis+streams://127.0.0.1:6379/0"


pytestmark = pytest.mark.usefixtures("no_stream_keys_left")


@pytest.fixture
def name(redis_client: Any) -> Iterator[str]:
    value = channel()
    yield value
    keys = list(redis_client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        redis_client.delete(*keys)


class Node:
    """One "process": an app, its SocketIO and its streams queue."""

    def __init__(self, name: str, recovery: Any = True) -> None:
        self.app = flask.Flask(__name__)
        self.sio = SocketIO(
            self.app, message_queue=URL, channel=name, connection_state_recovery=recovery
        )

        @self.sio.on("join")
        def join(room: str) -> None:
            join_room(room)

        queue = self.sio.server.queue
        assert isinstance(queue, RedisStreamsQueue)
        self.queue = queue
        assert queue.ready.wait(10)

    @property
    def store(self) -> StreamSessionStore:
        store = self.sio.server.session_store
        assert isinstance(store, StreamSessionStore)
        return store

    def close(self) -> None:
        self.queue.close()


@pytest.fixture
def nodes(name: str) -> Iterator[tuple[Node, Node]]:
    a, b = Node(name), Node(name)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _entries(redis_client: Any, name: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (entry_id.decode(), json.loads(fields[b"m"]))
        for entry_id, fields in redis_client.xrange(name)
    ]


def _events(client: Any, event: str) -> list[Any]:
    return [item["args"] for item in client.get_received() if item["name"] == event]


def _keep(store: StreamSessionStore, sid: str, data: dict[str, Any] | None = None) -> KeptSession:
    session = KeptSession(sid, f"pid-{sid}", "/", [sid, "r"], data or {}, store.position())
    with store.queue.server._lock:  # type: ignore[union-attr]
        store.persist(session)
    return session


def test_the_url_picks_the_streams_queue_and_redis_stays_pubsub(name: str) -> None:
    streams = SocketIO(flask.Flask(__name__), message_queue=URL, channel=name).server.queue
    assert isinstance(streams, RedisStreamsQueue)
    streams.close()
    plain = SocketIO(
        flask.Flask(__name__),
        message_queue="redis://127.0.0.1:6379/0",
        channel=name,
        connection_state_recovery=True,
    )
    # python-socketio's RedisManager wire format: pub/sub, a store per process.
    assert type(plain.server.queue).__name__ == "RedisQueue"
    assert not plain.server.session_store.shared  # type: ignore[union-attr]
    plain.server.queue.close()  # type: ignore[union-attr]


def test_an_emit_reaches_every_process_from_the_log_with_its_entry_id(
    nodes: tuple[Node, Node], redis_client: Any, name: str
) -> None:
    a, b = nodes
    on_a, on_b = a.sio.test_client(a.app), b.sio.test_client(b.app)
    on_a.emit("join", "r")
    on_b.emit("join", "r")
    a.sio.emit("tick", 1, to="r")
    b.sio.emit("tick", 2, to="r")
    for client in (on_a, on_b):
        wait_for(lambda c=client: len(c.queue) >= 2, 5, "both ticks")  # type: ignore[misc]
    ticks = [
        (m["data"][0], m.get("log"))
        for _, m in _entries(redis_client, name)
        if m.get("event") == "tick"
    ]
    # Two publishers: either may append first; the log decides for everyone.
    assert sorted(ticks) == [(1, True), (2, True)]
    order = [[value] for value, _ in ticks]
    # Both processes delivered in the log's order, the emitting one too.
    assert _events(on_a, "tick") == _events(on_b, "tick") == order
    last = [i for i, m in _entries(redis_client, name) if m.get("event") == "tick"][-1]
    assert a.store.position() == b.store.position() == last


def test_a_local_only_emit_is_in_the_log_for_its_process_only(
    nodes: tuple[Node, Node], redis_client: Any, name: str
) -> None:
    a, b = nodes
    on_a, on_b = a.sio.test_client(a.app), b.sio.test_client(b.app)
    on_a.emit("join", "r")
    on_b.emit("join", "r")
    a.sio.server.emit("mine", 1, to="r", ignore_queue=True)
    a.sio.emit("all", 2, to="r")
    wait_for(lambda: len(on_a.queue) >= 2 and len(on_b.queue) >= 1, 5, "the emits")
    assert [i["name"] for i in on_a.get_received()] == ["mine", "all"]
    assert [i["name"] for i in on_b.get_received()] == ["all"]
    mine = [m for _, m in _entries(redis_client, name) if m.get("event") == "mine"]
    assert [m["only"] for m in mine] == [a.queue.host_id]


def test_a_session_is_restored_once_by_any_process(
    nodes: tuple[Node, Node], redis_client: Any, name: str
) -> None:
    a, b = nodes
    session = _keep(a.store, "s1", {"user": "ann"})
    wait_for(lambda: redis_client.exists(f"{name}:session:{session.pid}"), 5, "the kept session")
    ttl = redis_client.pttl(f"{name}:session:{session.pid}")
    assert 100_000 < ttl <= 120_000  # the default window, 120 s
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def restore(node: Node) -> None:
        barrier.wait()
        with node.store.replaying():
            results.append(node.store.restore("/", session.pid, None))

    threads = [threading.Thread(target=restore, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    won = [r for r in results if r is not None]
    assert len(results) == 2 and len(won) == 1
    kept = won[0].session
    assert (kept.sid, kept.rooms, kept.data) == ("s1", ["s1", "r"], {"user": "ann"})
    assert list(redis_client.scan_iter(match=f"{name}:*ession*")) == []


def test_a_trimmed_or_unknown_offset_is_not_recovered(
    nodes: tuple[Node, Node], redis_client: Any, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = nodes
    a.sio.emit("tick", 1)

    def ticks() -> list[str]:
        return [i for i, m in _entries(redis_client, name) if m.get("event") == "tick"]

    wait_for(lambda: ticks() and a.store.position() == ticks()[0], 5, "the entry applied")
    offset = ticks()[0]
    for bad in ("0-1", "not-an-id", "99999999999999-0"):
        _keep(a.store, "s2")
        wait_for(lambda: redis_client.exists(f"{name}:session:pid-s2"), 5, "the kept session")
        with caplog.at_level(logging.INFO, "flask_relay.pubsub"):
            assert b.store.restore("/", "pid-s2", bad) is None
    _keep(a.store, "s2")
    wait_for(lambda: redis_client.exists(f"{name}:session:pid-s2"), 5, "the kept session")
    redis_client.xtrim(name, maxlen=0)  # the client's last entry is gone
    assert b.store.restore("/", "pid-s2", offset) is None
    assert "no longer kept" in caplog.text or "unknown offset" in caplog.text


def test_disconnect_while_away_ends_the_session_in_every_process(
    nodes: tuple[Node, Node], redis_client: Any, name: str
) -> None:
    a, b = nodes
    session = _keep(a.store, "s3")
    key = f"{name}:session:{session.pid}"
    wait_for(lambda: redis_client.exists(key), 5, "the kept session")
    b.sio.server.disconnect("s3")  # another process than the one it was on
    wait_for(lambda: not redis_client.exists(key), 5, "the session to go")
    assert not redis_client.exists(f"{name}:sid:/:s3")


def test_session_data_that_is_not_json_is_not_kept(
    nodes: tuple[Node, Node], redis_client: Any, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = nodes
    with caplog.at_level(logging.WARNING, "flask_relay.pubsub"):
        _keep(a.store, "s4", {"when": object()})
    assert "cannot be kept" in caplog.text
    a.sio.emit("after", 1)  # through the same outbox, after the session would be
    wait_for(
        lambda: any(m.get("event") == "after" for _, m in _entries(redis_client, name)),
        5,
        "the emit",
    )
    assert not redis_client.exists(f"{name}:session:pid-s4")


def test_a_write_only_emitter_reaches_the_clients_with_offsets(
    nodes: tuple[Node, Node], redis_client: Any, name: str
) -> None:
    a, _ = nodes
    client = a.sio.test_client(a.app)
    emitter = SocketIO(message_queue=URL, channel=name)
    assert emitter.server.queue.write_only  # type: ignore[union-attr]
    emitter.emit("news", "hi")
    wait_for(lambda: len(client.queue) >= 1, 5, "the emit")
    assert _events(client, "news") == [["hi"]]
    (entry_id,) = [i for i, m in _entries(redis_client, name) if m.get("event") == "news"]
    assert a.store.position() == entry_id  # delivered with the entry id as offset
    emitter.server.queue.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("skip_middlewares", [True, False])
def test_the_test_client_recovers_on_the_other_process(
    name: str, redis_client: Any, skip_middlewares: bool
) -> None:
    from flask_relay.test_client import _local_engine

    recovery = {"skip_middlewares": skip_middlewares}
    a, b = Node(name, recovery), Node(name, recovery)
    connects: list[tuple[str, Any]] = []

    @b.sio.on("connect")
    def connect(auth: Any) -> None:
        connects.append((flask.request.sid, auth))  # type: ignore[attr-defined]

    try:
        first = a.sio.test_client(a.app)
        sid = first.get_sid()
        first.emit("join", "r")
        b.sio.emit("tick", 1, to="r")
        wait_for(lambda: len(first.queue) >= 1, 5, "tick 1")
        offset = a.store.position()
        _local_engine(a.sio).close_session(first.eio_sid, "transport close")
        wait_for(lambda: list(redis_client.scan_iter(match=f"{name}:session:*")), 5, "kept")
        (key,) = redis_client.scan_iter(match=f"{name}:session:*")
        pid = key.decode().rsplit(":", 1)[1]
        a.sio.emit("tick", (2, b"\x00\xff"), to="r")  # binary survives the replay
        b.sio.emit("tick", 3, to=["r", "elsewhere"])
        b.sio.emit("tick", 4, to="elsewhere")  # not its room
        b.sio.emit("tick", 5, to="r", skip_sid=sid)  # excluded
        a.sio.emit("tick", 6)  # the whole namespace
        wait_for(
            lambda: (
                b.store.position() == a.store.position()
                and len([m for _, m in _entries(redis_client, name) if m.get("event") == "tick"])
                == 6
            ),
            5,
            "the ticks applied",
        )
        again = b.sio.test_client(b.app, auth={"pid": pid, "offset": offset})
        wait_for(lambda: again.is_connected(), 5, "the recovered connect")
        assert again.get_sid() == sid
        b.sio.emit("tick", 7, to="r")
        wait_for(lambda: len(again.queue) >= 4, 5, "the ticks")
        time.sleep(0.2)  # nothing more comes (each once)
        got = _events(again, "tick")
        # In the log's order (the two processes' emits interleave there as they came).
        log = [
            RedisStreamsQueue.emit_args_of(m)[0]
            for _, m in _entries(redis_client, name)
            if m.get("event") == "tick"
        ]
        assert [args[0] for args in got] == [v for v in log if v in (2, 3, 6, 7)]
        assert [args for args in got if args[0] == 2] == [[2, b"\x00\xff"]]
        socket = b.sio.server.get_socket(sid)
        assert socket is not None and socket.recovered
        assert b.sio.server.rooms(sid) == [sid, "r"]
        expected = [] if skip_middlewares else [(sid, {"pid": pid, "offset": offset})]
        assert connects == expected
    finally:
        a.close()
        b.close()


def test_without_recovery_it_is_an_ordinary_queue_on_a_stream(name: str, redis_client: Any) -> None:
    a, b = Node(name, recovery=None), Node(name, recovery=None)
    try:
        assert a.sio.server.session_store is None
        on_a, on_b = a.sio.test_client(a.app), b.sio.test_client(b.app)
        on_a.emit("join", "r")
        on_b.emit("join", "r")
        a.sio.emit("tick", 1, to="r")
        # Local clients first, at once; no offsets anywhere.
        assert _events(on_a, "tick") == [[1]]
        wait_for(lambda: len(on_b.queue) >= 1, 5, "the other process")
        assert _events(on_b, "tick") == [[1]]
        (message,) = [m for _, m in _entries(redis_client, name) if m.get("event") == "tick"]
        assert "log" not in message and message["room"] == "r"
    finally:
        a.close()
        b.close()
