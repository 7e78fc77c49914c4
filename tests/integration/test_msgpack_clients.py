"""``SocketIO(app, serializer='msgpack')`` with the official clients using msgpack.

The server is tests/integration/sio_app.py with ``--serializer msgpack``; the
Node clients (tests/js/sio_peer.js) load ``socket.io-msgpack-parser`` as their
``parser``, and python-socketio's client runs with ``serializer='msgpack'``.
Every packet is then one binary Engine.IO message, over polling and WebSocket.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import socketio
from nodepeer import ROOT, NodePeer, ServerProcess, free_port, started

APP = "tests/integration/sio_app.py"
PARSER = "socket.io-msgpack-parser"


@pytest.fixture(scope="module", autouse=True)
def parser_installed(node: str) -> None:
    resolve = [node, "-e", f"require.resolve({PARSER!r})"]
    found = subprocess.run(resolve, cwd=ROOT, capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"the npm package {PARSER} is required: run `make deps`")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    port = free_port()
    with started([sys.executable, APP, "--port", str(port), "--serializer", "msgpack"], port) as s:
        yield s


@pytest.fixture
def peer() -> Iterator[NodePeer]:
    p = NodePeer()
    try:
        yield p
    finally:
        p.close()


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_node_client_with_the_msgpack_parser(
    server: ServerProcess, peer: NodePeer, transport: str
) -> None:
    connected = peer.connect("a", server.url, transports=[transport], parser=PARSER)
    assert connected["ev"] == "connect", connected
    assert peer.call("a", "echo", "h\u00e9", 42, 1.5, {"l": [1, None, True]}) == [
        "h\u00e9",
        42,
        1.5,
        {"l": [1, None, True]},
    ]
    blob = bytes(range(256)) * 3
    assert peer.call("a", "reverse_bytes", blob, {"tag": b"\x00\x01", "n": 1}) == [
        blob[::-1],
        len(blob),
    ]
    peer.wait_event("a", "bytes_back")
    (payload,) = peer.events("a", "bytes_back")[0]
    assert payload == {"blob": blob[::-1], "nested": [{"tag": b"\x00\x01", "n": 1}, bytes([0])]}
    # A refused namespace: CONNECT_ERROR with its data, in msgpack too.
    refused = peer.connect(
        "b", server.url, namespace="/admin", transports=[transport], parser=PARSER
    )
    assert refused["ev"] == "connect_error"
    assert refused["message"] == "unauthorized"
    assert peer.info("a")["transport"] == transport


def test_room_broadcast_reaches_node_and_python_clients(
    server: ServerProcess, peer: NodePeer
) -> None:
    received: list[Any] = []
    got = threading.Event()
    client = socketio.Client(reconnection=False, handle_sigint=False, serializer="msgpack")

    @client.on("room_msg")
    def on_room_msg(data: Any) -> None:
        received.append(data)
        got.set()

    client.connect(server.url, transports=["websocket"], wait_timeout=10)
    try:
        assert client.call("join", "r1", timeout=10) == sorted(["r1", client.get_sid("/")])
        assert client.call("echo", b"\x00py", timeout=10) == b"\x00py"  # one ack arg
        peer.connect("a", server.url, transports=["websocket"], parser=PARSER)
        peer.call("a", "join", "r1")
        peer.connect("outsider", server.url, transports=["polling"], parser=PARSER)
        assert peer.call("a", "to_room", "r1", {"bin": b"\xff\x00", "n": 7}) == ["sent"]
        assert got.wait(10), "the python-socketio client got no room_msg"
        assert received == [{"bin": b"\xff\x00", "n": 7}]
        peer.wait_event("a", "room_msg")
        assert peer.events("a", "room_msg") == [[{"bin": b"\xff\x00", "n": 7}]]
        peer.sync()
        assert peer.events("outsider", "room_msg") == []
    finally:
        client.disconnect()


def test_a_json_client_is_refused(server: ServerProcess, peer: NodePeer) -> None:
    """The default parser's text packets are not msgpack: the server closes the connection."""
    peer.send("connect", id="j", url=server.url, namespace="/", opts={"transports": ["websocket"]})
    assert peer.wait(ev="disconnect", id="j", timeout=15)["reason"] == "transport close"
    assert peer.find(ev="connect", id="j") == []
    assert any("msgpack parser: got a text message" in line for line in server.output)
