"""Watching a Socket.IO server: the hooks :class:`~.sio.SocketIOServer` calls.

Monitoring (the admin UI of :mod:`flask_relay.engine.admin`, metrics) needs to see
connections, room changes and events without patching the server's methods, as
python-socketio's instrumentation does. ``server.observers`` is a list of
:class:`ServerObserver`; the server calls each hook after the fact, without its
registry lock held (except :meth:`ServerObserver.messages_sent`, called while
sending: it may only count), so a hook may emit. Hooks run on the thread that made the change: the
event loop for the Engine.IO connection and message hooks, a worker or the
caller's thread for the others. They must be quick and must not raise (an
exception is logged and ignored). With no observer the cost is one list test.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sio import Connection, Socket

__all__ = ["ServerObserver"]


class ServerObserver:
    """Subclass and override the hooks you need; each default does nothing."""

    def connection_opened(self, conn: Connection) -> None:
        """An Engine.IO connection was opened (on the loop)."""

    def connection_closed(self, conn: Connection, reason: str) -> None:
        """An Engine.IO connection ended (on the loop); ``reason`` is Engine.IO's."""

    def message_received(self, conn: Connection, data: str | bytes) -> None:
        """One Engine.IO message arrived for the Socket.IO layer (on the loop)."""

    def messages_sent(self, recipients: int, items: list[str | bytes]) -> None:
        """``items`` (one Socket.IO packet's messages) went to ``recipients`` connections."""

    def socket_connected(self, sock: Socket) -> None:
        """``sock`` was accepted: its connect handler agreed, the CONNECT reply is sent."""

    def socket_disconnected(self, sock: Socket, reason: str) -> None:
        """An accepted ``sock`` left (after its disconnect handler)."""

    def room_joined(self, sock: Socket, room: Hashable) -> None:
        """``sock`` entered ``room``."""

    def room_left(self, sock: Socket, room: Hashable) -> None:
        """``sock`` left ``room`` (also when the room was closed)."""

    def event_received(self, sock: Socket, data: list[Any]) -> None:
        """``sock`` sent ``data`` (``[event, *args]``), before its handler runs."""

    def event_sent(self, socks: list[Socket], data: list[Any]) -> None:
        """An emit of ``data`` (``[event, *args]``) reached ``socks``."""
