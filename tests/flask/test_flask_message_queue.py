"""Message queues over a real Redis: several SocketIO servers, external emitters, the test client.

Each SocketIO instance here stands for one process (it has its own host id and
its own clients); they meet only through a redis-server started by the test.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import socketio as python_socketio
from flask import Flask, request
from flask_face_peers import free_port, wait_until

from flask_relay import SocketIO, join_room

_channels = itertools.count()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required (make test installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_until(up, what="redis-server")
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


class Cluster:
    """Several SocketIO "processes" on one channel."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.channel = f"flask-relay-test-{next(_channels)}"
        self.made: list[SocketIO] = []

    def node(self, **kwargs: Any) -> tuple[Flask, SocketIO]:
        app = Flask(f"node{len(self.made)}")
        sio = SocketIO(app, message_queue=self.url, channel=self.channel, **kwargs)
        assert sio.server.queue is not None
        assert sio.server.queue.ready.wait(5), "listener did not subscribe"
        sio.on("join")(lambda room: join_room(room))
        self.made.append(sio)
        return app, sio

    def close(self) -> None:
        for sio in self.made:
            if sio.server.queue is not None:
                sio.server.queue.close()


@pytest.fixture
def cluster(redis_url: str) -> Iterator[Cluster]:
    c = Cluster(redis_url)
    try:
        yield c
    finally:
        c.close()


def _events(client: Any, name: str, count: int = 1) -> list[Any]:
    """Wait for ``count`` events ``name``; other events stay in the client's queue."""
    got: list[Any] = []

    def arrived() -> bool:
        with client._lock:
            got.extend(e["args"] for e in client.queue if e["name"] == name)
            client.queue = [e for e in client.queue if e["name"] != name]
        return len(got) >= count

    wait_until(arrived, what=f"{count} {name!r} events")
    return got


def test_emit_reaches_clients_of_another_process(cluster: Cluster) -> None:
    app1, sio1 = cluster.node()
    app2, sio2 = cluster.node()
    a = sio1.test_client(app1)  # the test client works with a message queue
    b = sio2.test_client(app2)
    a.emit("join", "room")
    sio2.emit("everyone", {"n": 1})
    assert _events(a, "everyone") == [[{"n": 1}]]
    assert _events(b, "everyone") == [[{"n": 1}]]
    sio2.emit("room_only", b"\x00bin", to="room")
    assert _events(a, "room_only") == [[b"\x00bin"]]
    sio2.emit("skip_a", 1, skip_sid=a.sid)
    sio2.emit("direct", 2, to=a.sid)
    assert _events(a, "direct") == [[2]]
    assert b.get_received() == [{"name": "skip_a", "args": [1], "namespace": "/"}]


def test_room_operations_across_processes(cluster: Cluster) -> None:
    app1, sio1 = cluster.node()
    app2, sio2 = cluster.node()
    a = sio1.test_client(app1)
    sio2.server.enter_room(a.sid, "remote")  # a lives in the other process
    sio2.emit("marker", 0)
    _events(a, "marker")
    sio2.emit("in_remote", 1, to="remote")
    assert _events(a, "in_remote") == [[1]]
    sio2.server.leave_room(a.sid, "remote")
    sio2.emit("in_remote", 2, to="remote")
    sio2.emit("marker", 3)
    assert _events(a, "marker") == [[3]]
    assert a.get_received() == []
    sio2.server.enter_room(a.sid, "closing")
    sio2.close_room("closing")
    sio2.emit("in_closing", 4, to="closing")
    sio2.emit("marker", 5)
    assert _events(a, "marker") == [[5]]
    assert a.get_received() == []
    sio2.server.disconnect(a.sid)
    wait_until(lambda: not a.is_connected(), what="remote disconnect")


def test_acks_and_call_across_processes(cluster: Cluster) -> None:
    app1, sio1 = cluster.node()
    app2, sio2 = cluster.node()
    a = sio1.test_client(app1)
    a.on("double", lambda x: x * 2)
    assert sio2.call("double", 21, to=a.sid, timeout=5) == 42
    got: list[Any] = []
    sio2.emit("double", 5, to=a.sid, callback=lambda *args: got.append(args))
    wait_until(lambda: got, what="remote callback")
    assert got == [(10,)]


def test_write_only_emitter_without_an_app(cluster: Cluster) -> None:
    app1, sio1 = cluster.node()
    a = sio1.test_client(app1)
    emitter = SocketIO(message_queue=cluster.url, channel=cluster.channel)
    assert emitter.server.queue is not None and emitter.server.queue.write_only
    emitter.emit("from_worker", "job done")
    assert _events(a, "from_worker") == [["job done"]]


def test_python_socketio_external_emitter_interoperates(cluster: Cluster) -> None:
    app1, sio1 = cluster.node()
    a = sio1.test_client(app1)
    a.emit("join", "ext")
    external = python_socketio.RedisManager(cluster.url, channel=cluster.channel, write_only=True)
    external.emit("external", {"x": [1, 2]}, room="ext", namespace="/")
    external.emit("external_bin", (b"\x01\x02", "t"), room=a.sid, namespace="/")
    assert _events(a, "external") == [[{"x": [1, 2]}]]
    assert _events(a, "external_bin") == [[b"\x01\x02", "t"]]


def test_handler_broadcast_reaches_other_process(cluster: Cluster) -> None:
    app1, sio1 = cluster.node()
    app2, sio2 = cluster.node()

    @sio1.on("shout")
    def shout(text):
        from flask_relay import emit

        emit("heard", [text, request.sid], broadcast=True, include_self=False)

    a = sio1.test_client(app1)
    b = sio2.test_client(app2)
    a.emit("shout", "hello")
    assert _events(b, "heard") == [[["hello", a.sid]]]
    assert a.get_received() == []


def test_ignore_queue_stays_local(cluster: Cluster) -> None:
    app1, sio1 = cluster.node()
    app2, sio2 = cluster.node()
    a = sio1.test_client(app1)
    b = sio2.test_client(app2)
    sio2.emit("local_only", 1, ignore_queue=True)
    sio2.server.send("local message", ignore_queue=True)  # the engine's own send too
    sio2.emit("marker", 2)
    assert _events(a, "marker") == [[2]]
    assert a.get_received() == []
    assert b.get_received() == [
        {"name": "local_only", "args": [1], "namespace": "/"},
        {"name": "message", "args": "local message", "namespace": "/"},  # as the anchor shows it
        {"name": "marker", "args": [2], "namespace": "/"},
    ]


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_listener_survives_a_broker_restart(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = _start_redis(port)
    cluster = Cluster(url)
    try:
        wait_until(lambda: _redis_up(port), what="redis-server")
        app1, sio1 = cluster.node()
        app2, sio2 = cluster.node()
        a = sio1.test_client(app1)
        sio2.emit("before", 1)
        assert _events(a, "before") == [[1]]
        queue = sio1.server.queue
        assert queue is not None
        with caplog.at_level("INFO", logger="flask_relay.pubsub"):
            proc.terminate()
            proc.wait(10)
            wait_until(lambda: not queue.ready.is_set(), what="the listener noticing")
            proc = _start_redis(port)
            wait_until(lambda: queue.ready.wait(0.1), timeout=20, what="resubscription")
            sio2.emit("after", 2)
            assert _events(a, "after") == [[2]]
            # Loudly, once per outage and process (two here); INFO on recovery.
            wait_until(
                lambda: any("is back after" in r.getMessage() for r in caplog.records),
                what="the recovery line",
            )
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 2, [r.getMessage() for r in errors]
        assert all("unreachable" in r.getMessage() for r in errors)
    finally:
        cluster.close()
        proc.terminate()
        proc.wait(10)


def _redis_up(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


def test_python_socketio_server_receives_our_publications(cluster: Cluster) -> None:
    """A python-socketio server (what Flask-SocketIO runs on) on the same channel gets our emits."""
    import sys
    from pathlib import Path

    port = free_port()
    script = Path(__file__).resolve().parent / "python_socketio_server.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), cluster.url, cluster.channel, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = python_socketio.Client(reconnection=False, handle_sigint=False)
    got: list[Any] = []
    client.on("from_relay", lambda *args: got.append(args))
    try:
        wait_until(lambda: _listening(port), timeout=15, what="the python-socketio server")
        client.connect(f"http://127.0.0.1:{port}", wait_timeout=5)
        assert client.call("join", "shared", timeout=5) == "joined"
        app1, sio1 = cluster.node()
        wait_until(lambda: _their_listener_ready(cluster), what="python-socketio listener")
        sio1.emit("from_relay", {"n": 1}, to="shared")
        sio1.emit("from_relay", b"\x00\x01", "two", to=client.get_sid())
        wait_until(lambda: len(got) == 2, what="events relayed to python-socketio's client")
        assert got == [({"n": 1},), (b"\x00\x01", "two")]
    finally:
        client.disconnect()
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _their_listener_ready(cluster: Cluster) -> bool:
    import redis

    client = redis.Redis.from_url(cluster.url)
    try:
        counts = dict(client.pubsub_numsub(cluster.channel))
        # our node's listener plus python-socketio's
        return int(counts.get(cluster.channel.encode(), 0)) >= 2
    finally:
        client.close()


def test_queue_built_from_message_queue_is_in_server_options(redis_url: str) -> None:
    # Flask-SocketIO keeps the manager it builds in server_options['client_manager'];
    # apps (and Flask-SocketIO's own tests) read its write_only flag there.
    made: list[SocketIO] = []
    try:
        with_app = SocketIO(Flask("a"), message_queue=redis_url)
        late = SocketIO(Flask("b"))
        late.init_app(late.app, message_queue=redis_url)
        emitter = SocketIO(message_queue=redis_url)
        made += [with_app, late, emitter]
        for sio, write_only in ((with_app, False), (late, False), (emitter, True)):
            queue = sio.server_options["client_manager"]
            assert queue is sio.server.queue
            assert queue.write_only is write_only
        # An emitter attached to an app later listens: the queue is built again.
        emitter.init_app(Flask("c"))
        assert emitter.server_options["client_manager"] is emitter.server.queue
        assert emitter.server.queue.write_only is False
        # A manager the app gave is kept as it is.
        given = SocketIO(message_queue=redis_url).server_options["client_manager"]
        kept = SocketIO(Flask("d"), client_manager=given)
        made.append(kept)
        assert kept.server.queue is given and given.write_only is True
    finally:
        for sio in made:
            if sio.server.queue is not None:
                sio.server.queue.close()
