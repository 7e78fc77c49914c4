"""The outbox of a message queue, in one process, against a real redis-server of the test's own.

Two SocketIO instances stand for two processes (each has its own host id and
clients); they meet only through the broker, which the tests stop and start.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from brokers import Broker, channel, free_port, redis_broker, wait_for
from flask import Flask

from flask_relay import SocketIO, emit, join_room


@pytest.fixture
def redis_restartable() -> Iterator[tuple[Broker, str]]:
    port = free_port()
    broker = redis_broker(port)
    broker.start()
    try:
        yield broker, f"redis://127.0.0.1:{port}/0"
    finally:
        broker.stop()


def _node(url: str, name: str, made: list[SocketIO]) -> tuple[Flask, SocketIO]:
    app = Flask(f"node{len(made)}")
    sio = SocketIO(app, message_queue=url, channel=name)
    assert sio.server.queue is not None and sio.server.queue.ready.wait(10)
    sio.on("join")(lambda room: join_room(room))
    made.append(sio)
    return app, sio


def _received(client: Any, event: str) -> list[Any]:
    with client._lock:
        return [e["args"][0] for e in client.queue if e["name"] == event]


@pytest.fixture
def made() -> Iterator[list[SocketIO]]:
    nodes: list[SocketIO] = []
    yield nodes
    for sio in nodes:
        if sio.server.queue is not None:
            sio.server.queue.close()


def test_outbox_is_held_until_a_late_peer_resubscribes(
    redis_restartable: tuple[Broker, str], made: list[SocketIO]
) -> None:
    """A's listener is back long before B's: A must not publish into the void meanwhile."""
    broker, url = redis_restartable
    name = channel()
    app_a, sio_a = _node(url, name, made)
    app_b, sio_b = _node(url, name, made)
    queue_a, queue_b = sio_a.server.queue, sio_b.server.queue
    assert queue_a is not None and queue_b is not None
    # B reconnects 2 s after a loss; A after 0.25 s.
    queue_b.reconnect_delay_initial = queue_b.reconnect_delay_max = 2.0
    wait_for(lambda: queue_a.peers == [queue_b.host_id], what="A to know B")
    b = sio_b.test_client(app_b)
    broker.stop()
    wait_for(lambda: not queue_a.connected and not queue_b.connected, what="the outage")
    for i in range(5):
        sio_a.emit("during", i)  # never raises
    assert queue_a.buffered == 5
    broker.start()
    wait_for(lambda: queue_a.ready.is_set(), what="A to resubscribe")
    time.sleep(0.5)
    assert queue_a.buffered == 5, "A published before B was back"
    wait_for(lambda: _received(b, "during") == [0, 1, 2, 3, 4], what="B to get everything")


def test_outbox_bound_drops_the_oldest_and_says_so(
    redis_restartable: tuple[Broker, str], made: list[SocketIO], caplog: pytest.LogCaptureFixture
) -> None:
    broker, url = redis_restartable
    name = channel()
    app_a, sio_a = _node(url, name, made)
    app_b, sio_b = _node(url, name, made)
    queue_a = sio_a.server.queue
    assert queue_a is not None
    queue_a.max_buffered = 5
    wait_for(lambda: len(queue_a.peers) == 1, what="A to know B")
    b = sio_b.test_client(app_b)
    with caplog.at_level(logging.INFO, logger="flask_relay.pubsub"):
        broker.stop()
        wait_for(lambda: not queue_a.connected, what="the outage")
        for i in range(8):
            sio_a.emit("during", i)
        assert queue_a.buffered == 5
        broker.start()
        wait_for(lambda: _received(b, "during") == [3, 4, 5, 6, 7], what="the newest five")
        wait_for(
            lambda: any("3 dropped" in r.getMessage() for r in caplog.records),
            what="the recovery line with the count",
        )
    full = [r for r in caplog.records if "outbox full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelname == "WARNING"


def test_handler_emits_and_acks_while_the_broker_is_down(
    redis_restartable: tuple[Broker, str], made: list[SocketIO]
) -> None:
    broker, url = redis_restartable
    app_a, sio_a = _node(url, channel(), made)

    @sio_a.on("shout")
    def shout(text: str) -> str:
        emit("heard", text, broadcast=True)
        return "ok"

    a = sio_a.test_client(app_a)
    broker.stop()
    queue = sio_a.server.queue
    assert queue is not None
    wait_for(lambda: not queue.connected, what="the outage")
    assert a.emit("shout", "hi", callback=True) == "ok"
    assert _received(a, "heard") == ["hi"]


def test_write_only_emitter_flushes_after_the_outage(
    redis_restartable: tuple[Broker, str], made: list[SocketIO]
) -> None:
    broker, url = redis_restartable
    name = channel()
    app_a, sio_a = _node(url, name, made)
    a = sio_a.test_client(app_a)
    emitter = SocketIO(message_queue=url, channel=name)
    made.append(emitter)
    emitter.emit("job", 0)
    wait_for(lambda: _received(a, "job") == [0], what="the first emit")
    broker.stop()
    emitter.emit("job", 1)  # buffered, never raises
    broker.start()
    # It hears nobody: it publishes once Redis counts as many subscribers as
    # before (node A's listener is back), not as soon as Redis is.
    wait_for(lambda: _received(a, "job") == [0, 1], what="the buffered emit")


def test_a_full_outbox_makes_emitters_wait_while_the_broker_is_up(
    redis_restartable: tuple[Broker, str], made: list[SocketIO], caplog: pytest.LogCaptureFixture
) -> None:
    """Back-pressure, not loss: with the broker up, a burst past the bound waits for room."""
    _, url = redis_restartable
    name = channel()
    app_a, sio_a = _node(url, name, made)
    app_b, sio_b = _node(url, name, made)
    queue_a = sio_a.server.queue
    assert queue_a is not None
    queue_a.max_buffered = 3
    queue_a.publish_batch = 2
    b = sio_b.test_client(app_b)
    with caplog.at_level(logging.WARNING, logger="flask_relay.pubsub"):
        for i in range(300):
            sio_a.emit("burst", i)
            assert queue_a.buffered <= 3
        wait_for(lambda: len(_received(b, "burst")) == 300, what="the whole burst")
    assert _received(b, "burst") == list(range(300))
    assert not [r for r in caplog.records if "dropp" in r.getMessage()]


def test_an_emitter_script_that_exits_at_once_loses_nothing(
    redis_restartable: tuple[Broker, str], made: list[SocketIO]
) -> None:
    """The outbox is published at exit (as python-socketio's synchronous emitters do)."""
    _, url = redis_restartable
    name = channel()
    app_a, sio_a = _node(url, name, made)
    a = sio_a.test_client(app_a)
    script = (
        "from flask_relay import SocketIO\n"
        f"emitter = SocketIO(message_queue={url!r}, channel={name!r})\n"
        "for i in range(50):\n"
        "    emitter.emit('job', i)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    wait_for(lambda: _received(a, "job") == list(range(50)), what="every emit of the script")


def test_messages_of_ones_own_through_the_queue(
    redis_restartable: tuple[Broker, str], made: list[SocketIO]
) -> None:
    """publish() / add_handler(): other parts of Flask-Relay use the channel (and outbox)."""
    _, url = redis_restartable
    name = channel()
    _, sio_a = _node(url, name, made)
    _, sio_b = _node(url, name, made)
    queue_a, queue_b = sio_a.server.queue, sio_b.server.queue
    assert queue_a is not None and queue_b is not None
    got: list[dict[str, Any]] = []
    queue_b.add_handler("test-custom", got.append)
    queue_a.add_handler("test-custom", got.append)  # its own messages do not come back
    queue_a.publish({"method": "test-custom", "value": [1, "x"]})
    wait_for(lambda: got, what="the custom message")
    time.sleep(0.2)
    assert got == [{"method": "test-custom", "value": [1, "x"], "host_id": queue_a.host_id}]
    wait_for(lambda: queue_a.peers == [queue_b.host_id], what="A to know B")
    queue_b.close()
    wait_for(lambda: queue_a.peers == [], what="B's goodbye")
