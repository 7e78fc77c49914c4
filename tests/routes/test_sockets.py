"""Flask-Sockets' API (``from flask_relay import Sockets``) and gevent-websocket's
``ws`` object, in process: the own server and Werkzeug with a real WebSocket
client, and the test client. (The README examples under real servers started
as subprocesses: tests/foreign/test_sockets_servers.py.)"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask, g, request
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from flask_relay import SocketIO, Sockets, WebSocketTestClient
from flask_relay.sockets import GeventWebSocket, WebSocketError, WebSocketWSGI

sys.path.insert(0, str(Path(__file__).parent))
from wshelpers import served_app as served  # noqa: E402


class Reports:
    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self.done = threading.Event()

    def put(self, key: str, value: Any) -> None:
        self.items[key] = value

    def wait(self) -> dict[str, Any]:
        assert self.done.wait(10), self.items
        return self.items


def make_app() -> tuple[Flask, Reports]:
    app = Flask(__name__)
    reports = Reports()
    sockets = Sockets(app)

    @app.before_request
    def before() -> None:
        g.user = request.args.get("user", "anonymous")

    @sockets.route("/room/<name>/<int:n>")
    def room(ws: GeventWebSocket, name: str, n: int) -> None:
        ws.send(f"{name}:{n + 1}:{request.args.get('x')}:{g.user}:{request.path}")
        while not ws.closed:
            message = ws.receive()
            if message is not None:
                ws.send(message)

    @sockets.route("/frames")
    def frames(ws: GeventWebSocket) -> None:
        ws.send_frame("text", ws.OPCODE_TEXT)
        ws.send_frame(b"\x00\x01", ws.OPCODE_BINARY)
        ws.send_frame(b"are you there", ws.OPCODE_PING)
        ws.send(b"bin", binary=False)  # gevent-websocket: text when binary=False
        message = ws.receive()
        reports.put("binary", [type(message).__name__, bytes(message or b"")])
        reports.put("meta", [ws.path, ws.version, ws.origin, ws.protocol])
        ws.close(4001, "bye")
        reports.put("closed_after_close", ws.closed)
        ws.close()  # a second close does nothing
        try:
            ws.receive()
        except WebSocketError as exc:
            reports.put("receive_after_close", str(exc))
        reports.done.set()

    @sockets.route("/until-none")
    def until_none(ws: GeventWebSocket) -> None:
        received = []
        while True:
            message = ws.receive()
            if message is None:
                break
            received.append(message)
        reports.put("received", received)
        reports.put("closed", ws.closed)
        try:
            ws.send("late")
        except WebSocketError as exc:
            reports.put("send_after_close", str(exc))
        try:
            ws.receive()
        except WebSocketError as exc:
            reports.put("receive_again", str(exc))
        reports.done.set()

    ws_bp = Blueprint("ws", __name__)

    @ws_bp.route("/echo/<word>")
    def bp_echo(socket: GeventWebSocket, word: str) -> None:
        socket.send(f"bp:{word}")
        while not socket.closed:
            message = socket.receive()
            socket.send(message)  # the README loop: the last send finds it closed

    @app.route("/echo/<word>")
    def bp_echo_http(word: str) -> str:  # an HTTP view on the same path and name
        return f"http:{word}"

    sockets.register_blueprint(ws_bp, url_prefix="/bp")
    return app, reports


@pytest.fixture(params=["own", "werkzeug"])
def door(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_url_variables_request_context_and_hooks(door: str) -> None:
    app, _ = make_app()
    url = "/room/blue/41?x=7&user=ann"
    with served(app, door) as port, connect(f"ws://127.0.0.1:{port}{url}") as ws:
        assert ws.recv(timeout=5) == "blue:42:7:ann:/room/blue/41"
        for message in ("a", b"\x00b"):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_gevent_websocket_methods(door: str) -> None:
    app, reports = make_app()
    with served(app, door) as port:
        ws = connect(f"ws://127.0.0.1:{port}/frames", origin=f"http://127.0.0.1:{port}")
        with ws:
            assert ws.recv(timeout=5) == "text"
            assert ws.recv(timeout=5) == b"\x00\x01"
            assert ws.recv(timeout=5) == "b'bin'"
            ws.send(b"\xffdata")
            with pytest.raises(ClientClosed):
                ws.recv(timeout=5)
        assert (ws.close_code, ws.close_reason) == (4001, "bye")
    items = reports.wait()
    assert items["binary"] == ["bytearray", b"\xffdata"]
    assert items["meta"] == ["/frames", "13", f"http://127.0.0.1:{port}", None]
    assert items["closed_after_close"] is True
    assert items["receive_after_close"] == "Connection is already closed"


def test_receive_returns_none_once_then_raises(door: str) -> None:
    app, reports = make_app()
    with served(app, door) as port:
        with connect(f"ws://127.0.0.1:{port}/until-none") as ws:
            for i in range(20):
                ws.send(str(i))
        items = reports.wait()
    assert items["received"] == [str(i) for i in range(20)]
    assert items["closed"] is True
    assert items["send_after_close"] == "Connection is already closed"
    assert items["receive_again"] == "Connection is already closed"


def test_blueprint_routes_beside_http_views_and_the_readme_loop_ends_quietly(
    door: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app()
    with served(app, door) as port, caplog.at_level(logging.WARNING):
        with connect(f"ws://127.0.0.1:{port}/bp/echo/hi") as ws:
            assert ws.recv(timeout=5) == "bp:hi"
            ws.send("again")
            assert ws.recv(timeout=5) == "again"
        assert app.test_client().get("/echo/x").text == "http:x"
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{port}/echo/x", open_timeout=5)
        assert info.value.response.status_code in (400, 404)
        # wait for the route thread to finish its last send
        for _ in range(100):
            if not any(t.name == "flask-relay-ws-route" for t in threading.enumerate()):
                break
            threading.Event().wait(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_sockets_with_the_test_client_socketio_and_origin_policy() -> None:
    app, _ = make_app()
    socketio = SocketIO(app)
    client = WebSocketTestClient(app)
    with client.connect("/room/x/1") as ws:
        assert ws.receive() == "x:2:None:anonymous:/room/x/1"
    server = socketio.make_server(app, port=0)
    server.start()
    try:
        with connect(f"ws://127.0.0.1:{server.port}/bp/echo/io") as ws:
            assert ws.recv(timeout=5) == "bp:io"
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{server.port}/bp/echo/io", origin="http://evil.example")
        assert info.value.response.status_code == 403
    finally:
        server.stop()


def test_init_app_later_serves_earlier_and_later_routes_on_every_app() -> None:
    sockets = Sockets(allowed_origins="*")
    early = Blueprint("early", __name__)

    @early.route("/e")
    def e(ws: GeventWebSocket) -> None:
        ws.send("early")

    sockets.register_blueprint(early, url_prefix="/x")
    apps = [Flask("one"), Flask("two")]
    for app in apps:
        sockets.init_app(app)

    @sockets.route("/late")
    def late(ws: GeventWebSocket) -> None:
        ws.send("late")

    @sockets.route("/other")
    def late_other(ws: GeventWebSocket) -> None:  # noqa: F811 - another function, same name
        ws.send("other")

    late_other.__name__ = "late"
    sockets.add_url_rule("/renamed", None, late_other)
    for app in apps:
        with served(app, "own") as port:
            for path, expected in [("/x/e", "early"), ("/late", "late"), ("/other", "other"),
                                   ("/renamed", "other")]:
                with connect(f"ws://127.0.0.1:{port}{path}",
                             origin="http://elsewhere.example") as ws:
                    assert ws.recv(timeout=5) == expected


def raw_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain HTTP"]
    ws.send(f"path={environ['PATH_INFO']} version={environ['wsgi.websocket_version']}")
    while True:
        message = ws.receive()
        if message is None:
            break
        ws.send(message)
    return []


def test_raw_wsgi_app_reading_wsgi_websocket(door: str) -> None:
    app = WebSocketWSGI(raw_app)
    with served(app, door) as port:  # type: ignore[arg-type]
        with connect(f"ws://127.0.0.1:{port}/any/path") as ws:
            assert ws.recv(timeout=5) == "path=/any/path version=13"
            ws.send("echo me")
            assert ws.recv(timeout=5) == "echo me"
            ws.send(b"\x01\x02")
            assert ws.recv(timeout=5) == b"\x01\x02"
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{port}/", origin="http://evil.example", open_timeout=5)
        assert info.value.response.status_code == 403
    with served(app, door) as port:  # type: ignore[arg-type]
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.read() == b"plain HTTP"
