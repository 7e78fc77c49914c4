"""``socketio.run()`` / ``make_server()`` over a real socket, with the python-socketio client."""

from __future__ import annotations

import gc
import socket
import threading
import types
from typing import Any

import pytest
import requests
import socketio as socketio_client
from flask import Flask, request
from flask_face_peers import free_port, wait_until

from flask_relay import SocketIO, emit
from flask_relay.server.httpconn import HTTPConnection


def _client() -> Any:
    return socketio_client.Client(reconnection=False, handle_sigint=False)


@pytest.fixture
def served(app: Flask, sio: SocketIO) -> Any:
    @app.route("/hello")
    def hello():
        return "hello from flask"

    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], None])
def test_transports(served: Any, app: Flask, sio: SocketIO, transports: Any) -> None:
    sio.on("echo")(lambda *args: args)
    client = _client()
    client.connect(served.url, transports=transports, wait_timeout=5)
    try:
        assert client.call("echo", (1, "two", b"3"), timeout=5) == (1, "two", b"3")
    finally:
        client.disconnect()


def test_flask_routes_are_served_beside(served: Any) -> None:
    response = requests.get(served.url + "/hello", timeout=5)
    assert response.status_code == 200
    assert response.text == "hello from flask"
    assert requests.get(served.url + "/missing", timeout=5).status_code == 404


def test_custom_path(app: Flask) -> None:
    sio = SocketIO(app, path="/realtime/")
    sio.on("where")(lambda: request.path)
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    client = _client()
    try:
        client.connect(server.url, socketio_path="realtime", wait_timeout=5)
        assert client.call("where", timeout=5).startswith("/realtime")
    finally:
        client.disconnect()
        server.stop()


def _wait_listening(port: int) -> None:
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=10, what=f"a listener on port {port}")


def test_run_and_stop(app: Flask, sio: SocketIO) -> None:
    @sio.on("connect")
    def on_connect():
        emit("welcome", "hi")

    @sio.on("shutdown")
    def shutdown():
        sio.stop()

    port = free_port()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            sio.run(app, port=port, use_reloader=False, log_output=False)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        _wait_listening(port)
        client = _client()
        got: list[Any] = []
        client.on("welcome", got.append)
        client.connect(f"http://127.0.0.1:{port}", wait_timeout=5)
        wait_until(lambda: got == ["hi"], what="welcome event")
        client.emit("shutdown")
        thread.join(20)
        assert not thread.is_alive(), "run() did not return after stop()"
        assert errors == []
        client.disconnect()
    finally:
        if thread.is_alive() and sio._http_server is not None:
            sio._http_server.stop()


def _handshake(url: str, path: str = "socket.io", **headers: str) -> Any:
    response = requests.get(
        f"{url}/{path}/", params={"EIO": "4", "transport": "polling"}, headers=headers, timeout=5
    )
    assert response.status_code == 200, response.text
    assert response.text.startswith("0")
    return response


def test_engineio_options_reach_the_endpoint(app: Flask) -> None:
    import json

    sio = SocketIO(
        app,
        ping_interval=7,
        ping_timeout=3,
        max_http_buffer_size=5000,
        cors_allowed_origins=["https://allowed.example"],
        transports=["polling"],
        cookie="io",
    )
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        response = _handshake(server.url, Origin="https://allowed.example")
        opened = json.loads(response.text[1:])
        assert opened["pingInterval"] == 7000
        assert opened["pingTimeout"] == 3000
        assert opened["maxPayload"] == 5000
        assert opened["upgrades"] == []
        assert response.headers["Access-Control-Allow-Origin"] == "https://allowed.example"
        assert response.cookies.get("io") == opened["sid"]
        refused = requests.get(
            f"{server.url}/socket.io/",
            params={"EIO": "4", "transport": "polling"},
            headers={"Origin": "https://evil.example"},
            timeout=5,
        )
        assert refused.status_code == 400
        assert refused.json() == "https://evil.example is not an accepted origin."
    finally:
        server.stop()


def test_message_over_max_http_buffer_size_disconnects(app: Flask) -> None:
    sio = SocketIO(app, max_http_buffer_size=2000)
    sio.on("data")(lambda data: len(data))
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    client = _client()
    try:
        client.connect(server.url, transports=["websocket"], wait_timeout=5)
        assert client.call("data", "x" * 100, timeout=5) == 100
        client.emit("data", "x" * 5000)
        wait_until(lambda: not client.connected, what="disconnect after an oversized message")
    finally:
        client.disconnect()
        server.stop()


def test_run_with_tls_and_debug(app: Flask, sio: SocketIO, tmp_path: Any) -> None:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is required to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip

    @app.route("/boom")
    def boom():
        raise RuntimeError("debugger page")

    sio.on("secure")(lambda: request.scheme)
    port = free_port()
    thread = threading.Thread(
        target=sio.run,
        args=(app,),
        kwargs={
            "port": port,
            "debug": True,
            "use_reloader": False,
            "log_output": True,
            "certfile": str(cert),
            "keyfile": str(key),
        },
        daemon=True,
    )
    thread.start()
    try:
        _wait_listening(port)
        client = socketio_client.Client(reconnection=False, handle_sigint=False, ssl_verify=False)
        client.connect(f"https://127.0.0.1:{port}", transports=["websocket"], wait_timeout=5)
        assert client.call("secure", timeout=5) == "https"
        client.disconnect()
        page = requests.get(f"https://127.0.0.1:{port}/boom", verify=str(cert), timeout=5)
        assert page.status_code == 500
        assert "debugger page" in page.text  # Werkzeug's debugger in debug mode
    finally:
        sio.stop()
        thread.join(20)
    assert not thread.is_alive()


def test_concurrent_clients_keep_their_own_request_context(served: Any, sio: SocketIO) -> None:
    """Handlers of different clients run in parallel threads; none sees another's request."""
    from flask import session

    @sio.on("whoami")
    def whoami(n):
        seen = session.setdefault("seen", [])
        seen.append(n)
        return [request.sid, n, list(seen)]

    clients = []
    for _ in range(6):
        client = _client()
        client.connect(served.url, transports=["websocket"], wait_timeout=5)
        clients.append(client)
    failures: list[Any] = []

    def hammer(client: Any) -> None:
        try:
            sid = client.get_sid()
            for n in range(25):
                got_sid, got_n, seen = client.call("whoami", n, timeout=10)
                if got_sid != sid or got_n != n or seen != list(range(n + 1)):
                    failures.append((sid, got_sid, n, got_n, seen))
        except Exception as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for client in clients:
        client.disconnect()
    assert failures == []


_RELOAD_APP = """
from flask import Flask
from flask_relay import SocketIO

app = Flask(__name__)
socketio = SocketIO(app)


@socketio.on("version")
def version():
    return VERSION


VERSION = 1

if __name__ == "__main__":
    socketio.run(app, port=PORT, debug=True, reloader_options={"reloader_type": "stat"})
"""


@pytest.mark.slow
def test_run_debug_reloads_on_code_change(tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    script = tmp_path / "reload_app.py"
    script.write_text(_RELOAD_APP.replace("PORT", str(port)))
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the reloader's child is in the same group
    )

    def version() -> Any:
        client = _client()
        try:
            client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=2)
            return client.call("version", timeout=2)
        except Exception:
            return None
        finally:
            client.disconnect()

    try:
        wait_until(lambda: version() == 1, timeout=20, what="the app under the reloader")
        script.write_text(
            _RELOAD_APP.replace("PORT", str(port)).replace("VERSION = 1", "VERSION = 2")
        )
        try:
            wait_until(lambda: version() == 2, timeout=20, what="the reloaded app")
        except AssertionError:
            raise AssertionError((tmp_path / "server.log").read_text()) from None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        log.close()


def test_connect_timeout_closes_silent_connections(app: Flask) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    sio = SocketIO(app, connect_timeout=0.3)
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        with connect(url) as ws:
            assert ws.recv(timeout=5).startswith("0{")  # Engine.IO OPEN, then no CONNECT
            received = []
            with pytest.raises(ConnectionClosed):
                while True:
                    received.append(ws.recv(timeout=5))
            assert all(m in ("1", "2") for m in received)  # at most a close packet / ping
        with connect(url) as ws:  # a client that joins a namespace in time stays
            ws.recv(timeout=5)
            ws.send("40")
            assert ws.recv(timeout=5).startswith("40{")
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.6)
    finally:
        server.stop()


def test_ping_timeout_reason_reaches_the_disconnect_handler(app: Flask) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    sio = SocketIO(app, ping_interval=0.2, ping_timeout=0.2)
    reasons: list[str] = []
    sio.on("disconnect")(reasons.append)
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        with connect(url) as ws:
            ws.recv(timeout=5)
            ws.send("40")
            assert ws.recv(timeout=5).startswith("40{")
            with pytest.raises(ConnectionClosed):
                while True:
                    assert ws.recv(timeout=5) in ("2", "1")  # pings we never answer, a close
        wait_until(lambda: reasons, what="disconnect handler")
        assert reasons == [SocketIO.reason.PING_TIMEOUT]
    finally:
        server.stop()


def test_a_connection_keeps_no_frames_of_the_handlers_it_ran(served: Any, sio: SocketIO) -> None:
    # The handshake URL (/socket.io/) is no view's, so Flask stores a NotFound on
    # the connection's request; its traceback used to keep the frames of the
    # first handler call (and everything they referenced) for the connection's
    # lifetime: ~25 objects per connection for the garbage collector, ~4 KB.
    sio.on("echo")(lambda data: data)
    sio.on("unmatched")(lambda: type(request.routing_exception).__name__)
    clients = [_client() for _ in range(5)]
    try:
        for client in clients:
            client.connect(served.url, transports=["websocket"], wait_timeout=5)
            assert client.call("echo", {"n": 1}, timeout=5) == {"n": 1}
        # What Flask says about the unmatched URL is unchanged.
        assert clients[0].call("unmatched", timeout=5) == "NotFound"
        gc.collect()
        held = [
            f
            for f in gc.get_objects()
            if isinstance(f, types.FrameType)
            and f.f_code.co_name in ("_run_in_context", "_handle_event", "match_request")
        ]
        assert held == []
    finally:
        for client in clients:
            client.disconnect()


def test_an_upgraded_connection_leaves_no_http_side_for_the_garbage_collector(
    served: Any, sio: SocketIO
) -> None:
    # After the upgrade the HTTP side of a connection is done with; it used to
    # stay in a reference cycle with its parser until a collection ran.
    sio.on("echo")(lambda data: data)
    gc.collect()
    gc.disable()
    clients = [_client() for _ in range(5)]
    try:
        for client in clients:
            client.connect(served.url, transports=["websocket"], wait_timeout=5)
            assert client.call("echo", 1, timeout=5) == 1
        left = [o for o in gc.get_objects() if isinstance(o, HTTPConnection) and o.detached]
        assert left == []
    finally:
        gc.enable()
        for client in clients:
            client.disconnect()
