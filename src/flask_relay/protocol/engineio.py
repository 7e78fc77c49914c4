"""Engine.IO v4 packets and HTTP long-polling payloads.

An Engine.IO packet is one ASCII digit (its type) followed by optional text
data, or, for a binary ``message``, raw bytes. Over WebSocket each packet is
one frame: text frames carry ``<type><data>``, binary frames carry the bytes
of a ``message`` (no type byte). Over HTTP long-polling several packets share
one body, joined by the record separator ``\\x1e``; binary packets are written
``b<base64>`` there (the type is implicitly ``message``).

As in the reference parser (npm ``engine.io-parser``), a text packet
``b<base64>`` is a binary message on any transport: clients created with
``forceBase64`` send them over WebSocket too.

Decoders raise :class:`ProtocolError` for anything malformed and nothing else.

The server's send path encodes with :func:`encode_message` and
:func:`encode_control`, which give a packet's two forms at once (its
long-polling segment and its WebSocket payload, an :data:`Encoded` pair),
and :func:`join_payload`, which makes a polling body of segments encoded
earlier. :func:`encode_packet` and :func:`encode_payload` are built on them,
so the fuzz and interop tests of those cover what the server sends.
"""

from __future__ import annotations

import binascii
import re
import sys
from base64 import b64encode
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

from .errors import ProtocolError

__all__ = [
    "SEPARATOR",
    "Encoded",
    "Packet",
    "PacketType",
    "decode_packet",
    "decode_payload",
    "encode_control",
    "encode_message",
    "encode_packet",
    "encode_payload",
    "join_payload",
]

#: The record separator that joins packets in a long-polling body.
SEPARATOR = "\x1e"


class PacketType(IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class Packet(NamedTuple):
    """One Engine.IO packet.

    ``data`` is text for every type; it is :class:`bytes` only for a binary
    ``MESSAGE``, and ``None`` when the packet has no data (``"2"`` is a ping
    without data, ``"2probe"`` a ping with data ``"probe"``).
    """

    type: PacketType
    data: str | bytes | None = None


_BY_DIGIT: dict[str, PacketType] = {str(int(t)): t for t in PacketType}
_DIGITS: tuple[str, ...] = tuple(str(int(t)) for t in PacketType)
_MESSAGE = PacketType.MESSAGE
_BINARY_TYPES = (bytes, bytearray, memoryview)


#: A packet in both forms: (its long-polling segment, its WebSocket payload).
#: For a text packet both are the same string; for a binary message the
#: segment is ``b<base64>`` and the payload the raw bytes.
Encoded = tuple[str, "str | bytes"]

_MESSAGE_DIGIT = _DIGITS[_MESSAGE]


def encode_message(data: str | bytes | bytearray | memoryview) -> Encoded:
    """Encode a ``MESSAGE`` packet carrying ``data`` (text, or bytes for binary).

    Unlike :func:`encode_payload` this does not refuse text holding ``\\x1e``
    (the check costs every delivery; Socket.IO packets never hold one).
    """
    if isinstance(data, str):
        text = _MESSAGE_DIGIT + data
        return (text, text)
    raw = bytes(data)
    return ("b" + b64encode(raw).decode("ascii"), raw)


def encode_control(ptype: PacketType, data: str | None = None) -> Encoded:
    """Encode a packet with text ``data`` or none: ``open``, ``close``, ``ping``, ..."""
    text = _DIGITS[ptype] if data is None else _DIGITS[ptype] + data
    return (text, text)


def join_payload(segments: Iterable[str]) -> str:
    """A long-polling body of segments already encoded (the first of :data:`Encoded`)."""
    return SEPARATOR.join(segments)


def _encode(packet: Packet) -> Encoded:
    ptype, data = packet
    if data is None or isinstance(data, str):
        return encode_control(ptype, data)
    if ptype != _MESSAGE:
        raise ValueError(f"only a MESSAGE packet may carry bytes, not {ptype.name}")
    return encode_message(data)


def encode_packet(packet: Packet) -> str | bytes:
    """Encode one packet as the payload of one WebSocket frame.

    Text packets become ``str`` (send as a text frame); a binary ``MESSAGE``
    becomes ``bytes`` (send as a binary frame).
    """
    return _encode(packet)[1]


def decode_packet(data: str | bytes) -> Packet:
    """Decode the payload of one WebSocket frame.

    ``bytes`` (a binary frame) is always a binary ``MESSAGE``; ``str`` (a text
    frame) is ``<type digit><data>`` or ``b<base64>``.
    """
    if isinstance(data, str):
        return _decode_text(data)
    if isinstance(data, _BINARY_TYPES):
        return Packet(_MESSAGE, bytes(data))
    raise ProtocolError(f"cannot decode a packet from {type(data).__name__}")


def _decode_text(text: str) -> Packet:
    ptype = _BY_DIGIT.get(text[:1])
    if ptype is not None:
        return Packet(ptype, text[1:] if len(text) > 1 else None)
    if text[:1] == "b":
        return Packet(_MESSAGE, _b64decode(text[1:]))
    if not text:
        raise ProtocolError("empty packet")
    raise ProtocolError(f"unknown packet type {text[:1]!r}")


def _b64decode(text: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4); missing padding is tolerated.

    Node's decoder is lenient (it skips characters outside the alphabet); no
    client sends those, so garbage is refused rather than silently dropped.
    """
    if not text.isascii():
        raise ProtocolError("invalid base64 data")
    if len(text) % 4:
        bare = text.rstrip("=")
        if len(text) - len(bare) > 2:
            raise ProtocolError("invalid base64 data")
        text = bare + "=" * (-len(bare) % 4)
    if _STRICT_BASE64:
        try:
            return binascii.a2b_base64(text, strict_mode=True)  # type: ignore[call-arg]
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid base64 data") from None
    if _BASE64_RE.fullmatch(text) is None:  # pragma: no cover - Python 3.10
        raise ProtocolError("invalid base64 data")
    return binascii.a2b_base64(text)  # pragma: no cover - Python 3.10


# Python 3.11 added a2b_base64(strict_mode=True); 3.10 vets the text with a regex.
_STRICT_BASE64 = sys.version_info >= (3, 11)
_BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def encode_payload(packets: Iterable[Packet]) -> str:
    """Encode packets as one long-polling response body.

    Text packets are ``<type><data>``, binary ones ``b<base64>``, joined by
    ``\\x1e``. Send it as ``text/plain; charset=UTF-8``.

    Raises :class:`ValueError` for a text packet holding ``\\x1e``: it would
    arrive as two packets. Socket.IO packets never do (JSON escapes control
    characters); check raw Engine.IO messages when they are sent.
    """
    segments: list[str] = []
    for packet in packets:
        if isinstance(packet.data, str) and SEPARATOR in packet.data:
            raise ValueError("text holding the separator \\x1e cannot be sent by polling")
        segments.append(_encode(packet)[0])
    return join_payload(segments)


def decode_payload(body: str | bytes) -> list[Packet]:
    """Decode a long-polling request body (the packets of one POST).

    A body given as bytes must be valid UTF-8. An empty body, or an empty
    packet between separators, is an error, as in the reference parser.
    """
    if not isinstance(body, str):
        if not isinstance(body, _BINARY_TYPES):
            raise ProtocolError(f"cannot decode a payload from {type(body).__name__}")
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("payload is not valid UTF-8") from None
    if SEPARATOR not in body:
        return [_decode_text(body)]
    return [_decode_text(item) for item in body.split(SEPARATOR)]
