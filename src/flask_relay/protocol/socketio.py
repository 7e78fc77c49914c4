"""Socket.IO v5 packets, binary attachments and the incremental decoder.

Every Socket.IO packet is the data of one Engine.IO ``message`` packet::

    <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]

The namespace is written only when it is not ``/``; the attachment count only
for ``BINARY_EVENT``/``BINARY_ACK``. A payload holding binary values is sent
as a text packet in which each value is replaced by a placeholder
``{"_placeholder":true,"num":N}`` (N counts depth-first), followed by the N
binary values as separate Engine.IO binary messages.

The encoder produces exactly what the reference encoder (npm
``socket.io-parser``) produces for the same value. The decoder accepts what the
reference decoder accepts, with these deliberate exceptions, where the
reference's loose JavaScript number parsing lets garbage through:

* the type must be one of the digits ``0``-``6`` (the reference reads an empty
  string or a space as ``CONNECT``);
* the attachment count and the ack id are ASCII decimal digits only (the
  reference also takes ``" 1"``, ``"1e0"`` or ``"0x1"``); an ack id must not
  exceed ``2**53 - 1`` (JavaScript's largest exact integer);
* ``EVENT``, ``ACK``, ``CONNECT_ERROR`` and the binary types must carry a
  payload (the reference lets ``"2"`` through with no data, which its server
  then dispatches as an event named ``undefined``);
* a numeric event name must be finite (``2[1e999]`` would name the event
  ``Infinity``, which cannot be sent back: JSON writes it ``null``);
* a placeholder's ``num`` must be an integer (the reference takes ``0.5`` and
  substitutes ``undefined``), and placeholders are checked as soon as the text
  part arrives instead of after the last attachment.

Like the reference, decoded ``BINARY_EVENT``/``BINARY_ACK`` packets come out as
``EVENT``/``ACK`` with the attachments put back in place, so the layers above
only ever see ``EVENT`` and ``ACK``; event names may be numbers, as in the
reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import ProtocolError
from .jsonlib import JSONModule, OrjsonJSON, StdlibJSON, default_json

__all__ = [
    "RESERVED_EVENTS",
    "Decoder",
    "Encoder",
    "Packet",
    "PacketType",
    "deconstruct_binary",
    "reconstruct_binary",
]


class PacketType(IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


#: Event names a peer may not send: they have a meaning of their own on one side
#: or the other (the reference parser refuses the same list).
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)

#: JavaScript's ``Number.MAX_SAFE_INTEGER``: larger ack ids cannot round-trip.
MAX_ACK_ID = 2**53 - 1


@dataclass(slots=True)
class Packet:
    """One Socket.IO packet.

    ``data`` is ``[name, *args]`` for ``EVENT``, ``[*args]`` for ``ACK``, a dict
    or ``None`` for ``CONNECT``, a dict (or, from old peers, a str) for
    ``CONNECT_ERROR``, ``None`` for ``DISCONNECT``. Binary values inside the
    data are :class:`bytes` (:class:`bytearray` and :class:`memoryview` are
    accepted when encoding).
    """

    type: PacketType
    namespace: str = "/"
    data: Any = None
    id: int | None = None


_CONNECT = PacketType.CONNECT
_DISCONNECT = PacketType.DISCONNECT
_EVENT = PacketType.EVENT
_ACK = PacketType.ACK
_CONNECT_ERROR = PacketType.CONNECT_ERROR
_BINARY_EVENT = PacketType.BINARY_EVENT
_BINARY_ACK = PacketType.BINARY_ACK

_TYPES: dict[str, PacketType] = {str(int(t)): t for t in PacketType}
_DIGIT = ("0", "1", "2", "3", "4", "5", "6")
_BINARY = (bytes, bytearray, memoryview)
_ASCII_DIGITS = frozenset("0123456789")
_JSON_SPACE = frozenset(" \t\n\r")


def _deconstruct(data: Any, buffers: list[bytes]) -> Any:
    """Copy ``data`` with binary values replaced by numbered placeholders.

    Numbering is depth-first in list and dict order, like the reference's
    ``deconstructPacket``.
    """
    if isinstance(data, _BINARY):
        placeholder = {"_placeholder": True, "num": len(buffers)}
        buffers.append(bytes(data))
        return placeholder
    if isinstance(data, (list, tuple)):
        return [_deconstruct(item, buffers) for item in data]
    if isinstance(data, dict):
        return {key: _deconstruct(value, buffers) for key, value in data.items()}
    return data


def _check_placeholders(data: Any, count: int) -> None:
    """Raise unless every placeholder in ``data`` names one of ``count`` attachments.

    Iterative, as is :func:`_reconstruct`: a JSON module may return data nested
    deeper than Python's recursion limit (``JSON.parse`` has no depth limit, and
    neither does the fallback of :mod:`.jsonlib`), and a RecursionError must not
    escape the decoder.
    """
    stack = [data]
    pop = stack.pop
    extend = stack.extend
    while stack:
        item = pop()
        if isinstance(item, list):
            extend(item)
        elif isinstance(item, dict):
            if item.get("_placeholder") is True:
                num = item.get("num")
                if type(num) is not int or not 0 <= num < count:
                    raise ProtocolError("illegal attachments: invalid placeholder")
            else:
                extend(item.values())


def _reconstruct(data: list[Any], buffers: list[bytes]) -> list[Any]:
    """Put attachments back in place of their placeholders (in place).

    ``data`` is the (list) payload of a binary packet, already vetted by
    :func:`_check_placeholders`.
    """
    stack: list[Any] = [data]
    pop = stack.pop
    append = stack.append
    while stack:
        container = pop()
        pairs = enumerate(container) if isinstance(container, list) else container.items()
        for key, value in pairs:
            if isinstance(value, dict):
                if value.get("_placeholder") is True:
                    container[key] = buffers[value["num"]]
                else:
                    append(value)
            elif isinstance(value, list):
                append(value)
    return data


def deconstruct_binary(data: Any, buffers: list[bytes]) -> Any:
    """``data`` with every binary value replaced by a numbered placeholder
    (``{"_placeholder": true, "num": n}``, depth-first), the values appended to
    ``buffers``: the structure of a binary packet, also what python-socketio's
    message-queue format carries."""
    return _deconstruct(data, buffers)


def reconstruct_binary(data: list[Any], buffers: list[bytes]) -> list[Any]:
    """The inverse of :func:`deconstruct_binary` (in place); ``ProtocolError``
    when a placeholder names no buffer."""
    _check_placeholders(data, len(buffers))
    return _reconstruct(data, buffers)


class Encoder:
    """Encode packets as the Engine.IO ``message`` data to send.

    Stateless: one instance may serve every connection and thread.
    """

    __slots__ = ("_dumps", "_fast_dumps")

    def __init__(self, json: JSONModule | None = None) -> None:
        module = default_json if json is None else json
        self._dumps = module.dumps
        # A dumps known to raise TypeError for bytes lets the common case (no
        # binary) skip walking the data; an arbitrary user module might encode
        # bytes somehow, so with one of those the data is always walked first.
        fast: Any = None
        if OrjsonJSON is not None and isinstance(module, OrjsonJSON):
            fast = module.dumps_fast
        elif isinstance(module, StdlibJSON):
            fast = module.dumps
        self._fast_dumps = fast

    def encode(self, packet: Packet) -> list[str | bytes]:
        """Return ``[text, *attachments]``.

        ``EVENT``/``ACK`` packets whose data holds binary values become
        ``BINARY_EVENT``/``BINARY_ACK`` with placeholders, followed by the
        binary values; the text is the Engine.IO ``message`` data (no leading
        ``4``). Raises :class:`ValueError` (or the JSON module's
        :class:`TypeError`) for a packet that cannot be encoded: these are bugs
        in the caller, not in the peer. Data nested too deeply for Python to
        walk is one of them (a :class:`ValueError`, not a RecursionError).
        """
        try:
            ptype = packet.type
            data = packet.data
            namespace = packet.namespace
            ack_id = packet.id
            if namespace == "/":
                head = ""
            elif namespace[:1] == "/" and "," not in namespace:
                head = namespace + ","
            else:
                raise ValueError(f"invalid namespace {namespace!r}")
            if ack_id is not None:
                if type(ack_id) is not int or not 0 <= ack_id <= MAX_ACK_ID:
                    raise ValueError(f"invalid ack id {ack_id!r}")
                head += str(ack_id)

            if ptype is _EVENT or ptype is _ACK or ptype is _BINARY_EVENT or ptype is _BINARY_ACK:
                if not isinstance(data, (list, tuple)):
                    raise ValueError(f"{ptype.name} data must be a list, not {type(data).__name__}")
                binary = ptype is _BINARY_EVENT or ptype is _BINARY_ACK
                fast = self._fast_dumps
                if fast is not None and not binary:
                    try:
                        return [_DIGIT[ptype] + head + fast(data)]
                    except TypeError:
                        pass  # maybe bytes inside: take the exact path
                buffers: list[bytes] = []
                stripped = _deconstruct(data, buffers)
                event = ptype is _EVENT or ptype is _BINARY_EVENT
                if not buffers:
                    return [("2" if event else "3") + head + self._dumps(stripped)]
                text = f"{'5' if event else '6'}{len(buffers)}-{head}{self._dumps(stripped)}"
                result: list[str | bytes] = [text]
                result.extend(buffers)
                return result

            if ptype is _CONNECT:
                if data is None:
                    return ["0" + head]
                if not isinstance(data, dict):
                    raise ValueError(f"CONNECT data must be a dict, not {type(data).__name__}")
            elif ptype is _DISCONNECT:
                if data is not None:
                    raise ValueError("DISCONNECT carries no data")
                return ["1" + head]
            elif ptype is _CONNECT_ERROR:
                if not isinstance(data, (dict, str)):
                    raise ValueError(
                        f"CONNECT_ERROR data must be a dict, not {type(data).__name__}"
                    )
            else:
                raise ValueError(f"unknown packet type {ptype!r}")
            return [_DIGIT[ptype] + head + self._dumps(data)]
        except RecursionError:
            raise ValueError("data nested too deeply to encode") from None


class Decoder:
    """Decode the Engine.IO ``message`` data received from one peer.

    Keep one per connection: a binary packet's text part and its attachments
    arrive as separate messages, and the decoder holds the partial packet in
    between. After a :class:`ProtocolError` the decoder refuses everything
    (the connection must be closed, as the reference server does).
    """

    __slots__ = ("_loads", "_max_attachments", "_pending", "_buffers", "_expected", "_failed")

    def __init__(self, json: JSONModule | None = None, max_attachments: int = 10) -> None:
        self._loads = (default_json if json is None else json).loads
        self._max_attachments = max_attachments
        self._pending: Packet | None = None
        self._buffers: list[bytes] = []
        self._expected = 0
        self._failed = False

    @property
    def awaiting_attachments(self) -> int:
        """How many binary attachments the packet being reassembled still needs."""
        return self._expected - len(self._buffers) if self._pending is not None else 0

    def feed(self, data: str | bytes) -> Packet | None:
        """Take one Engine.IO ``message`` data; return the packet it completes.

        Returns ``None`` while the attachments of a binary packet are awaited.
        Raises :class:`ProtocolError` for anything malformed.
        """
        if self._failed:
            raise ProtocolError("decoder unusable after an earlier error")
        try:
            if isinstance(data, str):
                if self._pending is not None:
                    raise ProtocolError("got plaintext data when reconstructing a packet")
                return self._decode_text(data)
            if isinstance(data, _BINARY):
                return self._take_attachment(bytes(data))
            raise ProtocolError(f"cannot decode {type(data).__name__}")
        except ProtocolError:
            self._fail()
            raise

    def _fail(self) -> None:
        self._failed = True
        self._pending = None
        self._buffers = []

    def _take_attachment(self, data: bytes) -> Packet | None:
        packet = self._pending
        if packet is None:
            raise ProtocolError("got binary data when not reconstructing a packet")
        buffers = self._buffers
        buffers.append(data)
        if len(buffers) < self._expected:
            return None
        packet.data = _reconstruct(packet.data, buffers)
        self._pending = None
        self._buffers = []
        return packet

    def _decode_text(self, text: str) -> Packet | None:
        ptype = _TYPES.get(text[:1])
        if ptype is None:
            raise ProtocolError(f"unknown packet type {text[:1]!r}")
        length = len(text)
        pos = 1
        attachments = 0
        if ptype is _BINARY_EVENT or ptype is _BINARY_ACK:
            dash = text.find("-", 1)
            count = text[1:dash]
            if dash < 0 or not count or not _ASCII_DIGITS.issuperset(count):
                raise ProtocolError("illegal attachments")
            if len(count) > 9 or int(count) > self._max_attachments:
                raise ProtocolError("too many attachments")
            attachments = int(count)
            if attachments < 1:
                raise ProtocolError("illegal attachments")
            pos = dash + 1

        namespace = "/"
        if text.startswith("/", pos):
            comma = text.find(",", pos)
            if comma < 0:
                namespace = text[pos:]
                pos = length
            else:
                namespace = text[pos:comma]
                pos = comma + 1

        ack_id = None
        if pos < length and text[pos] in _ASCII_DIGITS:
            start = pos
            pos += 1
            while pos < length and text[pos] in _ASCII_DIGITS:
                pos += 1
            if pos - start > 16 or (ack_id := int(text[start:pos])) > MAX_ACK_ID:
                raise ProtocolError("ack id too large")

        if pos < length:
            if text[pos] in _JSON_SPACE:
                # The reference reads leading whitespace as (part of) an ack id.
                raise ProtocolError("invalid payload: unexpected whitespace")
            try:
                data = self._loads(text[pos:])
            except Exception:  # any failure of the JSON module is the peer's fault
                raise ProtocolError("invalid payload: not JSON") from None
            _check_payload(ptype, data)
        elif ptype is _CONNECT or ptype is _DISCONNECT:
            data = None
        else:
            raise ProtocolError(f"invalid payload: {ptype.name} needs data")

        if attachments:
            _check_placeholders(data, attachments)
            packet = Packet(_EVENT if ptype is _BINARY_EVENT else _ACK, namespace, data, ack_id)
            self._pending = packet
            self._expected = attachments
            return None
        return Packet(ptype, namespace, data, ack_id)


def _check_payload(ptype: PacketType, data: Any) -> None:
    """Raise unless ``data`` has the shape the packet type calls for."""
    if ptype is _EVENT or ptype is _BINARY_EVENT:
        if isinstance(data, list) and data:
            name = data[0]
            if isinstance(name, str):
                if name not in RESERVED_EVENTS:
                    return
                raise ProtocolError(f"invalid payload: reserved event name {name!r}")
            if type(name) is int or (type(name) is float and math.isfinite(name)):
                return
        raise ProtocolError("invalid payload: EVENT needs [name, ...args]")
    if ptype is _ACK or ptype is _BINARY_ACK:
        if isinstance(data, list):
            return
        raise ProtocolError("invalid payload: ACK needs an array")
    if ptype is _CONNECT:
        if isinstance(data, dict):
            return
        raise ProtocolError("invalid payload: CONNECT takes an object")
    if ptype is _CONNECT_ERROR:
        if isinstance(data, (dict, str)):
            return
        raise ProtocolError("invalid payload: CONNECT_ERROR needs an object")
    raise ProtocolError("invalid payload: DISCONNECT carries no data")
