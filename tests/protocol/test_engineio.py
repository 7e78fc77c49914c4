"""Engine.IO v4 codec: packets, WebSocket frames and long-polling payloads.

The examples come from the protocol summary (/work/shared/protocol.md, section 1)
and the Engine.IO v4 specification; interop with the reference parser is in
test_codec_interop.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_relay.protocol import ProtocolError
from flask_relay.protocol.engineio import (
    SEPARATOR,
    Packet,
    PacketType,
    decode_packet,
    decode_payload,
    encode_control,
    encode_message,
    encode_packet,
    encode_payload,
    join_payload,
)

T = PacketType


# -- single packets (one WebSocket frame) ------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "packet"),
    [
        ('0{"sid":"S","upgrades":[]}', Packet(T.OPEN, '{"sid":"S","upgrades":[]}')),
        (  # protocol.md, "Handshake": exactly these five keys
            '0{"sid":"S","upgrades":["websocket"],"pingInterval":25000,'
            '"pingTimeout":20000,"maxPayload":1000000}',
            Packet(
                T.OPEN,
                '{"sid":"S","upgrades":["websocket"],"pingInterval":25000,'
                '"pingTimeout":20000,"maxPayload":1000000}',
            ),
        ),
        ("1", Packet(T.CLOSE)),
        ("2", Packet(T.PING)),
        ("2probe", Packet(T.PING, "probe")),
        ("3", Packet(T.PONG)),
        ("3probe", Packet(T.PONG, "probe")),
        ("4hello", Packet(T.MESSAGE, "hello")),
        ('42["hello"]', Packet(T.MESSAGE, '2["hello"]')),
        ("4", Packet(T.MESSAGE)),
        ("4h\u00e9llo \u2603 \U0001f600", Packet(T.MESSAGE, "h\u00e9llo \u2603 \U0001f600")),
        ("4a\x1fb\x00", Packet(T.MESSAGE, "a\x1fb\x00")),
        ("5", Packet(T.UPGRADE)),
        ("6", Packet(T.NOOP)),
    ],
)
def test_text_packet(wire: str, packet: Packet) -> None:
    assert encode_packet(packet) == wire
    assert decode_packet(wire) == packet
    assert type(decode_packet(wire).type) is PacketType


def test_binary_frame_is_a_message() -> None:
    # A binary WebSocket frame carries a message's bytes, no type byte.
    assert encode_packet(Packet(T.MESSAGE, b"\x01\x02\x03\x04")) == b"\x01\x02\x03\x04"
    assert decode_packet(b"\x01\x02\x03\x04") == Packet(T.MESSAGE, b"\x01\x02\x03\x04")
    assert decode_packet(b"") == Packet(T.MESSAGE, b"")
    # A leading digit byte is data, not a type.
    assert decode_packet(b"4hello") == Packet(T.MESSAGE, b"4hello")
    assert decode_packet(bytearray(b"\xff")) == Packet(T.MESSAGE, b"\xff")
    assert decode_packet(memoryview(b"ab")) == Packet(T.MESSAGE, b"ab")
    assert type(decode_packet(bytearray(b"x")).data) is bytes


def test_base64_text_frame_is_a_binary_message() -> None:
    # Clients with forceBase64 send b<base64> text frames over WebSocket too.
    assert decode_packet("bAQIDBA==") == Packet(T.MESSAGE, b"\x01\x02\x03\x04")
    assert decode_packet("b") == Packet(T.MESSAGE, b"")
    # Missing padding is tolerated (Node's decoder takes it too).
    assert decode_packet("bAQIDBA") == Packet(T.MESSAGE, b"\x01\x02\x03\x04")
    assert decode_packet("bAQ") == Packet(T.MESSAGE, b"\x01")
    assert decode_packet("bAQ=") == Packet(T.MESSAGE, b"\x01")


def test_encode_accepts_bytes_like_messages() -> None:
    assert encode_packet(Packet(T.MESSAGE, bytearray(b"ab"))) == b"ab"  # type: ignore[arg-type]
    assert type(encode_packet(Packet(T.MESSAGE, bytearray(b"ab")))) is bytes  # type: ignore[arg-type]


def test_payload_refuses_text_holding_the_separator() -> None:
    # It would split into two packets on the other side; JSON never holds a raw
    # \x1e (JSON.stringify escapes control characters), so only raw Engine.IO
    # messages can hit this.
    assert encode_packet(Packet(T.MESSAGE, "a\x1eb")) == "4a\x1eb"
    with pytest.raises(ValueError, match="separator"):
        encode_payload([Packet(T.MESSAGE, "ok"), Packet(T.MESSAGE, "a\x1eb")])


def test_encode_refuses_bytes_outside_message() -> None:
    with pytest.raises(ValueError, match="MESSAGE"):
        encode_packet(Packet(T.PING, b"probe"))
    with pytest.raises(ValueError, match="MESSAGE"):
        encode_payload([Packet(T.CLOSE, b"x")])


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("", "empty packet"),
        ("7", "unknown packet type"),
        ("9hello", "unknown packet type"),
        ("abc", "unknown packet type"),  # protocol.md: invalid packet text -> 400
        (" 4hello", "unknown packet type"),
        ("\u0664x", "unknown packet type"),  # ARABIC-INDIC DIGIT FOUR is not a type
        ("B", "unknown packet type"),
        ("bA", "invalid base64"),
        ("bA===", "invalid base64"),
        ("bAQ===", "invalid base64"),
        ("b====", "invalid base64"),
        ("bAQ==AQ==", "invalid base64"),
        ("b@@@@", "invalid base64"),
        ("bAQ\n==", "invalid base64"),
        ("bAQ-_", "invalid base64"),  # the URL-safe alphabet is not used
        ("b\u00e9\u00e9\u00e9\u00e9", "invalid base64"),
    ],
)
def test_malformed_packet(wire: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as info:
        decode_packet(wire)
    assert type(info.value) is ProtocolError
    assert reason in info.value.reason


@pytest.mark.parametrize("value", [None, 4, ["4"], object()])
def test_decode_packet_refuses_other_types(value: object) -> None:
    with pytest.raises(ProtocolError):
        decode_packet(value)  # type: ignore[arg-type]


# -- long-polling payloads -------------------------------------------------------------------


def test_payload_example_from_the_spec() -> None:
    packets = [Packet(T.MESSAGE, "hello"), Packet(T.MESSAGE, b"\x01\x02\x03\x04")]
    assert encode_payload(packets) == "4hello\x1ebAQIDBA=="
    assert decode_payload("4hello\x1ebAQIDBA==") == packets
    assert decode_payload(b"4hello\x1ebAQIDBA==") == packets


def test_payload_sample_session() -> None:
    # protocol.md, "Example session": a POST carrying two events.
    assert decode_payload(b'42["hello"]\x1e42["world"]') == [
        Packet(T.MESSAGE, '2["hello"]'),
        Packet(T.MESSAGE, '2["world"]'),
    ]
    assert decode_payload("40") == [Packet(T.MESSAGE, "0")]
    assert decode_payload("1") == [Packet(T.CLOSE)]
    assert decode_payload("3") == [Packet(T.PONG)]


def test_payload_single_and_empty_list() -> None:
    assert encode_payload([Packet(T.NOOP)]) == "6"
    assert encode_payload(iter([Packet(T.PING), Packet(T.MESSAGE, "x")])) == "2\x1e4x"
    assert encode_payload([]) == ""


def test_payload_utf8_body() -> None:
    body = "4caf\u00e9\x1e4\U0001f600".encode()
    assert decode_payload(body) == [Packet(T.MESSAGE, "caf\u00e9"), Packet(T.MESSAGE, "\U0001f600")]
    assert decode_payload(bytearray(body)) == decode_payload(body)
    assert decode_payload(memoryview(body)) == decode_payload(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty packet"),
        ("", "empty packet"),
        ("4a\x1e", "empty packet"),
        ("\x1e4a", "empty packet"),
        ("4a\x1e\x1e4b", "empty packet"),
        ("abc", "unknown packet type"),
        ("4a\x1eabc", "unknown packet type"),
        ("4a\x1ebA", "invalid base64"),
        (b"4\xff", "not valid UTF-8"),
        (b"4\xc3", "not valid UTF-8"),  # truncated sequence
        (b"4\xed\xa0\x80", "not valid UTF-8"),  # encoded surrogate
        (b"4\xc0\xaf", "not valid UTF-8"),  # overlong
        (b"4a\x1e4\xf8\x88\x80\x80\x80", "not valid UTF-8"),
    ],
)
def test_malformed_payload(body: str | bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_payload(body)


@pytest.mark.parametrize("value", [None, 4, ["4"]])
def test_decode_payload_refuses_other_types(value: object) -> None:
    with pytest.raises(ProtocolError):
        decode_payload(value)  # type: ignore[arg-type]


# -- round trips -----------------------------------------------------------------------------

text_packets = st.builds(
    Packet,
    st.sampled_from(PacketType),
    st.one_of(st.none(), st.text(min_size=1).filter(lambda s: SEPARATOR not in s)),
)
binary_packets = st.builds(Packet, st.just(T.MESSAGE), st.binary())
packets = st.one_of(text_packets, binary_packets)


@given(packets)
def test_packet_round_trip(packet: Packet) -> None:
    encoded = encode_packet(packet)
    assert isinstance(encoded, bytes) == isinstance(packet.data, bytes)
    assert decode_packet(encoded) == packet


@given(st.lists(packets, min_size=1, max_size=20))
def test_payload_round_trip(items: list[Packet]) -> None:
    body = encode_payload(items)
    assert decode_payload(body) == items
    if not any(_has_surrogate(p.data) for p in items):
        assert decode_payload(body.encode()) == items


def _has_surrogate(data: object) -> bool:
    return isinstance(data, str) and any("\ud800" <= c <= "\udfff" for c in data)


@given(st.lists(binary_packets, min_size=1, max_size=5))
def test_payload_binary_is_base64_text(items: list[Packet]) -> None:
    body = encode_payload(items)
    assert body.isascii()
    assert all(part.startswith("b") for part in body.split(SEPARATOR))


# -- the server's send path (encode_message / encode_control / join_payload) -----------------


@given(st.lists(st.one_of(st.text().filter(lambda s: SEPARATOR not in s), st.binary()), max_size=8))
def test_send_path_forms_decode_to_the_messages(messages: list[str | bytes]) -> None:
    """Both forms of each message, and a polling body joined from the segments,
    decode back to the messages, as the engine sends them."""
    encoded = [encode_message(m) for m in messages] + [encode_control(T.PING)]
    expected = [Packet(T.MESSAGE, m) for m in messages] + [Packet(T.PING)]
    assert [decode_packet(payload) for _, payload in encoded] == [
        Packet(p.type, p.data if p.data != "" else None) for p in expected
    ]
    assert join_payload(segment for segment, _ in encoded) == encode_payload(expected)


def test_send_path_control_packets() -> None:
    assert encode_control(T.PONG, "probe") == ("3probe", "3probe")
    assert encode_control(T.NOOP) == ("6", "6")
    assert encode_message(b"\x01\x02") == ("bAQI=", b"\x01\x02")
    assert encode_message(memoryview(b"\xff")) == ("b/w==", b"\xff")
