"""Flask-Relay: real-time, two-way communication for Flask applications.

A Socket.IO v5 server (Engine.IO v4) and plain WebSocket routes, served from one
event loop with user handlers in worker threads. API-compatible with
Flask-SocketIO 5.x and Flask-Sock.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
