"""The Socket.IO packet codecs a server can speak, chosen by name.

Socket.IO lets server and client swap the packet encoding (the reference's
``parser`` option); both sides must use the same one. ``"default"`` (alias
``"json"``) is :mod:`.socketio`, the text format with binary attachments;
``"msgpack"`` is :mod:`.msgpack`, the ``socket.io-msgpack-parser`` format.
The Socket.IO server holds one encoder for every connection and builds one
decoder per connection, through :class:`Codec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import socketio
from .jsonlib import JSONModule
from .socketio import Packet

__all__ = ["SERIALIZERS", "Codec", "PacketDecoder", "PacketEncoder", "make_codec"]

#: The names ``serializer=`` accepts.
SERIALIZERS = ("default", "json", "msgpack")


class PacketEncoder(Protocol):
    """Turns a packet into the Engine.IO messages to send (thread-safe)."""

    def encode(self, packet: Packet) -> list[str | bytes]: ...


class PacketDecoder(Protocol):
    """Turns one peer's Engine.IO messages into packets (one per connection)."""

    @property
    def awaiting_attachments(self) -> int: ...

    def feed(self, data: str | bytes) -> Packet | None: ...


@dataclass(frozen=True, slots=True)
class Codec:
    """A serializer: its name, the shared encoder and a decoder factory."""

    name: str
    encoder: PacketEncoder
    new_decoder: Callable[[], PacketDecoder]


def make_codec(
    serializer: str | None = "default", json: JSONModule | None = None, max_attachments: int = 10
) -> Codec:
    """The codec for ``serializer``.

    Raises :class:`ValueError` for an unknown name and :class:`RuntimeError`
    (with the install hint) for ``"msgpack"`` without the ``msgpack`` package.
    """
    if serializer in (None, "default", "json"):
        return Codec(
            "default",
            socketio.Encoder(json),
            lambda: socketio.Decoder(json, max_attachments),
        )
    if serializer == "msgpack":
        # Deferred on purpose: .msgpack imports the optional msgpack package.
        try:
            from . import msgpack
        except ImportError as exc:
            raise RuntimeError(
                "serializer='msgpack' needs the msgpack package: pip install 'flask-relay[msgpack]'"
            ) from exc
        return Codec("msgpack", msgpack.Encoder(), msgpack.Decoder)
    raise ValueError(
        f"serializer={serializer!r} is not supported: use 'default' (JSON) or 'msgpack'"
    )
