"""Groups of plain WebSocket connections: ``ws.join_room(name)``, ``sock.send(data, to=name)``.

Why: Flask-Sock (and every other anchor) leaves it to the app to keep lists of
``ws`` objects by hand, guarded by a lock, pruned when a send fails, and
limited to one process. Here the app's routes share one registry of rooms
(per Flask app, in ``app.extensions``): a connection joins and leaves rooms,
leaves them all when it closes, and a send to a room reaches its members on
this process at once and, through the message queue, on every other process.

The queue is ``Sock(app, message_queue=url)`` when given, else the app's
``SocketIO(app, message_queue=url)`` queue (one broker connection for both).
The message (method ``"flask_relay.ws"``) carries the room and the text, or
the bytes in base64; python-socketio servers on the same channel ignore it.

Delivery never blocks the sender: the message is queued for each member's
socket on the loop. A member with more than :data:`MAX_BACKLOG` bytes still on
their way to it (a client that stopped reading) is closed with 1013 and a log
line, instead of being skipped silently or holding up the whole room.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

from .engine.websocket import MAX_GROUP_BACKLOG

if TYPE_CHECKING:
    from .pubsub import MessageQueue

__all__ = ["Member", "WebSocketGroups", "groups_for"]

logger = logging.getLogger("flask_relay.sock")

#: The key of the registry in ``app.extensions``.
EXTENSION_KEY = "flask_relay.ws_groups"

#: The queue message method of a group send.
GROUP_METHOD = "flask_relay.ws"

#: Bytes on their way to one member past which a group send closes it (1013);
#: enforced by the ws objects (engine/websocket.py).
MAX_BACKLOG = MAX_GROUP_BACKLOG


class Member(Protocol):
    """What a group needs of a ws object (both kinds have it)."""

    def _post(self, payload: str | bytes) -> bool:
        """Queue ``payload`` without waiting; ``False`` when closed."""


class WebSocketGroups:
    """Room name -> member connections, for one app; thread-safe."""

    def __init__(self, app: Any = None) -> None:
        self._lock = threading.Lock()
        self._rooms: dict[Hashable, set[Member]] = {}
        self._member_rooms: dict[Member, set[Hashable]] = {}
        self.queue: MessageQueue | None = None
        self._queue_resolved = False
        self._app: Any = app  # whose SocketIO queue to adopt (_resolve_queue)

    # -- membership -----------------------------------------------------------------

    def join(self, member: Member, room: Hashable) -> None:
        self._resolve_queue()
        with self._lock:
            self._rooms.setdefault(room, set()).add(member)
            self._member_rooms.setdefault(member, set()).add(room)

    def leave(self, member: Member, room: Hashable) -> None:
        with self._lock:
            self._remove(member, room)

    def leave_all(self, member: Member) -> None:
        """Forget ``member`` (it closed)."""
        with self._lock:
            for room in list(self._member_rooms.get(member, ())):
                self._remove(member, room)

    def _remove(self, member: Member, room: Hashable) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.discard(member)
            if not members:
                del self._rooms[room]
        rooms = self._member_rooms.get(member)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._member_rooms[member]

    def rooms_of(self, member: Member) -> set[Hashable]:
        with self._lock:
            return set(self._member_rooms.get(member, ()))

    def members(self, room: Hashable) -> list[Member]:
        """This process's members of ``room`` (a snapshot)."""
        with self._lock:
            return list(self._rooms.get(room, ()))

    def room_names(self) -> list[Hashable]:
        with self._lock:
            return list(self._rooms)

    # -- sending --------------------------------------------------------------------

    def send(self, data: str | bytes, to: Hashable, skip: Member | None = None) -> int:
        """Send ``data`` to every member of ``to`` here, and publish it for the
        other processes. Returns the number of members reached here."""
        reached = self._deliver(to, data, skip)
        self._resolve_queue()
        queue = self.queue
        if queue is not None:
            if not isinstance(to, (str, int, float)):
                raise TypeError("a room sent through a message queue must be a str or a number")
            message: dict[str, Any] = {"method": GROUP_METHOD, "room": to}
            if isinstance(data, str):
                message["text"] = data
            else:
                message["binary"] = base64.b64encode(data).decode("ascii")
            queue.publish(message)
        return reached

    def _deliver(self, room: Hashable, data: str | bytes, skip: Member | None) -> int:
        reached = 0
        for member in self.members(room):
            if member is skip:
                continue
            if member._post(data):
                reached += 1
        return reached

    def _on_queue_message(self, message: dict[str, Any]) -> None:
        queue = self.queue
        if queue is not None and message.get("host_id") == queue.host_id:
            return  # ours: delivered here already
        room = message.get("room")
        if not isinstance(room, (str, int, float)):
            return
        data: str | bytes
        if isinstance(message.get("text"), str):
            data = message["text"]
        elif isinstance(message.get("binary"), str):
            data = base64.b64decode(message["binary"])
        else:
            return
        self._deliver(room, data, None)

    # -- the queue ------------------------------------------------------------------

    def use_queue(self, queue: MessageQueue) -> None:
        """Carry sends to and from other processes on ``queue``."""
        with self._lock:
            self.queue = queue
            self._queue_resolved = True
        queue.add_handler(GROUP_METHOD, self._on_queue_message)
        queue.listen()

    def _resolve_queue(self) -> None:
        """Adopt the app's Socket.IO message queue, the first time it matters."""
        if self._queue_resolved:
            return
        app = self._app
        sio = app.extensions.get("socketio") if app is not None else None
        server = getattr(sio, "server", None)
        queue = getattr(server, "queue", None)
        if queue is not None:
            self.use_queue(queue)
        elif server is not None or app is None:
            self._queue_resolved = True
        # else: SocketIO(app) may still come (its queue is made at init_app).


def groups_for(app: Any) -> WebSocketGroups:
    """The registry of ``app`` (created on first use)."""
    extensions: dict[str, Any] = app.extensions
    found = extensions.get(EXTENSION_KEY)
    if isinstance(found, WebSocketGroups):
        return found
    groups = extensions.setdefault(EXTENSION_KEY, WebSocketGroups(app))
    return groups  # type: ignore[no-any-return]
