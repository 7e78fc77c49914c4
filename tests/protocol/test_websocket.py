"""The WebSocket layer against websockets' real sans-I/O client, plus raw frames.

The peer is :class:`websockets.client.ClientProtocol`: a complete client
implementation (masking, permessage-deflate, close handshake, validation of
the server's handshake response) that runs here without sockets. Malformed
input that no real client would produce is written by hand.
"""

from __future__ import annotations

import base64
import os
import struct
import sys
import tracemalloc
import zlib
from collections.abc import Sequence
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State as WSState
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from flask_relay.protocol.websocket import (
    DEFAULT_MAX_MESSAGE_SIZE,
    BinaryMessage,
    Closed,
    Ping,
    Pong,
    Rejection,
    State,
    TextMessage,
    WebSocketConnection,
    accept,
    build_frame,
)

# ---------------------------------------------------------------------------
# helpers


def client_protocol(
    *,
    deflate: bool = False,
    subprotocols: Sequence[str] | None = None,
    path: str = "/ws?room=1",
    origin: str | None = None,
) -> tuple[ClientProtocol, str, list[tuple[str, str]]]:
    """A real client and the request it would send (target and headers)."""
    client = ClientProtocol(
        parse_uri(f"ws://127.0.0.1:5000{path}"),
        origin=origin,  # type: ignore[arg-type]
        extensions=[ClientPerMessageDeflateFactory()] if deflate else None,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        max_size=None,
    )
    request = client.connect()
    client.send_request(request)
    client.data_to_send()  # the request bytes: our HTTP server's business
    return client, request.path, list(request.headers.raw_items())


def connect(
    *, deflate: bool = False, client_deflate: bool | None = None, **kwargs: Any
) -> tuple[ClientProtocol, WebSocketConnection]:
    """Handshake a real client with ``accept``; both ends end up OPEN."""
    client, target, headers = client_protocol(
        deflate=deflate if client_deflate is None else client_deflate,
        subprotocols=kwargs.pop("client_subprotocols", None),
    )
    conn = accept("GET", target, headers, compression=deflate, **kwargs)
    assert isinstance(conn, WebSocketConnection), conn
    client.receive_data(conn.data_to_send())
    [response] = client.events_received()
    assert isinstance(response, Response)
    assert response.status_code == 101
    assert client.state is WSState.OPEN, client.handshake_exc
    return client, conn


def to_server(client: ClientProtocol, conn: WebSocketConnection) -> list[Any]:
    """Deliver what the client wrote; return the server's events."""
    return conn.receive_data(b"".join(client.data_to_send()))


def to_client(conn: WebSocketConnection, client: ClientProtocol) -> list[Frame]:
    """Deliver what the server wrote; return the frames the client parsed."""
    data = conn.data_to_send()
    if data:
        client.receive_data(data)
    if conn.should_close_transport and not client.reader.eof:
        client.receive_eof()
    return [e for e in client.events_received() if isinstance(e, Frame)]


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """A client frame built by hand, so it can be wrong on purpose."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def server_frames(data: bytes) -> list[Frame]:
    """Parse frames written by the server (unmasked, no extension)."""
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


def raw_conn(**kwargs: Any) -> WebSocketConnection:
    """A connection whose handshake came from a plain header list."""
    conn = accept("GET", "/ws", good_headers(), **kwargs)
    assert isinstance(conn, WebSocketConnection)
    assert conn.data_to_send().startswith(b"HTTP/1.1 101 ")
    return conn


KEY = base64.b64encode(b"0123456789abcdef").decode()


def good_headers(**changes: str | None) -> list[tuple[str, str]]:
    headers = {
        "Host": "127.0.0.1:5000",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return list(headers.items())


def assert_closed_with(events: list[Any], conn: WebSocketConnection, code: int) -> Closed:
    """``Closed(code)`` is the last event and our close frame is already queued."""
    assert events, "expected a Closed event"
    closed = events[-1]
    assert isinstance(closed, Closed), events
    assert closed.code == code, closed
    assert not any(isinstance(e, Closed) for e in events[:-1])
    assert conn.closed and conn.state is State.CLOSED
    assert conn.close_code == code
    out = conn.data_to_send()
    frames = server_frames(out)
    assert frames and frames[-1].opcode is Opcode.CLOSE, frames
    assert Close.parse(frames[-1].data).code == code
    assert conn.should_close_transport
    return closed


# ---------------------------------------------------------------------------
# handshake


def test_handshake_accepts_real_client_and_keeps_target() -> None:
    client, conn = connect()
    assert conn.target == "/ws?room=1"
    assert conn.subprotocol is None
    assert conn.compression is False
    assert conn.state is State.OPEN and conn.open and not conn.closed
    assert conn.close_code is None and conn.close_reason is None
    assert not conn.should_close_transport


def test_handshake_takes_bytes_from_httptools() -> None:
    headers = [(k.encode(), v.encode()) for k, v in good_headers()]
    conn = accept(b"GET", b"/ws", headers)
    assert isinstance(conn, WebSocketConnection)
    response = conn.data_to_send()
    # RFC 6455 section 1.3 example key/accept pair, computed independently.
    import hashlib

    expected = base64.b64encode(
        hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    )
    assert b"Sec-WebSocket-Accept: " + expected + b"\r\n" in response
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert response.endswith(b"\r\n\r\n")


def test_extra_headers_go_into_the_101() -> None:
    conn = accept("GET", "/", good_headers(), extra_headers=[("Set-Cookie", "a=b")])
    assert isinstance(conn, WebSocketConnection)
    assert b"\r\nSet-Cookie: a=b\r\n" in conn.data_to_send()


def parse_rejection(rejection: Rejection) -> tuple[int, dict[str, str], bytes]:
    """Parse the serialized response back, independently of its fields."""
    raw = rejection.serialize()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("text/plain")
    return int(status), headers, body


@pytest.mark.parametrize(
    ("method", "version", "headers", "status", "words"),
    [
        ("POST", "1.1", good_headers(), 405, "GET"),
        ("GET", "1.0", good_headers(), 505, "HTTP/1.1"),
        ("GET", "1.1", good_headers(Sec_WebSocket_Key=None), 400, "Sec-WebSocket-Key"),
        ("GET", "1.1", good_headers(Sec_WebSocket_Key="c2hvcnQ="), 400, "Sec-WebSocket-Key"),
        ("GET", "1.1", good_headers(Sec_WebSocket_Key="not base64!!"), 400, "Sec-WebSocket-Key"),
        ("GET", "1.1", good_headers(Sec_WebSocket_Version="8"), 426, "Sec-WebSocket-Version"),
        ("GET", "1.1", good_headers(Sec_WebSocket_Version=None), 426, "Sec-WebSocket-Version"),
        ("GET", "1.1", good_headers(Upgrade=None), 426, "Upgrade"),
        ("GET", "1.1", good_headers(Upgrade="h2c"), 426, "Upgrade"),
        ("GET", "1.1", good_headers(Connection="keep-alive"), 426, "Connection"),
    ],
)
def test_bad_handshakes_are_rejected_with_a_message(
    method: str, version: str, headers: list[tuple[str, str]], status: int, words: str
) -> None:
    result = accept(method, "/ws", headers, http_version=version)
    assert isinstance(result, Rejection)
    assert result.status == status
    parsed_status, parsed_headers, body = parse_rejection(result)
    assert parsed_status == status
    text = body.decode()
    assert text.startswith("Failed to open a WebSocket connection: ")
    assert words in text and words in result.message
    if status == 405:
        assert parsed_headers["allow"] == "GET"
    if status == 426:
        assert parsed_headers["upgrade"] == "websocket"


def test_wrong_version_names_the_supported_one() -> None:
    result = accept("GET", "/", good_headers(Sec_WebSocket_Version="8"))
    assert isinstance(result, Rejection)
    assert ("Sec-WebSocket-Version", "13") in result.headers
    assert "8" in result.message


def test_duplicate_key_is_rejected() -> None:
    headers = [*good_headers(), ("Sec-WebSocket-Key", KEY)]
    result = accept("GET", "/", headers)
    assert isinstance(result, Rejection) and result.status == 400
    assert "Sec-WebSocket-Key" in result.message


# -- origin hook


def test_origin_hook_sees_the_origin_and_can_allow() -> None:
    seen: list[str | None] = []

    def check(origin: str | None) -> bool:
        seen.append(origin)
        return origin == "https://good.example"

    conn = accept("GET", "/", good_headers(Origin="https://good.example"), origin_check=check)
    assert isinstance(conn, WebSocketConnection)
    assert conn.origin == "https://good.example"
    assert seen == ["https://good.example"]


def test_origin_hook_refusal_is_403_naming_the_origin() -> None:
    result = accept(
        "GET", "/", good_headers(Origin="https://evil.example"), origin_check=lambda o: False
    )
    assert isinstance(result, Rejection)
    status, _, body = parse_rejection(result)
    assert status == 403
    assert b"Origin" in body and b"https://evil.example" in body


def test_origin_hook_gets_none_without_origin() -> None:
    seen: list[str | None] = []

    def check(origin: str | None) -> bool:
        seen.append(origin)
        return False

    result = accept("GET", "/", good_headers(), origin_check=check)
    assert isinstance(result, Rejection) and result.status == 403
    assert seen == [None]


def test_origin_hook_that_raises_is_a_500_not_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(origin: str | None) -> bool:
        raise RuntimeError("boom")

    result = accept("GET", "/", good_headers(Origin="x"), origin_check=broken)
    assert isinstance(result, Rejection) and result.status == 500
    assert "boom" in caplog.text  # logged with the traceback for the operator
    assert b"boom" not in result.body  # but not shown to the client


def test_two_origin_headers_are_rejected() -> None:
    headers = [*good_headers(), ("Origin", "a"), ("Origin", "b")]
    result = accept("GET", "/", headers, origin_check=lambda o: True)
    assert isinstance(result, Rejection) and result.status == 400


# -- subprotocols


def test_subprotocol_client_preference_wins() -> None:
    client, conn = connect(
        client_subprotocols=["chat.v2", "chat.v1"], subprotocols=["chat.v1", "chat.v2"]
    )
    assert conn.subprotocol == "chat.v2"
    assert client.subprotocol == "chat.v2"  # the client accepted the choice


def test_no_common_subprotocol_goes_on_without() -> None:
    client, conn = connect(client_subprotocols=["other"], subprotocols=["chat"])
    assert conn.subprotocol is None and client.subprotocol is None


def test_server_subprotocols_but_client_offers_none() -> None:
    client, conn = connect(subprotocols=["chat"])
    assert conn.subprotocol is None


def test_subprotocol_callable_decides() -> None:
    offered: list[list[str]] = []

    def choose(names: list[str]) -> str | None:
        offered.append(names)
        return names[-1]

    client, conn = connect(client_subprotocols=["a", "b", "c"], select_subprotocol=choose)
    assert offered == [["a", "b", "c"]]
    assert conn.subprotocol == "c" == client.subprotocol


def test_subprotocol_callable_returning_unoffered_name_is_500() -> None:
    headers = [*good_headers(), ("Sec-WebSocket-Protocol", "a, b")]
    result = accept("GET", "/", headers, select_subprotocol=lambda names: "zzz")
    assert isinstance(result, Rejection) and result.status == 500


# -- permessage-deflate


def test_deflate_is_off_by_default_even_if_offered() -> None:
    client, conn = connect(deflate=False, client_deflate=True)
    assert conn.compression is False
    assert client.extensions == []


def test_deflate_negotiated_when_enabled() -> None:
    client, conn = connect(deflate=True)
    assert conn.compression is True
    assert [e.name for e in client.extensions] == ["permessage-deflate"]


def test_deflate_enabled_but_not_offered() -> None:
    client, conn = connect(deflate=True, client_deflate=False)
    assert conn.compression is False


@pytest.mark.parametrize("deflate", [False, True])
def test_messages_both_ways(deflate: bool) -> None:
    client, conn = connect(deflate=deflate)
    text = "héllo ✓ " * 50
    blob = os.urandom(300) + b"\x00" * 3000
    client.send_text(text.encode())
    client.send_binary(blob)
    assert to_server(client, conn) == [TextMessage(text), BinaryMessage(blob)]
    conn.send_text(text)
    conn.send_binary(blob)
    frames = to_client(conn, client)
    assert [(f.opcode, bytes(f.data)) for f in frames] == [
        (Opcode.TEXT, text.encode()),
        (Opcode.BINARY, blob),
    ]
    if deflate:  # the repetitive payload really travelled compressed
        client.send_text(text.encode())
        wire = b"".join(client.data_to_send())
        assert len(wire) < len(text.encode()) // 4
        assert conn.receive_data(wire) == [TextMessage(text)]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_length_boundaries(size: int) -> None:
    client, conn = connect()
    data = bytes(i % 251 for i in range(size))
    conn.send_binary(data)
    conn.send_text("x" * size)
    conn.send_frame(build_frame(data))
    frames = to_client(conn, client)
    assert [bytes(f.data) for f in frames] == [data, b"x" * size, data]
    client.send_binary(data)
    client.send_text(b"y" * size)
    assert to_server(client, conn) == [BinaryMessage(data), TextMessage("y" * size)]


def test_send_binary_accepts_bytearray_and_memoryview() -> None:
    client, conn = connect()
    conn.send_binary(bytearray(b"ab"))
    conn.send_binary(memoryview(b"cd" * 5000))
    assert [bytes(f.data) for f in to_client(conn, client)] == [b"ab", b"cd" * 5000]


def test_data_arriving_byte_by_byte() -> None:
    client, conn = connect()
    client.send_text("fragmenté".encode(), fin=False)
    client.send_ping(b"mid")
    client.send_continuation(b" message", fin=True)
    client.send_binary(b"\x01\x02")
    wire = b"".join(client.data_to_send())
    events = []
    for i in range(len(wire)):
        events += conn.receive_data(wire[i : i + 1])
    assert events == [Ping(b"mid"), TextMessage("fragmenté message"), BinaryMessage(b"\x01\x02")]


# ---------------------------------------------------------------------------
# fragmentation, size limit, UTF-8


def test_fragmented_text_split_inside_a_character() -> None:
    client, conn = connect()
    raw = "a€b😀c".encode()
    # cut inside the 3-byte euro sign and the 4-byte emoji
    client.send_text(raw[:2], fin=False)
    client.send_continuation(raw[2:6], fin=False)
    client.send_continuation(raw[6:], fin=True)
    assert to_server(client, conn) == [TextMessage("a€b😀c")]


def test_fragmented_binary_and_empty_fragments() -> None:
    client, conn = connect()
    client.send_binary(b"", fin=False)
    client.send_continuation(b"abc", fin=False)
    client.send_continuation(b"", fin=False)
    client.send_continuation(b"def", fin=True)
    assert to_server(client, conn) == [BinaryMessage(b"abcdef")]


def test_fragmented_deflate_message() -> None:
    client, conn = connect(deflate=True)
    client.send_text(b"first part ", fin=False)
    client.send_continuation(b"second part", fin=True)
    assert to_server(client, conn) == [TextMessage("first part second part")]


def test_default_limit() -> None:
    conn = raw_conn()
    ok = conn.receive_data(raw_frame(2, b"\x00" * DEFAULT_MAX_MESSAGE_SIZE))
    assert ok == [BinaryMessage(b"\x00" * DEFAULT_MAX_MESSAGE_SIZE)]
    events = conn.receive_data(raw_frame(2, b"\x00" * (DEFAULT_MAX_MESSAGE_SIZE + 1)))
    assert_closed_with(events, conn, 1009)


def test_huge_declared_length_fails_before_the_payload_arrives() -> None:
    conn = raw_conn(max_message_size=1000)
    # Only the header: a 2**62-byte frame. Nothing is buffered or allocated.
    header = raw_frame(2, b"", length=2**62)[:10] + b"mask"
    events = conn.receive_data(header)
    closed = assert_closed_with(events, conn, 1009)
    assert "1000" in closed.reason  # the limit is named
    assert conn.close_reason == closed.reason


def test_fragments_adding_up_over_the_limit() -> None:
    client, conn = connect(max_message_size=100)
    client.send_binary(b"a" * 60, fin=False)
    assert to_server(client, conn) == []
    client.send_continuation(b"b" * 41, fin=True)
    events = to_server(client, conn)
    assert_closed_with(events, conn, 1009)


def test_limit_applies_after_decompression() -> None:
    client, conn = connect(deflate=True, max_message_size=10_000)
    client.send_binary(b"\x00" * 10_000)
    assert to_server(client, conn) == [BinaryMessage(b"\x00" * 10_000)]
    client.send_binary(b"\x00" * 1_000_000)  # compresses to ~1 KB
    wire = b"".join(client.data_to_send())
    assert len(wire) < 10_000
    assert_closed_with(conn.receive_data(wire), conn, 1009)


def test_1009_close_frame_reaches_the_client() -> None:
    client, conn = connect(max_message_size=10)
    client.send_text(b"x" * 11)
    events = to_server(client, conn)
    assert events == [Closed(1009, events[0].reason)]
    to_client(conn, client)
    assert client.close_rcvd is not None and client.close_rcvd.code == 1009


def test_invalid_utf8_single_frame_is_1007() -> None:
    conn = raw_conn()
    events = conn.receive_data(raw_frame(1, b"ok \xc3\x28"))
    closed = assert_closed_with(events, conn, 1007)
    assert "UTF-8" in closed.reason


@pytest.mark.parametrize(
    "bad",
    [b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xff"],
    ids=["surrogate", "overlong", "beyond-10FFFF", "ff"],
)
def test_invalid_utf8_kinds(bad: bytes) -> None:
    conn = raw_conn()
    assert_closed_with(conn.receive_data(raw_frame(1, b"abc" + bad)), conn, 1007)


def test_invalid_utf8_fails_fast_in_a_fragment() -> None:
    conn = raw_conn()
    # The message is not finished, but its first fragment already cannot be
    # UTF-8: fail now instead of buffering the rest.
    events = conn.receive_data(raw_frame(1, b"abc\xff", fin=False))
    assert_closed_with(events, conn, 1007)


def test_truncated_utf8_at_end_of_message_is_1007() -> None:
    conn = raw_conn()
    assert conn.receive_data(raw_frame(1, b"ab\xe2\x82", fin=False)) == []
    events = conn.receive_data(raw_frame(0, b"", fin=True))
    assert_closed_with(events, conn, 1007)


def test_frames_after_bad_utf8_are_not_acted_on() -> None:
    conn = raw_conn()
    wire = raw_frame(9, b"before") + raw_frame(1, b"\xff") + raw_frame(9, b"after")
    events = conn.receive_data(wire)
    assert events[0] == Ping(b"before")
    assert isinstance(events[-1], Closed) and events[-1].code == 1007
    frames = server_frames(conn.data_to_send())
    assert [(f.opcode, bytes(f.data)[:2]) for f in frames] == [
        (Opcode.PONG, b"be"),
        (Opcode.CLOSE, b"\x03\xef"),
    ]


def test_invalid_utf8_in_binary_is_fine() -> None:
    conn = raw_conn()
    assert conn.receive_data(raw_frame(2, b"\xff\xfe")) == [BinaryMessage(b"\xff\xfe")]


# ---------------------------------------------------------------------------
# protocol violations (hand-built frames)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(raw_frame(1, b"hi", masked=False), id="unmasked"),
        pytest.param(raw_frame(1, b"hi", rsv=4), id="rsv1-without-extension"),
        pytest.param(raw_frame(1, b"hi", rsv=1), id="rsv3"),
        pytest.param(raw_frame(3, b"hi"), id="reserved-opcode-3"),
        pytest.param(raw_frame(0xB, b"hi"), id="reserved-opcode-B"),
        pytest.param(raw_frame(9, b"p" * 126), id="long-control-frame"),
        pytest.param(raw_frame(9, b"p", fin=False), id="fragmented-ping"),
        pytest.param(raw_frame(0, b"x"), id="continuation-without-start"),
        pytest.param(raw_frame(1, b"a", fin=False) + raw_frame(1, b"b"), id="new-message-mid-way"),
        pytest.param(raw_frame(8, b"\x03"), id="close-one-byte"),
        pytest.param(raw_frame(8, struct.pack("!H", 1005)), id="close-code-1005"),
        pytest.param(raw_frame(8, struct.pack("!H", 999)), id="close-code-999"),
        pytest.param(raw_frame(8, struct.pack("!H", 5000)), id="close-code-5000"),
    ],
)
def test_protocol_violations_close_with_1002(wire: bytes) -> None:
    conn = raw_conn()
    closed = assert_closed_with(conn.receive_data(wire), conn, 1002)
    assert closed.reason  # says what was wrong
    assert conn.receive_data(raw_frame(1, b"more")) == []


def test_close_mid_message_drops_the_fragment_and_answers_1000() -> None:
    # Control frames may be interleaved with fragments (RFC 6455 5.4); a close
    # ends the connection normally (Autobahn 7.1.5), nothing after it counts.
    conn = raw_conn()
    wire = raw_frame(1, b"a", fin=False) + raw_frame(8, b"\x03\xe8") + raw_frame(0, b"b")
    assert_closed_with(conn.receive_data(wire), conn, 1000)
    assert conn.receive_data(raw_frame(1, b"more")) == []


def test_close_reason_with_invalid_utf8_is_1007() -> None:
    conn = raw_conn()
    assert_closed_with(conn.receive_data(raw_frame(8, b"\x03\xe8\xff")), conn, 1007)


# ---------------------------------------------------------------------------
# ordering of the single output


def test_pong_sits_between_app_sends_in_order() -> None:
    client, conn = connect()
    conn.send_text("A")
    client.send_ping(b"ping-1")
    assert to_server(client, conn) == [Ping(b"ping-1")]
    conn.send_text("B")
    client.send_ping(b"ping-2")
    client.send_text(b"hello")
    assert to_server(client, conn) == [Ping(b"ping-2"), TextMessage("hello")]
    conn.send_frame(build_frame("C"))
    frames = to_client(conn, client)
    assert [(f.opcode.name, bytes(f.data)) for f in frames] == [
        ("TEXT", b"A"),
        ("PONG", b"ping-1"),
        ("TEXT", b"B"),
        ("PONG", b"ping-2"),
        ("TEXT", b"C"),
    ]


def test_handshake_response_comes_before_first_frames() -> None:
    client, target, headers = client_protocol()
    conn = accept("GET", target, headers)
    assert isinstance(conn, WebSocketConnection)
    conn.send_text("welcome")
    client.receive_data(conn.data_to_send())
    response, frame = client.events_received()
    assert isinstance(response, Response) and isinstance(frame, Frame)
    assert frame.data == b"welcome"


def test_data_to_send_is_empty_when_idle() -> None:
    client, conn = connect()
    assert conn.data_to_send() == b""
    conn.send_text("x")
    assert conn.data_to_send() != b""
    assert conn.data_to_send() == b""


def test_server_ping_and_client_pong() -> None:
    client, conn = connect()
    conn.send_ping(b"hb")
    [ping] = to_client(conn, client)
    assert ping.opcode is Opcode.PING and ping.data == b"hb"
    assert to_server(client, conn) == [Pong(b"hb")]  # the client answered
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)


# ---------------------------------------------------------------------------
# closing


def test_client_initiated_close_reply_precedes_closed() -> None:
    client, conn = connect()
    conn.send_text("last words")
    client.send_close(1001, "going away")
    events = to_server(client, conn)
    assert events == [Closed(1001, "going away")]
    # When Closed is returned, the echo is already queued after the app's data.
    frames = server_frames(conn.data_to_send())
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert Close.parse(frames[1].data) == Close(1001, "going away")
    assert conn.should_close_transport
    assert conn.state is State.CLOSED and conn.closed and not conn.open
    assert (conn.close_code, conn.close_reason) == (1001, "going away")
    # Everything after is discarded, including the application's sends.
    conn.send_text("too late")
    conn.send_frame(build_frame("too late"))
    conn.send_binary(b"x")
    conn.send_ping()
    conn.close()
    assert conn.data_to_send() == b""
    assert conn.receive_data(raw_frame(1, b"ignored")) == []
    assert conn.eof_received() == []


def test_client_close_is_completed_for_the_client() -> None:
    client, conn = connect()
    client.send_close(1000, "bye")
    to_server(client, conn)
    to_client(conn, client)
    assert client.state is WSState.CLOSED
    assert client.close_code == 1000 and client.close_reason == "bye"


def test_empty_close_frame_is_1005() -> None:
    conn = raw_conn()
    events = conn.receive_data(raw_frame(8))
    assert events == [Closed(1005, "")]
    frames = server_frames(conn.data_to_send())
    assert frames[-1].opcode is Opcode.CLOSE and frames[-1].data == b""


def test_server_initiated_close_handshake() -> None:
    client, conn = connect()
    conn.send_text("bye soon")
    conn.close(4000, "shutting down")
    assert conn.state is State.CLOSING and not conn.open and not conn.closed
    assert not conn.should_close_transport  # wait for the peer's answer
    conn.send_text("discarded")
    frames = to_client(conn, client)
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE]
    # The real client answered with its own close frame.
    events = to_server(client, conn)
    assert events == [Closed(4000, "shutting down")]
    assert conn.state is State.CLOSED and conn.should_close_transport
    assert conn.data_to_send() == b""  # no second close frame
    to_client(conn, client)
    assert client.state is WSState.CLOSED


def test_messages_still_arrive_while_closing() -> None:
    conn = raw_conn()
    conn.close()
    conn.data_to_send()
    events = conn.receive_data(raw_frame(1, b"in flight") + raw_frame(8, b"\x03\xe8"))
    assert events == [TextMessage("in flight"), Closed(1000, "")]


def test_server_close_then_peer_vanishes_is_1006() -> None:
    client, conn = connect()
    conn.close()
    conn.data_to_send()
    assert conn.eof_received() == [Closed(1006, "")]
    assert conn.state is State.CLOSED


def test_close_arguments() -> None:
    client, conn = connect()
    for code in (999, 1004, 1005, 1006, 1015, 2999, 5000):
        with pytest.raises(ValueError):
            conn.close(code)
    conn.close(1000, "é" * 100)  # 200 bytes: cut at a character boundary
    [frame] = to_client(conn, client)
    close = Close.parse(frame.data)
    assert close.reason == "é" * 61 and len(frame.data) <= 125
    conn.close()  # second call is a no-op
    assert conn.data_to_send() == b""


def test_eof_mid_frame_is_1006() -> None:
    conn = raw_conn()
    wire = raw_frame(1, b"incomplete message")
    assert conn.receive_data(wire[:-3]) == []
    assert conn.eof_received() == [Closed(1006, "")]
    assert conn.close_code == 1006 and conn.closed
    assert conn.data_to_send() == b""  # nothing to tell a peer that is gone
    assert conn.eof_received() == []
    assert conn.receive_data(b"x") == []


def test_eof_mid_fragmented_message_and_when_idle() -> None:
    conn = raw_conn()
    conn.receive_data(raw_frame(1, b"part", fin=False))
    assert conn.eof_received() == [Closed(1006, "")]
    idle = raw_conn()
    assert idle.eof_received() == [Closed(1006, "")]


def test_eof_after_failure_adds_nothing() -> None:
    conn = raw_conn()
    events = conn.receive_data(raw_frame(1, b"\xff"))
    assert_closed_with(events, conn, 1007)
    assert conn.eof_received() == []


# ---------------------------------------------------------------------------
# broadcast


def test_one_prebuilt_frame_to_many_connections() -> None:
    pairs = [connect() for _ in range(3)] + [connect(deflate=True) for _ in range(2)]
    text_frame = build_frame("to everyone ✓")
    bin_frame = build_frame(b"\x00\x01 binary")
    for i, (_, conn) in enumerate(pairs):
        conn.send_text(f"before {i}")
        conn.send_frame(text_frame)
        conn.send_frame(bin_frame)
        conn.send_text(f"after {i}")
    for i, (client, conn) in enumerate(pairs):
        frames = to_client(conn, client)
        assert [(f.opcode.name, bytes(f.data)) for f in frames] == [
            ("TEXT", f"before {i}".encode()),
            ("TEXT", "to everyone ✓".encode()),
            ("BINARY", b"\x00\x01 binary"),
            ("TEXT", f"after {i}".encode()),
        ]
        assert client.state is WSState.OPEN  # no protocol error on either side


def test_prebuilt_frame_is_uncompressed_and_deflate_context_survives() -> None:
    client, conn = connect(deflate=True)
    frame = build_frame("plain" * 20)
    assert frame[0] == 0x81  # FIN + text, RSV1 clear: not compressed
    # Compressed messages around the plain one share the compression context
    # (context takeover): the client must still inflate them correctly.
    for _ in range(3):
        conn.send_text("compressed " * 20)
        conn.send_frame(frame)
    frames = to_client(conn, client)
    assert [bytes(f.data) for f in frames] == [b"compressed " * 20, b"plain" * 20] * 3
    assert client.state is WSState.OPEN


def test_build_frame_headers() -> None:
    assert build_frame("") == b"\x81\x00"
    assert build_frame(b"") == b"\x82\x00"
    assert build_frame(b"a" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert build_frame("a" * 65536)[:10] == b"\x81\x7f" + struct.pack("!Q", 65536)
    assert server_frames(build_frame(bytearray(b"xy")))[0].data == b"xy"


# ---------------------------------------------------------------------------
# an independent deflate peer: raw zlib instead of websockets' extension


def test_deflate_message_from_raw_zlib() -> None:
    client, conn = connect(deflate=True)
    compressor = zlib.compressobj(wbits=-12)
    payload = compressor.compress(b"hello zlib") + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(b"\x00\x00\xff\xff")
    events = conn.receive_data(raw_frame(1, payload[:-4], rsv=4))
    assert events == [TextMessage("hello zlib")]


# ---------------------------------------------------------------------------
# the fast path for small frames: same events as websockets' parser, however cut


def _mixed_stream() -> tuple[bytes, list[Any]]:
    """Frames the fast path takes and frames it leaves to websockets, interleaved."""
    parts: list[tuple[bytes, Any]] = [
        (raw_frame(0x1, b"hello"), TextMessage("hello")),
        (raw_frame(0x2, b"\x00\x01\xff"), BinaryMessage(b"\x00\x01\xff")),
        (raw_frame(0x1, ("é" * 100).encode()), TextMessage("é" * 100)),
        (raw_frame(0x9, b"p"), Ping(b"p")),
        (raw_frame(0x1, b""), TextMessage("")),
        (raw_frame(0x2, b"x" * 70_000), BinaryMessage(b"x" * 70_000)),  # 64-bit length
        (raw_frame(0x1, b"frag-", fin=False), None),
        (raw_frame(0x0, b"ment"), TextMessage("frag-ment")),
        (raw_frame(0xA, b"q"), Pong(b"q")),
        (raw_frame(0x2, b"y" * 300), BinaryMessage(b"y" * 300)),  # 16-bit length
        (raw_frame(0x1, b"bye"), TextMessage("bye")),
    ]
    expected = [event for _frame, event in parts if event is not None]
    return b"".join(frame for frame, _ in parts), expected


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 1000, 1 << 20])
def test_small_frame_fast_path_gives_the_same_events_however_the_bytes_are_cut(
    chunk: int,
) -> None:
    stream, expected = _mixed_stream()
    conn = raw_conn()
    events: list[Any] = []
    for i in range(0, len(stream), chunk):
        events += conn.receive_data(stream[i : i + chunk])
    assert events == expected
    # ... and the pong for the ping is queued, the connection still open.
    assert [f.opcode for f in server_frames(conn.data_to_send())] == [Opcode.PONG]
    assert conn.state is State.OPEN
    # Still in step after all that: one more small frame in one piece.
    assert conn.receive_data(raw_frame(0x1, b"again")) == [TextMessage("again")]


def test_fast_path_frames_then_invalid_utf8_fails_with_1007_after_them() -> None:
    conn = raw_conn()
    data = raw_frame(0x1, b"ok") + raw_frame(0x1, b"\xff\xfe") + raw_frame(0x1, b"lost")
    events = conn.receive_data(data)
    assert events[0] == TextMessage("ok")
    assert_closed_with(events[1:], conn, 1007)


def test_fast_path_respects_max_size() -> None:
    conn = raw_conn(max_message_size=10)
    events = conn.receive_data(raw_frame(0x1, b"0123456789") + raw_frame(0x1, b"0123456789!"))
    assert events[0] == TextMessage("0123456789")
    assert_closed_with(events[1:], conn, 1009)


def test_fast_path_leaves_unmasked_and_rsv_frames_to_websockets() -> None:
    conn = raw_conn()
    assert_closed_with(conn.receive_data(raw_frame(0x1, b"x", masked=False)), conn, 1002)
    conn = raw_conn()
    assert_closed_with(conn.receive_data(raw_frame(0x1, b"x", rsv=4)), conn, 1002)


# ---------------------------------------------------------------------------------------
# memory per connection


@pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason="attributes kept inline (no per-instance dict) is CPython 3.13's layout",
)
def test_an_open_connection_costs_under_two_kilobytes_of_python_memory() -> None:
    # Idle memory per connection is a target (docs/performance.md). The protocol
    # object is the biggest part of it: websockets' Protocol has 26 attributes,
    # and past 30 names CPython gives every instance a ~1.6 KB dict. Measured:
    # ~3.5 KB per accepted connection with the dict, ~1.9 KB without.
    raw_conn()  # warm: import-time and first-use caches
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        conns = [raw_conn() for _ in range(200)]
        per_conn = (tracemalloc.get_traced_memory()[0] - before) / len(conns)
    finally:
        tracemalloc.stop()
    assert per_conn < 2500, f"{per_conn:.0f} bytes per connection"
    # Still a working connection after the saving: a fragmented message is reassembled.
    conn = conns[0]
    events = conn.receive_data(
        raw_frame(1, b"frag", fin=False) + raw_frame(0, b"ment", fin=True)
    )
    assert events == [TextMessage("fragment")]
