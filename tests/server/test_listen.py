"""Start-up on an address that cannot be served: exit 1 with a one-line reason.

A server that looks alive while it serves nothing is worse than one that
stops: a supervisor restarts only a process that exits. The line comes before
anything that says "serving".
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

APP = """
import sys
import flask_relay
from flask import Flask
from flask_relay import SocketIO
from flask_relay.engineio import EngineIO
print("using", flask_relay.__file__, file=sys.stderr)
app = Flask(__name__)
port, how = int(sys.argv[1]), sys.argv[2]
if how == "engineio":
    EngineIO(app).run(app, port=port)
else:
    SocketIO(app).run(app, port=port, debug=how == "debug")
print("run() returned", file=sys.stderr)
"""


def run(port: int, how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", APP, str(port), how],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


@pytest.mark.parametrize("how", ["socketio", "debug", "engineio"])
def test_address_in_use_exits_1_with_one_line(how: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run(port, how)
    lines = proc.stderr.splitlines()
    assert lines[0] == f"using {ROOT / 'src' / 'flask_relay' / '__init__.py'}", proc.stderr
    # debug=True: the reloader's and the debugger's " * " banners come first.
    rest = [line for line in lines if not line.startswith(("using ", " * "))]
    assert rest == [
        f"flask-relay: cannot listen on 127.0.0.1:{port}: address already in use"
    ], proc.stderr
    assert proc.returncode == 1
    assert "serving" not in proc.stdout + proc.stderr.lower()


def test_unknown_host_exits_1_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-c",
         "from flask import Flask; from flask_relay import SocketIO; "
         "app = Flask(__name__); SocketIO(app).run(app, host='no-such-host.invalid', port=5000)"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "flask-relay: cannot listen on no-such-host.invalid:5000: "
    ), proc.stderr
