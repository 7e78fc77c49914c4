"""The one exception type the protocol core raises for bad input."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Malformed or disallowed input from a peer.

    Every decoder in :mod:`flask_relay.protocol` raises this, and only this, for
    input it cannot accept, so the I/O layers need a single ``except`` clause to
    turn bad input into a clean close or an HTTP 400. ``reason`` is a short,
    human-readable explanation suitable for logs and close frames.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
