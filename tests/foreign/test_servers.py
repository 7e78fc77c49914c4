"""WebSocket routes under real servers started as subprocesses.

``flask run`` and ``app.run()`` (Werkzeug), gunicorn's gthread worker (the
foreign-server middleware takes the socket over) and gunicorn with
``-k flask_relay.gunicorn.Worker`` (the own server in a gunicorn worker).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "tests" / "routes"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests" / "routes"))
from wshelpers import free_port  # noqa: E402

DOORS = ["flask-run", "app-run", "gunicorn-sync", "gunicorn-gthread", "gunicorn-relay"]


@dataclass
class Running:
    door: str
    port: int
    proc: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def report(self, key: str) -> object:
        url = f"http://127.0.0.1:{self.port}/reports/{key}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())


def command(door: str, port: int, tmp: Path) -> list[str]:
    bind = f"127.0.0.1:{port}"
    gunicorn = [
        str(BIN / "gunicorn"),
        "--chdir", str(APP_DIR),
        "-b", bind,
        "--control-socket", str(tmp / "gunicorn.ctl"),
        "--graceful-timeout", "5",
    ]
    if door == "flask-run":
        return [str(BIN / "flask"), "--app", "wsapp", "run", "--port", str(port)]
    if door == "app-run":
        return [sys.executable, str(APP_DIR / "wsapp.py"), str(port)]
    if door == "gunicorn-sync":
        return [*gunicorn, "-k", "sync", "wsapp:app"]
    if door == "gunicorn-gthread":
        return [*gunicorn, "-k", "gthread", "--threads", "2", "wsapp:app"]
    return [*gunicorn, "-k", "flask_relay.gunicorn.Worker", "wsapp:app"]


def start(door: str, tmp: Path, env_extra: dict[str, str] | None = None) -> Running:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    proc = subprocess.Popen(
        command(door, port, tmp),
        cwd=APP_DIR,
        env=env,
        stdout=open(tmp / f"{door}.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                assert response.read() == b"plain HTTP still works"
            return Running(door, port, proc)
        except (OSError, urllib.error.URLError):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                log = (tmp / f"{door}.log").read_text(errors="replace")
                raise RuntimeError(f"{door} did not start:\n{log}") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="module", params=DOORS)
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    Running
]:
    tmp = tmp_path_factory.mktemp(request.param)
    server = start(request.param, tmp)
    try:
        yield server
    finally:
        stop(server.proc)


def test_echo(running: Running) -> None:
    with connect(running.url("/echo")) as ws:
        ws.send("über")
        assert ws.recv(timeout=5) == "über"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=5) == b"\x00\xff"
    assert running.report("echo-closed")[:2] == [1000, ""]


def test_async_route_and_url_variables(running: Running) -> None:
    with connect(running.url("/echo-async")) as ws:
        ws.send("a")
        assert ws.recv(timeout=5) == "a"
    with connect(running.url("/vars/9/x")) as ws:
        assert ws.recv(timeout=5) == "10:x:int"


def test_more_websockets_than_server_threads(running: Running) -> None:
    # gthread runs with --threads 2 and sync serves one request at a time: a
    # server thread held per WebSocket would leave later connections waiting.
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(running.url("/echo"))) for _ in range(6)]
        for i, ws in enumerate(clients):
            ws.send(f"client {i}")
        for i, ws in enumerate(clients):
            assert ws.recv(timeout=5) == f"client {i}"
        with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/", timeout=5) as r:
            assert r.status == 200


def _frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Parse unmasked server frames; returns them and any unparsed rest."""
    frames = []
    while len(data) >= 2:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            length, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + length:
            break
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames, data


def test_nothing_but_frames_after_the_upgrade_and_tcp_closed(running: Running) -> None:
    raw = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    raw.sendall(
        b"GET /bye HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = raw.recv(4096)
        assert chunk
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    # The route sends "bye" and returns: a close frame follows; we answer it.
    while True:
        frames, _ = _frames(rest)
        if frames and frames[-1][0] == 0x8:
            break
        chunk = raw.recv(4096)
        assert chunk, rest
        rest += chunk
    mask = b"\x01\x02\x03\x04"
    payload = struct.pack("!H", 1000)
    raw.sendall(b"\x88\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    while True:  # the server closes TCP after the closing handshake
        chunk = raw.recv(4096)
        if not chunk:
            break
        rest += chunk
    raw.close()
    frames, leftover = _frames(rest)
    assert frames == [(0x1, b"bye"), (0x8, payload)]
    assert leftover == b""  # no "HTTP/1.1 200 OK" written by the WSGI server


def test_oversize_and_route_error(running: Running) -> None:
    with connect(running.url("/echo"), max_size=None) as ws:
        ws.send("z" * (70 * 1024))
        with pytest.raises(ClientClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 1009
    with connect(running.url("/boom")) as ws:
        ws.recv(timeout=5)
        with pytest.raises(ClientClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 1011


def test_gunicorn_worker_graceful_shutdown(tmp_path: Path) -> None:
    server = start("gunicorn-relay", tmp_path)
    try:
        with connect(server.url("/watch")) as ws:
            assert ws.recv(timeout=5) == "ready"
            os.kill(server.proc.pid, signal.SIGTERM)  # the arbiter stops its workers
            with pytest.raises(ClientClosed):
                ws.recv(timeout=10)
        assert ws.close_code == 1001
        assert server.proc.wait(15) == 0
    finally:
        stop(server.proc)


def test_gunicorn_worker_reload_keeps_serving(tmp_path: Path) -> None:
    server = start("gunicorn-relay", tmp_path)
    try:
        with connect(server.url("/watch")) as ws:
            assert ws.recv(timeout=5) == "ready"
            os.kill(server.proc.pid, signal.SIGHUP)  # new workers, old ones stop gracefully
            with pytest.raises(ClientClosed):
                ws.recv(timeout=10)
        assert ws.close_code == 1001
        deadline = time.monotonic() + 10
        while True:
            try:
                with connect(server.url("/echo"), open_timeout=2) as ws:
                    ws.send("after reload")
                    assert ws.recv(timeout=5) == "after reload"
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        stop(server.proc)


# ---------------------------------------------------------------------------
# Socket.IO (official Node client) and a WebSocket route on the same port


def _engine_available() -> bool:
    try:
        from flask_relay.engine import eio  # noqa: F401
    except ImportError:
        return False
    return True


SIO_PEER = ROOT / "tests" / "js" / "sio_peer.js"


@pytest.fixture(scope="module", params=DOORS)
def running_sio(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    if not _engine_available():
        pytest.skip("the Engine.IO server (flask_relay.engine.eio) is not there yet")
    tmp = tmp_path_factory.mktemp(request.param + "-sio")
    server = start(request.param, tmp, {"WSAPP_SOCKETIO": "1"})
    try:
        yield server
    finally:
        stop(server.proc)


@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
def test_socketio_client(running_sio: Running, mode: str, node: str) -> None:
    proc = subprocess.run(
        [node, str(SIO_PEER), mode, f"http://127.0.0.1:{running_sio.port}"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    assert result["ack"] == {"text": "hé", "list": [1, 2]}
    assert result["binary"] == "0102ff"
    if mode != "upgrade":
        # (In "upgrade" mode the upgrade may be over before "connect" fires.)
        assert result["firstTransport"] == mode
    # With transports ["polling", "websocket"] the client always starts on
    # polling: ending on websocket means the upgrade happened.
    assert result["transport"] == ("polling" if mode == "polling" else "websocket")


def test_websocket_route_beside_socketio(running_sio: Running) -> None:
    with connect(running_sio.url("/echo")) as ws:
        ws.send("next to socket.io")
        assert ws.recv(timeout=5) == "next to socket.io"


@pytest.mark.parametrize(("door", "signum"), [
    ("app-run", signal.SIGINT),
    ("gunicorn-gthread", signal.SIGTERM),
])
def test_foreign_server_stop_closes_routes_with_1001(
    door: str, signum: int, tmp_path: Path
) -> None:
    server = start(door, tmp_path)
    try:
        with connect(server.url("/watch")) as ws:
            assert ws.recv(timeout=5) == "ready"
            os.kill(server.proc.pid, signum)
            with pytest.raises(ClientClosed):
                ws.recv(timeout=10)
        assert ws.close_code == 1001
    finally:
        stop(server.proc)
