"""Message queues: rooms and broadcasts across processes, through a pub/sub broker.

Each process keeps its own clients and rooms; an operation that may concern
clients of other processes is applied locally, then published for the others
(:class:`MessageQueue`, in :mod:`.base`, says how, and what happens while the
broker is away).

Backends (:func:`from_url` picks one from the URL): Redis/Valkey
(:mod:`.redis`; ``redis+streams://`` for one Redis Stream instead, which
keeps what absent processes miss and carries connection state recovery
across processes: :mod:`.streams`), RabbitMQ/AMQP through kombu (:mod:`.amqp`), NATS
(:mod:`.nats`) and ZeroMQ (:mod:`.zmq`). Kafka is recognised and refused with
an explanation. A backend implements :meth:`MessageQueue._publish` and
:meth:`MessageQueue._listen`.
"""

from __future__ import annotations

from typing import Any

from ..protocol.jsonlib import JSONModule
from .base import MessageQueue

__all__ = ["SCHEMES", "MessageQueue", "QueueNotAvailable", "check_url", "from_url"]

#: URL scheme -> backend module (under ``flask_relay.pubsub``).
SCHEMES: dict[str, str] = {
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "valkey": "redis",
    "valkeys": "redis",
    "redis+sentinel": "redis",
    "valkey+sentinel": "redis",
    # One Redis Stream instead of pub/sub: connection state recovery across
    # processes (pubsub/streams.py).
    "redis+streams": "redis",
    "rediss+streams": "redis",
    "valkey+streams": "redis",
    "valkeys+streams": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
    "nats": "nats",
    "tls": "nats",
    "zmq+tcp": "zmq",
    "kafka": "kafka",
}


class QueueNotAvailable(NotImplementedError):
    """A message queue URL that this release cannot serve (with the reason)."""


def check_url(url: str) -> str:
    """The backend module for ``url``; :class:`QueueNotAvailable` when there is none."""
    scheme = url.split(":", 1)[0].lower()
    backend = SCHEMES.get(scheme)
    if backend == "kafka":
        raise QueueNotAvailable(
            "kafka:// message queues are not available in this release: no Kafka broker "
            "could be installed where Flask-Relay is tested, so the backend is not written "
            "yet. A Kafka backend is a flask_relay.pubsub.MessageQueue subclass with "
            "_publish() and _listen() (topic = channel); pass one as client_manager=..."
        )
    if backend is None:
        raise QueueNotAvailable(
            f"message queue scheme {scheme!r} is not supported: use redis://, rediss://, "
            "unix://, valkey://, redis+sentinel://, redis+streams://, amqp:// (pyamqp://), "
            "nats:// or zmq+tcp:// URLs"
        )
    return backend


def from_url(
    url: str,
    channel: str = "flask-socketio",
    write_only: bool = False,
    json: JSONModule | None = None,
    options: dict[str, Any] | None = None,
) -> MessageQueue:
    """The message queue for ``url``; :class:`QueueNotAvailable` for unknown schemes.

    ``options`` go to the backend's client (``redis.Redis.from_url``,
    ``kombu.Connection``, ``nats.connect``).
    """
    backend = check_url(url)
    # The backend modules are imported here, for the URL in use, and not at module
    # level: not to dodge a cycle (they import .base, not this package), but because
    # ``python -m flask_relay.pubsub.zmq`` (the ZeroMQ broker) runs a module of this
    # package, and runpy warns (RuntimeWarning, "found in sys.modules after import of
    # package") when the package has already imported it (tests/queues/
    # test_queue_backends.py checks it does not); and a process that never uses a
    # queue loads none of them.
    if backend == "redis" and url.split(":", 1)[0].lower().endswith("+streams"):
        from .streams import RedisStreamsQueue

        return RedisStreamsQueue(
            url, channel=channel, write_only=write_only, json=json, options=options
        )
    if backend == "redis":
        from .redis import RedisQueue

        return RedisQueue(url, channel=channel, write_only=write_only, json=json, options=options)
    if backend == "amqp":
        from .amqp import AmqpQueue

        return AmqpQueue(
            url, channel=channel, write_only=write_only, json=json, connection_options=options
        )
    if backend == "nats":
        from .nats import NatsQueue

        return NatsQueue(url, channel=channel, write_only=write_only, json=json, options=options)
    from .zmq import ZmqQueue

    return ZmqQueue(url, channel=channel, write_only=write_only, json=json)
