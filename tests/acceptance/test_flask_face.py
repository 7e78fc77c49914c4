"""Issue 3 item 1 and issue 4 item 1 through the public face: one port, one loop, options."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import socketio as socketio_client
from acceptance_helpers import free_port, request, serve, wait_until
from flask import Flask

from flask_relay import SocketIO


def test_own_server_runs_uvloop_and_handlers_off_the_loop() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is an optional speed-up")
    with serve() as served:
        hub = served.server.hub
        assert isinstance(hub.loop, uvloop.Loop)  # uvloop when installed
        seen: list[Any] = []

        @served.sio.on("where")
        def where() -> str:
            seen.append((hub.in_loop_thread(), threading.current_thread().name))
            return "ok"

        served.sio.on("connect")(lambda: seen.append((hub.in_loop_thread(), "connect")))
        client = socketio_client.Client(reconnection=False, handle_sigint=False)
        client.connect(served.url, transports=["websocket"], wait_timeout=5)
        try:
            assert client.call("where", timeout=5) == "ok"
        finally:
            client.disconnect()
        assert len(seen) == 2 and not any(in_loop for in_loop, _ in seen), seen


def test_static_route_and_socketio_share_one_keep_alive_connection(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("static hello")
    app = Flask(__name__, static_folder=str(tmp_path), static_url_path="/files")
    app.route("/view")(lambda: "a view")
    with serve(app) as served:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            answers = []
            for target in ["/files/hello.txt", "/socket.io/?EIO=4&transport=polling", "/view"]:
                conn.request("GET", target)
                resp = conn.getresponse()
                answers.append((resp.status, resp.read().decode()))
                assert conn.sock is not None  # kept alive
        finally:
            conn.close()
        assert answers[0] == (200, "static hello")
        assert answers[1][0] == 200 and answers[1][1].startswith("0{")
        assert answers[2] == (200, "a view")


def test_factory_pattern_options_reach_the_wire() -> None:
    app = Flask(__name__)
    sio = SocketIO(cors_allowed_origins="*", ping_interval=4, path="/rt/")
    sio.init_app(app, ping_interval=3, max_http_buffer_size=777)  # init_app wins, merged
    assert app.extensions["socketio"] is sio
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        resp = request(
            server.port,
            "GET",
            "/rt/?EIO=4&transport=polling",
            headers={"Origin": "http://o.example"},
        )
        assert resp.status == 200, resp.body
        opened = json.loads(resp.text[1:])
        assert (opened["pingInterval"], opened["maxPayload"]) == (3000, 777)
        assert resp.headers["access-control-allow-origin"] == "http://o.example"
    finally:
        server.stop()


def test_run_takes_its_port_from_server_name_and_accepts_allow_unsafe_werkzeug() -> None:
    app = Flask(__name__)
    port = free_port()
    app.config["SERVER_NAME"] = f"127.0.0.1:{port}"
    app.route("/ping")(lambda: "pong")
    sio = SocketIO(app)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sio.run(app, use_reloader=False, log_output=False, allow_unsafe_werkzeug=True)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:

        def answered() -> bool:
            try:
                return request(port, "GET", "/ping", timeout=1).text == "pong"
            except OSError:
                return False

        wait_until(answered, what=f"run() serving on SERVER_NAME's port {port}")
    finally:
        wait_until(lambda: sio._http_server is not None or errors, what="the server object")
        if not errors:
            sio.stop()
        thread.join(20)
    assert errors == [] and not thread.is_alive()
