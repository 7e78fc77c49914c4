"""The event loop and the doors into it: the package's own HTTP/1.1 server.

Nothing here imports Flask; the WSGI application is just a callable.
"""

from __future__ import annotations

from .http import HTTPLimits, Server
from .loop import Hub

__all__ = ["HTTPLimits", "Hub", "Server"]
