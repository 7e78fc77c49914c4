"""Connection state recovery (Socket.IO 4.6) with the official ``socket.io-client``.

The server runs in this process (``make_server().start()``) so the tests can
emit to rooms at chosen moments and see what the connect and disconnect
handlers saw. The client lives in a Node process (tests/js/sio_peer.js) with
its own reconnection turned on: the test drops its TCP connection
(``close_transport``, no close packet) and the client comes back by itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from nodepeer import NodePeer, free_port

import flask_relay
from flask_relay import SocketIO, join_room

# The client waits 1.5 s before reconnecting: long enough for the test to emit
# while it is gone, short enough to keep the test quick.
RECONNECT = {
    "transports": ["websocket"],
    "reconnection": True,
    "reconnectionDelay": 1500,
    "reconnectionDelayMax": 1500,
    "randomizationFactor": 0,
}


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connects: list[tuple[str, Any]] = []
        self.disconnects: list[tuple[str, str]] = []

    def wait_disconnect(self, sid: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for gone, reason in self.disconnects:
                    if gone == sid:
                        return reason
            time.sleep(0.02)
        raise AssertionError(f"no disconnect handler for {sid}: {self.disconnects}")


class Served:
    def __init__(self, window: float, skip_middlewares: bool = True, **options: Any) -> None:
        app = flask.Flask(__name__)
        self.socketio = sio = SocketIO(
            app,
            connection_state_recovery={
                "max_disconnection_duration": window,
                "skip_middlewares": skip_middlewares,
            },
            **options,
        )
        self.record = record = Recorder()

        @sio.on("connect")
        def connect(auth: Any) -> None:
            with record.lock:
                record.connects.append((flask.request.sid, auth))  # type: ignore[attr-defined]

        @sio.on("disconnect")
        def disconnect(reason: str) -> None:
            with record.lock:
                record.disconnects.append((flask.request.sid, reason))  # type: ignore[attr-defined]

        @sio.on("join")
        def join(room: str, name: str) -> str:
            join_room(room)
            sio.server.get_session(flask.request.sid)["name"] = name  # type: ignore[attr-defined]
            return "joined"

        @sio.on("join", namespace="/chat")
        def join_chat(room: str) -> str:
            join_room(room)
            return "joined"

        self.port = free_port()
        self.server = sio.make_server(app, "127.0.0.1", self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    def connects_of(self, sid: str) -> int:
        with self.record.lock:
            return sum(1 for s, _ in self.record.connects if s == sid)


@pytest.fixture
def peer() -> Iterator[NodePeer]:
    p = NodePeer()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served(window=60)
    s.server.start()
    try:
        yield s
    finally:
        s.server.stop()


def _nth(peer: NodePeer, ev: str, cid: str, count: int, timeout: float = 15.0) -> dict[str, Any]:
    def nth(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
        found = [r for r in reports if r["ev"] == ev and r.get("id") == cid]
        return found[count - 1] if len(found) >= count else None

    result: dict[str, Any] = peer.until(nth, timeout, what=f"{cid} {ev} #{count}")
    return result


def _connects(peer: NodePeer, cid: str, count: int) -> dict[str, Any]:
    return _nth(peer, "connect", cid, count)


def _ticks(peer: NodePeer, cid: str) -> list[list[Any]]:
    return peer.events(cid, "tick")


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_recovered_after_a_transport_drop(served: Served, peer: NodePeer, transport: str) -> None:
    assert flask_relay.__file__.startswith(str(Path(__file__).parents[2]))
    sio = served.socketio
    first = peer.connect("a", served.url, **{**RECONNECT, "transports": [transport]})
    sid = first["sid"]
    assert first["recovered"] is False
    assert peer.call("a", "join", "r", "ann") == ["joined"]
    sio.emit("tick", 0, to="r")
    peer.wait_event("a", "tick", 1)

    # WebSocket: the TCP connection drops. Polling: the client abandons its
    # transport (an Engine.IO close, which is not a Socket.IO disconnect).
    peer.send("close_transport", id="a")
    assert peer.wait(ev="disconnect", id="a")["reason"] == "transport close"
    assert served.record.wait_disconnect(sid) == "transport close"
    # Emitted while the client is away: none of them can reach it now.
    for i in range(1, 21):
        sio.emit("tick", i, to="r")
    sio.emit("tick", "everyone")  # the whole namespace
    sio.emit("tick", "other room", to="elsewhere")  # not for it
    sio.emit("tick", "skipped", to="r", skip_sid=sid)  # excluded

    again = _connects(peer, "a", 2)
    assert again["recovered"] is True
    assert again["sid"] == sid
    # Rooms kept: an emit to the room now comes after every missed event.
    sio.emit("tick", "after", to="r")
    peer.wait_event("a", "tick", 23)
    ticks = _ticks(peer, "a")
    # Every missed event once, in emit order, each with its offset appended.
    assert [t[0] for t in ticks] == [*range(21), "everyone", "after"]
    assert all(len(t) == 2 and isinstance(t[1], str) for t in ticks)
    assert len({t[1] for t in ticks}) == len(ticks)

    # Session data kept; the connect handler skipped (skip_middlewares).
    assert "r" in sio.server.rooms(sid)
    assert sio.server.get_session(sid) == {"name": "ann"}
    socket = sio.server.get_socket(sid)
    assert socket is not None and socket.recovered
    assert served.connects_of(sid) == 1
    assert peer.call("a", "join", "r2", "ann") == ["joined"]  # events still flow
    # An emit that asks for an ack carries no offset (and is not kept).
    sio.emit("ask", "q", to=sid, callback=lambda *answer: None)
    asked = peer.wait(ev="event", id="a", event="ask")
    assert (asked["args"], asked["ack"]) == (["q"], True)


def test_recovered_without_any_event_received(served: Served, peer: NodePeer) -> None:
    """No event yet, so no offset to send: replayed from its connect (Node fails here)."""
    sio = served.socketio
    sid = peer.connect("b", served.url, **RECONNECT)["sid"]
    assert peer.call("b", "join", "quiet", "bob") == ["joined"]
    peer.send("close_transport", id="b")
    served.record.wait_disconnect(sid)
    sio.emit("tick", 1, to="quiet")
    sio.emit("tick", b"\x00\xff")  # binary: the offset follows the attachment
    again = _connects(peer, "b", 2)
    assert (again["recovered"], again["sid"]) == (True, sid)
    sio.emit("tick", 3, to="quiet")
    peer.wait_event("b", "tick", 3)
    ticks = _ticks(peer, "b")
    assert [t[0] for t in ticks] == [1, b"\x00\xff", 3]
    assert all(isinstance(t[1], str) for t in ticks)


def test_each_namespace_of_a_connection_recovers(served: Served, peer: NodePeer) -> None:
    """Two namespaces over one connection: each socket has its own pid and offset."""
    sio = served.socketio
    root = peer.connect("m", served.url, **RECONNECT)["sid"]
    chat = peer.connect("m-chat", served.url, namespace="/chat", share="m")["sid"]
    assert peer.call("m", "join", "r", "max") == ["joined"]
    assert peer.call("m-chat", "join", "lounge") == ["joined"]
    sio.emit("tick", "root 0", to="r")
    sio.emit("tick", "chat 0", to="lounge", namespace="/chat")
    peer.wait_event("m", "tick", 1)
    peer.wait_event("m-chat", "tick", 1)
    peer.send("close_transport", id="m")
    served.record.wait_disconnect(root)
    sio.emit("tick", "root 1", to="r")
    sio.emit("tick", "chat 1", to="lounge", namespace="/chat")
    sio.emit("tick", "chat all", namespace="/chat")
    assert (_connects(peer, "m", 2)["recovered"], _connects(peer, "m", 2)["sid"]) == (True, root)
    again = _connects(peer, "m-chat", 2)
    assert (again["recovered"], again["sid"]) == (True, chat)
    peer.wait_event("m", "tick", 2)
    peer.wait_event("m-chat", "tick", 3)
    sio.emit("tick", "end", to=[root, chat])  # the root namespace: only "m"
    peer.wait_event("m", "tick", 3)
    assert [t[0] for t in _ticks(peer, "m")] == ["root 0", "root 1", "end"]
    assert [t[0] for t in _ticks(peer, "m-chat")] == ["chat 0", "chat 1", "chat all"]


def test_deliberate_disconnects_are_not_recovered(served: Served, peer: NodePeer) -> None:
    sio = served.socketio
    # The client's own disconnect().
    sid = peer.connect("c", served.url, transports=["websocket"])["sid"]
    assert peer.call("c", "join", "r", "cy") == ["joined"]
    sio.emit("tick", 0, to="r")
    peer.wait_event("c", "tick", 1)
    peer.send("disconnect", id="c")
    assert served.record.wait_disconnect(sid) == "client disconnect"
    peer.send("reconnect", id="c")
    again = _connects(peer, "c", 2)
    assert again["recovered"] is False and again["sid"] != sid
    assert sio.server.rooms(again["sid"]) == [again["sid"]]

    # The server's disconnect(sid).
    sid = again["sid"]
    sio.server.disconnect(sid)
    assert _nth(peer, "disconnect", "c", 2)["reason"] == "io server disconnect"
    peer.send("reconnect", id="c")
    third = _connects(peer, "c", 3)
    assert third["recovered"] is False and third["sid"] != sid


def test_not_recovered_past_the_window(peer: NodePeer) -> None:
    served = Served(window=0.5, skip_middlewares=False)
    served.server.start()
    try:
        sio = served.socketio
        sid = peer.connect("d", served.url, **RECONNECT)["sid"]
        assert peer.call("d", "join", "r", "dee") == ["joined"]
        sio.emit("tick", 0, to="r")
        peer.wait_event("d", "tick", 1)
        peer.send("close_transport", id="d")
        served.record.wait_disconnect(sid)
        sio.emit("tick", 1, to="r")
        again = _connects(peer, "d", 2)  # after 1.5 s: the 0.5 s window is over
        assert again["recovered"] is False and again["sid"] != sid
        assert sio.server.rooms(again["sid"]) == [again["sid"]]
        time.sleep(0.3)
        assert [t[0] for t in _ticks(peer, "d")] == [0]
        # A fresh connection: the connect handler ran, with the stale pid in auth.
        with served.record.lock:
            auth = dict(served.record.connects)[again["sid"]]
        assert set(auth) == {"pid", "offset"}
    finally:
        served.server.stop()


def test_connect_handler_runs_without_skip_middlewares(peer: NodePeer) -> None:
    served = Served(window=60, skip_middlewares=False)
    served.server.start()
    try:
        sio = served.socketio
        sid = peer.connect("e", served.url, **RECONNECT)["sid"]
        assert peer.call("e", "join", "r", "eve") == ["joined"]
        peer.send("close_transport", id="e")
        served.record.wait_disconnect(sid)
        sio.emit("tick", 1, to="r")
        again = _connects(peer, "e", 2)
        assert (again["recovered"], again["sid"]) == (True, sid)
        sio.emit("tick", 2, to="r")
        peer.wait_event("e", "tick", 2)
        assert [t[0] for t in _ticks(peer, "e")] == [1, 2]
        assert served.connects_of(sid) == 2
        with served.record.lock:
            auth = served.record.connects[-1][1]
        assert isinstance(auth["pid"], str) and "offset" not in auth
    finally:
        served.server.stop()


def test_events_from_another_process_are_recovered(peer: NodePeer) -> None:
    """Emits that arrive through the message queue are kept like local ones."""
    url, channel = "redis://127.0.0.1:6379/0", f"flask-relay-recovery-{uuid.uuid4().hex}"
    served = Served(window=60, message_queue=url, channel=channel)
    emitter = SocketIO(message_queue=url, channel=channel)  # another program
    served.server.start()
    try:
        sid = peer.connect("f", served.url, **RECONNECT)["sid"]
        assert peer.call("f", "join", "r", "fay") == ["joined"]
        emitter.emit("tick", 0, to="r")  # also proves the listener is subscribed
        peer.wait_event("f", "tick", 1)
        peer.send("close_transport", id="f")
        served.record.wait_disconnect(sid)
        for i in range(1, 6):
            emitter.emit("tick", i, to="r")
        again = _connects(peer, "f", 2)
        assert (again["recovered"], again["sid"]) == (True, sid)
        emitter.emit("tick", "after", to="r")
        peer.wait_event("f", "tick", 7)
        assert [t[0] for t in _ticks(peer, "f")] == [*range(6), "after"]
    finally:
        served.server.stop()
        for sio in (served.socketio, emitter):
            assert sio.server.queue is not None
            sio.server.queue.close()
