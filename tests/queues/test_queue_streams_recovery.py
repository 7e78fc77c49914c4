"""Connection state recovery across processes, on one Redis Stream (``redis+streams://``).

Two server processes (streams_app.py) share a stream on the machine's Redis,
under a channel name of their own per test. The official ``socket.io-client``
(under Node) reaches them through a :class:`~brokers.TcpProxy`, as through a
load balancer without affinity: it connects to server A, joins a room and
gets an event; then its transport drops, the proxy sends new connections to
server B, and events are emitted to its room from both servers while it is
away. When it reconnects (by itself, to the URL it has) it lands on B, and
must get ``socket.recovered``, its sid, its room and every missed event once,
in the stream's order, then the newer ones.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import TcpProxy, channel, free_port, outage, wait_for
from nodepeer import NodePeer, ServerProcess, started

APP = str(Path(__file__).resolve().parent / "streams_app.py")
URL = "redis+streams://127.0.0.1:6379/0"


def _reconnect(transport: str, delay: int) -> dict[str, Any]:
    return {
        "transports": [transport],
        "reconnection": True,
        "reconnectionDelay": delay,
        "reconnectionDelayMax": delay,
        "randomizationFactor": 0,
    }


pytestmark = pytest.mark.usefixtures("no_stream_keys_left")


@contextlib.contextmanager
def _two_servers(
    name: str, window: float, url: str = URL
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    def argv(port: int) -> list[str]:
        return [sys.executable, APP, "--port", str(port), "--queue", url, "--channel", name] + [
            "--window",
            str(window),
        ]

    port_a, port_b = free_port(), free_port()
    with started(argv(port_a), port_a) as a, started(argv(port_b), port_b) as b:
        yield a, b


def _cleanup(redis_client: Any, name: str) -> None:
    keys = list(redis_client.scan_iter(match=f"{name}*", count=1000))
    if keys:
        redis_client.delete(*keys)


def _session_keys(redis_client: Any, name: str) -> list[bytes]:
    return list(redis_client.scan_iter(match=f"{name}:session:*", count=1000))


def _tick_ids(redis_client: Any, name: str) -> list[tuple[str, int]]:
    """(entry id, value) of every "tick" emit in the stream, in stream order."""
    import json

    found = []
    for entry_id, fields in redis_client.xrange(name):
        message = json.loads(fields[b"m"])
        if message.get("method") == "emit" and message.get("event") == "tick":
            found.append((entry_id.decode(), message["data"][0]))
    return found


def _ticks(peer: NodePeer, cid: str) -> list[list[Any]]:
    return peer.events(cid, "tick")


def _connect_n(peer: NodePeer, cid: str, count: int, timeout: float = 20.0) -> dict[str, Any]:
    def nth(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
        found = [r for r in reports if r["ev"] in ("connect", "connect_error") and r["id"] == cid]
        return found[count - 1] if len(found) >= count else None

    result: dict[str, Any] = peer.until(nth, timeout, what=f"{cid} connect #{count}")
    return result


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_recovered_on_another_process(peer: NodePeer, redis_client: Any, transport: str) -> None:
    name = channel()
    try:
        with _two_servers(name, window=60) as (a, b):
            proxy = TcpProxy(a.port)
            try:
                _recover_elsewhere(peer, redis_client, name, a, b, proxy, transport)
            finally:
                proxy.close()
    finally:
        _cleanup(redis_client, name)


def _recover_elsewhere(
    peer: NodePeer,
    redis_client: Any,
    name: str,
    a: ServerProcess,
    b: ServerProcess,
    proxy: TcpProxy,
    transport: str,
) -> None:
    first = peer.connect("c", f"http://127.0.0.1:{proxy.port}", **_reconnect(transport, 2000))
    assert first["ev"] == "connect", first
    assert first["recovered"] is False
    sid = first["sid"]
    assert peer.call("c", "join", "room") == ["joined"]
    # Two other clients, one on each server, emit to the room.
    assert peer.connect("on_a", a.url)["ev"] == "connect"
    assert peer.connect("on_b", b.url)["ev"] == "connect"
    assert peer.call("on_b", "send", "room", "tick", 0) == ["sent"]
    peer.wait_event("c", "tick")

    # The transport drops; A keeps the session in Redis; the proxy now leads to B.
    peer.send("close_transport", id="c")
    wait_for(lambda: len(_session_keys(redis_client, name)) == 1, 10, "the kept session")
    proxy.switch(b.port)
    for value, emitter in ((1, "on_b"), (2, "on_a"), (3, "on_b"), (4, "on_a")):
        assert peer.call(emitter, "send", "room", "tick", value) == ["sent"]
        # In the stream before the next one: the log's order is the emit order.
        wait_for(
            lambda v=value: any(x == v for _, x in _tick_ids(redis_client, name)),  # type: ignore[misc]
            10,
            f"tick {value} in the stream",
        )
    assert [x for x, *_ in _ticks(peer, "c")] == [0]  # away: nothing reached it

    again = _connect_n(peer, "c", 2)
    assert again["ev"] == "connect", again
    assert again["recovered"] is True
    assert again["sid"] == sid
    # Through B now: the proxy sends everything there.
    assert peer.call("c", "state") == [
        {
            "sid": sid,
            "rooms": sorted([sid, "room"]),
            "session": {"joined": "room"},
            "recovered": True,
            "process": b.pid,
        }
    ]
    assert _session_keys(redis_client, name) == []  # taken: no one else restores it

    # The room is kept: a later emit from A reaches it (through the stream, on B).
    assert peer.call("on_a", "send", "room", "tick", 5) == ["sent"]
    peer.wait_event("c", "tick", count=6)
    time.sleep(0.3)  # nothing more comes
    ticks = _ticks(peer, "c")
    log = _tick_ids(redis_client, name)
    assert [args[0] for args in ticks] == [0, 1, 2, 3, 4, 5]
    # Each with its stream entry id as offset (the last argument), in stream order.
    assert [(args[1], args[0]) for args in ticks] == log
    # The emitters' own clients are not in the room.
    assert peer.events("on_a", "tick") == [] and peer.events("on_b", "tick") == []


@pytest.mark.slow
def test_not_recovered_after_the_window(peer: NodePeer, redis_client: Any) -> None:
    name = channel()
    try:
        with _two_servers(name, window=1.0) as (a, b):
            proxy = TcpProxy(a.port)
            try:
                url = f"http://127.0.0.1:{proxy.port}"
                first = peer.connect("c", url, **_reconnect("websocket", 3000))
                assert first["ev"] == "connect"
                sid = first["sid"]
                assert peer.call("c", "join", "room") == ["joined"]
                assert peer.connect("on_b", b.url)["ev"] == "connect"
                assert peer.call("on_b", "send", "room", "tick", 0) == ["sent"]
                peer.wait_event("c", "tick")
                peer.send("close_transport", id="c")
                wait_for(lambda: len(_session_keys(redis_client, name)) == 1, 10, "kept session")
                proxy.switch(b.port)
                assert peer.call("on_b", "send", "room", "tick", 1) == ["sent"]
                # The window (1 s) ends before the client comes back (3 s).
                wait_for(lambda: _session_keys(redis_client, name) == [], 5, "the expiry")
                again = _connect_n(peer, "c", 2)
                assert again["ev"] == "connect"
                assert again["recovered"] is False
                assert again["sid"] != sid
                state = peer.call("c", "state")[0]
                assert state["rooms"] == [again["sid"]] and state["recovered"] is False
                assert state["process"] == b.pid
                assert [args[0] for args in _ticks(peer, "c")] == [0]
            finally:
                proxy.close()
    finally:
        _cleanup(redis_client, name)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cut", "restart"])
def test_emits_made_during_an_outage_arrive_after_in_log_order(peer: NodePeer, how: str) -> None:
    """The outbox holds what is emitted while Redis is away, for every process:
    with one log, even the emitting process's clients get it once it is back."""
    with outage("redis", how) as broker:
        name = channel()
        url = broker.url.replace("redis://", "redis+streams://")
        with _two_servers(name, window=60, url=url) as (a, b):
            for cid, server in (("sender", a), ("local", a), ("remote", b)):
                assert peer.connect(cid, server.url, transports=["websocket"])["ev"] == "connect"
            for cid in ("local", "remote"):
                assert peer.call(cid, "join", "r") == ["joined"]
            assert peer.call("sender", "send", "r", "n", 0) == ["sent"]
            peer.wait_event("local", "n")
            peer.wait_event("remote", "n")
            broker.down()
            for i in range(1, 6):
                # The handler acknowledges: an emit never fails for an outage.
                assert peer.call("sender", "send", "r", "n", i) == ["sent"]
            time.sleep(0.5)
            assert [args[0] for args in peer.events("local", "n")] == [0]
            broker.up()
            for cid in ("local", "remote"):
                peer.wait_event(cid, "n", count=6, timeout=30)
            time.sleep(0.3)
            local = peer.events("local", "n")
            remote = peer.events("remote", "n")
            assert [args[0] for args in local] == [0, 1, 2, 3, 4, 5]
            # The same offsets (stream entry ids) in both processes, increasing.
            assert local == remote
            offsets = [args[1] for args in local]
            keys = [tuple(int(x) for x in o.split("-")) for o in offsets]
            assert keys == sorted(keys) and len(set(keys)) == 6
        for server in (a, b):
            log = "".join(server.output)
            assert log.count(" unreachable (") == 1, log
