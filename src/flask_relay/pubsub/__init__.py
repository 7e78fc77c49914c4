"""Message queues: rooms and broadcasts across processes, through a pub/sub broker.

Each process keeps its own clients and rooms. An operation that may concern
clients of other processes (an emit, ``close_room``, a disconnect or a room
change for a sid that is not local) is applied locally, then published on the
queue's channel; the other processes apply it to their own clients.

The messages are python-socketio's (JSON since python-socketio 5.14), on the
channel ``"flask-socketio"`` by default, so a Flask-Relay process, a
Flask-SocketIO process and an external emitter such as
``socketio.RedisManager(url, channel="flask-socketio", write_only=True)``
interoperate. Acknowledgement callbacks cross processes too: the process whose
client acknowledges publishes a ``callback`` message for the emitting process.

Backends: Redis (``redis://``, ``rediss://``, ``unix://``, ``valkey://``,
``valkeys://``). :func:`from_url` picks one from the URL.
"""

from __future__ import annotations

import base64
import collections
import itertools
import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocol.jsonlib import JSONModule, default_json
from ..protocol.socketio import deconstruct_binary as _deconstruct
from ..protocol.socketio import reconstruct_binary as _reconstruct

if TYPE_CHECKING:
    from ..engine.sio import SocketIOServer

__all__ = ["MessageQueue", "from_url"]

logger = logging.getLogger("flask_relay.pubsub")

_BINARY = (bytes, bytearray, memoryview)


def _has_binary(data: Any) -> bool:
    if isinstance(data, _BINARY):
        return True
    if isinstance(data, (list, tuple)):
        return any(_has_binary(item) for item in data)
    if isinstance(data, dict):
        return any(_has_binary(value) for value in data.values())
    return False


class MessageQueue:
    """The broker-independent part: message format, routing, remote acks.

    Subclasses implement :meth:`_publish` (any thread) and :meth:`_listen`
    (an iterator of raw messages, run by the listener thread; it should
    reconnect by itself and log loudly while the broker is unreachable).

    :param channel: the pub/sub channel shared by every process.
    :param write_only: only publish (an external emitter): no listener thread.
    """

    name = "pubsub"

    #: Callbacks kept for acknowledgements from other processes.
    max_pending_callbacks = 10_000

    def __init__(
        self,
        channel: str = "flask-socketio",
        write_only: bool = False,
        json: JSONModule | None = None,
    ) -> None:
        self.channel = channel
        self.write_only = write_only
        self.json: JSONModule = json or default_json
        self.host_id = uuid.uuid4().hex
        self.server: SocketIOServer | None = None
        self._ack_ids = itertools.count(1)
        # Callbacks waiting for another process's acknowledgement, oldest first;
        # bounded: past max_pending_callbacks the oldest are forgotten.
        self._callbacks: collections.OrderedDict[int, Callable[..., Any]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        #: Set once the listener is subscribed (messages published from then on arrive).
        self.ready = threading.Event()
        # Handlers of Flask-Relay's own message methods (peer announcements,
        # WebSocket groups), by method; python-socketio ignores those methods.
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}

    # -- wiring --------------------------------------------------------------------

    def attach(self, server: SocketIOServer) -> None:
        """Serve ``server``: start listening unless write-only."""
        self.server = server
        if not self.write_only and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"flask-relay-{self.name}", daemon=True
            )
            self._thread.start()

    def listen(self) -> None:
        """Start the listener thread (once) without a Socket.IO server: for
        queues that carry only :meth:`add_handler` messages."""
        if not self.write_only and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"flask-relay-{self.name}", daemon=True
            )
            self._thread.start()

    def add_handler(self, method: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Call ``handler(message)`` (on the listener thread; it must not block
        long) for every message of ``method``, this process's own included."""
        self._handlers[method] = handler

    def publish(self, message: dict[str, Any]) -> None:
        """Publish a message of a method given to :meth:`add_handler`."""
        self._send(dict(message))

    def close(self) -> None:
        """Stop listening (the thread exits at the next message or reconnect)."""
        self._closed.set()

    # -- publishing (called by SocketIOServer after the local part) ----------------

    def emit(
        self,
        event: Any,
        args: list[Any],
        *,
        namespace: str,
        room: Any,
        skip_sid: Any,
        callback: Callable[..., Any] | None = None,
    ) -> None:
        """Publish an emit for the clients of the other processes."""
        callback_ref = None
        if callback is not None:
            if room is None:
                raise ValueError("an emit with a callback through a message queue needs a room")
            ack_id = next(self._ack_ids)
            with self._lock:
                self._callbacks[ack_id] = callback
                if len(self._callbacks) > self.max_pending_callbacks:
                    self._callbacks.popitem(last=False)
                    logger.warning(
                        "more than %d emits wait for acknowledgements from other "
                        "processes: forgetting the oldest",
                        self.max_pending_callbacks,
                    )
            callback_ref = [room, namespace, ack_id]
        binary = _has_binary(args)
        data: list[Any] = list(args)
        if binary:
            buffers: list[bytes] = []
            structure = _deconstruct(data, buffers)
            data = [structure, *[base64.b64encode(b).decode("ascii") for b in buffers]]
        self._send(
            {
                "method": "emit",
                "event": event,
                "data": data,
                "binary": binary,
                "namespace": namespace,
                "room": list(room) if isinstance(room, (tuple, set, frozenset)) else room,
                "skip_sid": list(skip_sid)
                if isinstance(skip_sid, (tuple, set, frozenset))
                else skip_sid,
                "callback": callback_ref,
            }
        )

    def disconnect(self, sid: str, namespace: str) -> None:
        self._send({"method": "disconnect", "sid": sid, "namespace": namespace})

    def enter_room(self, sid: str, room: Any, namespace: str) -> None:
        self._send({"method": "enter_room", "sid": sid, "room": room, "namespace": namespace})

    def leave_room(self, sid: str, room: Any, namespace: str) -> None:
        self._send({"method": "leave_room", "sid": sid, "room": room, "namespace": namespace})

    def close_room(self, room: Any, namespace: str) -> None:
        self._send({"method": "close_room", "room": room, "namespace": namespace})

    def _send(self, message: dict[str, Any]) -> None:
        message.setdefault("host_id", self.host_id)
        self._publish(self.json.dumps(message))

    # -- the backend -----------------------------------------------------------------

    def _publish(self, data: str) -> None:
        raise NotImplementedError

    def _listen(self) -> Any:
        raise NotImplementedError

    # -- receiving ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                for raw in self._listen():
                    if self._closed.is_set():
                        return
                    self.handle(raw)
            except Exception:
                if self._closed.is_set():
                    return
                logger.exception("%s listener failed; restarting it", self.name)
                self._closed.wait(1.0)

    def handle(self, raw: str | bytes | dict[str, Any]) -> None:
        """Apply one message from the channel to this process's clients."""
        server = self.server
        if server is None and not self._handlers:
            return
        try:
            message = raw if isinstance(raw, dict) else self.json.loads(raw)
        except Exception:
            logger.warning("ignoring a message that is not JSON on %r", self.channel)
            return
        if not isinstance(message, dict) or "method" not in message:
            return
        method = message["method"]
        extra = self._handlers.get(method) if isinstance(method, str) else None
        if extra is not None:
            try:
                extra(message)
            except Exception:
                logger.exception("error applying a %r message from the queue", method)
            return
        if server is None:
            return
        try:
            if method == "callback":
                if message.get("host_id") == self.host_id:
                    self._run_callback(message)
                return
            if message.get("host_id") == self.host_id:
                return  # our own publication, already applied locally
            namespace = message.get("namespace") or "/"
            if method == "emit":
                self._apply_emit(server, message, namespace)
            elif method == "disconnect":
                server.disconnect(message["sid"], namespace, ignore_queue=True)
            elif method == "enter_room":
                server.enter_room(message["sid"], message["room"], namespace, ignore_queue=True)
            elif method == "leave_room":
                server.leave_room(message["sid"], message["room"], namespace, ignore_queue=True)
            elif method == "close_room":
                server.close_room(message["room"], namespace, ignore_queue=True)
        except Exception:
            logger.exception("error applying a %r message from the queue", method)

    def _apply_emit(self, server: SocketIOServer, message: dict[str, Any], namespace: str) -> None:
        data = message.get("data")
        if message.get("binary") and isinstance(data, list) and data:
            buffers = [base64.b64decode(item) for item in data[1:]]
            data = _reconstruct(data[0], buffers)
        if not isinstance(data, list):
            data = [] if data is None else [data]
        callback = None
        remote = message.get("callback")
        if isinstance(remote, list) and len(remote) == 3:
            origin = message.get("host_id")
            room, cb_namespace, ack_id = remote

            def callback(*args: Any) -> None:
                self._send(
                    {
                        "method": "callback",
                        "host_id": origin,
                        "sid": room,
                        "namespace": cb_namespace,
                        "id": ack_id,
                        "args": list(args),
                    }
                )

        room = message.get("room")
        server.emit_args(
            message["event"],
            data,
            namespace=namespace,
            to=room,
            skip_sid=message.get("skip_sid"),
            callback=callback,
            ignore_queue=True,
        )

    def _run_callback(self, message: dict[str, Any]) -> None:
        with self._lock:
            callback = self._callbacks.pop(message.get("id"), None)  # type: ignore[arg-type]
        if callback is None:
            return
        args = list(message.get("args") or ())
        server = self.server
        if server is not None:
            # User code: not on the listener thread.
            server.dispatcher.submit(("pubsub-callback", self.host_id), callback, *args)
        else:
            callback(*args)


def from_url(
    url: str,
    channel: str = "flask-socketio",
    write_only: bool = False,
    json: JSONModule | None = None,
    options: dict[str, Any] | None = None,
) -> MessageQueue:
    """The message queue for ``url``; :class:`NotImplementedError` for unknown schemes."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix", "valkey", "valkeys"):
        from .redis import RedisQueue

        return RedisQueue(url, channel=channel, write_only=write_only, json=json, options=options)
    raise NotImplementedError(
        f"message queue scheme {scheme!r} is not supported yet: use a redis:// "
        "(rediss://, unix://, valkey://) URL"
    )
