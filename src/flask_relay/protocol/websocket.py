"""The WebSocket connection: handshake, messages and one ordered output.

This is a thin layer over the sans-I/O :class:`websockets.server.ServerProtocol`,
which parses frames, enforces the size limit, answers pings and runs the closing
handshake. We add what the rest of Flask-Relay needs and what websockets leaves
to its own I/O layers:

* a handshake from a request that our HTTP server already parsed (websockets
  would otherwise parse the request a second time), with an origin hook and
  subprotocol choice in the client's order of preference;
* reassembly of fragmented messages, and UTF-8 validation of text messages done
  *inside* the frame parser, so a bad text frame stops parsing right there
  (frames after it are never acted on) and fails the connection with 1007;
* small event types (:class:`TextMessage`, :class:`BinaryMessage`,
  :class:`Ping`, :class:`Pong`, :class:`Closed`) so that nothing above this
  module imports websockets;
* one ordered output, :meth:`WebSocketConnection.data_to_send`, holding the
  handshake response, automatic pong and close replies, and the application's
  own frames in the order they happened;
* pre-built frames for broadcast (:func:`build_frame` once,
  :meth:`WebSocketConnection.send_frame` per recipient: a list append), and a
  direct frame writer for :meth:`~WebSocketConnection.send_text` /
  :meth:`~WebSocketConnection.send_binary` when no extension is active, which
  is several times cheaper than building a websockets ``Frame`` per message.

Incoming frames have a fast path too: while no extension is active and the
peer's bytes start at a frame boundary, complete final masked text/binary
frames below 64 KiB are parsed here (the header with two byte reads, the
unmasking with websockets' C ``apply_mask``). Anything else (a control frame,
a fragment, a frame cut by the TCP read, one over ``max_size``, invalid UTF-8)
goes to websockets' parser from that frame on, which then handles it exactly as
before; a header walker over what websockets is fed tells when its input ends
at a frame boundary again. websockets' generator-based parser was ~15% of an
``async def`` echo route's CPU.

Ordering guarantee: every reply that a received frame causes (a pong, the echo
of a close frame, the close frame that fails the connection) is in the output
when :meth:`~WebSocketConnection.receive_data` returns, after anything the
application sent before that call and before anything it sends after it. In
particular the close reply is already in :meth:`data_to_send` when the
:class:`Closed` event is returned, so an I/O layer that writes the output and
then handles the events never loses the close frame.

Nothing here raises for bad input from the peer: malformed frames, oversize
messages, invalid UTF-8 and a vanished peer all end in exactly one
:class:`Closed` event (and, where the protocol calls for it, a close frame in
the output). A bad handshake is a :class:`Rejection`, never an exception.

websockets internals this module relies on
------------------------------------------
Besides websockets' documented sans-I/O API (``ServerProtocol.accept``,
``send_response``, ``receive_data``, ``receive_eof``, ``send_text``,
``send_binary``, ``send_ping``, ``send_close``, ``data_to_send``, ``state``,
``close_rcvd``, ``close_sent``, ``subprotocol``, ``extensions``), this module
uses these undocumented parts of ``websockets.protocol.Protocol`` /
``websockets.server.ServerProtocol`` (checked by
``tests/protocol/test_websockets_internals.py``, which fails naming the one that
disappeared; ``pyproject.toml`` pins websockets below its next major version):

* methods overridden: ``ServerProtocol.parse`` (skipped: the request is already
  parsed, we call ``Protocol.parse`` directly), ``ServerProtocol.process_origin``,
  ``ServerProtocol.select_subprotocol`` and ``Protocol.recv_frame`` (in-parser
  reassembly and UTF-8 checks);
* attributes read or written: ``writes`` (the pending output, drained in place),
  ``events`` (cleared: we keep our own event list), ``parser_exc`` (why the
  parser stopped), ``eof_sent`` (time to close TCP), ``current_size`` (a
  fragmented message in progress, reset when a close frame interrupts it) and
  ``origin`` (set by ``process_request``);
* functions: ``websockets.speedups.apply_mask`` (``websockets.utils.apply_mask``
  when websockets was built without its C extension), for the fast path.
"""

from __future__ import annotations

import codecs
import enum
import logging
import struct
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import InvalidHeader, InvalidOrigin
from websockets.extensions import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol
from websockets.protocol import State as _WSState
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask as _apply_mask

from .closecode import CloseCode, check_close_code

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BinaryMessage",
    "Closed",
    "Event",
    "Ping",
    "Pong",
    "Rejection",
    "State",
    "TextMessage",
    "WebSocketConnection",
    "accept",
    "build_frame",
]

logger = logging.getLogger("flask_relay.websocket")

DEFAULT_MAX_MESSAGE_SIZE = 1_000_000
"""Default limit on one incoming message, in bytes (after decompression).

The same as Engine.IO's ``max_http_buffer_size`` default, so a Socket.IO
message that fits over long-polling also fits over WebSocket.
"""

# Close reasons must fit in a control frame: 125 bytes minus the 2-byte code.
_MAX_REASON_BYTES = 123


# --------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A complete text message (fragments already joined, UTF-8 checked)."""

    data: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A complete binary message (fragments already joined)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """The peer sent a ping; the pong is already in the output."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """The peer sent a pong (for keepalive bookkeeping)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over for the application; always the last event.

    ``code`` and ``reason`` are, in this order of precedence:

    * the code and reason of the close frame *we* sent to fail the connection
      because the peer misbehaved (1002 protocol error, 1007 invalid UTF-8,
      1009 message too big, 1011 internal error);
    * the code and reason of the peer's close frame (1005 and ``""`` when the
      frame carried no code);
    * 1006 and ``""`` when the transport ended without a close frame.

    When ``Closed`` is returned, any close frame to send is already in
    :meth:`WebSocketConnection.data_to_send`.
    """

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | Closed
"""What :meth:`WebSocketConnection.receive_data` returns, in arrival order."""


class State(enum.IntEnum):
    """The connection's state as the application sees it."""

    OPEN = 1
    """Messages flow both ways."""
    CLOSING = 2
    """We sent a close frame and wait for the peer's; sends are discarded."""
    CLOSED = 3
    """:class:`Closed` was returned; nothing more happens."""


# --------------------------------------------------------------------------
# Handshake


@dataclass(slots=True)
class Rejection:
    """An HTTP response refusing the upgrade, with a plain-text explanation.

    The I/O layer writes it (``serialize()`` gives the whole response) and
    closes the connection afterwards (``Connection: close`` is among the
    headers).
    """

    status: int
    reason_phrase: str
    headers: list[tuple[str, str]]
    body: bytes
    message: str = field(default="")
    """The explanation alone, for logs (the body also carries it)."""

    def serialize(self) -> bytes:
        """The complete HTTP/1.1 response: status line, headers and body."""
        lines = [f"HTTP/1.1 {self.status} {self.reason_phrase}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        lines.append("\r\n")
        return "".join(lines).encode("latin-1") + self.body


OriginCheck = Callable[[str | None], bool]
"""Called with the ``Origin`` header (``None`` when absent); ``False`` -> 403."""

SubprotocolChoice = Callable[[list[str]], str | None]
"""Called with the subprotocols the client offered, in its order; returns one
of them or ``None`` to go on without a subprotocol."""

HeaderPairs = Iterable[tuple[str | bytes, str | bytes]]


def _text(value: str | bytes) -> str:
    # httptools hands over bytes; HTTP header bytes outside ASCII are latin-1.
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _reject(
    status: int,
    reason_phrase: str,
    message: str,
    extra: Sequence[tuple[str, str]] = (),
) -> Rejection:
    body = f"Failed to open a WebSocket connection: {message}.\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *extra,
    ]
    return Rejection(status, reason_phrase, headers, body, message)


def _compression_factory() -> ServerExtensionFactory:
    # The settings websockets itself uses by default: 4 KiB windows and a
    # small memLevel keep the per-connection zlib state near 64 KiB instead of
    # ~300 KiB, at a small cost in compression ratio.
    return ServerPerMessageDeflateFactory(
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )


def accept(
    method: str | bytes,
    target: str | bytes,
    headers: HeaderPairs,
    *,
    http_version: str = "1.1",
    origin_check: OriginCheck | None = None,
    subprotocols: Sequence[str] = (),
    select_subprotocol: SubprotocolChoice | None = None,
    compression: bool = False,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> WebSocketConnection | Rejection:
    """Answer a WebSocket upgrade request that the HTTP server already parsed.

    Returns a :class:`WebSocketConnection` whose :meth:`data_to_send` starts
    with the ``101 Switching Protocols`` response, or a :class:`Rejection` that
    explains what was wrong with the request: 405 for a method other than GET,
    505 for HTTP/1.0, 426 (with ``Sec-WebSocket-Version: 13``) for another
    WebSocket version, 403 when ``origin_check`` refuses the origin, 400 for a
    missing or invalid ``Upgrade``, ``Connection`` or ``Sec-WebSocket-Key``
    header, and 500 when ``origin_check`` or ``select_subprotocol`` raised
    (logged with its traceback).

    ``subprotocols`` is the server's list; the first subprotocol *the client*
    offered that is in it wins (clients list theirs by preference). No match
    means no subprotocol, not a refusal, as in Flask-Sock.
    ``select_subprotocol``, if given, decides instead and must return one of
    the offered names or ``None``.

    ``compression`` enables permessage-deflate when the client offers it; it is
    off by default because it costs CPU per message and zlib memory per
    connection. ``max_message_size`` (``None``: no limit) bounds one incoming
    message after decompression; larger ones fail the connection with 1009.
    ``extra_headers`` are added to the 101 response (e.g. ``Set-Cookie``).
    """
    method = _text(method)
    if method != "GET":
        return _reject(
            405,
            "Method Not Allowed",
            f"the method must be GET, not {method}",
            [("Allow", "GET")],
        )
    if http_version != "1.1":
        return _reject(
            505,
            "HTTP Version Not Supported",
            f"WebSocket needs HTTP/1.1, not HTTP/{http_version}",
        )
    ws_headers = Headers()
    for name, value in headers:
        ws_headers[_text(name)] = _text(value)

    try:
        versions = ws_headers.get_all("Sec-WebSocket-Version")
    except Exception:  # pragma: no cover - get_all never raises today
        versions = []
    if versions != ["13"]:
        got = ", ".join(versions) if versions else "none"
        return _reject(
            426,
            "Upgrade Required",
            f"unsupported Sec-WebSocket-Version {got}; this server speaks 13",
            [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")],
        )

    protocol = _ServerProtocol(
        origin_check=origin_check,
        server_subprotocols=subprotocols,
        choose=select_subprotocol,
        extensions=[_compression_factory()] if compression else None,
        max_size=max_message_size,
    )
    response = protocol.accept(Request(_text(target), ws_headers))
    if response.status_code != 101:
        text = response.body.decode("utf-8", "replace").strip()
        prefix = "Failed to open a WebSocket connection: "
        message = text[len(prefix) :] if text.startswith(prefix) else text
        message = message.split("\n", 1)[0].rstrip(".")
        extra = [
            (k, v) for k, v in response.headers.raw_items() if k.lower() in ("allow", "upgrade")
        ]
        return _reject(response.status_code, response.reason_phrase, message, extra)
    for name, value in extra_headers:
        response.headers[name] = value
    protocol.send_response(response)  # queues the 101 and moves to OPEN
    return WebSocketConnection(protocol, _text(target))


class _HandshakeHooks(NamedTuple):
    """What the handshake hooks of :class:`_ServerProtocol` decide with."""

    origin_check: OriginCheck | None
    subprotocols: frozenset[str]
    choose: SubprotocolChoice | None


class _ServerProtocol(ServerProtocol):
    """websockets' server protocol with our hooks and in-parser reassembly.

    Memory: CPython keeps an instance's attributes inline, without a dict, while
    its class has at most 30 attribute names; past that every instance gets a
    dict of ~1.6 KB. websockets' protocol sets 26, so ours are three (the
    handshake hooks in one tuple) and the reassembly state of a fragmented
    message lives in class-level defaults until a fragmented message arrives:
    ~1.3 KB less per connection (measured with tracemalloc).
    """

    # Reassembly state of a fragmented message (set on the instance while one is
    # in progress; the parts lists are assigned when it starts).
    text_decoder: codecs.IncrementalDecoder | None = None
    fragmented: Opcode | None = None
    text_parts: list[str]
    binary_parts: list[bytes]

    def __init__(
        self,
        *,
        origin_check: OriginCheck | None,
        server_subprotocols: Sequence[str],
        choose: SubprotocolChoice | None,
        extensions: Sequence[ServerExtensionFactory] | None,
        max_size: int | None,
    ) -> None:
        super().__init__(extensions=extensions, max_size=max_size, logger=logger)
        self.frame_limit = max_size  # for the fast path (websockets' name varies)
        self.hooks = _HandshakeHooks(origin_check, frozenset(server_subprotocols), choose)
        # Our events, appended while websockets' parser runs, in frame order.
        self.out_events: list[Event] = []

    def parse(self) -> Generator[None]:
        # Our HTTP server parsed the upgrade request already: go straight to
        # frames instead of ServerProtocol.parse(), which reads a request first.
        # websockets starts this generator in its __init__: the bare ``yield``
        # stops it here, so websockets' own parser (two more suspended
        # generators, ~0.6 KB) is started only by the first bytes the fast
        # path leaves to it, at a frame boundary; a connection whose frames all
        # take the fast path (an idle Socket.IO client's pongs) never starts it.
        yield
        yield from Protocol.parse(self)

    # -- handshake hooks -----------------------------------------------

    def process_origin(self, headers: Headers) -> Origin | None:
        try:
            origin = headers.get("Origin")
        except MultipleValuesError:
            raise InvalidHeader("Origin", "multiple values") from None
        check = self.hooks.origin_check
        if check is not None and not check(origin):
            raise InvalidOrigin(origin)
        return Origin(origin) if origin is not None else None

    def select_subprotocol(self, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        offered: list[str] = [str(name) for name in subprotocols]
        choose = self.hooks.choose
        if choose is not None:
            choice = choose(offered)
            if choice is not None and choice not in offered:
                raise ValueError(f"select_subprotocol returned {choice!r}, not offered")
            return Subprotocol(choice) if choice is not None else None
        for name in offered:
            if name in self.hooks.subprotocols:
                return Subprotocol(name)
        return None

    # -- frames -> events ----------------------------------------------

    def recv_frame(self, frame: Frame) -> None:
        # Runs inside websockets' parser, once per frame. Raising
        # UnicodeDecodeError here makes the parser fail the connection with
        # 1007 and discard everything after this frame.
        opcode = frame.opcode
        if opcode is Opcode.TEXT:
            super().recv_frame(frame)  # checks there is no unfinished message
            if frame.fin:
                self.out_events.append(TextMessage(_decode(frame.data)))
            else:
                decoder = codecs.getincrementaldecoder("utf-8")()
                self.text_parts = [_decode_part(decoder, frame.data, False)]
                self.text_decoder = decoder
                self.fragmented = opcode
        elif opcode is Opcode.BINARY:
            super().recv_frame(frame)
            if frame.fin:
                self.out_events.append(BinaryMessage(bytes(frame.data)))
            else:
                self.binary_parts = [bytes(frame.data)]
                self.fragmented = opcode
        elif opcode is Opcode.CONT:
            super().recv_frame(frame)  # checks a message is in progress
            if self.fragmented is Opcode.TEXT:
                assert self.text_decoder is not None
                self.text_parts.append(_decode_part(self.text_decoder, frame.data, frame.fin))
                if frame.fin:
                    text = "".join(self.text_parts)
                    self.text_parts = []
                    self.text_decoder = None
                    self.fragmented = None
                    self.out_events.append(TextMessage(text))
            else:
                self.binary_parts.append(bytes(frame.data))
                if frame.fin:
                    data = b"".join(self.binary_parts)
                    self.binary_parts = []
                    self.fragmented = None
                    self.out_events.append(BinaryMessage(data))
        elif opcode is Opcode.PING:
            super().recv_frame(frame)  # queues the pong
            self.out_events.append(Ping(bytes(frame.data)))
        elif opcode is Opcode.PONG:
            super().recv_frame(frame)
            self.out_events.append(Pong(bytes(frame.data)))
        else:
            # CLOSE: websockets echoes it (or, if we initiated, completes the
            # handshake) and switches to discarding input. Closed is added
            # by WebSocketConnection once the parser has stopped. A close
            # frame may interrupt a fragmented message (control frames can be
            # interleaved): the unfinished message is dropped and the close
            # answered normally, not failed with 1002 (Autobahn 7.1.5).
            if self.current_size is not None:
                self.current_size = None
                self.fragmented = None
                self.text_parts = []
                self.binary_parts = []
                self.text_decoder = None
            super().recv_frame(frame)
        # websockets keeps its own event list; we never read it.
        self.events.clear()


def _parse_simple(data: bytes | bytearray, limit: int | None) -> tuple[list[Event], int]:
    """The events of the complete, final, masked text/binary frames below 64 KiB
    at the start of ``data`` (which starts at a frame boundary), and how many
    bytes they took. Stops at the first other frame, which websockets parses."""
    events: list[Event] = []
    i = 0
    n = len(data)
    while n - i >= 6:
        b0 = data[i]
        b1 = data[i + 1]
        if b1 < 0x80 or (b0 != 0x81 and b0 != 0x82):
            break  # unmasked, not final, a control frame or RSV bits: websockets
        length = b1 & 0x7F
        if length < 126:
            start = i + 6
        elif length == 126 and n - i >= 8:
            length = (data[i + 2] << 8) | data[i + 3]
            start = i + 8
        else:
            break
        end = start + length
        if end > n or (limit is not None and length > limit):
            break
        payload = _apply_mask(data[start:end], data[start - 4 : start])
        if b0 == 0x81:
            try:
                events.append(TextMessage(payload.decode()))
            except UnicodeDecodeError:
                break  # websockets fails the connection with 1007
        else:
            events.append(BinaryMessage(payload))
        i = end
    return events, i


def _decode(data: bytes | bytearray | memoryview) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise _utf8_error(exc) from None


def _decode_part(
    decoder: codecs.IncrementalDecoder, data: bytes | bytearray | memoryview, final: bool
) -> str:
    try:
        return decoder.decode(data, final)
    except UnicodeDecodeError as exc:
        raise _utf8_error(exc) from None


def _utf8_error(exc: UnicodeDecodeError) -> UnicodeDecodeError:
    # websockets turns the exception into close reason "<reason> at position
    # <start>"; make that reason say what was wrong.
    return UnicodeDecodeError(
        exc.encoding, exc.object, exc.start, exc.end, f"invalid UTF-8 in text message: {exc.reason}"
    )


# --------------------------------------------------------------------------
# Outgoing frames


def _header(first: int, length: int) -> bytes:
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode
_SMALL_TEXT_HEADERS = [bytes((_TEXT, n)) for n in range(126)]
_SMALL_BINARY_HEADERS = [bytes((_BINARY, n)) for n in range(126)]


def build_frame(data: str | bytes | bytearray | memoryview) -> bytes:
    """One complete, unmasked, uncompressed frame: text for ``str``, binary for
    ``bytes``.

    Build it once and pass it to :meth:`WebSocketConnection.send_frame` of
    every recipient. It is valid on every server-side connection, including
    those that negotiated permessage-deflate: RSV1 is clear, which tells the
    peer the message is not compressed (RFC 7692 section 6), and an
    uncompressed message does not touch either side's compression context.
    """
    if isinstance(data, str):
        payload = data.encode()
        n = len(payload)
        return (_SMALL_TEXT_HEADERS[n] if n < 126 else _header(_TEXT, n)) + payload
    payload = bytes(data)
    n = len(payload)
    return (_SMALL_BINARY_HEADERS[n] if n < 126 else _header(_BINARY, n)) + payload


# --------------------------------------------------------------------------
# The connection


class WebSocketConnection:
    """One accepted WebSocket connection, server side. Not thread-safe: the
    event loop that owns the socket is the only caller.

    Typical I/O loop::

        conn = accept(...)                   # a WebSocketConnection here
        transport.write(conn.data_to_send()) # the 101 response
        # on data:
        events = conn.receive_data(data)
        if out := conn.data_to_send(): transport.write(out)
        if conn.should_close_transport: transport.close()
        for event in events: ...             # Closed comes last

    Sends (``send_*``, ``close``) after the closing handshake began are
    discarded: the RFC forbids data after a close frame, and the application
    learns about the end from the :class:`Closed` event, not from an
    exception in the middle of a broadcast.
    """

    __slots__ = (
        "_closed",
        "_fast",
        "_head",
        "_out",
        "_protocol",
        "_skip",
        "close_code",
        "close_reason",
        "target",
    )

    def __init__(self, protocol: _ServerProtocol, target: str) -> None:
        # Built by accept(); protocol.writes holds the 101 response.
        self._protocol = protocol
        self._out: list[bytes] = protocol.data_to_send()
        self._fast = not protocol.extensions
        # Where websockets' parser is in the peer's byte stream: the bytes of a
        # frame header seen so far, and the payload bytes still to come. Both
        # empty: at a frame boundary, where the fast path may take over.
        self._head = b""
        self._skip = 0
        self._closed = False
        self.target = target
        """The request target (path and query) of the upgrade request."""
        self.close_code: int | None = None
        """Code of the :class:`Closed` event, ``None`` until then."""
        self.close_reason: str | None = None
        """Reason of the :class:`Closed` event, ``None`` until then."""

    # -- what was negotiated -------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol chosen during the handshake, if any."""
        return self._protocol.subprotocol

    @property
    def compression(self) -> bool:
        """Whether permessage-deflate was negotiated."""
        return not self._fast

    @property
    def origin(self) -> str | None:
        """The request's ``Origin`` header, if any."""
        return self._protocol.origin

    # -- state ---------------------------------------------------------

    @property
    def state(self) -> State:
        if self._closed:
            return State.CLOSED
        if self._protocol.state is _WSState.OPEN:
            return State.OPEN
        return State.CLOSING

    @property
    def open(self) -> bool:
        """True while sends are delivered."""
        return self._protocol.state is _WSState.OPEN and not self._closed

    @property
    def closed(self) -> bool:
        """True once the :class:`Closed` event was returned."""
        return self._closed

    @property
    def should_close_transport(self) -> bool:
        """True once the I/O layer should close the TCP connection after
        writing :meth:`data_to_send` (the server closes TCP first, RFC 6455
        section 7.1.1)."""
        return self._protocol.eof_sent

    # -- input ---------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        """Feed bytes from the network; returns the events they complete.

        Never raises for bad input: a protocol violation, an oversize message
        or invalid UTF-8 puts a close frame in the output and returns
        :class:`Closed` as the last event. Data after :class:`Closed` is
        ignored.
        """
        if self._closed:
            return []
        p = self._protocol
        fast: list[Event] | None = None
        if (
            self._fast
            and not self._skip
            and not self._head
            and p.fragmented is None
            and p.state is _WSState.OPEN
        ):
            fast, used = _parse_simple(data, p.frame_limit)
            if used == len(data):
                return fast
            data = data[used:]
        self._follow(data)
        p.receive_data(data)
        if p.writes:
            self._out.extend(p.writes)
            p.writes.clear()
        events = p.out_events
        if p.state is not _WSState.OPEN:
            self._check_closed(events)
        if events:
            p.out_events = []
        if fast:
            fast.extend(events)
            return fast
        return events

    def _follow(self, data: bytes | bytearray) -> None:
        """Walk the frame headers of what websockets is about to parse, so that
        the fast path resumes exactly at the next frame boundary."""
        head = self._head
        skip = self._skip
        i = 0
        n = len(data)
        while i < n:
            if skip:
                take = min(skip, n - i)
                skip -= take
                i += take
                continue
            if len(head) < 2:
                take = min(2 - len(head), n - i)
                head += data[i : i + take]
                i += take
                if len(head) < 2:
                    break
            b1 = head[1]
            length = b1 & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if b1 & 0x80 else 0)
            if len(head) < size:
                take = min(size - len(head), n - i)
                head += data[i : i + take]
                i += take
                if len(head) < size:
                    break
            if length == 126:
                length = int.from_bytes(head[2:4], "big")
            elif length == 127:
                length = int.from_bytes(head[2:10], "big")
            skip = length
            head = b""
        self._head = bytes(head)
        self._skip = skip

    def eof_received(self) -> list[Event]:
        """The peer closed its side of TCP (or the transport was lost).

        Returns ``[Closed(1006, "")]`` unless the connection had already
        ended; a message in progress is dropped.
        """
        if self._closed:
            return []
        p = self._protocol
        p.receive_eof()
        if p.writes:
            self._out.extend(p.writes)
            p.writes.clear()
        events = p.out_events
        p.out_events = []
        self._check_closed(events, eof=True)
        return events

    def _check_closed(self, events: list[Event], eof: bool = False) -> None:
        p = self._protocol
        exc = p.parser_exc
        if exc is not None and not isinstance(exc, EOFError):
            # We failed the connection; report our close frame.
            sent = p.close_sent
            code, reason = (sent.code, sent.reason) if sent else (CloseCode.ABNORMAL, "")
        elif p.close_rcvd is not None:
            code, reason = p.close_rcvd.code, p.close_rcvd.reason
        elif eof or exc is not None:
            code, reason = CloseCode.ABNORMAL, ""
        else:
            return  # we sent a close frame and wait for the peer's
        self._closed = True
        self.close_code = int(code)
        self.close_reason = reason
        events.append(Closed(int(code), reason))

    # -- output --------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Queue a text message."""
        if self._closed or self._protocol.state is not _WSState.OPEN:
            return
        if self._fast:
            payload = text.encode()
            n = len(payload)
            self._out.append((_SMALL_TEXT_HEADERS[n] if n < 126 else _header(_TEXT, n)) + payload)
        else:
            self._via_protocol(Opcode.TEXT, text.encode())

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Queue a binary message."""
        if self._closed or self._protocol.state is not _WSState.OPEN:
            return
        if self._fast:
            n = len(data)
            header = _SMALL_BINARY_HEADERS[n] if n < 126 else _header(_BINARY, n)
            if n < 4096:
                self._out.append(header + data)
            else:
                # Skip one copy of a large payload: join() copies it anyway.
                self._out.append(header)
                self._out.append(bytes(data))
        else:
            self._via_protocol(Opcode.BINARY, bytes(data))

    def send_frame(self, frame: bytes) -> None:
        """Queue a frame from :func:`build_frame` (a list append)."""
        if self._closed or self._protocol.state is not _WSState.OPEN:
            return
        self._out.append(frame)

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a ping (payload at most 125 bytes, else ``ValueError``)."""
        if len(data) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        if self._closed or self._protocol.state is not _WSState.OPEN:
            return
        self._protocol.send_ping(data)
        self._drain()

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake.

        The :class:`Closed` event comes when the peer answers (its code and
        reason) or, if it never does, when the I/O layer gives up waiting and
        calls :meth:`eof_received` (1006). ``code`` must be one a close frame
        may carry (1000-1003, 1007-1014, 3000-4999), else ``ValueError``; a
        reason longer than 123 UTF-8 bytes is shortened. No-op unless open.
        """
        check_close_code(code)
        if self._closed or self._protocol.state is not _WSState.OPEN:
            return
        raw = reason.encode()
        if len(raw) > _MAX_REASON_BYTES:
            reason = raw[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
        self._protocol.send_close(code, reason)
        self._drain()

    def data_to_send(self) -> bytes:
        """Everything to write to the socket, in order; ``b""`` when idle.

        One ``bytes`` rather than a list: writing it is one ``transport.write``
        (one ``send`` syscall when the socket is writable), and joining a
        burst of small frames costs less than the per-buffer overhead of
        ``writelines``. A single large chunk is returned without a copy.
        """
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def _via_protocol(self, opcode: Opcode, payload: bytes) -> None:
        # With an extension (permessage-deflate) websockets encodes the frame.
        if opcode is Opcode.TEXT:
            self._protocol.send_text(payload)
        else:
            self._protocol.send_binary(payload)
        self._drain()

    def _drain(self) -> None:
        p = self._protocol
        if p.writes:
            self._out.extend(p.writes)
            p.writes.clear()
