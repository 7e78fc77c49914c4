"""Issue 10 item 3: every official client comes back by itself after a restart.

A deploy stops the server (SIGTERM to ``socketio.run``, or gunicorn's ``HUP``
reload) and starts a new one on the same port. The python-socketio client
treats an Engine.IO close packet as a deliberate disconnect and never
reconnects, so a shutdown must end sessions the way a restart looks to every
client: a WebSocket close frame (1001) without the close packet, a held
long-poll answered with an error status. The server's disconnect handlers
still run ("server disconnect").

Clients: python-socketio over WebSocket and over long-polling, and the npm
``socket.io-client`` (Node) over both, all with their default reconnection
logic (only the delays shortened). Each must fire ``connect`` again on its own
and complete an acknowledged round trip with the new server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio as socketio_client
from acceptance_helpers import free_port, request, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from nodepeer import NodePeer  # noqa: E402

HERE = Path(__file__).resolve().parent
APP = HERE / "run_app.py"
TRANSPORTS = ("websocket", "polling")


class Process:
    """A server subprocess whose stdout (connect/disconnect lines) is collected."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.port = port
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            argv,
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.err}")
            try:
                return request(port, "GET", "/hello", timeout=1).text == "hello from flask"
            except OSError:
                return False

        wait_until(up, timeout=20, what="the server serving")

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def disconnects(self) -> list[str]:
        return [ln.split(" ", 2)[2] for ln in self.lines if ln.startswith("disconnect ")]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def run_server(port: int) -> Process:
    return Process([sys.executable, str(APP), str(port), "quiet"], port)


def gunicorn_server(port: int, tmp: Path, worker: str) -> Process:
    return Process(
        [
            sys.executable, "-m", "gunicorn",
            "-k", worker,
            "--threads", "4",
            "-b", f"127.0.0.1:{port}",
            "--control-socket", str(tmp / "gunicorn.ctl"),
            "--graceful-timeout", "5",
            "run_app:app",
        ],
        port,
    )


class Clients:
    """python-socketio and Node clients, one per transport each, reconnecting."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.python: dict[str, tuple[Any, list[str]]] = {}
        self.node = NodePeer()

    def connect(self) -> None:
        for transport in TRANSPORTS:
            client = socketio_client.Client(
                reconnection_delay=0.2,
                reconnection_delay_max=0.5,
                randomization_factor=0.1,
                handle_sigint=False,
            )
            events: list[str] = []
            client.on("connect", lambda events=events: events.append("connect"))
            client.on("disconnect", lambda *reason, events=events: events.append("disconnect"))
            client.connect(self.url, transports=[transport], wait_timeout=5)
            self.python[transport] = (client, events)
            report = self.node.connect(
                transport,
                self.url,
                transports=[transport],
                reconnection=True,
                reconnectionDelay=200,
                reconnectionDelayMax=500,
            )
            assert report["ev"] == "connect", report

    def round_trip(self, tag: str) -> None:
        for transport, (client, _) in self.python.items():
            assert client.call("echo", f"{tag} py {transport}", timeout=5) == (
                f"{tag} py {transport}"
            )
            assert self.node.call(transport, "echo", f"{tag} node {transport}") == [
                f"{tag} node {transport}"
            ]

    def count(self, event: str) -> dict[str, int]:
        counts = {}
        for transport, (_, events) in self.python.items():
            counts[f"python {transport}"] = events.count(event)
            counts[f"node {transport}"] = len(self.node.find(ev=event, id=transport))
        return counts

    def wait_for(self, event: str, times: int, timeout: float = 20) -> None:
        try:
            wait_until(
                lambda: all(n >= times for n in self.count(event).values()),
                timeout=timeout,
                what=f"every client's {event} #{times}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; counts now: {self.count(event)}") from None

    def close(self) -> None:
        for client, _ in self.python.values():
            client.disconnect()
        self.node.close()


@pytest.fixture
def clients() -> Iterator[Any]:
    made: list[Clients] = []

    def make(port: int) -> Clients:
        c = Clients(port)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


@pytest.fixture
def servers() -> Iterator[list[Process]]:
    started: list[Process] = []
    try:
        yield started
    finally:
        for server in started:
            server.kill()


def test_clients_reconnect_after_sigterm_and_a_new_start(clients: Any, servers: Any) -> None:
    port = free_port()
    first = run_server(port)
    servers.append(first)
    c = clients(port)
    c.connect()
    c.round_trip("before")
    wait_until(lambda: len([ln for ln in first.lines if ln.startswith("connect")]) == 4)

    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(15) == 0, first.err
    # The server's disconnect handlers ran for every client.
    assert first.disconnects() == ["server disconnect"] * 4, (first.lines, first.err)
    c.wait_for("disconnect", 1)

    time.sleep(0.5)  # the clients find nobody listening for a while
    second = run_server(port)
    servers.append(second)
    c.wait_for("connect", 2)
    c.round_trip("after")
    assert len([ln for ln in second.lines if ln.startswith("connect")]) == 4


@pytest.mark.parametrize("worker", ["flask_relay.gunicorn.Worker", "gthread"])
def test_clients_reconnect_after_a_gunicorn_reload(
    clients: Any, servers: Any, tmp_path: Path, worker: str
) -> None:
    """Our worker, and gthread (the foreign-server door: sessions on the shared loop)."""
    port = free_port()
    server = gunicorn_server(port, tmp_path, worker)
    servers.append(server)
    c = clients(port)
    c.connect()
    c.round_trip("before")

    os.kill(server.proc.pid, signal.SIGHUP)  # new worker; the old one stops gracefully
    c.wait_for("disconnect", 1)
    c.wait_for("connect", 2)
    c.round_trip("after")
    wait_until(
        lambda: server.disconnects() == ["server disconnect"] * 4,
        what=f"the old worker's disconnect handlers ({server.lines})",
    )
    assert server.proc.poll() is None  # the arbiter kept serving
