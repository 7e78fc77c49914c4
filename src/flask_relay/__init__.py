"""Flask-Relay: real-time, two-way communication for Flask applications.

A Socket.IO v5 server (Engine.IO v4) and plain WebSocket routes, served from one
event loop with user handlers in worker threads. API-compatible with
Flask-SocketIO 5.x and Flask-Sock: switching is a change of the import line::

    from flask_relay import SocketIO, emit, join_room   # was: from flask_socketio import ...
"""

from __future__ import annotations

from .context import call, close_room, disconnect, emit, join_room, leave_room, rooms, send
from .engine.sio import ConnectionRefusedError
from .extension import SocketIO
from .namespace import Namespace
from .protocol.errors import FlaskRelayError
from .sock import ConnectionClosed, Sock
from .sockets import Sockets
from .test_client import SocketIOTestClient
from .ws_testing import WebSocketTestClient

__version__ = "0.1.0.dev0"

__all__ = [
    "ConnectionClosed",
    "ConnectionRefusedError",
    "FlaskRelayError",
    "Namespace",
    "SocketIO",
    "Sock",
    "Sockets",
    "SocketIOTestClient",
    "WebSocketTestClient",
    "__version__",
    "call",
    "close_room",
    "disconnect",
    "emit",
    "join_room",
    "leave_room",
    "rooms",
    "send",
]
