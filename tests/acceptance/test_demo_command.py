"""Issue 4 "Done when": the README's first command (``make demo``) on a clean clone.

tests/demo starts examples/demo/app.py directly; this runs the Makefile's demo
recipe itself in a fresh ``git clone`` of the committed tree and talks to the
result with the official Socket.IO client under Node. The clone reuses this
checkout's installed venv and node_modules (``make -o`` marks the two install
targets as done): installing from the registries is not what is under test, and
a test must not rebuild the shared venv.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from acceptance_helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from nodepeer import NodePeer  # noqa: E402


def _readme_first_command() -> str:
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("make "):
            return line.split("#")[0].strip()
    raise AssertionError("README.md shows no make command")


@pytest.mark.slow
def test_make_demo_from_a_clean_clone(tmp_path: Path, node: str) -> None:
    assert _readme_first_command() == "make demo"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    static = clone / "src" / "flask_relay" / "static"
    assert not static.exists()  # clean: the client files are not committed
    (clone / "node_modules").symlink_to(ROOT / "node_modules")
    venv = ROOT / ".venv"
    port = free_port()
    proc = subprocess.Popen(
        ["make", "-s", "-o", f"{venv}/.installed", "-o", "node_modules/.installed", "demo",
         f"VENV={venv}"],
        cwd=clone,
        # The clone's own package (with the files its recipe copied), not this checkout's.
        env={**os.environ, "DEMO_PORT": str(port), "PYTHONUNBUFFERED": "1",
             "PYTHONPATH": str(clone / "src")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make and the demo it starts: one process group
    )  # fmt: skip
    peer = NodePeer()
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"make demo exited: {proc.stdout.read() if proc.stdout else ''}"
                )
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=30, what="the demo listening")
        url = f"http://127.0.0.1:{port}"
        page = requests.get(url + "/", timeout=10)
        assert page.status_code == 200 and "/socket.io/socket.io.min.js" in page.text
        served = requests.get(url + "/socket.io/socket.io.min.js", timeout=10).content
        # The recipe copied the npm build into the package (make client).
        copied = static / "socket.io.min.js"
        npm_build = ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
        assert copied.read_bytes() == npm_build.read_bytes()
        assert served == npm_build.read_bytes()
        assert peer.connect("newcomer", url)["ev"] == "connect"
        (answer,) = peer.call("newcomer", "hello", {"nick": "newcomer", "room": "lobby"})
        answer_any: Any = answer
        assert answer_any["nick"] == "newcomer" and "newcomer" in answer_any["members"]
    finally:
        peer.close()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
