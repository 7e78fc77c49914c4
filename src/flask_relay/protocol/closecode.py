"""WebSocket close codes (RFC 6455 section 7.4): one enum for the whole package.

The protocol core, the route channel, the ``ws`` objects, the Engine.IO
WebSocket transport and the test clients all name codes through
:class:`CloseCode`, and :func:`check_close_code` is the one rule for which codes
an endpoint may *send* (1005, 1006 and 1015 are reported, never sent).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "check_close_code"]


class CloseCode(IntEnum):
    """The registered close codes (an ``int``: compares equal to the number)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # reported when the close frame carried no code; never sent
    ABNORMAL = 1006  # reported when TCP ended without a close frame; never sent
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


def check_close_code(code: int) -> None:
    """Raise ``ValueError`` unless ``code`` may be sent in a close frame
    (1000-1003, 1007-1014 and the application ranges 3000-4999)."""
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(f"{code} is not a close code an endpoint may send")
