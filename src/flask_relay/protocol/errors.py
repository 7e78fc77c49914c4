"""The package's error root, the one exception the protocol core raises, and the
refusal a Socket.IO connect handler raises.

Every exception Flask-Relay defines derives from :class:`FlaskRelayError`, so
``except FlaskRelayError`` catches anything the package raises on purpose. Each
also keeps the builtin base user code may already catch (``ValueError`` for a
:class:`ProtocolError`, ``OSError`` for a listen failure, ``RuntimeError`` for a
closed WebSocket...). It lives here, in the lowest layer, so that every layer
can derive from it without importing upward.

:class:`ConnectionRefusedError` is here rather than beside the Socket.IO server
that catches it (``engine/sio.py``, which re-exports it) because the Admin UI
(``engine/admin.py``) raises it too, and ``sio.py`` imports ``admin.py`` for
``server.instrument()``: its arguments are the ``CONNECT_ERROR`` packet's data,
a protocol fact that needs nothing above this layer.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = ["ConnectionRefusedError", "FlaskRelayError", "ProtocolError"]


class FlaskRelayError(Exception):
    """Base class of every exception Flask-Relay defines."""


class ProtocolError(FlaskRelayError, ValueError):
    """Malformed or disallowed input from a peer.

    Every decoder in :mod:`flask_relay.protocol` raises this, and only this, for
    input it cannot accept, so the I/O layers need a single ``except`` clause to
    turn bad input into a clean close or an HTTP 400. ``reason`` is a short,
    human-readable explanation suitable for logs and close frames.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionRefusedError(FlaskRelayError, builtins.ConnectionRefusedError):
    """Raise in a connect handler to refuse the connection.

    The positional arguments reach the client in the ``CONNECT_ERROR`` packet,
    as in python-socketio: none gives ``{"message": "Connection rejected by
    server"}``, one gives ``{"message": str(arg)}``, two add ``"data": arg2``,
    more add ``"data": [arg2, arg3, ...]``. It subclasses the built-in
    :class:`ConnectionRefusedError`, so ``except ConnectionRefusedError``
    catches both.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        error: dict[str, Any]
        if not args:
            error = {"message": "Connection rejected by server"}
        else:
            error = {"message": str(args[0])}
            if len(args) == 2:
                error["data"] = args[1]
            elif len(args) > 2:
                error["data"] = list(args[1:])
        self.error_args = error
