"""The demo (examples/demo/app.py) started as a subprocess, as ``make demo`` runs it,
and driven with the official Socket.IO client under Node and a WebSocket client."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import connect as ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from nodepeer import ROOT, NodePeer, ServerProcess, free_port, started  # noqa: E402

DEMO = ROOT / "examples" / "demo" / "app.py"


@pytest.fixture(scope="module")
def demo() -> Iterator[ServerProcess]:
    port = free_port()
    with started([sys.executable, str(DEMO)], port, env={"DEMO_PORT": str(port)}) as server:
        yield server


@pytest.fixture
def peer() -> Iterator[NodePeer]:
    p = NodePeer()
    try:
        yield p
    finally:
        p.close()


def _hello(peer: NodePeer, cid: str, url: str, nick: str, room: str = "lobby") -> Any:
    assert peer.connect(cid, url)["ev"] == "connect"
    (answer,) = peer.call(cid, "hello", {"nick": nick, "room": room})
    return answer


def test_page_is_served_with_its_own_socketio_client(demo: ServerProcess) -> None:
    page = requests.get(demo.url + "/", timeout=10)
    assert page.status_code == 200
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert "/socket.io/socket.io.min.js" in scripts  # served by the endpoint itself
    # Everything the page loads comes from this server: no CDN, works offline.
    assert all(src.startswith("/") and not src.startswith("//") for src in scripts), scripts
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    client = requests.get(demo.url + "/socket.io/socket.io.min.js", timeout=10)
    assert client.status_code == 200
    npm_build = ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    assert client.content == npm_build.read_bytes()
    for path in scripts[1:] + ["/static/style.css", "/echo"]:
        assert requests.get(demo.url + path, timeout=10).status_code == 200, path
    assert requests.get(demo.url + "/vendor/socket.io.min.js", timeout=10).status_code == 404


def test_chat_between_two_clients(demo: ServerProcess, peer: NodePeer) -> None:
    alice = _hello(peer, "alice", demo.url, "alice")
    assert alice["nick"] == "alice"
    assert alice["room"] == "lobby"
    assert "alice" in alice["members"]
    bob = _hello(peer, "bob", demo.url, "bob")
    assert {"alice", "bob"} <= set(bob["members"])
    peer.expect(
        lambda r: (
            r["ev"] == "event"
            and r["id"] == "alice"
            and r["event"] == "members"
            and "bob" in r["args"][0]["members"]
        ),
        what="alice to see bob arrive",
    )

    # Typing notices go to the others only.
    peer.emit("bob", "typing", True)
    notice = peer.wait_event("alice", "typing")
    assert notice["args"] == [{"nick": "bob", "typing": True}]

    assert peer.call("bob", "say", "hello alice") == [{"ok": True}]
    assert peer.call("alice", "say", "hi bob \U0001f44b") == [{"ok": True}]

    def said(cid: str) -> list[tuple[str, str]]:
        return [
            (m["nick"], m["text"]) for (m,) in peer.events(cid, "message") if m["nick"] is not None
        ]

    conversation = [("bob", "hello alice"), ("alice", "hi bob \U0001f44b")]
    peer.until(lambda _: said("alice") == conversation, what="alice to see both lines")
    peer.until(lambda _: said("bob") == conversation, what="bob to see both lines")
    # bob's own typing notice never came back to him (his later round trips prove
    # that anything sent before has arrived).
    assert all(args[0]["nick"] != "bob" for args in peer.events("bob", "typing"))

    # Rooms: bob moves away; lobby talk no longer reaches him.
    (moved,) = peer.call("bob", "switch", "side")
    assert moved["ok"] and moved["room"] == "side"
    assert moved["members"] == ["bob"]
    peer.expect(
        lambda r: (
            r["ev"] == "event"
            and r["id"] == "alice"
            and r["event"] == "members"
            and r["args"][0] == {"room": "lobby", "members": ["alice"]}
        ),
        what="alice to see bob leave the lobby",
    )
    peer.call("alice", "say", "anyone?")
    peer.until(lambda _: ("alice", "anyone?") in said("alice"), what="alice's own line")
    peer.call("bob", "say", "over here")
    peer.until(lambda _: ("bob", "over here") in said("bob"), what="bob's own line")
    assert ("alice", "anyone?") not in said("bob")
    assert ("bob", "over here") not in said("alice")

    # Renaming is announced in the room.
    assert peer.call("bob", "rename", "robert") == [{"ok": True, "nick": "robert"}]
    peer.expect(
        lambda r: (
            r["ev"] == "event"
            and r["id"] == "bob"
            and r["event"] == "message"
            and r["args"][0]["text"] == "bob is now robert"
        ),
        what="the rename notice",
    )


def test_live_panel_value_arrives_every_second(demo: ServerProcess, peer: NodePeer) -> None:
    for cid in ("one", "two"):
        assert peer.connect(cid, demo.url, transports=["websocket"])["ev"] == "connect"
    first = peer.wait_event("one", "tick")
    later = peer.wait_event("one", "tick", count=3)
    a, b = first["args"][0], later["args"][0]
    assert b["n"] == a["n"] + 2
    for tick in (a, b):
        assert isinstance(tick["value"], (int, float)) and 0 <= tick["value"] <= 100
        assert re.fullmatch(r"\d\d:\d\d:\d\d", tick["time"])
    # The same values reach every page: one producer, broadcast.
    peer.wait_event("two", "tick", count=3)
    ticks_one = {t[0]["n"]: t[0]["value"] for t in peer.events("one", "tick")}
    ticks_two = {t[0]["n"]: t[0]["value"] for t in peer.events("two", "tick")}
    common = set(ticks_one) & set(ticks_two)
    assert common
    assert all(ticks_one[n] == ticks_two[n] for n in common)


def test_websocket_echo_route(demo: ServerProcess) -> None:
    ws_url = demo.url.replace("http://", "ws://") + "/ws/echo"
    with ws_connect(ws_url, open_timeout=10) as ws:
        ws.send("h\u00e9llo")
        assert ws.recv(timeout=10) == "h\u00e9llo"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"
