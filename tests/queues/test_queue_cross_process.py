"""Everything crosses processes, on every backend: two servers, official clients on each.

Server A and server B are ``queue_app.py`` processes (``socketio.run``) on the
same channel of the machine's Redis, RabbitMQ or NATS (or a ZeroMQ broker
started here). A python-socketio client lives on A, an npm socket.io-client
(under Node) on B; each asks its own server to act on the other client.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from brokers import channel, free_port, machine_url, running, zmq_broker
from nodepeer import NodePeer
from queue_helpers import PyClient, serve

BACKENDS = ["redis", "amqp", "nats", "zmq"]


@pytest.fixture(scope="module")
def zmq_url() -> Iterator[str]:
    push, pub = free_port(), free_port()
    with running(zmq_broker(push, pub)):
        yield f"zmq+tcp://127.0.0.1:{push}+{pub}"


def _url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "zmq":
        return str(request.getfixturevalue("zmq_url"))
    return machine_url(backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_everything_crosses_processes(
    backend: str, request: pytest.FixtureRequest, peer: NodePeer
) -> None:
    url = _url(backend, request)
    name = channel()
    with serve(url, name) as a, serve(url, name) as b:
        py = PyClient(a.url)
        try:
            _scenario(py, peer, b.url)
        finally:
            py.close()


def _scenario(py: PyClient, node: NodePeer, b_url: str) -> None:
    report = node.connect("n", b_url, transports=["websocket"])
    assert report["ev"] == "connect", report
    n_sid = report["sid"]
    p_sid = py.call("whoami")
    assert p_sid == py.sid

    # rooms and broadcasts
    assert py.call("join", "r") == "joined"
    assert node.call("n", "join", "r") == ["joined"]
    assert node.call("n", "send", "r", "news", 1) == ["sent"]
    assert py.wait("news") == [[1]]
    node.wait_event("n", "news")
    # skip_sid (include_self=False) on another process
    assert py.call("send", None, "all", 2) == "sent"
    node.wait_event("n", "all")
    assert node.events("n", "all") == [[2]]
    # to one sid of another process
    assert py.call("send", n_sid, "direct", "x") == "sent"
    assert node.wait_event("n", "direct")["args"] == ["x"]

    # call() and acknowledgement callbacks to a client of another process
    assert node.call("n", "call", p_sid, "double", 21) == [42]
    assert py.call("call", n_sid, "echo", {"k": [1, "two"]}) == {"k": [1, "two"]}
    assert py.call("emit_with_ack", n_sid, "echo2", 5) == "asked"
    assert py.wait("acked") == [[5]]

    # join / leave / close_room of a sid owned by the other process
    assert py.call("join", "x", n_sid) == "joined"
    assert py.call("send", "x", "in_x", 1) == "sent"
    node.wait_event("n", "in_x")
    assert "x" in node.call("n", "rooms")[0]
    assert py.call("leave", "x", n_sid) == "left"
    assert py.call("send", "x", "in_x", 2) == "sent"
    assert py.call("join", "y", n_sid) == "joined"
    assert py.call("close", "y") == "closed"
    assert py.call("send", "y", "in_y", 3) == "sent"
    assert py.call("send", n_sid, "marker", 4) == "sent"
    node.wait_event("n", "marker")
    assert node.events("n", "in_x") == [[1]]
    assert node.events("n", "in_y") == []
    assert sorted(node.call("n", "rooms")[0]) == sorted([n_sid, "r"])

    # the manager views show this process's clients only
    assert py.call("participants", "r") == 1
    assert node.call("n", "participants", "r") == [1]

    # disconnect of a sid owned by the other process
    assert py.call("kick", n_sid) == "kicked"
    gone = node.wait(ev="disconnect", id="n")
    assert gone["reason"] == "io server disconnect"
    assert py.got("news") == [[1]] and py.got("all") == []
