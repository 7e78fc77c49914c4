"""The event loop and the doors into it: the package's own HTTP/1.1 server.

Nothing here imports Flask; the WSGI application is just a callable.
"""

from __future__ import annotations

from .httpconn import HTTPLimits
from .loop import Hub
from .serve import Server

__all__ = ["HTTPLimits", "Hub", "Server"]
