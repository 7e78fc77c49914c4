"""Issue 3 items 4 and 6 over raw sockets: what order the wire shows, and any-thread APIs.

python-socketio and the Node client both buffer events that arrive before the
CONNECT reply, so a client-level test cannot see the order; these read the raw
Engine.IO packets over WebSocket and over long-polling.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from acceptance_helpers import Served, request, serve, wait_until
from flask import request as flask_request
from websockets.sync.client import ClientConnection, connect

from flask_relay import emit, join_room, send


def _connect_handler_emits(served: Served, namespace: str) -> None:
    sio = served.sio

    @sio.on("connect", namespace=namespace)
    def on_connect() -> None:
        emit("first", 1)
        send("second")
        sio.emit("third", 3, to=flask_request.sid, namespace=namespace)  # type: ignore[attr-defined]
        join_room("lobby")
        emit("fourth", 4, to="lobby")


EXPECTED_AFTER_CONNECT = [
    ["first", 1],
    ["message", "second"],
    ["third", 3],
    ["fourth", 4],
]


def _decode_event(packet: str, prefix: str) -> Any:
    assert packet.startswith(prefix), (packet, prefix)
    return json.loads(packet[len(prefix) :])


@pytest.mark.parametrize("namespace", ["/", "/chat"])
def test_connect_handler_emits_follow_the_connect_reply_websocket(namespace: str) -> None:
    with serve() as served:
        _connect_handler_emits(served, namespace)
        nsp = "" if namespace == "/" else namespace + ","
        with connect(served.ws_url, open_timeout=5) as ws:
            assert ws.recv(timeout=5).startswith("0{")
            ws.send(f"40{nsp}")
            packets = [str(ws.recv(timeout=5)) for _ in range(5)]
        assert packets[0].startswith(f"40{nsp}{{"), packets
        assert json.loads(packets[0][2 + len(nsp) :])["sid"]
        events = [_decode_event(p, f"42{nsp}") for p in packets[1:]]
        assert events == EXPECTED_AFTER_CONNECT


def test_connect_handler_emits_follow_the_connect_reply_polling() -> None:
    with serve() as served:
        _connect_handler_emits(served, "/")
        opened = request(served.port, "GET", "/socket.io/?EIO=4&transport=polling")
        sid = json.loads(opened.text[1:])["sid"]
        target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        assert request(served.port, "POST", target, "40").text == "ok"
        packets: list[str] = []
        while len(packets) < 5:
            packets += request(served.port, "GET", target).text.split("\x1e")
        assert packets[0].startswith("40{"), packets
        assert [_decode_event(p, "42") for p in packets[1:]] == EXPECTED_AFTER_CONNECT


def _raw_client(served: Served) -> tuple[ClientConnection, str]:
    ws = connect(served.ws_url, open_timeout=5)
    assert ws.recv(timeout=5).startswith("0{")
    ws.send("40")
    reply = str(ws.recv(timeout=5))
    assert reply.startswith("40{")
    return ws, json.loads(reply[2:])["sid"]


def _recv_skipping_pings(ws: ClientConnection) -> str:
    while True:
        packet = str(ws.recv(timeout=5))
        if packet != "2":
            return packet
        ws.send("3")


def test_call_times_out_then_is_answered() -> None:
    with serve() as served:
        ws, sid = _raw_client(served)
        with ws:
            # A client that never answers: call() raises TimeoutError after its timeout.
            with pytest.raises(TimeoutError):
                served.sio.call("question", "silent?", to=sid, timeout=0.3)
            asked = _recv_skipping_pings(ws)
            assert asked.startswith("42") and asked.endswith('["question","silent?"]'), asked
            late_id = asked[2 : asked.index("[")]
            ws.send(f'43{late_id}["too late"]')  # a late answer is dropped quietly
            # A client that answers: call() returns the ack's argument.
            result: list[Any] = []
            caller = threading.Thread(
                target=lambda: result.append(served.sio.call("question", "6x7?", to=sid, timeout=5))
            )
            caller.start()
            asked = _recv_skipping_pings(ws)
            ack_id = asked[2 : asked.index("[")]
            assert ack_id != late_id and asked.endswith('["question","6x7?"]')
            ws.send(f"43{ack_id}[42]")
            caller.join(10)
            assert result == [42]
            # The connection survived both.
            ws.send('42["still here"]')


def test_rooms_emits_and_disconnect_from_other_threads() -> None:
    with serve() as served:
        sio = served.sio
        disconnected: list[str] = []
        sio.on("disconnect")(lambda reason: disconnected.append(reason))
        a, sid_a = _raw_client(served)
        b, sid_b = _raw_client(served)
        with a, b:
            errors: list[BaseException] = []

            def in_thread(fn: Any) -> None:
                def run() -> None:
                    try:
                        fn()
                    except BaseException as exc:  # reported below
                        errors.append(exc)

                t = threading.Thread(target=run)
                t.start()
                t.join(10)

            in_thread(lambda: sio.server.enter_room(sid_a, "club"))
            in_thread(lambda: sio.emit("club_news", "for members", to="club"))
            in_thread(lambda: sio.emit("everyone", "hi"))
            assert _recv_skipping_pings(a) == '42["club_news","for members"]'
            assert _recv_skipping_pings(a) == '42["everyone","hi"]'
            assert _recv_skipping_pings(b) == '42["everyone","hi"]'  # not a member
            in_thread(lambda: sio.server.leave_room(sid_a, "club"))
            in_thread(lambda: sio.emit("club_news", "again", to="club"))
            in_thread(lambda: sio.emit("sync", 1))
            assert _recv_skipping_pings(a) == '42["sync",1]'  # no second club_news
            assert _recv_skipping_pings(b) == '42["sync",1]'
            in_thread(lambda: sio.server.disconnect(sid_b))
            assert _recv_skipping_pings(b) == "41"
            wait_until(lambda: disconnected, what="the disconnect handler")
            assert disconnected == ["server disconnect"]
            assert errors == []


def test_emits_from_many_threads_at_once_arrive_whole_and_in_each_threads_order() -> None:
    threads_n, per_thread = 8, 150
    with serve() as served:
        sio = served.sio
        ws, sid = _raw_client(served)
        with ws:
            errors: list[BaseException] = []
            start = threading.Barrier(threads_n)

            def emitter(t: int) -> None:
                try:
                    start.wait(10)
                    room = f"room-{t}"
                    for i in range(per_thread):
                        sio.server.enter_room(sid, room)  # room changes interleaved too
                        sio.emit("n", [t, i, "x" * (i % 7)], to=room)
                        sio.server.leave_room(sid, room)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            workers = [threading.Thread(target=emitter, args=(t,)) for t in range(threads_n)]
            for w in workers:
                w.start()
            got: dict[int, list[int]] = {t: [] for t in range(threads_n)}
            for _ in range(threads_n * per_thread):
                packet = _recv_skipping_pings(ws)
                name, (t, i, pad) = json.loads(packet[2:])
                assert name == "n" and pad == "x" * (i % 7), packet
                got[t].append(i)
            for w in workers:
                w.join(10)
            assert errors == []
            assert got == {t: list(range(per_thread)) for t in range(threads_n)}
            assert sio.server.rooms(sid) == [sid]  # every room left again
