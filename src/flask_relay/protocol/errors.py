"""The package's error root, and the one exception the protocol core raises.

Every exception Flask-Relay defines derives from :class:`FlaskRelayError`, so
``except FlaskRelayError`` catches anything the package raises on purpose. Each
also keeps the builtin base user code may already catch (``ValueError`` for a
:class:`ProtocolError`, ``OSError`` for a listen failure, ``RuntimeError`` for a
closed WebSocket...). It lives here, in the lowest layer, so that every layer
can derive from it without importing upward.
"""

from __future__ import annotations

__all__ = ["FlaskRelayError", "ProtocolError"]


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
