"""The ZeroMQ message queue: python-socketio's ``ZmqManager`` wire, and the broker it needs.

``zmq+tcp://host:PORT1+PORT2``: every process PUSHes its messages to a broker
on PORT1 and SUBscribes to what the broker PUBlishes on PORT2. Each message is
``{"type": "message", "channel": CHANNEL, "data": MESSAGE}`` in JSON, where
MESSAGE is python-socketio's; a listener takes only its channel's. This is
``ZmqManager``'s format, so the two interoperate through the same broker.

ZeroMQ has no broker of its own: :func:`run_broker` (or ``python -m
flask_relay.pubsub.zmq tcp://0.0.0.0:5555+5556``) is the small PULL -> PUB
forwarder that python-socketio's documentation describes, stoppable and
logged.

Outages: the PUSH socket only queues messages on a live connection
(``ZMQ_IMMEDIATE``), so while the broker is away a publication fails and the
message waits in the queue's outbox; the SUB socket's connection events (a
socket monitor) tell when the listener is (again) subscribed. ZeroMQ
reconnects by itself, every 0.1 s doubling to at most 1 s here.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

from ..protocol.jsonlib import JSONModule
from .base import MessageQueue

__all__ = ["ZmqQueue", "parse_zmq_url", "run_broker"]

logger = logging.getLogger("flask_relay.pubsub")

_URL = re.compile(r"^zmq\+tcp://(?P<host>[^:/]+|\[[^\]]+\]):(?P<push>\d+)\+(?P<sub>\d+)/?$")


def parse_zmq_url(url: str) -> tuple[str, str]:
    """``zmq+tcp://host:P1+P2`` -> (``tcp://host:P1`` to push to, ``tcp://host:P2``)."""
    match = _URL.match(url)
    if match is None:
        raise ValueError(
            f"unexpected ZeroMQ URL {url!r}: use zmq+tcp://HOST:PUSH_PORT+PUB_PORT "
            "(the broker's two ports)"
        )
    host = match["host"]
    return f"tcp://{host}:{match['push']}", f"tcp://{host}:{match['sub']}"


def _import_zmq() -> Any:
    try:
        import zmq
    except ImportError:
        raise RuntimeError(
            "a zmq+tcp:// message queue needs the pyzmq package: pip install 'flask-relay[zmq]'"
        ) from None
    return zmq


class ZmqQueue(MessageQueue):
    """ZeroMQ through a PULL -> PUB broker (``pip install 'flask-relay[zmq]'``)."""

    name = "zmq"

    #: Milliseconds a publication waits for a connection to the broker.
    connect_wait_ms = 2000

    def __init__(
        self,
        url: str = "zmq+tcp://127.0.0.1:5555+5556",
        channel: str = "flask-socketio",
        write_only: bool = False,
        json: JSONModule | None = None,
    ) -> None:
        self._zmq = _import_zmq()
        self.push_url, self.sub_url = parse_zmq_url(url)
        super().__init__(channel=channel, write_only=write_only, json=json)
        self.url = url
        self._context = self._zmq.Context()
        self._push: Any = None
        # The envelope around python-socketio's JSON text, as ZmqManager writes it.
        self._prefix = f'{{"type": "message", "channel": {self.json_text(channel)}, "data": '

    def describe(self) -> str:
        return f"{self.url} channel {self.channel!r}"

    def _publish(self, data: str) -> None:
        zmq = self._zmq
        if self._push is None:
            push = self._context.socket(zmq.PUSH)
            push.setsockopt(zmq.IMMEDIATE, 1)
            push.setsockopt(zmq.LINGER, 2000)
            push.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            push.connect(self.push_url)
            self._push = push
        if not self._push.poll(self.connect_wait_ms, zmq.POLLOUT):
            raise ConnectionError(f"no connection to the ZeroMQ broker at {self.push_url}")
        try:
            self._push.send((self._prefix + data + "}").encode("utf-8"), zmq.NOBLOCK)
        except zmq.Again:
            raise ConnectionError(f"the ZeroMQ broker at {self.push_url} takes nothing") from None

    def _listen(self) -> Iterator[Any]:
        zmq = self._zmq
        from zmq.utils.monitor import recv_monitor_message

        sub = self._context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        # Subscribed once the handshake is done (the broker then knows the
        # subscription), not at the TCP connection.
        connected = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", zmq.EVENT_CONNECTED)
        monitor = sub.get_monitor_socket(
            connected | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
        )
        sub.connect(self.sub_url)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self._closed.is_set():
                events = dict(poller.poll(1000))
                if monitor in events:
                    event = recv_monitor_message(monitor)["event"]
                    if event == connected:
                        self._subscribed()
                    elif event == zmq.EVENT_DISCONNECTED:
                        self._connection_lost(None)
                    elif event == zmq.EVENT_CONNECT_RETRIED:
                        self._mark_down(
                            ConnectionRefusedError(f"no ZeroMQ broker at {self.sub_url}"), "listen"
                        )
                if sub in events:
                    # What is there already, as one batch (NOBLOCK: no wait).
                    batch: list[Any] = []
                    raw = sub.recv()
                    while True:
                        message = self._unwrap(raw)
                        if message is not None:
                            batch.append(message)
                        if len(batch) >= self.listen_batch:
                            break
                        try:
                            raw = sub.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                    if batch:
                        yield batch
        finally:
            sub.disable_monitor()
            monitor.close(0)
            sub.close(0)

    def _unwrap(self, raw: bytes) -> Any:
        try:
            envelope = self.json.loads(raw)
        except Exception:
            logger.warning("ignoring a ZeroMQ message that is not JSON on %s", self.describe())
            return None
        if (
            isinstance(envelope, dict)
            and envelope.get("type") == "message"
            and envelope.get("channel") == self.channel
            and "data" in envelope
        ):
            return envelope["data"]
        return None

    def _reset_backend_after_fork(self) -> None:
        # A ZeroMQ context must not be used across a fork.
        self._context = self._zmq.Context()
        self._push = None

    def _publisher_stopped(self) -> None:
        # On the publisher thread: a ZeroMQ socket is closed by the thread using it.
        push, self._push = self._push, None
        if push is not None:
            push.close(0)


def run_broker(
    pull_url: str,
    pub_url: str,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Forward every message PULLed on ``pull_url`` to the PUB socket on ``pub_url``.

    Binds both (``tcp://0.0.0.0:5555``, ``tcp://0.0.0.0:5556``); runs until
    ``stop`` is set (checked twice a second). ``ready`` is set once bound.
    """
    zmq = _import_zmq()
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pub = context.socket(zmq.PUB)
    try:
        pull.bind(pull_url)
        pub.bind(pub_url)
        logger.info("ZeroMQ broker: PULL on %s, PUB on %s", pull_url, pub_url)
        if ready is not None:
            ready.set()
        while stop is None or not stop.is_set():
            if pull.poll(500):
                message = pull.recv()
                # Reading EVENTS makes the PUB socket take in the subscribers
                # that connected since (libzmq does so lazily on send, at most
                # once a millisecond): without it a burst right after a
                # subscriber (re)connects skips that subscriber.
                pub.getsockopt(zmq.EVENTS)
                pub.send(message)
    finally:
        pull.close(0)
        pub.close(0)
        context.term()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flask_relay.pubsub.zmq",
        description="The ZeroMQ broker for zmq+tcp:// message queues (PULL -> PUB).",
    )
    parser.add_argument(
        "bind",
        help="tcp://HOST:PULL_PORT+PUB_PORT to bind, e.g. tcp://0.0.0.0:5555+5556",
    )
    args = parser.parse_args(argv)
    try:
        pull_url, pub_url = parse_zmq_url("zmq+" + args.bind)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_broker(pull_url, pub_url)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        parser.exit(1, f"error: {exc}\n")


if __name__ == "__main__":
    main()
