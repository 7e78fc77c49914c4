"""Release basics (issue 14 item 6): the built wheel, installed in a fresh
virtualenv, serves the demo, browser client included.

The wheel is built from this checkout with ``python -m build`` (as ``make
dist`` does), installed with pip into a new venv (its dependencies come from
the index, through pip's cache), and the demo, copied out of the repository,
runs on that venv's Python: nothing from this checkout is importable there.
The official python-socketio client then talks to it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests
import socketio

ROOT = Path(__file__).resolve().parents[2]
NPM_CLIENT = ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_in_a_fresh_venv_serves_the_demo(tmp_path: Path) -> None:
    if not (ROOT / "src" / "flask_relay" / "static" / "socket.io.min.js").is_file():
        pytest.fail("the client files are not in src/flask_relay/static: run `make client`")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=240, env=clean_env(),
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("flask_relay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    for name in ("socket.io.js", "socket.io.min.js", "socket.io.esm.min.js",
                 "socket.io.min.js.map", "VERSION"):  # fmt: skip
        assert f"flask_relay/static/{name}" in names, name
    assert not any(n.startswith(("tests/", "examples/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=240, env=clean_env(),
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    where = subprocess.run(
        [python, "-c", "import flask_relay; print(flask_relay.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env(),
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr

    demo = tmp_path / "demo"
    shutil.copytree(ROOT / "examples" / "demo", demo)
    port = free_port()
    log = tmp_path / "demo.log"
    proc = subprocess.Popen(
        [python, str(demo / "app.py")],
        cwd=tmp_path,
        env=clean_env(DEMO_PORT=str(port), PYTHONUNBUFFERED="1"),
        stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = socketio.Client(reconnection=False)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = requests.get(url + "/", timeout=5)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the demo did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.2)
        assert page.status_code == 200 and "/socket.io/socket.io.min.js" in page.text
        served = requests.get(url + "/socket.io/socket.io.min.js", timeout=10)
        assert served.status_code == 200 and served.headers["ETag"]
        assert served.content == NPM_CLIENT.read_bytes()
        client.connect(url, transports=["websocket"], wait_timeout=10)
        answer = client.call("hello", {"nick": "wheel", "room": "lobby"}, timeout=10)
        assert answer["nick"] == "wheel" and "wheel" in answer["members"]
    finally:
        client.disconnect()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")
