"""Forwarding between two servers in this process (``flask_relay.server.forward``).

Two Flask-Relay servers, each with a :class:`Forwarder` on a shared private
runtime directory, stand for two workers of one host. Raw HTTP requests (a
new connection each) and the ``websockets`` client check: a session's requests
are served by whichever server receives them; a WebSocket upgrade reaches the
owner; sids that name no known node, a node that is gone, or a request
already forwarded get the usual 400 (never a connection to somewhere a client
chose); the runtime directory must be private.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask import request as flask_request
from scale_helpers import HERE, PollingClient, env_with_src, free_port, request
from websockets.sync.client import connect

from flask_relay import SocketIO
from flask_relay.server import forward
from flask_relay.server.forward import (
    FORWARDED_HEADER,
    Forwarder,
    enable,
    node_of,
    parse_peer_address,
    private_runtime_dir,
)


class Node:
    def __init__(self, runtime_dir: str, name: str) -> None:
        self.app = Flask(name)
        self.sio = SocketIO(self.app)
        self.name = name

        @self.sio.on("echo")
        def echo(data: object) -> object:
            self.sio.emit("reply", data, to=flask_request.sid)  # type: ignore[attr-defined]
            return {"data": data, "name": name}

        self.server = self.sio.make_server(self.app, "127.0.0.1", free_port())
        self.forwarder = enable(self.server, runtime_dir=runtime_dir)
        self.server.start()
        self.port = int(self.server.port)

    def stop(self) -> None:
        self.server.stop()
        self.forwarder.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    runtime = str(tmp_path / "run")
    os.mkdir(runtime, 0o700)
    a, b = Node(runtime, "a"), Node(runtime, "b")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


class Alternating(PollingClient):
    """Sends each request to the next of several ports."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__("127.0.0.1", ports[0])
        self.ports = ports
        self.turn = 0

    def _url(self) -> str:
        self.port = self.ports[self.turn % len(self.ports)]
        self.turn += 1
        return super()._url()


def test_every_request_of_a_session_on_either_server(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    client = Alternating([a.port, b.port])
    info = client.connect()
    assert node_of(info["sid"]) == a.forwarder.node_id
    for i in range(4):
        client.emit("echo", i, ack_id=i + 1)
        assert client.event("reply") == [i]
        assert client.ack(i + 1) == [{"data": i, "name": "a"}]
    assert a.sio.server is not None
    client.close()


def test_websocket_upgrade_forwarded_to_the_owner(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    client = PollingClient("127.0.0.1", a.port)
    client.connect()
    url = f"ws://127.0.0.1:{b.port}/socket.io/?EIO=4&transport=websocket&sid={client.sid}"
    with connect(url) as ws:
        ws.send("2probe")
        assert ws.recv(timeout=5) == "3probe"
        ws.send("5")
        ws.send('421["echo","over the proxy"]')
        got = [ws.recv(timeout=5), ws.recv(timeout=5)]
        assert '42["reply","over the proxy"]' in got
        assert '431[{"data":"over the proxy","name":"a"}]' in got


def test_unknown_nodes_and_forwarded_requests_get_400(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    client = PollingClient("127.0.0.1", a.port)
    client.connect()
    base = "/socket.io/?EIO=4&transport=polling&sid="
    for sid in (
        "zzzzzzzz." + client.sid.partition(".")[2],  # a node nobody announced
        "../../etc.x",  # not a node id at all
        "127.0.0.1:80.abc",  # an address is never taken from a sid
    ):
        status, body = request("127.0.0.1", b.port, "GET", base + sid)
        assert status == 400 and json.loads(body)["message"] == "Session ID unknown"
    # A request that was forwarded once is never forwarded again (no loops).
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=5)
    conn.request("GET", base + client.sid, headers={FORWARDED_HEADER: "1"})
    response = conn.getresponse()
    assert response.status == 400
    conn.close()
    # The owner died without cleaning up (its socket file is left): the sid
    # is unknown, and the stale file is removed.
    a.server.stop()
    for sock in a.forwarder._sockets:
        sock.close()  # what the death of its process does
    stale = Path(a.forwarder.runtime_dir or "") / f"{a.forwarder.node_id}.sock"
    assert stale.exists()
    status, _ = request("127.0.0.1", b.port, "GET", base + client.sid)
    assert status == 400
    assert not stale.exists()


def test_runtime_dir_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = private_runtime_dir("relay-test")
    assert made is not None and os.stat(made).st_mode & 0o777 == 0o700
    os.chmod(made, 0o755)
    assert private_runtime_dir("relay-test") is None
    (tmp_path / "target").mkdir(mode=0o700)
    os.symlink(tmp_path / "target", tmp_path / "link")
    assert private_runtime_dir("link") is None


def test_node_ids_and_peer_address_need_a_queue() -> None:
    assert node_of("abcd1234.xyz") == "abcd1234"
    assert node_of("plainsid") is None
    with pytest.raises(ValueError):
        Forwarder("NOT-VALID")
    with pytest.raises(ValueError, match="message queue"):
        Forwarder(peer_address="127.0.0.1")


def test_peer_addresses() -> None:
    assert parse_peer_address("10.0.0.2") == ("10.0.0.2", 0)
    assert parse_peer_address("10.0.0.2:7000") == ("10.0.0.2", 7000)
    assert parse_peer_address("[fd00::2]:7000") == ("fd00::2", 7000)
    assert parse_peer_address("fd00::2") == ("fd00::2", 0)
    assert parse_peer_address("node2.internal") == ("node2.internal", 0)
    for wrong in ("0.0.0.0", "0.0.0.0:7000", "[::]:1", "10.0.0.2:http", ""):
        with pytest.raises(ValueError):
            parse_peer_address(wrong)


def test_expect_continue_and_a_body_too_large(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    client = PollingClient("127.0.0.1", a.port)
    client.connect()
    target = f"/socket.io/?EIO=4&transport=polling&sid={client.sid}"
    # Expect: 100-continue is answered by the receiving server, not relayed twice.
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
    conn.putrequest("POST", target)
    body = b'42["echo","continued"]'
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("Content-Type", "text/plain")
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    conn.send(body)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
    conn.close()
    assert client.event("reply") == ["continued"]
    # A body over the limit is refused by the receiving server (413).
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as raw:
        raw.sendall(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1100000\r\n\r\n".encode()
        )
        assert raw.recv(100).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    ("peer", "queue", "message"),
    [
        ("127.0.0.1", "", "needs a message queue"),
        ("0.0.0.0", "redis://127.0.0.1:6379/0", "not a wildcard"),
    ],
)
def test_run_refuses_a_bad_peer_setup(peer: str, queue: str, message: str) -> None:
    """``socketio.run(peer_address=...)``: exit status 1 and a one-line reason."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "scale_app.py"), "127.0.0.1", str(free_port()), peer],
        env=env_with_src(SCALE_QUEUE=queue),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Flask-Relay: peer_address") and message in last, proc.stderr


class QueueNode:
    """A server of its own "host": forwarding over TCP to peers learned on Redis."""

    def __init__(self, channel: str, name: str) -> None:
        self.app = Flask(name)
        self.sio = SocketIO(self.app, message_queue="redis://127.0.0.1:6379/0", channel=channel)

        @self.sio.on("echo")
        def echo(data: object) -> None:
            self.sio.emit("reply", data, to=flask_request.sid)  # type: ignore[attr-defined]

        self.server = self.sio.make_server(self.app, "127.0.0.1", free_port())
        self.forwarder = enable(self.server, peer_address="127.0.0.1")
        self.server.start()
        self.port = int(self.server.port)

    def stop(self) -> None:
        self.server.stop()
        self.forwarder.close()


def test_a_request_for_a_node_not_heard_of_yet_waits_for_its_announcement() -> None:
    """A node that has not heard of a sid's owner yet (it just said hello; the
    answers are on their way) waits for the owner's announcement instead of
    answering 400: the cause of a first connect that failed in the multi-host
    test (a new worker got a POST of another host's session before it had
    heard of that host)."""
    channel = f"relay-test-learn-{uuid.uuid4().hex[:8]}"
    a, b = QueueNode(channel, "a"), QueueNode(channel, "b")
    try:
        deadline = time.monotonic() + 10
        while (
            a.forwarder.node_id not in b.forwarder.peers
            or b.forwarder.node_id not in a.forwarder.peers
        ):
            assert time.monotonic() < deadline, "a and b never heard of each other"
            time.sleep(0.02)
        time.sleep(0.5)  # the answers to both hellos are in
        client = PollingClient("127.0.0.1", a.port)
        client.connect()
        base = "/socket.io/?EIO=4&transport=polling&sid="
        # b forgets a, as if a's answer to b's hello had not come yet.
        b.forwarder.peers.clear()
        b.forwarder._learning_until = time.monotonic() + forward.LEARN_WINDOW
        timer = threading.Timer(0.3, a.forwarder._announce)
        timer.start()
        started = time.monotonic()
        status, _ = request("127.0.0.1", b.port, "POST", base + client.sid, body=b'42["echo",1]')
        assert status == 200, "b answered instead of waiting for a's announcement"
        assert 0.25 < time.monotonic() - started < forward.LEARN_WINDOW
        assert client.event("reply") == [1]
        # Once the window is over, an unknown node gets 400 at once, as before.
        b.forwarder._learning_until = 0.0
        started = time.monotonic()
        status, _ = request("127.0.0.1", b.port, "GET", base + "zzzzzzzz.abc")
        assert status == 400 and time.monotonic() - started < 1.0
        client.close()
    finally:
        a.stop()
        b.stop()
