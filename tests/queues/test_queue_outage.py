"""Broker outages: every emit made while the broker is away arrives after it is back.

Two ``queue_app.py`` processes, A and B, on a broker of the test's own: a
``redis-server``, ``nats-server``, ZeroMQ broker or RabbitMQ node started on
free ports and restarted (never the machine's shared brokers; the RabbitMQ
node is stopped fully and booted again, about 8 s here, and comes back
without the non-durable exchange and queues, which the backend declares
again), or the machine's broker behind a TCP proxy that the test cuts and
restores (a network cut; done for Redis, RabbitMQ and NATS). A client on A
asks it to emit to a room every 50 ms, with an acknowledgement, before,
during and after the outage:

* every handler acknowledges (an emit never raises because the broker is down);
* a client of A in the room gets each event at once (local clients are served);
* the client of B in the room (npm's socket.io-client) gets every event, in
  order, after the outage;
* A logs the outage once (ERROR) and the recovery (INFO).
"""

from __future__ import annotations

import time

import pytest
from brokers import channel, outage, wait_for
from nodepeer import NodePeer
from queue_helpers import PyClient, serve

OUTAGES = [
    ("redis", "restart"),
    ("redis", "cut"),
    ("amqp", "restart"),
    ("amqp", "cut"),
    ("nats", "restart"),
    ("nats", "cut"),
    ("zmq", "restart"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "how"), OUTAGES)
def test_every_emit_made_during_an_outage_arrives_after(
    backend: str, how: str, peer: NodePeer
) -> None:
    with outage(backend, how) as broker:
        name = channel()
        with serve(broker.url, name) as a, serve(broker.url, name) as b:
            sender, local = PyClient(a.url), PyClient(a.url)
            try:
                # The remote client is npm's socket.io-client: it hands events
                # over in arrival order (python-socketio's client runs each
                # event handler in a thread of its own, so order is not kept).
                assert peer.connect("remote", b.url, transports=["websocket"])["ev"] == "connect"
                assert peer.call("remote", "join", "r") == ["joined"]
                assert local.call("join", "r") == "joined"
                # Both listeners are subscribed and the processes know each other.
                assert sender.call("send", "r", "warm", 0) == "sent"
                peer.wait_event("remote", "warm")
                wait_for(
                    lambda: sender.call("peers") == 1 and peer.call("remote", "peers") == [1],
                    what="the processes to know each other",
                )

                total, cut_at, back_at = 60, 15, 40
                for i in range(total):
                    if i == cut_at:
                        broker.down()
                    if i == back_at:
                        # Local delivery went on during the outage.
                        assert len(local.got("n")) == back_at
                        broker.up()
                    assert sender.call("send", "r", "n", i, timeout=5) == "sent"
                    time.sleep(0.05)
                assert sorted(local.wait("n", total)) == [[i] for i in range(total)]
                peer.wait_event("remote", "n", total, timeout=30)
                got = peer.events("remote", "n")
                assert got == [[i] for i in range(total)], f"{broker.how}: {got}"
            finally:
                for client in (sender, local):
                    client.close()
        for server in (a, b):
            log = "".join(server.output)
            assert log.count(" unreachable (") == 1, log
            wait_for(lambda s=server: "is back after" in "".join(s.output), 10, "recovery line")
