"""The package's own HTTP/1.1 server, on the hub's event loop (re-exports).

The server lives in three modules, by concern: :mod:`.httpconn` (the HTTP/1.1
connection protocol and its limits), :mod:`.wsgi` (the WSGI bridge) and
:mod:`.serve` (listen, serve, stop, signals). This module keeps the names
others import.

One port serves everything: requests under a *mount* prefix (the Engine.IO
endpoint, for instance) are handled natively on the loop, WebSocket upgrades on
a mount are handed to it with the raw connection, and every other request goes
to the WSGI application (a Flask app) in a bounded thread pool, so ordinary
routes and static files work beside the real-time endpoint.
"""

from __future__ import annotations

from .httpconn import HTTPConnection, HTTPLimits, serialize_response
from .serve import ListenError, Server, listen_or_exit
from .wsgi import WSGIApp

__all__ = [
    "HTTPConnection",
    "HTTPLimits",
    "ListenError",
    "Server",
    "WSGIApp",
    "listen_or_exit",
    "serialize_response",
]
