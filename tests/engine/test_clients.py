"""The official engine.io-client (Node) against the server: every transport path."""

from __future__ import annotations

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
