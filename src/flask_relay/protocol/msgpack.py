"""Socket.IO packets in the ``socket.io-msgpack-parser`` wire format.

The npm package ``socket.io-msgpack-parser`` (used by the official client with
``parser: require("socket.io-msgpack-parser")`` and by the reference server's
``parser`` option) replaces Socket.IO's text encoding: every packet is one
msgpack-encoded *binary* Engine.IO message, a map::

    {"type": 2, "data": ["chat", "hi", <bin>], "nsp": "/", "id": 7}

``id`` is present only when the packet has an ack id. Binary values travel
inline as msgpack ``bin``, so there are no ``BINARY_EVENT``/``BINARY_ACK``
packets and no attachments: one Engine.IO message, one packet. Why a codec of
its own rather than an option of :mod:`.socketio`: the two formats share only
the packet model (:class:`~.socketio.Packet`), and keeping them apart keeps the
text decoder's hot path free of a branch.

The npm encoder is ``notepack.io``, whose quirks the decoder follows:

* a Node ``ArrayBuffer``/typed array is encoded as ``ext`` type 0 (a
  ``Buffer`` and anything from a browser as ``bin``); both decode to
  :class:`bytes`;
* JavaScript's ``undefined`` is ``fixext 1`` type 0, decoded as ``None``;
* any other ``ext`` value becomes ``[type, bytes]``, as ``notepack.io``
  decodes it (a JavaScript ``Date`` is ``fixext 8`` type 0, which msgpack
  cannot tell from an 8-byte ``ArrayBuffer``: it arrives as 8 bytes);
* keys other than ``type``, ``data``, ``nsp`` and ``id`` are ignored (the
  official client sends an ``options`` key).

The decoder checks what the npm decoder checks (type 0-4, ``nsp`` a string,
the data's shape per type, ``id`` an integer) and, as :mod:`.socketio` does,
a little more: the namespace must start with ``/``, an ack id must be between
0 and ``2**53 - 1``, an event name must be a string (not a reserved one) or a
finite number, and the message must hold exactly one msgpack value.

Needs the ``msgpack`` package (``pip install flask-relay[msgpack]``).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from .errors import ProtocolError
from .socketio import MAX_ACK_ID, RESERVED_EVENTS, Packet, PacketType

__all__ = ["Decoder", "Encoder"]

_CONNECT = PacketType.CONNECT
_DISCONNECT = PacketType.DISCONNECT
_EVENT = PacketType.EVENT
_ACK = PacketType.ACK
_CONNECT_ERROR = PacketType.CONNECT_ERROR
_BINARY_EVENT = PacketType.BINARY_EVENT
_BINARY_ACK = PacketType.BINARY_ACK

#: The packet types of this format (it has no binary types).
_TYPES = {int(t): t for t in (_CONNECT, _DISCONNECT, _EVENT, _ACK, _CONNECT_ERROR)}


def _ext_hook(code: int, data: bytes) -> Any:
    """Decode ``notepack.io``'s ``ext`` values (see the module docstring)."""
    if code == 0:
        if len(data) == 1:
            return None  # undefined
        return data  # ArrayBuffer
    return [code, data]


class Encoder:
    """Encode packets as the one binary Engine.IO message to send.

    Stateless: one instance may serve every connection and thread. Same
    interface as :class:`flask_relay.protocol.socketio.Encoder`.
    """

    __slots__ = ("_packer",)

    def __init__(self) -> None:
        # packb makes a fresh Packer per call; this keeps nothing between calls.
        self._packer = msgpack.packb

    def encode(self, packet: Packet) -> list[str | bytes]:
        """Return ``[message]``, the packet as one msgpack map.

        ``BINARY_EVENT``/``BINARY_ACK`` are sent as ``EVENT``/``ACK`` (binary
        values travel inline). Raises :class:`ValueError` (or msgpack's
        :class:`TypeError` for a value it cannot encode) for a packet that
        cannot be encoded: these are bugs in the caller, not in the peer.
        """
        ptype = packet.type
        data = packet.data
        namespace = packet.namespace
        ack_id = packet.id
        if not isinstance(namespace, str) or namespace[:1] != "/":
            raise ValueError(f"invalid namespace {namespace!r}")
        if ptype is _BINARY_EVENT:
            ptype = _EVENT
        elif ptype is _BINARY_ACK:
            ptype = _ACK
        if ptype is _EVENT or ptype is _ACK:
            if not isinstance(data, (list, tuple)):
                raise ValueError(f"{ptype.name} data must be a list, not {type(data).__name__}")
        elif ptype is _CONNECT:
            if data is not None and not isinstance(data, dict):
                raise ValueError(f"CONNECT data must be a dict, not {type(data).__name__}")
        elif ptype is _DISCONNECT:
            if data is not None:
                raise ValueError("DISCONNECT carries no data")
        elif ptype is _CONNECT_ERROR:
            if not isinstance(data, (dict, str)):
                raise ValueError(f"CONNECT_ERROR data must be a dict, not {type(data).__name__}")
        else:
            raise ValueError(f"unknown packet type {ptype!r}")
        message: dict[str, Any] = {"type": int(ptype)}
        if data is not None:
            message["data"] = data
        message["nsp"] = namespace
        if ack_id is not None:
            if type(ack_id) is not int or not 0 <= ack_id <= MAX_ACK_ID:
                raise ValueError(f"invalid ack id {ack_id!r}")
            message["id"] = ack_id
        try:
            encoded: bytes = self._packer(message, use_bin_type=True)
        except OverflowError as exc:  # an int beyond 64 bits
            raise ValueError(f"cannot encode: {exc}") from None
        except RecursionError:
            raise ValueError("data nested too deeply to encode") from None
        return [encoded]


class Decoder:
    """Decode the Engine.IO messages received from one peer.

    Same interface as :class:`flask_relay.protocol.socketio.Decoder`: keep one
    per connection; after a :class:`ProtocolError` it refuses everything (the
    connection must be closed).
    """

    __slots__ = ("_failed",)

    def __init__(self) -> None:
        self._failed = False

    @property
    def awaiting_attachments(self) -> int:
        """Always 0: this format has no attachments."""
        return 0

    def feed(self, data: str | bytes) -> Packet | None:
        """Take one Engine.IO message; return its packet.

        Raises :class:`ProtocolError` for anything malformed, a text message
        included (this format only uses binary messages).
        """
        if self._failed:
            raise ProtocolError("decoder unusable after an earlier error")
        try:
            return self._decode(data)
        except ProtocolError:
            self._failed = True
            raise

    def _decode(self, data: str | bytes) -> Packet:
        if isinstance(data, str):
            raise ProtocolError("msgpack parser: got a text message")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"cannot decode {type(data).__name__}")
        try:
            decoded = msgpack.unpackb(
                data, raw=False, use_list=True, strict_map_key=False, ext_hook=_ext_hook
            )
        except Exception:  # every failure of the unpacker is the peer's fault
            raise ProtocolError("invalid payload: not msgpack") from None
        if not isinstance(decoded, dict):
            raise ProtocolError("invalid payload: a packet is a map")
        raw_type = decoded.get("type")
        ptype = _TYPES.get(raw_type) if type(raw_type) is int else None
        if ptype is None:
            raise ProtocolError("invalid packet type")
        namespace = decoded.get("nsp")
        if not isinstance(namespace, str) or namespace[:1] != "/":
            raise ProtocolError("invalid namespace")
        ack_id = decoded.get("id")
        if ack_id is not None and (type(ack_id) is not int or not 0 <= ack_id <= MAX_ACK_ID):
            raise ProtocolError("invalid packet id")
        payload = decoded.get("data")
        _check_payload(ptype, payload)
        return Packet(ptype, namespace, payload, ack_id)


def _check_payload(ptype: PacketType, data: Any) -> None:
    """Raise unless ``data`` has the shape the packet type calls for."""
    if ptype is _EVENT:
        if isinstance(data, list) and data:
            name = data[0]
            if isinstance(name, str):
                if name not in RESERVED_EVENTS:
                    return
                raise ProtocolError(f"invalid payload: reserved event name {name!r}")
            if type(name) is int or (type(name) is float and math.isfinite(name)):
                return
        raise ProtocolError("invalid payload: EVENT needs [name, ...args]")
    if ptype is _ACK:
        if isinstance(data, list):
            return
        raise ProtocolError("invalid payload: ACK needs an array")
    if ptype is _CONNECT:
        if data is None or isinstance(data, dict):
            return
        raise ProtocolError("invalid payload: CONNECT takes an object")
    if ptype is _CONNECT_ERROR:
        if isinstance(data, (dict, str)):
            return
        raise ProtocolError("invalid payload: CONNECT_ERROR needs an object")
    if data is not None:
        raise ProtocolError("invalid payload: DISCONNECT carries no data")
