"""The Socket.IO browser client served by the endpoint (Node's ``serveClient``).

Each door (``socketio.run``, ``flask run``, gunicorn with Flask-Relay's
worker) answers ``/socket.io/socket.io.min.js`` and its siblings with the npm
build, parsed by h11 (a strict HTTP/1.1 parser): content type, ETag,
``Cache-Control``, 304 on ``If-None-Match`` (strong and weak), gzip on
``Accept-Encoding``; the Engine.IO endpoint under the same path still works.
``serve_client=False`` leaves the paths to the endpoint. Chromium, with every
request outside 127.0.0.1 refused, loads the page, the served client, and
connects.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DIST = ROOT / "node_modules" / "socket.io-client" / "dist"
CHROMIUM = "/usr/bin/chromium"
NAMES = [
    f"socket.io{variant}.js{suffix}"
    for variant in ("", ".min", ".esm.min", ".msgpack.min")
    for suffix in ("", ".map")
]


@pytest.fixture(autouse=True, scope="module")
def _client_files_built() -> None:
    static = ROOT / "src" / "flask_relay" / "static"
    missing = [name for name in NAMES if not (static / name).is_file()]
    if missing:
        pytest.fail(f"{static} lacks {missing}: run `make client` (scripts/copy-client)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(
    port: int, target: str, headers: list[tuple[str, str]] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One request over a fresh connection, parsed by h11."""
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        request = h11.Request(
            method=method, target=target, headers=[("Host", "127.0.0.1"), *(headers or [])]
        )
        s.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
        response: Any = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(s.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        if method == "HEAD":
            # Nothing may follow a HEAD answer's head (no body bytes).
            s.settimeout(0.5)
            try:
                extra = conn.trailing_data[0] + s.recv(65536)
            except TimeoutError:
                extra = conn.trailing_data[0]
            assert extra == b"", extra[:100]
    assert response is not None
    found = {k.decode().lower(): v.decode() for k, v in response.headers}
    return response.status_code, found, body


def _command(door: str, port: int) -> list[str]:
    if door == "socketio-run":
        return [sys.executable, str(HERE / "served_client_app.py"), str(port)]
    if door == "flask-run":
        return [str(BIN / "flask"), "--app", "served_client_app", "run", "--port", str(port)]
    return [
        str(BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-k", "flask_relay.gunicorn.Worker",
        "--graceful-timeout", "5", "served_client_app:app",
    ]  # fmt: skip


class App:
    def __init__(self, door: str, log: Path, serve_client: bool = True) -> None:
        self.port = free_port()
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT / "src"),
            SERVE_CLIENT="1" if serve_client else "0",
        )
        self.log = log
        self.proc = subprocess.Popen(
            _command(door, self.port),
            cwd=HERE,
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, which = fetch(self.port, "/which")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{door} did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.1)
        # The server runs this worktree's package.
        assert which.decode() == str(ROOT / "src" / "flask_relay" / "__init__.py")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def start(door: str, serve_client: bool = True) -> App:
        app = App(door, tmp_path / f"{door}.log", serve_client)
        apps.append(app)
        return app

    try:
        yield start
    finally:
        for app in apps:
            app.stop()


@pytest.mark.parametrize("door", ["socketio-run", "flask-run", "gunicorn-relay"])
def test_client_files_under_every_door(door: str, started: Any, node: str) -> None:
    app = started(door)
    for name in NAMES:
        status, headers, body = fetch(app.port, f"/socket.io/{name}")
        assert status == 200, (name, body[:200])
        assert body == (DIST / name).read_bytes(), name  # the npm build, unchanged
        kind = "json" if name.endswith(".map") else "javascript"
        assert headers["content-type"] == f"application/{kind}; charset=utf-8"
        assert headers["cache-control"] == "public, max-age=0"
        assert "content-encoding" not in headers
        etag = headers["etag"]
        assert etag.startswith('"4.') and etag.endswith('"'), etag  # quoted, the version first

        # Revalidation: the same tag (strong, weak, or in a list) gets 304 and no body.
        for tag in (etag, "W/" + etag, f'"other", {etag}'):
            status, again, body = fetch(app.port, f"/socket.io/{name}", [("If-None-Match", tag)])
            assert (status, body) == (304, b""), (name, tag)
            assert again["etag"] == etag and again["cache-control"] == "public, max-age=0"
        status, _, body = fetch(app.port, f"/socket.io/{name}", [("If-None-Match", '"other"')])
        assert status == 200 and body == (DIST / name).read_bytes()

    status, headers, body = fetch(
        app.port, "/socket.io/socket.io.min.js?v=1", [("Accept-Encoding", "br, gzip")]
    )
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert "accept-encoding" in headers["vary"].lower()
    assert gzip.decompress(body) == (DIST / "socket.io.min.js").read_bytes()
    assert len(body) < len(gzip.decompress(body)) // 2

    # HEAD: the GET's headers and length, no body (h11 would see extra bytes).
    status, headers, body = fetch(app.port, "/socket.io/socket.io.js", method="HEAD")
    assert (status, body) == (200, b"") and headers["etag"].startswith('"4.')
    assert headers["content-length"] == str(len((DIST / "socket.io.js").read_bytes()))
    status, _, body = fetch(app.port, "/socket.io/socket.io.js", method="POST")
    assert status == 400  # the endpoint's answer to a bad request, as before

    # Other names under the path are the Engine.IO endpoint's, as before.
    status, _, body = fetch(app.port, "/socket.io/socket.io.nope.js")
    assert status == 400 and b'"code":0' in body.replace(b" ", b"")
    status, _, body = fetch(app.port, "/socket.io/?EIO=4&transport=polling")
    assert status == 200 and body.startswith(b'0{"sid":')
    log = app.log.read_text(errors="replace")
    assert "Traceback" not in log, log


def test_serve_client_false_leaves_the_paths_to_the_endpoint(started: Any) -> None:
    app = started("socketio-run", serve_client=False)
    status, _, body = fetch(app.port, "/socket.io/socket.io.min.js")
    assert status == 400 and b"Transport unknown" in body
    status, _, body = fetch(app.port, "/socket.io/?EIO=4&transport=polling")
    assert status == 200 and body.startswith(b'0{"sid":')


def test_chromium_without_network_loads_the_served_client(started: Any) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is required: apt-get install -y chromium (make system-deps)")
    app = started("socketio-run")
    base = f"http://127.0.0.1:{app.port}"
    seen: list[str] = []
    refused: list[str] = []

    def only_loopback(route: Any) -> None:
        url = route.request.url
        seen.append(url)
        if url.startswith(base + "/") or url.startswith(f"ws://127.0.0.1:{app.port}/"):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # No proxy resolution, no DNS: nothing but 127.0.0.1 is reachable.
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )  # fmt: skip
        try:
            context = browser.new_context()
            context.route("**/*", only_loopback)
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(base + "/")
            result = page.evaluate("window.result")
            assert page.evaluate("typeof io") == "function"
        finally:
            browser.close()
    assert result == {"answer": "hé", "transport": "websocket"}, result
    assert refused == [], refused
    assert f"{base}/socket.io/socket.io.min.js" in seen


def test_a_build_without_the_files_answers_404_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flask import Flask

    from flask_relay.engine.eio import EngineIOServer
    from flask_relay.server.clientfiles import ClientFilesMount
    from flask_relay.server.http import Server

    mount = ClientFilesMount(EngineIOServer(), "/socket.io", directory=tmp_path)
    server = Server(Flask(__name__), {"/socket.io": mount}, host="127.0.0.1", port=0,
                    shutdown_timeout=1.0)  # fmt: skip
    server.start()
    try:
        with caplog.at_level("WARNING", "flask_relay.server"):
            for _ in range(2):
                status, _, body = fetch(server.port, "/socket.io/socket.io.min.js")
                assert status == 404 and b"make client" in body
        (warning,) = [r.getMessage() for r in caplog.records if "client files" in r.getMessage()]
        assert str(tmp_path) in warning  # logged once, with the place and the fix
        status, _, body = fetch(server.port, "/socket.io/?EIO=4&transport=polling")
        assert status == 200 and body.startswith(b'0{"sid":')
    finally:
        server.stop()


def test_cross_origin_module_gets_the_endpoints_cors_headers(tmp_path: Path) -> None:
    """A page on another origin may import the ESM build when
    ``cors_allowed_origins`` allows that origin (Node's ``cors`` option)."""
    from flask import Flask

    from flask_relay.engine.eio import EngineIOServer
    from flask_relay.server.clientfiles import STATIC_DIR, ClientFilesMount
    from flask_relay.server.http import Server

    allowed = "http://localhost:3000"
    engine = EngineIOServer(cors_allowed_origins=[allowed])
    mount = ClientFilesMount(engine, "/socket.io", directory=STATIC_DIR)
    server = Server(Flask(__name__), {"/socket.io": mount}, host="127.0.0.1", port=0,
                    shutdown_timeout=1.0)  # fmt: skip
    server.start()
    try:
        target = "/socket.io/socket.io.esm.min.js"
        status, headers, body = fetch(server.port, target, [("Origin", allowed)])
        assert status == 200 and body == (DIST / "socket.io.esm.min.js").read_bytes()
        assert headers["access-control-allow-origin"] == allowed
        assert headers["vary"] == "Accept-Encoding, Origin"
        status, headers, body = fetch(server.port, target, [("Origin", "http://evil.test")])
        assert status == 200 and "access-control-allow-origin" not in headers
        status, headers, _ = fetch(server.port, target)
        assert status == 200 and "access-control-allow-origin" not in headers
        assert headers["vary"] == "Accept-Encoding"
    finally:
        server.stop()
