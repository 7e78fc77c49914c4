"""The NATS message queue, through nats-py (beyond the anchors: python-socketio has none).

The subject is the channel's name (``flask-socketio`` by default), so it must
be a valid NATS subject without wildcards: letters, digits, ``-``, ``_`` and
``.`` between non-empty tokens. The messages are python-socketio's JSON, as on
Redis, so a process can move from one broker to the other unchanged.

nats-py is asyncio: one event loop runs in a thread of its own for the
client; the listener and publisher threads hand their work to it. The client
reconnects by itself (every 0.5 s, forever) and re-sends the subscription; its
own reconnection buffer is turned off (``pending_size=0``) and each batch is
confirmed by the server (``flush``: a PING/PONG), so that what is published
during an outage waits in the queue's outbox, which is held until the peers
have resubscribed (see :mod:`flask_relay.pubsub`). A batch whose confirmation
failed may still sit in nats-py's buffer of unsent publications; it is
emptied (``Client._pending``, ``Client._pending_data_size``: undocumented, the
one reliance on nats-py's internals, checked by tests/queues/test_nats_internals.py)
so that nats-py does not send it again beside the outbox's copy.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..protocol.jsonlib import JSONModule
from .base import MessageQueue

__all__ = ["NatsQueue", "subject_for"]

logger = logging.getLogger("flask_relay.pubsub")

_SUBJECT = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def subject_for(channel: str) -> str:
    """The NATS subject of ``channel`` (itself); :class:`ValueError` if it cannot be one."""
    if not _SUBJECT.match(channel):
        raise ValueError(
            f"channel {channel!r} cannot be a NATS subject: use letters, digits, '-', '_' "
            "and '.' between non-empty tokens (no spaces or wildcards)"
        )
    return channel


class NatsQueue(MessageQueue):
    """NATS core pub/sub (``pip install 'flask-relay[nats]'``); ``nats://`` or ``tls://`` URLs.

    ``options`` go to ``nats.connect`` (``user_credentials``, ``tls``...).
    """

    name = "nats"

    #: Seconds a publication may wait for the client's event loop.
    publish_timeout = 10.0
    #: Seconds to wait for the server to confirm a batch (a PING/PONG).
    confirm_timeout = 5.0

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        channel: str = "flask-socketio",
        write_only: bool = False,
        json: JSONModule | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        try:
            import nats
        except ImportError:
            raise RuntimeError(
                "a nats:// message queue needs the nats-py package: "
                "pip install 'flask-relay[nats]'"
            ) from None
        self.subject = subject_for(channel)
        super().__init__(channel=channel, write_only=write_only, json=json)
        self._nats = nats
        self.url = url
        self.options = dict(options or {})
        self._subscribe = not write_only
        self._start_client()

    def _start_client(self) -> None:
        self._inbox: queue.Queue[bytes] = queue.Queue()
        self._client: Any = None
        self._first_connect = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="flask-relay-nats-loop", daemon=True
        )
        self._loop_thread.start()
        started = asyncio.run_coroutine_threadsafe(self._connect(), self._loop)
        started.add_done_callback(self._connect_done)

    def _reset_backend_after_fork(self) -> None:
        self._start_client()

    def _connect_done(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is not None:
            logger.error(
                "nats message queue %s: cannot connect (%s); no more attempts",
                self.describe(),
                future.exception(),
            )

    def describe(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
        return f"{urlunsplit(parts)} subject {self.subject!r}"

    # -- on the client's loop ---------------------------------------------------------

    async def _connect(self) -> None:
        options: dict[str, Any] = {
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 5,
            "pending_size": 0,
            "name": f"flask-relay {self.host_id}",
        }
        options.update(self.options)
        options.update(
            servers=[self.url],
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        client = await self._nats.connect(**options)
        self._client = client
        self._first_connect.set()
        if self._subscribe:
            await client.subscribe(self.subject, cb=self._on_message)
            await client.flush()
        if self._subscribe:
            self._subscribed()

    async def _on_message(self, msg: Any) -> None:
        self._inbox.put(msg.data)

    async def _on_error(self, exc: Exception) -> None:
        client = self._client
        if client is None or not client.is_connected:
            self._mark_down(exc, "connect")
        else:
            logger.warning("nats client error on %s: %s", self.describe(), exc)

    async def _on_disconnected(self) -> None:
        if not self._closed.is_set():
            self._connection_lost(None)

    async def _on_reconnected(self) -> None:
        # nats-py has re-sent the subscription before calling this.
        if self._subscribe:
            self._subscribed()

    async def _publish_async(self, items: list[str]) -> None:
        client = self._client
        if client is None or not client.is_connected:
            raise ConnectionError(f"not connected to NATS at {self.describe()}")
        try:
            for item in items:
                await client.publish(self.subject, item.encode("utf-8"))
            # The server's PONG: it has the batch. Without it, messages written
            # as the connection broke would be replayed by nats-py after the
            # reconnection, out of order with what the outbox still holds.
            await client.flush(timeout=self.confirm_timeout)
        except Exception:
            # The batch stays in the outbox: nats-py must not send it again.
            pending = getattr(client, "_pending", None)
            if isinstance(pending, list):
                pending.clear()
                client._pending_data_size = 0
            raise

    # -- the queue's threads ------------------------------------------------------------

    def _publish(self, data: str) -> None:
        self._publish_many([data])

    def _publish_many(self, items: list[str]) -> None:
        if self._client is None:
            # The first connection is still being made (an emitter that
            # publishes right away): wait for it rather than call it an outage.
            self._first_connect.wait(self.publish_timeout)
        future = asyncio.run_coroutine_threadsafe(self._publish_async(items), self._loop)
        future.result(self.publish_timeout)

    def _listen(self) -> Iterator[Any]:
        while not self._closed.is_set():
            try:
                batch = [self._inbox.get(timeout=1.0)]
            except queue.Empty:
                continue
            # And what else arrived meanwhile, as one batch.
            while len(batch) < self.listen_batch:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            yield batch

    def _close_backend(self) -> None:
        client = self._client

        async def close() -> None:
            if client is not None:
                try:
                    await client.drain() if client.is_connected else await client.close()
                except Exception:
                    pass

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
