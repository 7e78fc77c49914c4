"""``socketio.instrument()``: the events the Socket.IO Admin UI dashboard reads.

The official ``socket.io-client`` under Node (tests/js/sio_peer.js) connects to
``/admin`` as the dashboard does (``auth: {username, password}``) and checks
``config``, ``all_sockets``, ``server_stats``, ``socket_connected``,
``room_joined``, ``event_received``, ``event_sent``, ``room_left`` and
``socket_disconnected`` as another client acts, then drives the dashboard's
commands (``join``, ``leave``, ``emit``, ``_disconnect``). The server is
tests/integration/admin_app.py in a subprocess. The dashboard page itself, in
Chromium, is tests/browser/test_admin_ui_browser.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from admin_app import PASSWORD, USERNAME
from nodepeer import NodePeer, ServerProcess, free_port, started

APP = "tests/integration/admin_app.py"
AUTH = {"username": USERNAME, "password": PASSWORD}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    port = free_port()
    with started([sys.executable, APP, "--port", str(port)], port) as s:
        yield s


@pytest.fixture
def peer() -> Iterator[NodePeer]:
    p = NodePeer()
    try:
        yield p
    finally:
        p.close()


def admin_events(peer: NodePeer, event: str) -> list[list[Any]]:
    return peer.events("admin", event)


def wait_for(peer: NodePeer, event: str, match: Any, timeout: float = 10.0) -> list[Any]:
    """The arguments of the first ``event`` the admin got that satisfy ``match``."""
    deadline = time.monotonic() + timeout
    while True:
        for args in admin_events(peer, event):
            if match(args):
                return args
        if time.monotonic() > deadline:
            raise AssertionError(f"admin got no matching {event}: {admin_events(peer, event)}")
        time.sleep(0.05)


def test_wrong_password_is_refused(server: ServerProcess, peer: NodePeer) -> None:
    for auth in ({"username": USERNAME, "password": "nope"}, {"username": USERNAME}, None):
        opts = {"transports": ["websocket"]} | ({"auth": auth} if auth else {})
        report = peer.connect("x", server.url, namespace="/admin", **opts)
        assert report["ev"] == "connect_error", report
        assert report["message"] == "invalid credentials"
    deadline = time.monotonic() + 10  # the server's output is read by a thread
    while sum("invalid credentials" in line for line in server.output) < 3:
        assert time.monotonic() < deadline, "no log line for each refusal"
        time.sleep(0.05)


def test_dashboard_events(server: ServerProcess, peer: NodePeer) -> None:
    report = peer.connect("admin", server.url, namespace="/admin", auth=AUTH)
    assert report["ev"] == "connect", report
    peer.wait_event("admin", "config")
    (config,) = admin_events(peer, "config")[0]
    assert set(config["supportedFeatures"]) >= {
        "EMIT",
        "JOIN",
        "LEAVE",
        "DISCONNECT",
        "AGGREGATED_EVENTS",
        "ALL_EVENTS",
    }
    peer.wait_event("admin", "all_sockets")
    (everyone,) = admin_events(peer, "all_sockets")[0]
    assert [s["nsp"] for s in everyone] == ["/admin"]  # the dashboard itself

    # A client comes, joins a room, sends and receives events.
    client = peer.connect("c1", server.url, transports=["polling"], query={"user": "ann"})
    sid = client["sid"]
    (sock, stamp) = wait_for(peer, "socket_connected", lambda a: a[0]["id"] == sid)
    assert sock["nsp"] == "/" and sock["transport"] == "polling"
    assert sock["rooms"] == [sid]
    assert sock["handshake"]["query"]["user"] == "ann"
    assert sock["handshake"]["address"] == "127.0.0.1"
    assert stamp.endswith("Z")
    assert peer.call("c1", "join", "lobby") == ["joined"]
    assert wait_for(peer, "room_joined", lambda a: a[1] == "lobby")[:3] == ["/", "lobby", sid]
    assert wait_for(peer, "event_received", lambda a: a[1] == sid)[:3] == [
        "/",
        sid,
        ["join", "lobby"],
    ]
    assert peer.call("c1", "say", "lobby", "hi") == ["sent"]
    assert wait_for(peer, "event_sent", lambda a: a[2] == ["said", "hi"])[:2] == ["/", sid]

    # server_stats: the clients, the namespaces, the aggregated counts.
    def full(stats: list[Any]) -> bool:
        counts = {e["type"] for e in stats[0]["aggregatedEvents"]}
        return stats[0]["clientsCount"] >= 2 and {"packetsIn", "packetsOut"} <= counts

    (stats,) = wait_for(peer, "server_stats", full)
    assert stats["serverId"] == "relay-test"
    assert stats["pollingClientsCount"] >= 1
    sockets = {n["name"]: n["socketsCount"] for n in stats["namespaces"]}
    assert sockets["/"] == 1 and sockets["/admin"] == 1

    # A client that upgrades from polling: the dashboard learns it from
    # socket_updated at the next stats tick (or from socket_connected itself, if
    # the upgrade won the race with the connect report).
    upgrader = peer.connect("c2", server.url, transports=["polling", "websocket"])["sid"]
    peer.wait(ev="upgrade", id="c2")
    (first, _) = wait_for(peer, "socket_connected", lambda a: a[0]["id"] == upgrader)
    if first["transport"] == "polling":
        updated = wait_for(peer, "socket_updated", lambda a: a[0]["id"] == upgrader)
        assert updated == [{"id": upgrader, "nsp": "/", "transport": "websocket"}]
    else:
        assert first["transport"] == "websocket"
    peer.send("disconnect", id="c2")
    gone = wait_for(peer, "socket_disconnected", lambda a: a[1] == upgrader)
    assert gone[:3] == ["/", upgrader, "client disconnect"]

    # The dashboard's commands.
    peer.emit("admin", "join", "/", "vip", sid)
    assert wait_for(peer, "room_joined", lambda a: a[1] == "vip")[:3] == ["/", "vip", sid]
    peer.emit("admin", "leave", "/", "lobby")
    assert wait_for(peer, "room_left", lambda a: a[1] == "lobby")[:3] == ["/", "lobby", sid]
    peer.emit("admin", "emit", "/", "vip", "notice", {"n": 1})
    peer.wait_event("c1", "notice")
    assert peer.events("c1", "notice") == [[{"n": 1}]]
    peer.emit("admin", "_disconnect", "/", False, sid)
    assert peer.wait(ev="disconnect", id="c1")["reason"] == "io server disconnect"
    gone = wait_for(peer, "socket_disconnected", lambda a: a[1] == sid)
    assert gone[:3] == ["/", sid, "server disconnect"]
