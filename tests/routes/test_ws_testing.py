"""The in-process test client for WebSocket routes (flask_relay.ws_testing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wsapp
from flask import session

from flask_relay.sock import ConnectionClosed
from flask_relay.ws_testing import UpgradeRefused, WebSocketTestClient


@pytest.fixture
def app_and_client() -> Iterator[tuple[wsapp.Reports, WebSocketTestClient]]:
    app, sock, reports = wsapp.make_app()
    yield reports, sock.test_client(app)


def test_send_receive_close(app_and_client: tuple[wsapp.Reports, WebSocketTestClient]) -> None:
    reports, client = app_and_client
    with client.connect("/echo") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"
        ws.send(b"\x00\x01")
        assert ws.receive() == b"\x00\x01"
        ws.close(4005, "done here")
    assert ws.close_code == 4005
    assert ws.close_reason == "done here"
    assert not ws.connected
    code, message, _ = reports.get("echo-closed")
    assert (code, message) == (4005, "done here")


def test_async_route(app_and_client: tuple[wsapp.Reports, WebSocketTestClient]) -> None:
    _, client = app_and_client
    with client.connect("/echo-async") as ws:
        ws.send("async")
        assert ws.receive() == "async"


def test_url_variables_blueprints_hooks(
    app_and_client: tuple[wsapp.Reports, WebSocketTestClient],
) -> None:
    reports, client = app_and_client
    with client.connect("/vars/1/bob") as ws:
        assert ws.receive() == "2:bob:int"
        ws.wait_closed()
        assert ws.close_code == 1000
        with pytest.raises(ConnectionClosed):
            ws.receive()
    with client.connect("/things/hello") as ws:
        assert ws.receive() == "blueprint things"
    with client.connect("/hooks") as ws:
        assert ws.receive() == "before:/hooks"
    assert reports.get("after")[:2] == ("/hooks", "before:/hooks")


def test_refusals_carry_the_http_response(
    app_and_client: tuple[wsapp.Reports, WebSocketTestClient],
) -> None:
    _, client = app_and_client
    with pytest.raises(UpgradeRefused) as info:
        client.connect("/private")
    assert info.value.status_code == 401
    assert info.value.get_data(as_text=True) == "login required"
    with client.connect("/private", query_string={"token": "secret"}) as ws:
        assert ws.receive() == "welcome"
    with pytest.raises(UpgradeRefused) as info:
        client.connect("/nowhere")
    assert info.value.status_code == 404


def test_server_close_code_and_subprotocol(
    app_and_client: tuple[wsapp.Reports, WebSocketTestClient],
) -> None:
    _, client = app_and_client
    with client.connect("/api?timeout=0.1", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        assert ws.receive() == "subprotocol=chat connected=True"
        assert ws.receive() == "timeout"
        ws.send("close:4100:finished")
        with pytest.raises(ConnectionClosed) as info:
            ws.receive()
    assert info.value.reason == 4100
    assert (ws.close_code, ws.close_reason) == (4100, "finished")


def test_limits_and_utf8_are_real(
    app_and_client: tuple[wsapp.Reports, WebSocketTestClient],
) -> None:
    reports, client = app_and_client
    with client.connect("/echo") as ws:
        ws.send("x" * (64 * 1024 + 1))
        ws.wait_closed()
    assert ws.close_code == 1009
    assert reports.get("echo-closed")[0] == 1009
    with client.connect("/echo") as ws:
        ws.send_raw_frame(0x1, b"\xff\xfe")
        ws.wait_closed()
    assert ws.close_code == 1007


def test_ping_and_errors(app_and_client: tuple[wsapp.Reports, WebSocketTestClient]) -> None:
    _, client = app_and_client
    with client.connect("/echo") as ws:
        assert ws.ping(b"are you there") == b"are you there"
    with client.connect("/boom") as ws:
        assert ws.receive() == "about to fail"
        ws.wait_closed()
    assert ws.close_code == 1011


def test_cookies_from_a_flask_test_client() -> None:
    app, sock, _ = wsapp.make_app()
    app.secret_key = "test"

    @app.route("/login")
    def login() -> str:
        session["user"] = "carol"
        return "ok"

    @sock.route("/whoami")
    def whoami(ws: object) -> None:
        ws.send(session.get("user", "anonymous"))  # type: ignore[attr-defined]

    http = app.test_client()
    http.get("/login")
    with sock.test_client(app, flask_test_client=http).connect("/whoami") as ws:
        assert ws.receive() == "carol"
    with sock.test_client(app).connect("/whoami") as ws:
        assert ws.receive() == "anonymous"
