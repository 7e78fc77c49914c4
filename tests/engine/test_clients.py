"""The official engine.io-client (Node) against the server: every transport path."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from eio_helpers import b64, run_peer, wait_for

BINARY = bytes([0, 1, 2, 255])


@pytest.mark.parametrize(
    ("options", "final"),
    [
        ({"transports": ["polling"]}, "polling"),
        ({"transports": ["websocket"]}, "websocket"),
        ({"transports": ["polling", "websocket"], "waitUpgrade": True}, "websocket"),
    ],
    ids=["polling", "websocket", "upgrade"],
)
def test_echo(node: str, make_engine: Any, options: dict[str, Any], final: str) -> None:
    running = make_engine()
    report = run_peer(node, running.url, send=["hello", "h\u00e9llo \U0001f600", b64(BINARY)],
                      **options)
    assert "error" not in report, report
    assert report["messages"] == ["hello", "h\u00e9llo \U0001f600", b64(BINARY)]
    assert report["transport"] == final
    first = options["transports"][0]
    assert report["events"][0] == f"open:{first}"
    if options.get("waitUpgrade"):
        assert "upgrade:websocket" in report["events"]
    assert report["events"][-1] == "close:forced close"
    rec = running.recorder
    (connect,) = rec.of("connect")
    assert connect[1] == report["sid"]
    assert connect[2]["PATH_INFO"] == "/engine.io/"
    assert [e[2] for e in rec.of("message")] == ["hello", "h\u00e9llo \U0001f600", BINARY]
    disconnect = wait_for(lambda: rec.of("disconnect"))
    assert disconnect == [("disconnect", report["sid"], "transport close")]
    assert running.engine.session_count == 0


@pytest.mark.parametrize("transports", [["polling"], ["websocket"]])
def test_heartbeat_with_real_client(node: str, make_engine: Any, transports: list[str]) -> None:
    running = make_engine(ping_interval=0.1, ping_timeout=0.5)
    report = run_peer(node, running.url, transports=transports, expect=0, stayMs=800)
    assert "error" not in report, report
    # The client answered every ping: several intervals passed, no ping timeout.
    assert report["pings"] >= 3
    assert report["events"] == [f"open:{transports[0]}", "close:forced close"]
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport close"


@pytest.mark.parametrize("transports", [["polling"], ["websocket"]])
def test_server_disconnect_seen_by_client(
    node: str, make_engine: Any, transports: list[str]
) -> None:
    running = make_engine()
    engine = running.engine
    rec = running.recorder

    def disconnect_first() -> None:
        sid = wait_for(lambda: rec.of("connect"), timeout=10)[0][1]
        engine.send(sid, "bye")
        engine.disconnect(sid)

    closer = threading.Thread(target=disconnect_first)
    closer.start()
    report = run_peer(node, running.url, transports=transports, expect=0)
    closer.join(10)
    assert "error" not in report, report
    assert report["messages"] == ["bye"]
    assert report["events"] == [f"open:{transports[0]}", "close:transport close"]
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "forced close"


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], ["polling", "websocket"]])
def test_python_engineio_client(make_engine: Any, transports: list[str]) -> None:
    import engineio

    running = make_engine()
    client = engineio.Client()
    received: list[Any] = []
    client.on("message", received.append)
    client.connect(running.url, transports=transports, engineio_path="engine.io")
    try:
        client.send("text")
        client.send(b"\x00\x01bin")
        wait_for(lambda: len(received) == 2)
        assert received == ["text", b"\x00\x01bin"]
        if len(transports) == 2:
            wait_for(lambda: client.transport() == "websocket")
            sid = client.sid
            assert running.engine.transport(sid) == "websocket"
    finally:
        client.disconnect()
    rec = running.recorder
    disconnect = wait_for(lambda: rec.of("disconnect"))
    assert disconnect[0][2] == "transport close"
