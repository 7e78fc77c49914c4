"""One app, every mount, every door.

An app with ``SocketIO(app)``, ``EngineIO(app, path="/engine.io")`` and a
``Sock`` route is served whole by each of the five doors (``socketio.run``,
``eio.run``, ``flask run``, gunicorn with Flask-Relay's worker, gunicorn
gthread): the official socket.io-client and engine.io-client and a WebSocket
client each make a round trip (both Engine.IO clients after the upgrade to
WebSocket). Before the shared registry (``server/mounts.py``),
``socketio.run`` answered 404 on /engine.io/ and ``eio.run`` on /socket.io/.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PEER = ROOT / "tests" / "js" / "every_mount_peer.js"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

DOORS = ["socketio-run", "eio-run", "flask-run", "gunicorn-relay", "gunicorn-gthread"]


def _command(door: str, port: int) -> list[str]:
    if door in ("socketio-run", "eio-run"):
        return [sys.executable, str(HERE / "every_mount_app.py"), door, str(port)]
    if door == "flask-run":
        return [str(BIN / "flask"), "--app", "every_mount_app", "run", "--port", str(port)]
    worker = "flask_relay.gunicorn.Worker" if door == "gunicorn-relay" else "gthread"
    return [
        str(BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-k", worker, "--threads", "4",
        "--graceful-timeout", "5", "every_mount_app:app",
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.parametrize("door", DOORS)
def test_every_mount_under_every_door(door: str, node: str, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT / "src"))
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        _command(door, port),
        cwd=HERE,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    page = r.read().decode()
                break
            except (OSError, urllib.error.URLError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{door} did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.1)
        # The server runs this worktree's package.
        assert page == "every mount: " + str(ROOT / "src" / "flask_relay" / "__init__.py")
        done = subprocess.run(
            [node, str(PEER), f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        failure = f"{result}\n{log.read_text(errors='replace')}"
        assert result["sio"] == {"ack": {"text": "hé sio"}, "transport": "websocket"}, failure
        assert result["eio"] == {"message": "hé eio", "transport": "websocket"}, failure
        assert result["ws"] == {"message": "hé ws"}, failure
    finally:
        _stop(proc)
