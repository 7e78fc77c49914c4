"""The RabbitMQ (AMQP) message queue, through kombu: python-socketio's ``KombuManager`` wire.

What makes it interoperate with ``socketio.KombuManager`` (mixed fleets, and
write-only emitters both ways):

* a **fanout exchange named after the channel**, ``durable=False`` (declaring
  it with other options would fail on the broker: the options must match);
* each listening process consumes from its own queue ``python-socketio.<uuid>``
  bound to it, ``durable=False`` with ``x-expires`` 300 s, as there;
* the body is python-socketio's JSON message text, which kombu sends as it is
  (``content_type`` ``text/plain``); a JSON body (``application/json``) is
  taken too, and nothing else (never pickle).

Two differences, both about outages: the queue keeps its name for the life of
the process (python-socketio makes a new one per reconnection), so after a
network cut the listener finds in it what was published meanwhile (for up to
the 300 s of ``x-expires``); and publishing waits for the broker's
confirmation (``confirm_publish``), so a message is taken out of the outbox
only once RabbitMQ has it.

A restarted node has forgotten the exchange, the queue and the binding (all
non-durable): each new connection declares them again (the listener's
``Consumer`` the queue, exchange and binding, the publisher's ``Producer``
the exchange), which ``tests/queues/test_queue_outage.py`` checks by
restarting a RabbitMQ node of its own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..protocol.jsonlib import JSONModule
from .base import MessageQueue

__all__ = ["AmqpQueue"]

logger = logging.getLogger("flask_relay.pubsub")

# Content types taken from the exchange (python-socketio sends text/plain).
_ACCEPT = ["text/plain", "application/json"]


class AmqpQueue(MessageQueue):
    """RabbitMQ through kombu (``pip install 'flask-relay[amqp]'``).

    ``amqp://``, ``amqps://`` and ``pyamqp://`` URLs (any kombu URL works).
    The ``*_options`` are KombuManager's: keyword arguments for
    ``kombu.Connection``, ``kombu.Exchange``, ``kombu.Queue`` and
    ``Producer``.
    """

    name = "amqp"

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672//",
        channel: str = "flask-socketio",
        write_only: bool = False,
        json: JSONModule | None = None,
        connection_options: dict[str, Any] | None = None,
        exchange_options: dict[str, Any] | None = None,
        queue_options: dict[str, Any] | None = None,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            import kombu
        except ImportError:
            raise RuntimeError(
                "an amqp:// message queue needs the kombu package: "
                "pip install 'flask-relay[amqp]'"
            ) from None
        super().__init__(channel=channel, write_only=write_only, json=json)
        self._kombu: Any = kombu
        self.url = url
        self.connection_options = dict(connection_options or {})
        self.connection_options.setdefault("connect_timeout", 10)
        transport = dict(self.connection_options.get("transport_options") or {})
        transport.setdefault("confirm_publish", True)
        self.connection_options["transport_options"] = transport
        self.exchange_options = dict(exchange_options or {})
        self.queue_options = dict(queue_options or {})
        self.producer_options = dict(producer_options or {})
        self.queue_name = "python-socketio." + str(uuid.uuid4())
        self._connection: Any = None
        self._producer: Any = None

    def describe(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
        return f"{urlunsplit(parts)} exchange {self.channel!r}"

    def _new_connection(self) -> Any:
        return self._kombu.Connection(self.url, **self.connection_options)

    def _exchange(self) -> Any:
        options: dict[str, Any] = {"type": "fanout", "durable": False}
        options.update(self.exchange_options)
        return self._kombu.Exchange(self.channel, **options)

    def _queue(self) -> Any:
        options: dict[str, Any] = {"durable": False, "queue_arguments": {"x-expires": 300000}}
        options.update(self.queue_options)
        return self._kombu.Queue(self.queue_name, self._exchange(), **options)

    # -- publishing (the publisher thread only) ----------------------------------

    def _publish(self, data: str) -> None:
        if self._producer is None:
            connection = self._new_connection()
            try:
                connection.connect()
                self._producer = connection.Producer(
                    exchange=self._exchange(), **self.producer_options
                )
            except BaseException:
                connection.release()
                raise
            self._connection = connection
        try:
            self._producer.publish(data)
        except BaseException:
            self._drop_producer()
            raise

    def _drop_producer(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                pass

    def _publisher_stopped(self) -> None:
        self._drop_producer()

    def _close_backend(self) -> None:
        # The process's queue would otherwise collect messages until x-expires.
        if self.write_only or self._thread is None:
            return
        connection = self._new_connection()
        try:
            connection.connect()
            self._queue()(connection.default_channel).delete()
        except Exception as exc:
            logger.info("could not delete the queue %s: %s", self.queue_name, exc)
        finally:
            connection.release()

    def _reset_backend_after_fork(self) -> None:
        self._connection = self._producer = None
        self.queue_name = "python-socketio." + str(uuid.uuid4())

    # -- listening ------------------------------------------------------------------

    def _listen(self) -> Iterator[Any]:
        delays = self._reconnect_delays()
        while not self._closed.is_set():
            connection = self._new_connection()
            received: list[Any] = []

            def on_message(message: Any, received: list[Any] = received) -> None:
                message.ack()
                try:
                    received.append(message.payload)
                except Exception as exc:
                    logger.warning(
                        "ignoring a message of type %r on %s: %s",
                        message.content_type,
                        self.describe(),
                        exc,
                    )

            try:
                connection.connect()
                with connection.Consumer(
                    self._queue(), on_message=on_message, accept=_ACCEPT
                ):
                    delays = self._reconnect_delays()
                    self._subscribed()
                    while not self._closed.is_set():
                        try:
                            connection.drain_events(timeout=1.0)
                        except TimeoutError:
                            connection.heartbeat_check()
                        # Then what is already there (timeout 0: no wait), as one
                        # batch; a failure meanwhile comes after it (acked: not lost).
                        failure: Exception | None = None
                        try:
                            while received and len(received) < self.listen_batch:
                                connection.drain_events(timeout=0)
                        except TimeoutError:
                            pass
                        except Exception as exc:
                            failure = exc
                        if received:
                            yield received[:]
                            received.clear()
                        if failure is not None:
                            raise failure
            except Exception as exc:
                if self._closed.is_set():
                    return
                self._connection_lost(exc)
                self._closed.wait(next(delays))
            finally:
                try:
                    connection.release()
                except Exception:
                    pass
