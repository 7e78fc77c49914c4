"""The Redis (and Valkey) message queue: ``PUBLISH``/``SUBSCRIBE`` on one channel."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ..protocol.jsonlib import JSONModule
from . import MessageQueue

__all__ = ["RedisQueue"]

logger = logging.getLogger("flask_relay.pubsub")


class RedisQueue(MessageQueue):
    """Redis pub/sub. Needs the ``redis`` package (``pip install flask-relay[redis]``).

    ``valkey://`` and ``valkeys://`` URLs are taken as ``redis://`` and
    ``rediss://`` (the protocol is the same). ``options`` go to
    ``redis.Redis.from_url``. The listener reconnects with a backoff from 1 to
    30 seconds and logs an error at every failed attempt, so a dead broker is
    never silent.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        channel: str = "flask-socketio",
        write_only: bool = False,
        json: JSONModule | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise RuntimeError(
                "a redis:// message queue needs the redis package: pip install redis"
            ) from None
        super().__init__(channel=channel, write_only=write_only, json=json)
        if url.startswith("valkey"):
            url = "redis" + url[len("valkey") :]
        self.url = url
        self._redis_module = redis
        self._options = dict(options or {})
        self._client = redis.Redis.from_url(url, **self._options)

    def _publish(self, data: str) -> None:
        # Two attempts, like python-socketio: a dropped pooled connection is
        # common after a broker restart.
        try:
            self._client.publish(self.channel, data)
        except self._redis_module.exceptions.ConnectionError:
            logger.warning("redis publish failed; retrying once")
            self._client.publish(self.channel, data)

    def _listen(self) -> Iterator[Any]:
        delay = 1.0
        while not self._closed.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.channel)
                delay = 1.0
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind == "message":
                        yield message["data"]
                    elif kind == "subscribe":
                        logger.info("listening on redis channel %r", self.channel)
                        self.ready.set()
            except self._redis_module.exceptions.RedisError as exc:
                self.ready.clear()
                logger.error(
                    "redis listener lost %s (%s); reconnecting in %.0f s", self.url, exc, delay
                )
                self._closed.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
        return
