"""Helpers for the acceptance tests of issues 3 and 4: real servers, raw clients.

Every server here is Flask-Relay's own, built through the public Flask face
(``SocketIO(app).make_server(...)``) or started with ``socketio.run()`` in a
subprocess; clients are raw ``http.client`` requests, raw sockets, the
``websockets`` client and python-socketio. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from flask_relay import SocketIO


def _load_free_port() -> Callable[[], int]:
    """``free_port`` from tests/conftest.py (a module named conftest cannot be imported)."""
    spec = importlib.util.spec_from_file_location(
        "_acceptance_root_conftest", Path(__file__).resolve().parent.parent / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.free_port  # type: ignore[no-any-return]


free_port = _load_free_port()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    target: str,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Response:
    """One raw HTTP/1.1 request on a fresh connection."""
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, target, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


@dataclass
class Served:
    app: Flask
    sio: SocketIO
    server: Any

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def url(self) -> str:
        return str(self.server.url)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"


@contextlib.contextmanager
def serve(app: Flask | None = None, **options: Any) -> Iterator[Served]:
    """``SocketIO(app, **options)`` served on 127.0.0.1 from a background thread."""
    if app is None:
        app = Flask(__name__)
        app.config["SECRET_KEY"] = "acceptance"
    sio = SocketIO(app, **options)
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        yield Served(app, sio, server)
    finally:
        server.stop()
