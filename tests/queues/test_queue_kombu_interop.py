"""RabbitMQ interop with python-socketio's KombuManager, both ways, on the machine's broker.

* a ``KombuManager(write_only=True)`` emitter reaches Flask-Relay's clients;
* a Flask-Relay emitter (``SocketIO(message_queue=amqp_url)`` without an app)
  reaches the clients of a python-socketio ``Server`` whose client manager is
  a ``KombuManager`` (``async_mode='threading'``);
* a mixed fleet (a Flask-Relay server and that python-socketio server on one
  exchange): rooms, and ``call()`` in both directions.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytest
import socketio
from brokers import channel, free_port, machine_url
from nodepeer import NodePeer, ServerProcess, started
from queue_helpers import HERE, PyClient, serve

from flask_relay import SocketIO


@contextlib.contextmanager
def python_socketio_server(url: str, name: str) -> Iterator[ServerProcess]:
    port = free_port()
    with started([sys.executable, str(HERE / "psio_server.py"), url, name, str(port)], port) as s:
        yield s


@pytest.mark.slow
def test_kombu_write_only_emitter_reaches_our_clients(peer: NodePeer) -> None:
    url = machine_url("amqp")
    name = channel()
    with serve(url, name) as a:
        py = PyClient(a.url)
        try:
            assert peer.connect("n", a.url)["ev"] == "connect"
            assert py.call("join", "r") == "joined"
            assert peer.call("n", "join", "r") == ["joined"]
            external = socketio.KombuManager(url, channel=name, write_only=True)
            external.emit("external", {"x": [1, 2]}, room="r", namespace="/")
            external.emit("external_bin", (b"\x01\x02", "t"), room=py.sid, namespace="/")
            assert py.wait("external") == [[{"x": [1, 2]}]]
            assert py.wait("external_bin") == [[b"\x01\x02", "t"]]
            assert peer.wait_event("n", "external")["args"] == [{"x": [1, 2]}]
            external.publisher_connection.release()
        finally:
            py.close()


@pytest.mark.slow
def test_our_emitter_and_server_with_a_python_socketio_server() -> None:
    url = machine_url("amqp")
    name = channel()
    with python_socketio_server(url, name) as theirs, serve(url, name) as ours:
        their_client, our_client = PyClient(theirs.url), PyClient(ours.url)
        emitter = SocketIO(message_queue=url, channel=name)
        try:
            assert their_client.call("join", "r") == "joined"
            assert our_client.call("join", "r") == "joined"
            # Wait until python-socketio's listener has its queue bound.
            emitter.emit("probe", 0, to="r")
            their_client.wait("probe", timeout=20)
            # A Flask-Relay write-only emitter reaches their clients (and ours).
            emitter.emit("from_relay", {"n": 1}, to="r")
            emitter.emit("from_relay_bin", (b"\x00\x01", "two"), to=their_client.sid)
            assert their_client.wait("from_relay") == [[{"n": 1}]]
            assert their_client.wait("from_relay_bin") == [[b"\x00\x01", "two"]]
            assert our_client.wait("from_relay") == [[{"n": 1}]]
            # Mixed fleet: their server's emit reaches our client, ours theirs.
            assert their_client.call("send", "r", "from_them", 2) == "sent"
            assert our_client.wait("from_them") == [[2]]
            assert our_client.call("send", "r", "from_us", 3) == "sent"
            assert their_client.wait("from_us") == [[3]]
            # call() across the fleets, both ways (acks travel as callback messages).
            assert our_client.call("call", their_client.sid, "double", 21) == 42
            assert their_client.call("call", our_client.sid, "double", 4) == 8
        finally:
            their_client.close()
            our_client.close()
            assert emitter.server.queue is not None
            emitter.server.queue.close()
