"""Issue 12 item 5: groups of plain WebSocket connections.

``ws.join_room(name)``, ``ws.leave_room(name)``, ``sock.send(data, to=name)``:
in one process without a queue (the in-process WebSocket test client, real
frames), and across two server processes through the real Redis queue with the
``websockets`` client.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from scale_helpers import HERE, Process, env_with_src, free_port, request, wait_until
from websockets.sync.client import connect

from flask_relay import Sock, WebSocketTestClient


def _app() -> tuple[Flask, Sock]:
    app = Flask(__name__)
    sock = Sock(app)

    @sock.route("/room/<name>")
    def room(ws, name):  # type: ignore[no-untyped-def]
        ws.join_room(name)
        ws.send(f"in {sorted(ws.rooms)}")
        while (message := ws.receive()) is not None:
            if message == "leave":
                ws.leave_room(name)
                ws.send(f"in {sorted(ws.rooms)}")
            elif message == "others":
                sock.send("from a neighbour", to=name, skip=ws)
            elif isinstance(message, bytes):
                sock.send(message, to=name)
            else:
                sock.send(message, to=name)

    return app, sock


def test_groups_in_one_process_without_a_queue() -> None:
    app, sock = _app()
    client = WebSocketTestClient(app)
    a = client.connect("/room/blue")
    b = client.connect("/room/blue")
    c = client.connect("/room/red")
    for ws, room in ((a, "blue"), (b, "blue"), (c, "red")):
        assert ws.receive(timeout=5) == f"in ['{room}']"
    a.send("hello blue")
    assert a.receive(timeout=5) == "hello blue"
    assert b.receive(timeout=5) == "hello blue"
    a.send(b"\x00\x01")
    assert a.receive(timeout=5) == b"\x00\x01"
    assert b.receive(timeout=5) == b"\x00\x01"
    a.send("others")
    assert b.receive(timeout=5) == "from a neighbour"
    # From outside any route: the Sock object itself.
    assert sock.send("from the app", to="red") == 1
    assert c.receive(timeout=5) == "from the app"
    b.send("leave")
    assert b.receive(timeout=5) == "in []"
    a.send("after b left")
    assert a.receive(timeout=5) == "after b left"
    # A member that closed is forgotten.
    a.close()
    a.wait_closed(timeout=5)
    wait_until(lambda: sock.send("nobody", to="blue") == 0, what="the closed member gone")
    with pytest.raises(TimeoutError):
        b.receive(timeout=0.3)  # b left: nothing came to it
    for ws in (b, c):
        ws.close()


@pytest.fixture
def two_servers() -> Iterator[list[tuple[Process, int]]]:
    channel = f"groups-{uuid.uuid4().hex}"
    started: list[tuple[Process, int]] = []
    try:
        for name in ("one", "two"):
            port = free_port()
            proc = Process(
                [sys.executable, str(HERE / "scale_app.py"), "127.0.0.1", str(port)],
                env_with_src(
                    SCALE_QUEUE="redis://127.0.0.1:6379/0", SCALE_CHANNEL=channel, SCALE_NAME=name
                ),
            )
            started.append((proc, port))

            def up(proc: Process = proc, port: int = port) -> bool:
                assert proc.proc.poll() is None, proc.output()
                try:
                    return request("127.0.0.1", port, "GET", "/whoami", timeout=2)[0] == 200
                except OSError:
                    return False

            wait_until(up, timeout=20, what=f"server {name}")
        yield started
    finally:
        for proc, _ in started:
            proc.kill()


def test_groups_across_two_processes_through_redis(
    two_servers: list[tuple[Process, int]],
) -> None:
    (_, port_one), (_, port_two) = two_servers
    with (
        connect(f"ws://127.0.0.1:{port_one}/group/lobby") as a,
        connect(f"ws://127.0.0.1:{port_two}/group/lobby") as b,
        connect(f"ws://127.0.0.1:{port_two}/group/other") as c,
    ):
        assert a.recv(timeout=5) == "joined lobby one"
        assert b.recv(timeout=5) == "joined lobby two"
        assert c.recv(timeout=5) == "joined other two"

        # The listener may subscribe a moment after the server answers: retry
        # the first message until the other process delivers one.
        def crossed() -> bool:
            a.send("ping")
            try:
                while True:
                    if b.recv(timeout=0.5) == "one: ping":
                        return True
            except TimeoutError:
                return False

        wait_until(crossed, timeout=20, what="a group message across processes")
        for message in ("one", "two", "three"):
            a.send(message)
        got = []
        while len(got) < 3:
            text = b.recv(timeout=5)
            if text != "one: ping":
                got.append(text)
        assert got == ["one: one", "one: two", "one: three"]
        b.send("back")
        # a receives its own pings first (delivered locally at once), then b's message.
        assert "two: back" in _drain(a, "two: back")
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.5)  # another group: nothing
        b.send("leave")
        assert _drain(b, "left")[-1] == "left"
        a.send("after leave")
        assert _drain(a, "one: after leave")[-1] == "one: after leave"
        with pytest.raises(TimeoutError):
            while True:
                assert b.recv(timeout=1) != "one: after leave"


def _drain(ws: object, until: str, timeout: float = 10) -> list[str]:
    seen: list[str] = []
    while not seen or seen[-1] != until:
        seen.append(ws.recv(timeout=timeout))  # type: ignore[attr-defined]
    return seen


def test_an_async_route_in_a_group() -> None:
    app, sock = _app()

    @sock.route("/async/<name>")
    async def async_member(ws, name):  # type: ignore[no-untyped-def]
        ws.join_room(name)
        await ws.send("joined")
        while (message := await ws.receive()) is not None:
            await ws.send(f"echo {message}")

    client = WebSocketTestClient(app)
    member = client.connect("/async/green")
    assert member.receive(timeout=5) == "joined"
    blocking = client.connect("/room/green")
    assert blocking.receive(timeout=5) == "in ['green']"
    blocking.send("to every green")
    assert blocking.receive(timeout=5) == "to every green"
    assert member.receive(timeout=5) == "to every green"
    member.close()
    member.wait_closed(timeout=5)
    wait_until(lambda: sock.send("x", to="green") == 1, what="the async member gone")
    blocking.close()


def test_sock_with_its_own_queue() -> None:
    """``Sock(app, message_queue=...)`` without Socket.IO: two apps, two
    queue connections (as two processes would have), one Redis channel."""
    channel = f"groups-{uuid.uuid4().hex}"
    apps = []
    for name in ("left", "right"):
        app = Flask(name)
        sock = Sock(app, message_queue="redis://127.0.0.1:6379/0", channel=channel)

        @sock.route("/g")
        def member(ws):  # type: ignore[no-untyped-def]
            ws.join_room("g")
            ws.send("joined")
            while ws.receive() is not None:
                pass

        apps.append((app, sock))
    (left_app, left_sock), (right_app, right_sock) = apps
    queue = right_app.extensions["flask_relay.ws_groups"].queue
    assert queue is not None and queue.ready.wait(10)
    assert left_app.extensions["flask_relay.ws_groups"].queue.ready.wait(10)
    far = WebSocketTestClient(right_app).connect("/g")
    assert far.receive(timeout=5) == "joined"
    assert left_sock.send(b"\x01binary", to="g") == 0  # no member here
    assert far.receive(timeout=5) == b"\x01binary"
    left_sock.send("text", to="g")
    assert far.receive(timeout=5) == "text"
    far.close()
    for _, sock in apps:
        sock_queue = sock.app.extensions["flask_relay.ws_groups"].queue  # type: ignore[union-attr]
        sock_queue.close()
