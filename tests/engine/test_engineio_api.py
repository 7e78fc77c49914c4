"""The public standalone EngineIO API, with a Flask app on the same port."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from eio_helpers import free_port, request, run_peer, wait_for, ws_connect
from websockets.exceptions import ConnectionClosed

from flask_relay.engineio import EngineIO

HERE = Path(__file__).resolve().parent


@pytest.fixture
def served() -> Iterator[Any]:
    """Build a Flask app + EngineIO; the test registers handlers, then calls start()."""
    app = flask.Flask(__name__)

    @app.route("/plain")
    def plain() -> str:
        return "plain route"

    eio = EngineIO(app, ping_interval=5)
    state: dict[str, Any] = {"app": app, "eio": eio, "server": None}

    def start(**kwargs: Any) -> int:
        server = eio.make_server(app, "127.0.0.1", free_port(), **kwargs)
        server.start()
        state["server"] = server
        return server.port

    state["start"] = start
    try:
        yield state
    finally:
        if state["server"] is not None:
            state["server"].stop()
        eio.dispatcher.shutdown(wait=True)


def test_handlers_in_worker_threads(node: str, served: Any) -> None:
    eio: EngineIO = served["eio"]
    app = served["app"]
    assert app.extensions["engineio"] is eio
    log: list[tuple[Any, ...]] = []
    loop_threads: set[str] = set()

    @eio.on("connect")
    def connect(sid: str, environ: dict[str, Any]) -> None:
        loop_threads.add(threading.current_thread().name)
        log.append(("connect", sid, environ["QUERY_STRING"].startswith("EIO=4"),
                    flask.current_app.name))

    @eio.on("message")
    def message(sid: str, data: str | bytes) -> None:
        loop_threads.add(threading.current_thread().name)
        log.append(("message", sid, data))
        eio.send(sid, data if isinstance(data, bytes) else data.upper())

    def disconnect(sid: str, reason: str) -> None:
        log.append(("disconnect", sid, reason))

    eio.on("disconnect", disconnect)
    port = served["start"]()
    url = f"http://127.0.0.1:{port}"
    report = run_peer(node, url, send=["abc", {"$bin": "AAEC"}],
                      transports=["polling", "websocket"], waitUpgrade=True)
    assert report["messages"] == ["ABC", {"$bin": "AAEC"}]
    sid = report["sid"]
    wait_for(lambda: len(log) == 4)
    assert log == [
        ("connect", sid, True, app.name),
        ("message", sid, "abc"),
        ("message", sid, b"\x00\x01\x02"),
        ("disconnect", sid, "transport close"),
    ]
    assert all(name.startswith("flask-relay-eio") for name in loop_threads), loop_threads
    # The Flask app answers every other path on the same port.
    resp = request(port, "GET", "/plain")
    assert (resp.status, resp.text) == (200, "plain route")


def test_blocking_handler_does_not_block_others(served: Any) -> None:
    eio: EngineIO = served["eio"]
    release = threading.Event()

    @eio.on("message")
    def message(sid: str, data: str | bytes) -> None:
        if data == "wait":
            # Blocks until another client's handler runs: only possible concurrently.
            assert release.wait(10)
            eio.send(sid, "released")
        elif data == "release":
            release.set()
            eio.send(sid, "done")

    port = served["start"]()
    with ws_connect(port) as a, ws_connect(port) as b:
        a.recv(timeout=5)
        b.recv(timeout=5)
        a.send("4wait")
        b.send("4release")
        assert b.recv(timeout=5) == "4done"
        assert a.recv(timeout=5) == "4released"


def test_disconnect_and_refusal(served: Any) -> None:
    eio: EngineIO = served["eio"]
    reasons: list[tuple[str, str]] = []
    sids: list[str] = []

    @eio.on("connect")
    def connect(sid: str, environ: dict[str, Any]) -> bool:
        sids.append(sid)
        return "refuse" not in environ["QUERY_STRING"]

    @eio.on("disconnect")
    def disconnect(sid: str, reason: str) -> None:
        reasons.append((sid, reason))

    port = served["start"]()
    with ws_connect(port, "EIO=4&transport=websocket&refuse=1") as ws:
        ws.recv(timeout=5)
        assert ws.recv(timeout=5) == "1"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    wait_for(lambda: reasons)
    assert reasons == [(sids[0], "forced close")]
    with ws_connect(port) as ws:
        sid = json.loads(ws.recv(timeout=5)[1:])["sid"]
        wait_for(lambda: len(sids) == 2)
        eio.send(sid, b"\x01")
        assert ws.recv(timeout=5) == b"\x01"
        eio.disconnect(sid)
        assert ws.recv(timeout=5) == "1"
    wait_for(lambda: len(reasons) == 2)
    assert reasons[1] == (sid, "forced close")


def test_api_errors() -> None:
    eio = EngineIO(path="custom/path/")
    assert eio.path == "/custom/path"
    with pytest.raises(ValueError):
        eio.on("connection")
    with pytest.raises(TypeError):
        eio.send("sid", 42)  # type: ignore[arg-type]
    eio.dispatcher.shutdown()


def test_custom_path() -> None:
    app = flask.Flask(__name__)
    eio = EngineIO(app, path="/rt")
    eio.on("message", lambda sid, data: eio.send(sid, data))
    server = eio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        resp = request(server.port, "GET", "/rt/?EIO=4&transport=polling")
        assert resp.status == 200 and resp.text.startswith("0{")
        assert request(server.port, "GET", "/engine.io/?EIO=4&transport=polling").status == 404
    finally:
        server.stop()
        eio.dispatcher.shutdown()


def test_run_and_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "eio_app.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

        def up() -> bool:
            try:
                return request(port, "GET", "/hello", timeout=1).text == "hello from flask"
            except OSError:
                return False

        wait_for(up, timeout=10)
        with ws_connect(port) as ws:
            sid = json.loads(ws.recv(timeout=5)[1:])["sid"]
            assert proc.stdout.readline().split() == ["connect", sid]
            ws.send("4ping?")
            assert ws.recv(timeout=5) == "4ping?"
            proc.send_signal(signal.SIGTERM)
            # A 1001 close frame, no Engine.IO close packet: clients reconnect.
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        out, err = proc.communicate(timeout=15)
        assert f"disconnect {sid} server shutting down" in out, (out, err)
        assert out.strip().endswith("stopped")
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_restart_after_stop() -> None:
    eio = EngineIO()
    eio.on("message", lambda sid, data: eio.send(sid, data))
    try:
        for _ in range(2):
            server = eio.make_server(None, "127.0.0.1", free_port())
            server.start()
            try:
                with ws_connect(server.port) as ws:
                    ws.recv(timeout=5)
                    ws.send("4again")
                    assert ws.recv(timeout=5) == "4again"
            finally:
                server.stop()
    finally:
        eio.dispatcher.shutdown()
