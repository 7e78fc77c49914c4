"""The Redis (and Valkey) message queue: ``PUBLISH``/``SUBSCRIBE`` on one channel.

The URL forms are python-socketio's ``RedisManager``'s: ``redis://``,
``rediss://`` (TLS), ``unix:///path/to/socket`` (a Unix socket),
``valkey://`` and ``valkeys://`` (the same protocol), and
``redis+sentinel://[user:password@]host1:port1,host2:port2/db/service`` (ask
the sentinels which server is the master of ``service``, the channel's name
when omitted; ``valkey+sentinel://`` alike).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..protocol.jsonlib import JSONModule
from .base import MessageQueue

__all__ = ["RedisQueue", "parse_sentinel_url"]

logger = logging.getLogger("flask_relay.pubsub")


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str | None, dict[str, Any]]:
    """``redis+sentinel://[user:pw@]h1:p1,h2:p2[/db[/service]]`` -> (sentinels, service, kwargs)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis+sentinel", "valkey+sentinel"):
        raise ValueError(f"not a sentinel URL: {url!r}")
    netloc = parts.netloc
    kwargs: dict[str, Any] = {}
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        user, _, password = credentials.partition(":")
        if user:
            kwargs["username"] = unquote(user)
        if password:
            kwargs["password"] = unquote(password)
    sentinels: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} in {url!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    service = None
    path = [p for p in parts.path.split("/") if p]
    if path:
        if not path[0].isdigit():
            raise ValueError(f"the database in {url!r} must be a number")
        kwargs["db"] = int(path[0])
    if len(path) > 1:
        service = path[1]
    return sentinels, service, kwargs


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisQueue(MessageQueue):
    """Redis pub/sub. Needs the ``redis`` package (``pip install flask-relay[redis]``).

    ``options`` go to ``redis.Redis.from_url`` (or to ``Sentinel`` and its
    masters). Unless given, the client's own retries are cut to one and its
    socket timeouts set to 10 s, so an unreachable broker is noticed quickly
    and handled by the queue's outbox (see :mod:`flask_relay.pubsub`).
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
            import redis.sentinel
        except ImportError:
            raise RuntimeError(
                "a redis:// message queue needs the redis package: "
                "pip install 'flask-relay[redis]'"
            ) from None
        super().__init__(channel=channel, write_only=write_only, json=json)
        scheme = url.split(":", 1)[0].lower()
        if scheme.startswith("valkey"):
            url = "redis" + url[len("valkey") :]
        self.url = url
        self._redis_module: Any = redis
        self._options = dict(options or {})
        self._options.setdefault("socket_connect_timeout", 10)
        if "retry" not in self._options:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._options["retry"] = Retry(NoBackoff(), 1)
        self._client = self._make_client()

    def _make_client(self) -> Any:
        redis = self._redis_module
        channel, url = self.channel, self.url
        if url.split(":", 1)[0].lower().endswith("+sentinel"):
            sentinels, service, kwargs = parse_sentinel_url(url)
            options_for_master = dict(self._options)
            options_for_master.update(kwargs)
            sentinel = redis.sentinel.Sentinel(
                sentinels,
                sentinel_kwargs={"socket_connect_timeout": 10},
                **options_for_master,
            )
            return sentinel.master_for(service or channel)
        return redis.Redis.from_url(url, **self._options)

    def _reset_backend_after_fork(self) -> None:
        self._client = self._make_client()

    def describe(self) -> str:
        return f"{_redact(self.url)} channel {self.channel!r}"

    def _publish(self, data: str) -> int:
        # PUBLISH answers how many subscribers got the message.
        return int(self._client.publish(self.channel, data))

    def _publish_many(self, items: list[str]) -> int:
        if len(items) == 1:
            return self._publish(items[0])
        # One round trip; a failure resends the whole batch (rarely twice).
        pipe = self._client.pipeline(transaction=False)
        for item in items:
            pipe.publish(self.channel, item)
        return int(pipe.execute()[-1])

    def _close_backend(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass

    def _listen(self) -> Iterator[Any]:
        delays = self._reconnect_delays()
        while not self._closed.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.channel)
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    # Then what is already there (timeout 0: no wait), as one batch.
                    batch: list[Any] = []
                    while message is not None:
                        kind = message.get("type")
                        if kind == "message":
                            batch.append(message["data"])
                        elif kind == "subscribe":
                            if batch:
                                yield batch
                                batch = []
                            delays = self._reconnect_delays()
                            self._subscribed()
                        if len(batch) >= self.listen_batch:
                            break
                        message = pubsub.get_message(timeout=0)
                    if batch:
                        yield batch
            except (self._redis_module.exceptions.RedisError, OSError) as exc:
                if self._closed.is_set():
                    return
                self._connection_lost(exc)
                self._closed.wait(next(delays))
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
