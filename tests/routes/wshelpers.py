"""Helpers shared by tests/routes and tests/foreign (a unique module name:
several test directories have a ``conftest`` module)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from flask_relay.server.http import Server

sys.path.insert(0, str(Path(__file__).parent))
import wsapp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WS_PEER = ROOT / "tests" / "js" / "ws_peer.js"


@dataclass
class Served:
    """An app served on 127.0.0.1 by one door."""

    door: str
    port: int
    app: Any
    reports: wsapp.Reports

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def serve(door: str, ping_interval: float | None = None) -> Iterator[Served]:
    app, _sock, reports = wsapp.make_app(ping_interval=ping_interval)
    if door == "own":
        server = Server(app, host="127.0.0.1", port=0, shutdown_timeout=2.0)
        server.start()
        try:
            yield Served(door, server.port, app, reports)
        finally:
            server.stop()
    else:
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield Served(door, httpd.socket.getsockname()[1], app, reports)
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)


def run_peer(node: str, url: str, scenario: str, timeout: float = 20.0) -> dict[str, Any]:
    """Run a scenario of tests/js/ws_peer.js (Node's ``ws`` client); its JSON result."""
    proc = subprocess.run(
        [node, str(WS_PEER), scenario, url],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (as tests/conftest.py's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served_app(app: Any, door: str) -> Iterator[int]:
    """Serve any WSGI ``app`` on 127.0.0.1 by the own server (``"own"``) or
    Werkzeug's threaded server (``"werkzeug"``, what ``flask run`` uses); yields the port."""
    if door == "own":
        server = Server(app, host="127.0.0.1", port=0, shutdown_timeout=2.0)
        server.start()
        try:
            yield server.port
        finally:
            server.stop()
    else:
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield httpd.socket.getsockname()[1]
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)
