"""The sans-I/O protocol core: Engine.IO v4, Socket.IO v5 and WebSocket.

Nothing in this package touches a socket, a thread, a timer or Flask: every
function takes bytes or strings and returns packets, events or bytes to send.
Every decoder reports malformed input by raising :class:`ProtocolError` and
nothing else.
"""

from .errors import ProtocolError

__all__ = ["ProtocolError"]
