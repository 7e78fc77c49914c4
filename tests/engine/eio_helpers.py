"""Helpers for the Engine.IO server tests: a real server on a free port, real clients."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flask_relay.engine.eio import EngineIOServer
from flask_relay.server.http import Server

ROOT = Path(__file__).resolve().parents[2]
EIO_PEER = ROOT / "tests" / "js" / "eio_peer.js"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (as tests/conftest.py's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """An engine handler that records events and echoes messages (on the loop)."""

    def __init__(self, echo: bool = True) -> None:
        self.engine: EngineIOServer | None = None
        self.echo = echo
        self.events: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def on_connect(self, sid: str, environ: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(("connect", sid, environ))

    def on_message(self, sid: str, data: str | bytes) -> None:
        with self.lock:
            self.events.append(("message", sid, data))
        if self.echo and self.engine is not None:
            self.engine.send(sid, data)

    def on_disconnect(self, sid: str, reason: str) -> None:
        with self.lock:
            self.events.append(("disconnect", sid, reason))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [e for e in self.events if e[0] == kind]

    def wait(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        return wait_for(predicate, timeout)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class Running:
    def __init__(self, server: Server, engine: EngineIOServer, recorder: Recorder) -> None:
        self.server = server
        self.engine = engine
        self.recorder = recorder

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def port(self) -> int:
        return self.server.port


def engine_factory() -> Iterator[Callable[..., Running]]:
    """Start an Engine.IO server at /engine.io (options go to EngineIOServer)."""
    started: list[Server] = []

    def make(*, echo: bool = True, wsgi_app: Any = None, **options: Any) -> Running:
        recorder = Recorder(echo)
        engine = EngineIOServer(recorder, **options)
        recorder.engine = engine
        server = Server(wsgi_app, {"/engine.io": engine}, port=free_port(), shutdown_timeout=2)
        server.start()
        started.append(server)
        return Running(server, engine, recorder)

    try:
        yield make
    finally:
        for server in started:
            server.stop()


def run_peer(node: str, url: str, **options: Any) -> dict[str, Any]:
    """Run tests/js/eio_peer.js once and return its report."""
    proc = subprocess.run(
        [node, str(EIO_PEER), url, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def b64(data: bytes) -> dict[str, str]:
    return {"$bin": base64.b64encode(data).decode()}


# -- raw HTTP and WebSocket clients -------------------------------------------------


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:80]!r}>"


def request(
    port: int,
    method: str,
    target: str,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """One request on a new connection (http.client)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, target, body=body if body or method == "POST" else None,
                     headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def handshake(port: int, path: str = "/engine.io/", **headers: str) -> tuple[str, dict[str, Any]]:
    """Open a polling session; returns (sid, open packet data)."""
    resp = request(port, "GET", f"{path}?EIO=4&transport=polling", headers=headers)
    assert resp.status == 200, resp
    assert resp.text.startswith("0"), resp
    data = json.loads(resp.text[1:])
    return data["sid"], data


class Background:
    """Run a blocking call (a held GET) in a thread; ``result()`` waits for it."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn(*args, **kwargs)
            except BaseException as exc:  # reported by result()
                self._error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 10.0) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("the background call did not finish")
        if self._error is not None:
            raise self._error
        return self._value


def poll(port: int, sid: str, **headers: str) -> Response:
    return request(port, "GET", f"/engine.io/?EIO=4&transport=polling&sid={sid}",
                   headers=headers)


def post(port: int, sid: str, body: str | bytes, **headers: str) -> Response:
    return request(port, "POST", f"/engine.io/?EIO=4&transport=polling&sid={sid}", body,
                   headers=headers)


def ws_connect(port: int, query: str = "EIO=4&transport=websocket", **kwargs: Any) -> Any:
    from websockets.sync.client import connect

    return connect(f"ws://127.0.0.1:{port}/engine.io/?{query}", open_timeout=5, **kwargs)
