"""Property tests for the WebSocket layer (bounded: a few seconds in all).

Two properties:

* whatever bytes arrive, split however, ``receive_data`` never raises, returns
  only our event types, ends with at most one ``Closed`` that is documented
  (our 1002/1007/1009, a code a peer may send, or 1006), and what we write is
  always a well-formed sequence of server frames ending with the matching
  close frame;
* valid message streams (fragmented, with interleaved control frames, split at
  random points) come out exactly as the messages that went in.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from flask_relay.protocol.websocket import (
    BinaryMessage,
    Closed,
    Ping,
    Pong,
    TextMessage,
    WebSocketConnection,
    accept,
)

KEY_HEADERS = [
    ("Host", "127.0.0.1"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "MDEyMzQ1Njc4OWFiY2RlZg=="),
    ("Sec-WebSocket-Version", "13"),
]


def raw_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True
) -> bytes:
    """A client frame built by hand, so it can be wrong on purpose."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:  # pragma: no cover - the fuzz stays small
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Close codes a peer may legitimately send (RFC 6455 section 7.4).
PEER_CODES = {1000, 1001, 1002, 1003, 1005, *range(1007, 1015), *range(3000, 5000)}
OUR_FAILURES = {1002, 1007, 1009}


def new_conn(deflate: bool, max_message_size: int) -> WebSocketConnection:
    headers = list(KEY_HEADERS)
    if deflate:
        headers.append(("Sec-WebSocket-Extensions", "permessage-deflate"))
    conn = accept("GET", "/", headers, compression=deflate, max_message_size=max_message_size)
    assert isinstance(conn, WebSocketConnection)
    assert conn.data_to_send().startswith(b"HTTP/1.1 101")
    assert conn.compression is deflate
    return conn


def parse_output(data: bytes) -> list[Frame]:
    """Server output must be whole, valid, unmasked frames (RSV bits clear:
    the server never compresses control frames, and the fuzz sends nothing)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            while True:
                next(parser)
        except StopIteration as stop:
            frames.append(stop.value)
    return frames


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(data[last:p])
        last = p
    chunks.append(data[last:])
    return chunks


def check_stream(
    conn: WebSocketConnection, chunks: list[bytes], eof: bool
) -> tuple[list[Any], list[Frame]]:
    events: list[Any] = []
    output = b""
    for chunk in chunks:
        got = conn.receive_data(chunk)
        output += conn.data_to_send()
        if events and isinstance(events[-1], Closed):
            assert got == []  # nothing after Closed
        events += got
    if eof:
        events += conn.eof_received()
        output += conn.data_to_send()
    for e in events:
        assert isinstance(e, (TextMessage, BinaryMessage, Ping, Pong, Closed)), e
    closes = [e for e in events if isinstance(e, Closed)]
    assert len(closes) <= 1
    frames = parse_output(output)
    for f in frames:
        assert f.opcode in (Opcode.PONG, Opcode.CLOSE), f
    if closes:
        assert events[-1] is closes[0]
        closed = closes[0]
        assert conn.closed and conn.close_code == closed.code
        assert closed.code in OUR_FAILURES | PEER_CODES | {1006}, closed
        if closed.code != 1006:
            # Either our failure frame or the echo of the peer's close.
            assert frames and frames[-1].opcode is Opcode.CLOSE
            sent = Close.parse(frames[-1].data) if frames[-1].data else Close(1005, "")
            assert sent.code == closed.code
            assert conn.should_close_transport
    else:
        assert not conn.closed
        assert all(f.opcode is Opcode.PONG for f in frames)
    return events, frames


@FUZZ
@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    deflate=st.booleans(),
    eof=st.booleans(),
)
def test_random_bytes(data: bytes, cuts: list[int], deflate: bool, eof: bool) -> None:
    conn = new_conn(deflate, max_message_size=200)
    check_stream(conn, split(data, cuts), eof)


# Frames that are plausible but often wrong: any opcode, any bits, masked or
# not, lengths near the limits, then a few bytes mutated.
frames_st = st.builds(
    lambda opcode, payload, fin, rsv, masked: raw_frame(
        opcode, payload, fin=fin, rsv=rsv, masked=masked
    ),
    opcode=st.sampled_from([0, 1, 2, 8, 9, 10, 3, 0xB, 0xF]),
    payload=st.one_of(
        st.binary(max_size=40),
        st.text(max_size=20).map(str.encode),
        st.builds(lambda n: b"x" * n, st.sampled_from([125, 126, 199, 200, 201, 300])),
        st.builds(
            lambda code, reason: struct.pack("!H", code) + reason,
            st.integers(0, 65535),
            st.binary(max_size=10),
        ),
    ),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 4, 2, 1]),
    masked=st.sampled_from([True, True, True, False]),
)


@FUZZ
@given(
    frames=st.lists(frames_st, max_size=8),
    mutations=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
    deflate=st.booleans(),
    eof=st.booleans(),
)
def test_mutated_frames(
    frames: list[bytes],
    mutations: list[tuple[int, int]],
    cuts: list[int],
    deflate: bool,
    eof: bool,
) -> None:
    wire = bytearray(b"".join(frames))
    for pos, value in mutations:
        if wire:
            wire[pos % len(wire)] = value
    conn = new_conn(deflate, max_message_size=200)
    check_stream(conn, split(bytes(wire), cuts), eof)


# Valid streams: messages, possibly fragmented, with pings/pongs between frames.
message_st = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=60)),
    st.tuples(st.just("binary"), st.binary(max_size=60)),
    st.tuples(st.just("ping"), st.binary(max_size=20)),
    st.tuples(st.just("pong"), st.binary(max_size=20)),
)


@FUZZ
@given(
    messages=st.lists(message_st, max_size=10),
    pieces=st.lists(st.integers(1, 4), min_size=10, max_size=10),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    control_inside=st.booleans(),
)
def test_valid_streams_round_trip(
    messages: list[tuple[str, Any]], pieces: list[int], cuts: list[int], control_inside: bool
) -> None:
    wire = b""
    expected: list[Any] = []
    for (kind, value), n in zip(messages, pieces[: len(messages)], strict=True):
        if kind in ("ping", "pong"):
            wire += raw_frame(9 if kind == "ping" else 10, value)
            expected.append(Ping(value) if kind == "ping" else Pong(value))
            continue
        raw = value.encode() if kind == "text" else value
        # split into n fragments, anywhere (inside UTF-8 characters too)
        step = max(1, len(raw) // n)
        parts = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
        for i, part in enumerate(parts):
            opcode = (1 if kind == "text" else 2) if i == 0 else 0
            wire += raw_frame(opcode, part, fin=i == len(parts) - 1)
            if control_inside and i < len(parts) - 1:
                token = os.urandom(2)
                wire += raw_frame(9, token)
                expected.append(Ping(token))
        expected.append(TextMessage(value) if kind == "text" else BinaryMessage(value))
    conn = new_conn(False, max_message_size=1000)
    events, frames = check_stream(conn, split(wire, cuts), eof=False)
    assert events == expected
    # every ping got its pong, in order
    pings = [e.data for e in events if isinstance(e, Ping)]
    assert [bytes(f.data) for f in frames] == pings
