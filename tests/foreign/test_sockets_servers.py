"""Flask-Sockets' README examples (plain and blueprint; tests/routes/sockets_readme*.py)
and a raw WSGI app reading ``environ["wsgi.websocket"]``, each served by real
servers started as subprocesses, driven by a real WebSocket client: the own
server, ``flask run``, ``gunicorn -k flask_relay.gunicorn.Worker`` (and its
Flask-Sockets-style alias ``flask_relay.sockets.worker``) and gunicorn's
gthread worker. No gevent anywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "tests" / "routes"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(APP_DIR))
from wshelpers import free_port  # noqa: E402

pytestmark = pytest.mark.slow


def command(module: str, door: str, port: int) -> list[str]:
    gunicorn = [str(BIN / "gunicorn"), "--chdir", str(APP_DIR), "-b", f"127.0.0.1:{port}",
                "--graceful-timeout", "3"]
    if door == "own":
        return [sys.executable, str(APP_DIR / f"{module}.py"), str(port)]
    if door == "flask-run":
        return [str(BIN / "flask"), "--app", module, "run", "--port", str(port)]
    if door == "gunicorn-relay":
        return [*gunicorn, "-k", "flask_relay.gunicorn.Worker", f"{module}:app"]
    if door == "gunicorn-sockets-alias":
        return [*gunicorn, "-k", "flask_relay.sockets.worker", f"{module}:app"]
    return [*gunicorn, "-k", "gthread", "--threads", "2", f"{module}:app"]


def run_and_echo(module: str, door: str, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command(module, door, port), cwd=APP_DIR, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.read() == b"Hello World!"
                break
            except (OSError, urllib.error.URLError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{door} did not start:\n{log_path.read_text()}") from None
                time.sleep(0.1)
        for _ in range(2):  # twice: gthread's two threads are not held by the first
            with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5) as ws:
                ws.send("über")
                assert ws.recv(timeout=5) == "über"
                ws.send(b"\x00\xff")
                assert ws.recv(timeout=5) == b"\x00\xff"
            assert ws.close_code == 1000
        time.sleep(0.3)  # the route's last send (the README loop) happens now
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text
    assert "gevent" not in sys.modules


@pytest.mark.parametrize("door", ["own", "flask-run", "gunicorn-relay", "gunicorn-gthread"])
@pytest.mark.parametrize("module", ["sockets_readme", "sockets_readme_bp"])
def test_flask_sockets_readme_examples(module: str, door: str, tmp_path: Path) -> None:
    run_and_echo(module, door, tmp_path)


@pytest.mark.parametrize("door", ["own", "gunicorn-sockets-alias", "gunicorn-gthread"])
def test_raw_wsgi_app_with_wsgi_websocket(door: str, tmp_path: Path) -> None:
    run_and_echo("wsgi_websocket_app", door, tmp_path)
