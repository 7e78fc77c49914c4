"""The official Socket.IO client (npm socket.io-client 4.x under Node) against our server.

The server is tests/integration/sio_app.py, a Flask-SocketIO-style app served by
``socketio.run()`` in a subprocess; the clients live in one Node process driven
by tests/js/sio_peer.js (see nodepeer.py). Causality is asserted with the order
of the Node process's reports (``seq``), never with timings.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytest
import requests
from nodepeer import NodePeer, ServerProcess, free_port, started

APP = "tests/integration/sio_app.py"


def _serve(*extra: str) -> contextlib.AbstractContextManager[ServerProcess]:
    port = free_port()
    return started([sys.executable, APP, "--port", str(port), *extra], port)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with _serve() as srv:
        yield srv


@pytest.fixture
def peer() -> Iterator[NodePeer]:
    p = NodePeer()
    try:
        yield p
    finally:
        p.close()


def _stats(server: ServerProcess) -> dict[str, int]:
    response = requests.get(server.url + "/stats", timeout=10)
    response.raise_for_status()
    return dict(response.json())


# ---------------------------------------------------------------------------
# transports


@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
def test_transports(server: ServerProcess, peer: NodePeer, mode: str) -> None:
    transports = {
        "polling": ["polling"],
        "websocket": ["websocket"],
        "upgrade": ["polling", "websocket"],
    }[mode]
    peer.send("connect", id="a", url=server.url, opts={"transports": transports})
    # Emitted at once: the client buffers them until connected and sends them
    # while (in "upgrade" mode) the WebSocket probe is going on.
    early = [peer.call_nowait("a", "echo", "early", i) for i in range(30)]
    connected = peer.wait(ev="connect", id="a")
    assert connected["sid"]
    if mode == "websocket":
        assert connected["transport"] == "websocket"
    if mode == "upgrade":
        # The client opens with polling; the upgrade report proves the probe and
        # the switch happened.
        assert peer.wait(ev="upgrade", id="a")["transport"] == "websocket"

    assert [peer.ack_of(tag) for tag in early] == [["early", i] for i in range(30)]
    assert peer.call("a", "echo", "h\u00e9 \U0001f600", 42, {"list": [1, None, True]}) == [
        "h\u00e9 \U0001f600",
        42,
        {"list": [1, None, True]},
    ]
    big = "x" * 200_000  # several TCP segments; one polling payload or one frame
    assert peer.call("a", "echo", big) == [big]
    # Several events in flight at once on one connection: acks come back in order.
    tags = [peer.call_nowait("a", "echo", i) for i in range(20)]
    assert [peer.ack_of(tag) for tag in tags] == [[i] for i in range(20)]

    expected = "polling" if mode == "polling" else "websocket"
    assert peer.info("a")["transport"] == expected
    if mode == "polling":
        assert peer.find(ev="upgrade", id="a") == []
    peer.send("disconnect", id="a")
    assert peer.wait(ev="disconnect", id="a")["reason"] == "io client disconnect"


# ---------------------------------------------------------------------------
# binary, acks


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_binary_events_and_acks(server: ServerProcess, peer: NodePeer, transport: str) -> None:
    peer.connect("a", server.url, transports=[transport])
    blob = bytes(range(256)) * 3
    answer = peer.call("a", "reverse_bytes", blob, {"tag": b"\x00\x01", "n": 1})
    assert answer == [blob[::-1], len(blob)]
    event = peer.wait_event("a", "bytes_back")
    (payload,) = peer.events("a", "bytes_back")[0]
    assert event["args"]  # the raw report kept the binary marker
    assert payload == {"blob": blob[::-1], "nested": [{"tag": b"\x00\x01", "n": 1}, bytes([0])]}
    # Empty bytes and several attachments in one packet.
    assert peer.call("a", "echo", b"", [b"a", {"b": b"bb"}], b"ccc") == [
        b"",
        [b"a", {"b": b"bb"}],
        b"ccc",
    ]


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_acks_both_ways(server: ServerProcess, peer: NodePeer, transport: str) -> None:
    peer.connect("a", server.url, transports=[transport])
    peer.send("reply", id="a", event="question", args=["forty-two", b"\x2a"])
    # Client -> server ack whose handler waits on a server -> client ack (call()).
    # Several ack arguments come back from call() as a tuple.
    assert peer.call("a", "ask", "meaning?") == [["client said", ["forty-two", b"\x2a"]]]
    questions = peer.find(ev="event", id="a", event="question")
    assert [q["ack"] for q in questions] == [True]
    # Server -> client ack answered into a callback (emit(..., callback=...)).
    assert peer.call("a", "ask_later", "again?") == ["asked"]
    answered = peer.wait_event("a", "answered")
    assert peer.events("a", "answered") == [[["forty-two", b"\x2a"]]]
    assert answered["seq"] > questions[0]["seq"]


# ---------------------------------------------------------------------------
# rooms and namespaces


def test_rooms(server: ServerProcess, peer: NodePeer) -> None:
    for cid, transport in (("a", "websocket"), ("b", "polling"), ("c", "websocket")):
        assert peer.connect(cid, server.url, transports=[transport])["ev"] == "connect"
    sid_a = peer.info("a")["sid"]
    assert peer.call("a", "join", "r") == [sorted([sid_a, "r"])]
    peer.call("b", "join", "r")

    assert peer.call("c", "to_room", "r", {"n": 1}) == ["sent"]
    peer.wait_event("a", "room_msg")
    peer.wait_event("b", "room_msg")
    # c is not in the room: a round trip on c's connection after the emit proves
    # that nothing was on its way to it.
    peer.call("c", "echo", "sync")
    assert peer.events("c", "room_msg") == []

    # include_self=False leaves the sender out, the other member gets it.
    peer.call("a", "to_room", "r", {"n": 2}, False)
    peer.wait_event("b", "room_msg", count=2)
    peer.call("a", "echo", "sync")
    assert peer.events("a", "room_msg") == [[{"n": 1}]]

    # Every sid is a room of its own.
    peer.call("c", "to_room", sid_a, "direct")
    peer.wait_event("a", "room_msg", count=2)
    assert peer.events("a", "room_msg")[-1] == ["direct"]

    # Leaving, then closing the room.
    sid_b = peer.info("b")["sid"]
    assert peer.call("b", "leave", "r") == [[sid_b]]
    peer.call("c", "to_room", "r", {"n": 3})
    peer.wait_event("a", "room_msg", count=3)
    peer.call("b", "echo", "sync")
    assert peer.events("b", "room_msg") == [[{"n": 1}], [{"n": 2}]]
    assert peer.call("c", "close", "r") == ["closed"]
    peer.call("c", "to_room", "r", {"n": 4})
    peer.call("a", "echo", "sync")
    assert [args[0] for args in peer.events("a", "room_msg")] == [{"n": 1}, "direct", {"n": 3}]

    # Broadcast without the sender.
    peer.call("a", "shout", "hi all")
    peer.wait_event("b", "shouted")
    peer.wait_event("c", "shouted")
    peer.call("a", "echo", "sync")
    assert peer.events("a", "shouted") == []


def test_emit_to_a_list_of_rooms(server: ServerProcess, peer: NodePeer) -> None:
    sids = {}
    for cid in ("both", "one", "two", "none", "skipped"):
        sids[cid] = peer.connect(cid, server.url, transports=["websocket"])["sid"]
    for cid, joined in (
        ("both", ["x", "y"]),
        ("one", ["x"]),
        ("two", ["y"]),
        ("skipped", ["x"]),
    ):
        for room in joined:
            peer.call(cid, "join", room)
    assert peer.call("none", "to_rooms", ["x", "y"], "hello", sids["skipped"]) == ["sent"]
    for cid in ("both", "one", "two"):
        peer.wait_event(cid, "rooms_msg")
    # Round trips on every connection: whatever was sent before has arrived.
    for cid in sids:
        peer.call(cid, "echo", "sync")
    assert {cid: len(peer.events(cid, "rooms_msg")) for cid in sids} == {
        "both": 1,
        "one": 1,
        "two": 1,
        "none": 0,
        "skipped": 0,
    }


def test_namespaces(server: ServerProcess, peer: NodePeer) -> None:
    main = peer.connect("main", server.url, transports=["websocket"])
    assert main["ev"] == "connect"
    # A second namespace multiplexed over the same Engine.IO connection, with auth.
    admin = peer.connect(
        "admin", server.url, namespace="/admin", share="main", auth={"token": "secret"}
    )
    assert admin["ev"] == "connect", admin
    assert admin["sid"] != main["sid"]
    # What the connect handler emits arrives after the CONNECT reply.
    welcome = peer.wait_event("admin", "welcome")
    assert welcome["seq"] > admin["seq"]
    assert peer.events("admin", "welcome") == [[{"namespace": "/admin"}]]
    # Same event name, different handlers per namespace.
    assert peer.call("admin", "echo", 1) == ["admin", 1]
    assert peer.call("main", "echo", 1) == [1]
    assert peer.call("admin", "whoami") == [{"namespace": "/admin", "sid": admin["sid"]}]

    refused = peer.connect(
        "intruder",
        server.url,
        namespace="/admin",
        transports=["websocket"],
        auth={"token": "wrong"},
    )
    assert refused["ev"] == "connect_error"
    assert refused["message"] == "unauthorized"
    assert refused["data"] == {"need": "token"}

    refused = peer.connect("nope", server.url, namespace="/refuse", share="main")
    assert refused["ev"] == "connect_error"
    assert refused["message"] == "Connection rejected by server"

    unknown = peer.connect("ghost", server.url, namespace="/ghost", share="main")
    assert unknown["ev"] == "connect_error"
    assert unknown["message"] == "Invalid namespace"

    # The shared connection survived the refusals.
    assert peer.call("main", "echo", "still here") == ["still here"]
    assert peer.call("admin", "echo", "still here") == ["admin", "still here"]


def test_catch_all_event(server: ServerProcess, peer: NodePeer) -> None:
    peer.connect("a", server.url, transports=["websocket"])
    answer = peer.call("a", "no such event", 1, b"\x01")
    assert answer == [["caught", "no such event", 1, b"\x01"]]  # a list is one ack argument
    # Events with their own handler do not reach the catch-all.
    assert peer.call("a", "echo", "own") == ["own"]


def test_disconnect_reasons(server: ServerProcess, peer: NodePeer) -> None:
    peer.connect("watcher", server.url, transports=["websocket"])
    assert peer.call("watcher", "watch") == ["watching"]

    def gone_reason(sid: str) -> str:
        report = peer.expect(
            lambda r: (
                r["ev"] == "event"
                and r["id"] == "watcher"
                and r["event"] == "gone"
                and r["args"][0]["sid"] == sid
            ),
            what=f"the server's disconnect handler for {sid}",
        )
        return str(report["args"][0]["reason"])

    # The client leaves.
    sid = peer.connect("leaver", server.url, transports=["polling"])["sid"]
    peer.send("disconnect", id="leaver")
    assert gone_reason(sid) == "client disconnect"

    # The server throws the client out.
    sid = peer.connect("kicked", server.url, transports=["websocket"])["sid"]
    peer.emit("kicked", "kick")
    assert peer.wait(ev="disconnect", id="kicked")["reason"] == "io server disconnect"
    assert gone_reason(sid) == "server disconnect"

    # The client vanishes: its TCP connection drops without a close packet.
    sid = peer.connect("vanished", server.url, transports=["websocket"])["sid"]
    assert peer.call("vanished", "echo", 1) == [1]
    peer.send("close_transport", id="vanished")
    assert peer.wait(ev="disconnect", id="vanished")["reason"] == "transport close"
    assert gone_reason(sid) == "transport close"

    # Nothing of that disturbed the others.
    assert peer.call("watcher", "echo", "fine") == ["fine"]


# ---------------------------------------------------------------------------
# many clients


def test_200_concurrent_clients(server: ServerProcess, peer: NodePeer) -> None:
    assert peer.bulk("ws", server.url, 100, transports=["websocket"])["failed"] == 0
    assert peer.bulk("poll", server.url, 100, transports=["polling"])["failed"] == 0
    # All 200 emit at once; each gets its own answer back.
    for prefix in ("ws", "poll"):
        peer.send(
            "bulk_emit", prefix=prefix, event="echo", args=[prefix, "$i"], ack=True, tag=prefix
        )
    for prefix in ("ws", "poll"):
        report = peer.wait(60, ev="bulk_acked", tag=prefix)
        assert sorted(map(tuple, ((i, tuple(a)) for i, a in report["results"]))) == [
            (i, (prefix, i)) for i in range(100)
        ]
    for prefix in ("ws", "poll"):
        acks = peer.bulk_call(prefix, "join", "all200")
        assert len(acks) == 100
    peer.connect("boss", server.url, transports=["websocket"])
    peer.call("boss", "to_room", "all200", {"hello": "everyone"})
    for prefix in ("ws", "poll"):
        counts = peer.bulk_wait(prefix, lambda c: c["clients"].get("room_msg") == 100)
        assert counts["events"]["room_msg"] == 100
        assert counts["last"]["room_msg"] == [{"hello": "everyone"}]
        assert counts["connected"] == 100
    peer.bulk_close("ws")
    peer.bulk_close("poll")


@pytest.fixture(scope="module")
def fast_server() -> Iterator[ServerProcess]:
    """A server with a quick heartbeat (a ping every 0.25 s)."""
    with _serve("--ping-interval", "0.25", "--ping-timeout", "5") as srv:
        yield srv


def test_blocking_handler_does_not_delay_others(fast_server: ServerProcess, peer: NodePeer) -> None:
    srv = fast_server
    peer.connect("sleeper", srv.url, transports=["websocket"])
    peer.connect("other", srv.url, transports=["websocket"])
    peer.connect("poller", srv.url, transports=["polling"])
    slept = peer.call_nowait("sleeper", "sleep", 2)
    sleeping = peer.wait_event("sleeper", "sleeping")
    # The sleeper's next event does not wait for its sleeping handler: that one has
    # run past the order window (docs/handlers.md), so "after" runs beside it...
    after = peer.call_nowait("sleeper", "echo", "after")
    # ...while the other clients' round trips complete during the sleep.
    for i in range(3):
        assert peer.call("other", "echo", i) == [i]
        assert peer.call("poller", "echo", i) == [i]
    # Heartbeats keep flowing to everyone, the sleeper included.
    for cid in ("other", "poller", "sleeper"):
        peer.expect(
            lambda r, cid=cid: r["ev"] == "ping" and r["id"] == cid and r["seq"] > sleeping["seq"],
            what=f"a ping to {cid} during the sleep",
        )
    assert peer.ack_of(slept) == ["slept"]
    assert peer.ack_of(after) == ["after"]

    def seq_of(tag: str) -> int:
        return int(peer.wait(ev="ack", tag=tag)["seq"])

    slept_seq = seq_of(slept)
    assert sleeping["seq"] < seq_of(after) < slept_seq
    other_acks = [r["seq"] for r in peer.find(ev="ack", id="other")]
    poller_acks = [r["seq"] for r in peer.find(ev="ack", id="poller")]
    assert len(other_acks) == len(poller_acks) == 3
    assert all(sleeping["seq"] < s < slept_seq for s in other_acks + poller_acks)
    for cid in ("other", "poller", "sleeper"):
        pings = [r for r in peer.find(ev="ping", id=cid) if sleeping["seq"] < r["seq"] < slept_seq]
        assert pings, f"no heartbeat reached {cid} while the handler slept"
    assert peer.find(ev="disconnect") == []


@pytest.fixture(scope="module")
def thousand(server: ServerProcess) -> Iterator[tuple[ServerProcess, NodePeer]]:
    p = NodePeer()
    try:
        report = p.bulk("k", server.url, 1000, transports=["websocket"], timeout=90)
        assert report["failed"] == 0, report
        yield server, p
    finally:
        p.close()


def test_thousand_idle_websocket_clients_few_threads(
    thousand: tuple[ServerProcess, NodePeer],
) -> None:
    server, p = thousand
    assert p.bulk_counts("k")["connected"] == 1000
    # Every connection has been through a handler round trip, so the worker pool
    # had every chance to grow.
    acks = p.bulk_call("k", "echo", "$i")
    assert len(acks) == 1000
    threads = server.threads()
    print(f"server threads with 1000 idle WebSocket clients: {threads}")
    assert threads <= 50, f"{threads} OS threads for 1000 idle WebSocket clients"


def test_room_of_thousand_encoded_once(
    thousand: tuple[ServerProcess, NodePeer],
) -> None:
    server, p = thousand
    acks = p.bulk_call("k", "join", "big")
    assert len(acks) == 1000
    p.connect("boss", server.url, transports=["websocket"])
    p.call("boss", "echo", "warm-up")
    requests.post(server.url + "/stats/reset", timeout=10).raise_for_status()

    p.emit("boss", "fanout", "big", {"text": "to everyone", "n": 1000})
    counts = p.bulk_wait("k", lambda c: c["clients"].get("fan") == 1000, timeout=60)
    assert counts["events"]["fan"] == 1000
    assert counts["last"]["fan"] == [{"text": "to everyone", "n": 1000}]

    stats = _stats(server)
    assert stats["encode"] == 1, stats
    assert stats["prepare"] == 1, stats
    assert stats["send_prepared_sids"] == 1000, stats

    # The same with a binary payload: one encode (text + attachment), one prepare.
    requests.post(server.url + "/stats/reset", timeout=10).raise_for_status()
    p.emit("boss", "fanout", "big", {"blob": b"\x00\x01\x02"})
    p.bulk_wait("k", lambda c: c["events"].get("fan") == 2000, timeout=60)
    stats = _stats(server)
    assert stats["encode"] == 1, stats
    assert stats["prepare"] == 1, stats
    assert p.bulk_counts("k")["last"]["fan"] == [{"blob": {"$bin": "AAEC"}}]


def test_clients_that_vanish(fast_server: ServerProcess, peer: NodePeer) -> None:
    """A Node process killed mid-conversation (a held long-poll, an open WebSocket):
    the server runs the disconnect handlers and the other clients carry on."""
    peer.connect("watcher", fast_server.url, transports=["websocket"])
    assert peer.call("watcher", "watch") == ["watching"]
    doomed = NodePeer()
    try:
        poll = doomed.connect("poll", fast_server.url, transports=["polling"])["sid"]
        ws = doomed.connect("ws", fast_server.url, transports=["websocket"])["sid"]
        assert doomed.call("poll", "echo", 1) == [1]
        assert doomed.call("ws", "echo", 1) == [1]
        doomed.proc.kill()
        doomed.proc.wait()
    finally:
        doomed.close()

    def reason(sid: str) -> str:
        report = peer.expect(
            lambda r: (
                r["ev"] == "event"
                and r["id"] == "watcher"
                and r["event"] == "gone"
                and r["args"][0]["sid"] == sid
            ),
            timeout=20,
            what=f"the disconnect handler for {sid}",
        )
        return str(report["args"][0]["reason"])

    assert reason(ws) in ("transport close", "transport error")
    # A polling client killed between two requests can only be noticed by the heartbeat.
    assert reason(poll) in ("transport close", "transport error", "ping timeout")
    assert peer.call("watcher", "echo", "still fine") == ["still fine"]
    assert peer.find(ev="disconnect", id="watcher") == []
