"""Backend choice and configuration: URL schemes, Kafka's refusal, NATS subjects, ZeroMQ URLs,
the ZeroMQ broker helper, and python-socketio's ZmqManager as an emitter."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from brokers import channel, free_port, machine_url, running, wait_for, zmq_broker
from queue_helpers import PyClient, serve

from flask_relay.pubsub import QueueNotAvailable, check_url
from flask_relay.pubsub.nats import subject_for
from flask_relay.pubsub.zmq import parse_zmq_url


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("redis://h:6379/0", "redis"),
        ("rediss://h:6380/0", "redis"),
        ("unix:///tmp/redis.sock", "redis"),
        ("valkey://h", "redis"),
        ("valkeys://h", "redis"),
        ("redis+sentinel://h:26379/0/mymaster", "redis"),
        ("amqp://guest:guest@h:5672//", "amqp"),
        ("pyamqp://h//", "amqp"),
        ("nats://h:4222", "nats"),
        ("zmq+tcp://h:5555+5556", "zmq"),
    ],
)
def test_schemes(url: str, backend: str) -> None:
    assert check_url(url) == backend


def test_kafka_is_refused_with_the_reason() -> None:
    with pytest.raises(QueueNotAvailable, match="no Kafka broker could be installed") as info:
        check_url("kafka://127.0.0.1:9092")
    assert "client_manager" in str(info.value)  # the way to plug one in
    with pytest.raises(QueueNotAvailable, match="'sqs' is not supported"):
        check_url("sqs://queue")


def test_nats_subject_from_the_channel() -> None:
    assert subject_for("flask-socketio") == "flask-socketio"
    assert subject_for("app.events_1") == "app.events_1"
    for bad in ("", "a b", "a..b", "a.*", "a.>", ".a"):
        with pytest.raises(ValueError, match="NATS subject"):
            subject_for(bad)


def test_zmq_urls() -> None:
    assert parse_zmq_url("zmq+tcp://10.0.0.1:5555+5556") == (
        "tcp://10.0.0.1:5555",
        "tcp://10.0.0.1:5556",
    )
    for bad in ("zmq+tcp://h:5555", "zmq://h:1+2", "zmq+tcp://h:a+b"):
        with pytest.raises(ValueError, match="PUSH_PORT"):
            parse_zmq_url(bad)


def test_zmq_broker_command_refuses_a_bad_address() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flask_relay.pubsub.zmq", "tcp://127.0.0.1:5555"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "PUSH_PORT+PUB_PORT" in done.stderr
    # The package does not import its backends at module level (pubsub.from_url
    # loads the one in use), so runpy does not warn that it found the module
    # already imported.
    assert "RuntimeWarning" not in done.stderr


@pytest.mark.slow
def test_python_socketio_zmq_manager_emitter_reaches_our_clients() -> None:
    """ZmqManager (write-only: its listener needs eventlet) through our broker helper."""
    push, pub = free_port(), free_port()
    url = f"zmq+tcp://127.0.0.1:{push}+{pub}"
    name = channel()
    with running(zmq_broker(push, pub)), serve(url, name) as ours:
        client = PyClient(ours.url)
        try:
            assert client.call("join", "r") == "joined"
            script = textwrap.dedent(
                f"""
                import time, socketio
                m = socketio.ZmqManager({url!r}, channel={name!r}, write_only=True)
                time.sleep(0.5)  # the PUSH socket connects
                m.emit("from_zmq_manager", {{"n": 1}}, room="r", namespace="/")
                m.emit("from_zmq_manager", (b"\\x00", "b"), room={client.sid!r}, namespace="/")
                time.sleep(0.5)
                """
            )
            subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
            # (python-socketio's client may hand two quick events over in any order)
            got = client.wait("from_zmq_manager", 2)
            assert sorted(got, key=repr) == sorted([[{"n": 1}], [b"\x00", "b"]], key=repr)
        finally:
            client.close()


def test_amqp_queue_is_deleted_on_close() -> None:
    import kombu
    from flask import Flask

    from flask_relay import SocketIO
    from flask_relay.pubsub.amqp import AmqpQueue

    url = machine_url("amqp")
    sio = SocketIO(Flask(__name__), message_queue=url, channel=channel())
    queue = sio.server.queue
    assert isinstance(queue, AmqpQueue) and queue.ready.wait(10)

    def exists() -> bool:
        with kombu.Connection(url) as connection:
            try:
                connection.default_channel.queue_declare(queue.queue_name, passive=True)
                return True
            except Exception:
                return False

    assert exists()
    queue.close()
    assert not exists()


@pytest.mark.parametrize("backend", ["redis", "amqp", "nats", "zmq"])
def test_emitter_script_on_every_backend(backend: str) -> None:
    """``SocketIO(message_queue=url)`` in a script that emits and exits: no outage, no loss."""
    from flask import Flask

    from flask_relay import SocketIO

    with contextlib.ExitStack() as stack:
        if backend == "zmq":
            push, pub = free_port(), free_port()
            stack.enter_context(running(zmq_broker(push, pub)))
            url = f"zmq+tcp://127.0.0.1:{push}+{pub}"
        else:
            url = machine_url(backend)
        name = channel()
        app = Flask(__name__)
        sio = SocketIO(app, message_queue=url, channel=name)
        queue = sio.server.queue
        assert queue is not None and queue.ready.wait(10)
        stack.callback(queue.close)
        client = sio.test_client(app)
        script = (
            "import logging\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "from flask_relay import SocketIO\n"
            f"emitter = SocketIO(message_queue={url!r}, channel={name!r})\n"
            "for i in range(20):\n"
            "    emitter.emit('job', i)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "unreachable" not in done.stderr, done.stderr

        def jobs() -> list[Any]:
            with client._lock:
                return [e["args"][0] for e in client.queue if e["name"] == "job"]

        wait_for(lambda: jobs() == list(range(20)), what=f"the script's emits on {backend}")
