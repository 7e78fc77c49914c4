"""Socket.IO v5 codec and the JSON modules it uses.

Examples come from the protocol summary (/work/shared/protocol.md, section 2)
and the rules of the reference parser (node_modules/socket.io-parser); interop
with the reference itself is in test_codec_interop.py.
"""

from __future__ import annotations

import json
import math
import sys
from collections import OrderedDict
from enum import Enum, IntEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_relay.protocol import ProtocolError, jsonlib
from flask_relay.protocol import engineio as eio
from flask_relay.protocol.socketio import (
    MAX_ACK_ID,
    RESERVED_EVENTS,
    Decoder,
    Encoder,
    Packet,
    PacketType,
)

T = PacketType

JSON_MODULES = [
    pytest.param(None, id="default"),
    pytest.param(jsonlib.stdlib_json, id="stdlib-compact"),
    pytest.param(json, id="stdlib-module"),
]
if jsonlib.OrjsonJSON is not None:
    JSON_MODULES.append(pytest.param(jsonlib.OrjsonJSON(), id="orjson"))


@pytest.fixture(params=JSON_MODULES)
def json_module(request: pytest.FixtureRequest) -> Any:
    return request.param


def compact(items: list[str | bytes]) -> list[str | bytes]:
    """Remove the spaces the bare stdlib json module puts after , and : (test data has none)."""
    text = items[0]
    assert isinstance(text, str)
    return [text.replace(", ", ",").replace(": ", ":"), *items[1:]]


def decode_all(items: list[str | bytes], **kwargs: Any) -> list[Packet]:
    decoder = Decoder(**kwargs)
    out = []
    for item in items:
        packet = decoder.feed(item)
        if packet is not None:
            out.append(packet)
    return out


# -- the examples of protocol.md -------------------------------------------------------------
# (on the wire each is the data of an Engine.IO message, so it is written with a leading 4)

EXAMPLES = [
    ("40", Packet(T.CONNECT)),
    ("40/admin,", Packet(T.CONNECT, "/admin")),
    ("40/custom", None),  # valid input, re-encoded with the comma
    ('40/admin,{"token":"123"}', Packet(T.CONNECT, "/admin", {"token": "123"})),
    ('40{"sid":"X"}', Packet(T.CONNECT, "/", {"sid": "X"})),
    ('40/admin,{"sid":"X"}', Packet(T.CONNECT, "/admin", {"sid": "X"})),
    # connection state recovery: the reply carries pid, the reconnecting client sends pid+offset
    ('40{"sid":"X","pid":"P"}', Packet(T.CONNECT, "/", {"sid": "X", "pid": "P"})),
    ('40{"pid":"P","offset":"O"}', Packet(T.CONNECT, "/", {"pid": "P", "offset": "O"})),
    ('42["chat","hi","O1"]', Packet(T.EVENT, "/", ["chat", "hi", "O1"])),  # offset appended
    ("41", Packet(T.DISCONNECT)),
    ("41/admin,", Packet(T.DISCONNECT, "/admin")),
    ('42["hi"]', Packet(T.EVENT, "/", ["hi"])),
    ('42["hello"]', Packet(T.EVENT, "/", ["hello"])),
    ('42["chat",{"text":"hi"}]', Packet(T.EVENT, "/", ["chat", {"text": "hi"}])),
    ('42/admin,["chat",{"text":"hi"}]', Packet(T.EVENT, "/admin", ["chat", {"text": "hi"}])),
    ('42456["message-with-ack",1]', Packet(T.EVENT, "/", ["message-with-ack", 1], 456)),
    ('4212["foo"]', Packet(T.EVENT, "/", ["foo"], 12)),
    ('43456["ok"]', Packet(T.ACK, "/", ["ok"], 456)),
    ("43456[]", Packet(T.ACK, "/", [], 456)),
    ('44{"message":"Not authorized"}', Packet(T.CONNECT_ERROR, "/", {"message": "Not authorized"})),
    (
        '44{"message":"Not authorized","data":{"code":7}}',
        Packet(T.CONNECT_ERROR, "/", {"message": "Not authorized", "data": {"code": 7}}),
    ),
    (
        '44/random,{"message":"Invalid namespace"}',
        Packet(T.CONNECT_ERROR, "/random", {"message": "Invalid namespace"}),
    ),
]


@pytest.mark.parametrize(("wire", "packet"), EXAMPLES)
def test_example(wire: str, packet: Packet | None, json_module: Any) -> None:
    frame = eio.decode_packet(wire)
    assert frame.type is eio.PacketType.MESSAGE
    assert isinstance(frame.data, str)
    decoded = Decoder(json_module).feed(frame.data)
    if packet is None:  # "40/custom": valid, no comma needed at the end
        assert decoded == Packet(T.CONNECT, "/custom")
        assert Encoder(json_module).encode(Packet(T.CONNECT, "/custom")) == ["0/custom,"]
        return
    assert decoded == packet
    assert type(decoded.type) is PacketType  # type: ignore[union-attr]
    encoded = Encoder(json_module).encode(packet)
    if json_module is json:  # the bare stdlib module writes spaces: the user's choice
        assert Decoder().feed(encoded[0]) == packet
    else:
        assert encoded == [wire[1:]]


def test_binary_example(json_module: Any) -> None:
    # protocol.md: 452-["message",{placeholder 0},{placeholder 1}] + two binary frames
    text = (
        '52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    )
    packet = Packet(T.EVENT, "/", ["message", b"\x01\x02", b"\x03"])
    assert compact(Encoder(json_module).encode(packet)) == [text, b"\x01\x02", b"\x03"]
    decoder = Decoder(json_module)
    assert decoder.feed(text) is None
    assert decoder.awaiting_attachments == 2
    assert decoder.feed(b"\x01\x02") is None
    assert decoder.awaiting_attachments == 1
    assert decoder.feed(b"\x03") == packet
    assert decoder.awaiting_attachments == 0
    # The decoder is ready for the next packet.
    assert decoder.feed('2["next"]') == Packet(T.EVENT, "/", ["next"])


def test_binary_ack_example(json_module: Any) -> None:
    # protocol.md: 462-789[...] + blobs when an ack reply holds binary
    packet = Packet(T.ACK, "/", [b"a", {"nested": [b"b"]}], 789)
    items = Encoder(json_module).encode(packet)
    assert compact(items) == [
        '62-789[{"_placeholder":true,"num":0},{"nested":[{"_placeholder":true,"num":1}]}]',
        b"a",
        b"b",
    ]
    assert decode_all(items, json=json_module) == [packet]


def test_binary_event_over_long_polling() -> None:
    # protocol.md: the blobs follow as b<base64> items in a polling payload.
    body = (
        '452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
        "\x1ebAQI=\x1ebAw=="
    )
    packet = Packet(T.EVENT, "/", ["message", b"\x01\x02", b"\x03"])
    items = Encoder().encode(packet)
    assert eio.encode_payload(eio.Packet(eio.PacketType.MESSAGE, item) for item in items) == body
    decoder = Decoder()
    results = [decoder.feed(p.data) for p in eio.decode_payload(body)]  # type: ignore[arg-type]
    assert results == [None, None, packet]


def test_example_session() -> None:
    # protocol.md, "Example session (polling then upgrade)", through both codecs.
    E = eio.PacketType
    open_json = '{"sid":"S","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}'
    server, client = Encoder(), Decoder()  # what the client decodes
    peer_out, server_in = Encoder(), Decoder()  # what the server decodes

    def get(packets: list[eio.Packet]) -> list[Packet | None]:
        """A GET response body, as the client reads it."""
        out = []
        for frame in eio.decode_payload(eio.encode_payload(packets).encode()):
            if frame.type is E.MESSAGE:
                out.append(client.feed(frame.data))  # type: ignore[arg-type]
        return out

    def post(body: bytes) -> list[eio.Packet | Packet | None]:
        """A POST body, as the server reads it (Socket.IO decoded, the rest as is)."""
        out: list[eio.Packet | Packet | None] = []
        for frame in eio.decode_payload(body):
            if frame.type is E.MESSAGE:
                out.append(server_in.feed(frame.data))  # type: ignore[arg-type]
            else:
                out.append(frame)
        return out

    # GET -> 0{"sid":"S",...}
    assert eio.encode_payload([eio.Packet(E.OPEN, open_json)]) == "0" + open_json
    assert eio.decode_payload("0" + open_json) == [eio.Packet(E.OPEN, open_json)]
    # POST 40 -> ok
    assert peer_out.encode(Packet(T.CONNECT)) == ["0"]
    assert post(b"40") == [Packet(T.CONNECT)]
    # GET -> 40{"sid":"X"}
    reply = server.encode(Packet(T.CONNECT, "/", {"sid": "X"}))
    assert eio.encode_payload([eio.Packet(E.MESSAGE, reply[0])]) == '40{"sid":"X"}'
    assert get([eio.Packet(E.MESSAGE, reply[0])]) == [Packet(T.CONNECT, "/", {"sid": "X"})]
    # POST 42["hello"]\x1e42["world"]
    assert post(b'42["hello"]\x1e42["world"]') == [
        Packet(T.EVENT, "/", ["hello"]),
        Packet(T.EVENT, "/", ["world"]),
    ]
    # WebSocket ?sid=S: 2probe / 3probe, the pending GET gets 6, then 5 on the WebSocket.
    assert eio.decode_packet("2probe") == eio.Packet(E.PING, "probe")
    assert eio.encode_packet(eio.Packet(E.PONG, "probe")) == "3probe"
    assert eio.encode_payload([eio.Packet(E.NOOP)]) == "6"
    assert eio.decode_packet("5") == eio.Packet(E.UPGRADE)
    # From now on, one packet per frame: the server pings, the client answers.
    assert eio.encode_packet(eio.Packet(E.PING)) == "2"
    assert eio.decode_packet("3") == eio.Packet(E.PONG)
    assert server_in.feed(eio.decode_packet('42["over ws"]').data) == Packet(  # type: ignore[arg-type]
        T.EVENT, "/", ["over ws"]
    )


def test_binary_in_namespace_with_ack_id() -> None:
    packet = Packet(T.EVENT, "/admin", ["upload", {"file": b"\x00" * 3, "name": "f"}], 7)
    items = Encoder().encode(packet)
    assert items == [
        '51-/admin,7["upload",{"file":{"_placeholder":true,"num":0},"name":"f"}]',
        b"\x00\x00\x00",
    ]
    assert decode_all(items) == [packet]


def test_placeholders_are_numbered_depth_first() -> None:
    data = ["ev", [b"0", {"a": b"1", "b": [b"2", b"3"]}], b"4", {"c": {"d": b"5"}}]
    items = Encoder().encode(Packet(T.EVENT, "/", data))
    assert items[1:] == [b"0", b"1", b"2", b"3", b"4", b"5"]
    assert json.loads(items[0][3:]) == [  # type: ignore[arg-type]
        "ev",
        [{"_placeholder": True, "num": 0}, {"a": {"_placeholder": True, "num": 1},
                                            "b": [{"_placeholder": True, "num": 2},
                                                  {"_placeholder": True, "num": 3}]}],
        {"_placeholder": True, "num": 4},
        {"c": {"d": {"_placeholder": True, "num": 5}}},
    ]
    assert decode_all(items, max_attachments=6) == [Packet(T.EVENT, "/", data)]


def test_encoder_binary_values_and_containers() -> None:
    enc = Encoder()
    # bytearray / memoryview count as binary and arrive as bytes; tuples are arrays;
    # empty bytes are still an attachment (the reference does the same with Buffer.alloc(0)).
    items = enc.encode(Packet(T.EVENT, "/", ("ev", bytearray(b"x"), memoryview(b"y"), b"")))
    assert items == [
        '53-["ev",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},'
        '{"_placeholder":true,"num":2}]',
        b"x",
        b"y",
        b"",
    ]
    assert all(type(item) is bytes for item in items[1:])
    # Asking for BINARY_EVENT without binary data gives a plain EVENT.
    assert enc.encode(Packet(T.BINARY_EVENT, "/", ["ev", 1])) == ['2["ev",1]']
    assert enc.encode(Packet(T.BINARY_ACK, "/", [1], 3)) == ["33[1]"]
    assert enc.encode(Packet(T.BINARY_EVENT, "/", ["ev", b"z"])) == [
        '51-["ev",{"_placeholder":true,"num":0}]',
        b"z",
    ]


def test_encoder_does_not_touch_the_callers_data() -> None:
    data = ["ev", {"blob": b"x", "list": [b"y"]}]
    Encoder().encode(Packet(T.EVENT, "/", data))
    assert data == ["ev", {"blob": b"x", "list": [b"y"]}]


def test_encoder_compact_and_non_ascii(json_module: Any) -> None:
    packet = Packet(T.EVENT, "/", ["caf\u00e9", {"k": [1, 2.5, None, True, False]}, "\U0001f600"])
    text = Encoder(json_module).encode(packet)[0]
    if json_module is json:  # the bare stdlib module: the user's choice, not compact
        assert json.loads(text[1:]) == packet.data  # type: ignore[index]
    else:
        assert text == '2["caf\u00e9",{"k":[1,2.5,null,true,false]},"\U0001f600"]'


def test_encoder_with_a_user_json_module_that_encodes_bytes() -> None:
    # A user module might know how to encode bytes; they are still attachments.
    class Permissive:
        @staticmethod
        def dumps(obj: Any) -> str:
            return json.dumps(obj, separators=(",", ":"), default=lambda o: o.hex())

        @staticmethod
        def loads(s: str | bytes) -> Any:
            return json.loads(s)

    items = Encoder(Permissive()).encode(Packet(T.EVENT, "/", ["ev", b"\xff"]))
    assert items == ['51-["ev",{"_placeholder":true,"num":0}]', b"\xff"]


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (Packet(T.EVENT, "admin", ["x"]), "namespace"),
        (Packet(T.EVENT, "/a,b", ["x"]), "namespace"),
        (Packet(T.EVENT, "", ["x"]), "namespace"),
        (Packet(T.EVENT, "/", ["x"], -1), "ack id"),
        (Packet(T.EVENT, "/", ["x"], MAX_ACK_ID + 1), "ack id"),
        (Packet(T.EVENT, "/", ["x"], True), "ack id"),
        (Packet(T.EVENT, "/", ["x"], "1"), "ack id"),  # type: ignore[arg-type]
        (Packet(T.EVENT, "/", None), "list"),
        (Packet(T.EVENT, "/", "x"), "list"),
        (Packet(T.ACK, "/", {"a": 1}, 1), "list"),
        (Packet(T.CONNECT, "/", ["x"]), "dict"),
        (Packet(T.DISCONNECT, "/", {}), "no data"),
        (Packet(T.CONNECT_ERROR, "/", None), "dict"),
        (Packet(9, "/", None), "unknown"),  # type: ignore[arg-type]
    ],
)
def test_encoder_refuses_bad_packets(packet: Packet, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Encoder().encode(packet)


def test_encoder_unserializable_data_raises_type_error(json_module: Any) -> None:
    with pytest.raises(TypeError):
        Encoder(json_module).encode(Packet(T.EVENT, "/", ["ev", object()]))
    with pytest.raises(TypeError):
        Encoder(json_module).encode(Packet(T.EVENT, "/", ["ev", b"x", object()]))


def test_numeric_event_name_is_accepted_like_the_reference() -> None:
    assert Decoder().feed("2[1,2]") == Packet(T.EVENT, "/", [1, 2])
    assert Decoder().feed("2[1.5]") == Packet(T.EVENT, "/", [1.5])


def test_placeholder_in_plain_event_is_left_alone() -> None:
    # Only BINARY_* packets get attachments substituted (as in the reference).
    text = '2["ev",{"_placeholder":true,"num":0}]'
    assert Decoder().feed(text) == Packet(T.EVENT, "/", ["ev", {"_placeholder": True, "num": 0}])


def test_placeholder_lookalikes_are_data() -> None:
    text = (
        '51-["ev",{"_placeholder":1,"num":5},{"_placeholder":"true"},'
        '{"_placeholder":true,"num":0}]'
    )
    decoder = Decoder()
    assert decoder.feed(text) is None
    assert decoder.feed(b"B") == Packet(
        T.EVENT, "/", ["ev", {"_placeholder": 1, "num": 5}, {"_placeholder": "true"}, b"B"]
    )


def test_unused_and_repeated_attachments() -> None:
    # The reference only checks that each placeholder points at a received blob.
    decoder = Decoder()
    assert decoder.feed('62-1[{"_placeholder":true,"num":1},{"_placeholder":true,"num":1}]') is None
    assert decoder.feed(b"a") is None
    assert decoder.feed(b"b") == Packet(T.ACK, "/", [b"b", b"b"], 1)


def test_namespace_edge_cases() -> None:
    assert Decoder().feed('2/,["x"]') == Packet(T.EVENT, "/", ["x"])
    assert Decoder().feed('2/a/b?c=1,["x"]') == Packet(T.EVENT, "/a/b?c=1", ["x"])
    assert Decoder().feed("0/caf\u00e9,") == Packet(T.CONNECT, "/caf\u00e9")
    assert Decoder().feed('2/1,2["x"]') == Packet(T.EVENT, "/1", ["x"], 2)
    # No comma: the namespace runs to the end, so there is no room for data.
    assert Decoder().feed('1/admin') == Packet(T.DISCONNECT, "/admin")
    with pytest.raises(ProtocolError, match="needs data"):
        Decoder().feed('2/admin["x"]')


def test_ack_id_edge_cases() -> None:
    assert Decoder().feed('20["x"]').id == 0  # type: ignore[union-attr]
    assert Decoder().feed('2007["x"]').id == 7  # type: ignore[union-attr]
    assert Decoder().feed(f'2{MAX_ACK_ID}["x"]').id == MAX_ACK_ID  # type: ignore[union-attr]
    # An id without data is accepted on CONNECT/DISCONNECT, as in the reference.
    assert Decoder().feed("15") == Packet(T.DISCONNECT, "/", None, 5)


def test_connect_error_string_from_old_peers() -> None:
    assert Decoder().feed('4"nope"') == Packet(T.CONNECT_ERROR, "/", "nope")
    assert Encoder().encode(Packet(T.CONNECT_ERROR, "/", "nope")) == ['4"nope"']


# -- malformed input --------------------------------------------------------------------------

MALFORMED = [
    # unknown type
    ("", "unknown packet type"),
    ("7", "unknown packet type"),
    ("9[]", "unknown packet type"),
    ("x", "unknown packet type"),
    (" 2[\"a\"]", "unknown packet type"),
    ("\u0662[\"a\"]", "unknown packet type"),
    # payload of the wrong shape (protocol.md: 42{} is invalid)
    ("2{}", "EVENT"),
    ("2[]", "EVENT"),
    ('2"ev"', "EVENT"),
    ("2[null]", "EVENT"),
    ("2[true]", "EVENT"),
    ("2[[\"ev\"]]", "EVENT"),
    ("2[{}]", "EVENT"),
    ("2", "needs data"),
    ("3", "needs data"),
    ("3{}", "ACK"),
    ("3\"x\"", "ACK"),
    ("4", "needs data"),
    ("4[]", "CONNECT_ERROR"),
    ("41", "needs data"),
    ("4null", "CONNECT_ERROR"),
    ("0[]", "CONNECT"),
    ('0"x"', "CONNECT"),
    ("0null", "CONNECT"),
    ("01", "CONNECT"),  # id 0 then... no: "1" is the id; see below
    ("1{}", "DISCONNECT"),
    ("1[]", "DISCONNECT"),
    ("1/a,null", "DISCONNECT"),
    # not JSON
    ('2abc["a"]', "not JSON"),  # protocol.md: non-numeric id
    ('212abc["a"]', "not JSON"),
    ('2["a"', "not JSON"),
    ('2["a"]x', "not JSON"),
    ('2["a"]]', "not JSON"),
    ("2[NaN]", "not JSON"),
    ('2["a",Infinity]', "not JSON"),
    ('2["a",-Infinity]', "not JSON"),
    ("2['a']", "not JSON"),
    ('2["a\x01"]', "not JSON"),
    ('2["a",]', "not JSON"),
    ('2["a",01]', "not JSON"),
    ("0{a:1}", "not JSON"),
    ('2-1["a"]', "not JSON"),
    ('21.5["a"]', "not JSON"),
    ('2/admin;["a"]', "needs data"),
    # whitespace where the reference would read an ack id
    ('2 ["a"]', "whitespace"),
    ('21 ["a"]', "whitespace"),
    ('2\t["a"]', "whitespace"),
    ('2\n["a"]', "whitespace"),
    ('2/a, ["a"]', "whitespace"),
    # reserved event names
    *[(f'2["{name}"]', "reserved") for name in sorted(RESERVED_EVENTS)],
    *[(f'51-["{name}",{{"_placeholder":true,"num":0}}]', "reserved") for name in ["connect"]],
    # ack id
    ('212345678901234567["a"]', "too large"),
    (f'2{MAX_ACK_ID + 1}["a"]', "too large"),
    ('2' + "9" * 5000 + '["a"]', "too large"),
    # attachments
    ('5["a"]', "illegal attachments"),
    ('5-["a"]', "illegal attachments"),
    ('50-["a"]', "illegal attachments"),
    ('500-["a"]', "illegal attachments"),
    ('5a-["a"]', "illegal attachments"),
    ('5 1-["a"]', "illegal attachments"),
    ('51e0-["a"]', "illegal attachments"),
    ('50x1-["a"]', "illegal attachments"),
    ('5\u0661-["a"]', "illegal attachments"),
    ('6-1[]', "illegal attachments"),
    ('511-["a"]', "too many attachments"),
    ('5' + "9" * 5000 + '-["a"]', "too many attachments"),
    ('51-{}', "EVENT"),
    ('51-', "needs data"),
    ('61-{}', "ACK"),
    # invalid placeholders
    ('51-["a",{"_placeholder":true,"num":1}]', "placeholder"),
    ('51-["a",{"_placeholder":true,"num":-1}]', "placeholder"),
    ('51-["a",{"_placeholder":true,"num":0.5}]', "placeholder"),
    ('51-["a",{"_placeholder":true,"num":0.0}]', "placeholder"),
    ('51-["a",{"_placeholder":true,"num":"0"}]', "placeholder"),
    ('51-["a",{"_placeholder":true,"num":true}]', "placeholder"),
    ('51-["a",{"_placeholder":true,"num":null}]', "placeholder"),
    ('51-["a",{"_placeholder":true}]', "placeholder"),
    ('61-1[{"x":[{"_placeholder":true,"num":3}]}]', "placeholder"),
]


@pytest.mark.parametrize(("text", "reason"), MALFORMED)
def test_malformed(text: str, reason: str, json_module: Any) -> None:
    if text == "01":
        # "01" is CONNECT with ack id 1 and no data: valid for the reference too.
        assert Decoder(json_module).feed(text) == Packet(T.CONNECT, "/", None, 1)
        return
    if json_module is json and reason == "not JSON" and ("NaN" in text or "Infinity" in text):
        pytest.skip("the bare stdlib json module accepts NaN/Infinity; the user chose it")
    decoder = Decoder(json_module)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(text)
    assert type(info.value) is ProtocolError
    assert reason in info.value.reason
    # After an error the decoder is unusable.
    with pytest.raises(ProtocolError, match="unusable"):
        decoder.feed('2["ok"]')


def test_binary_when_no_packet_is_pending() -> None:
    decoder = Decoder()
    with pytest.raises(ProtocolError, match="got binary data when not reconstructing"):
        decoder.feed(b"\x01")
    decoder = Decoder()
    assert decoder.feed('2["a"]') is not None
    with pytest.raises(ProtocolError, match="not reconstructing"):
        decoder.feed(b"\x01")


def test_binary_after_the_last_attachment() -> None:
    decoder = Decoder()
    assert decoder.feed('51-["a",{"_placeholder":true,"num":0}]') is None
    assert decoder.feed(b"x") is not None
    with pytest.raises(ProtocolError, match="not reconstructing"):
        decoder.feed(b"y")


def test_text_while_attachments_are_pending() -> None:
    decoder = Decoder()
    text = '52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert decoder.feed(text) is None
    assert decoder.feed(b"x") is None
    with pytest.raises(ProtocolError, match="got plaintext data when reconstructing"):
        decoder.feed('2["b"]')
    assert decoder.awaiting_attachments == 0
    with pytest.raises(ProtocolError, match="unusable"):
        decoder.feed(b"y")


def test_max_attachments() -> None:
    placeholders = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(3))
    text = f'53-["ev",{placeholders}]'
    with pytest.raises(ProtocolError, match="too many attachments"):
        Decoder(max_attachments=2).feed(text)
    decoder = Decoder(max_attachments=3)
    assert decoder.feed(text) is None
    assert decoder.feed(b"0") is None
    assert decoder.feed(b"1") is None
    assert decoder.feed(b"2") == Packet(T.EVENT, "/", ["ev", b"0", b"1", b"2"])
    assert Decoder().feed("510-" + text[3:]) is None  # the default limit is 10
    with pytest.raises(ProtocolError, match="too many attachments"):
        Decoder().feed("511-" + text[3:])


@pytest.mark.parametrize("value", [None, 1, ["2[]"], {"a": 1}])
def test_feed_refuses_other_types(value: Any) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(value)


def test_feed_accepts_bytes_like_attachments() -> None:
    decoder = Decoder()
    decoder.feed('51-["a",{"_placeholder":true,"num":0}]')
    packet = decoder.feed(bytearray(b"xy"))
    assert packet == Packet(T.EVENT, "/", ["a", b"xy"])
    assert type(packet.data[1]) is bytes  # type: ignore[union-attr]


def test_json_module_errors_become_protocol_errors() -> None:
    class Broken:
        @staticmethod
        def dumps(obj: Any) -> str:
            return json.dumps(obj)

        @staticmethod
        def loads(s: str | bytes) -> Any:
            raise KeyError("boom")

    with pytest.raises(ProtocolError, match="not JSON"):
        Decoder(Broken()).feed('2["a"]')


def test_deep_nesting_is_a_protocol_error_not_recursion_error(json_module: Any) -> None:
    text = "2[" + "[" * 100_000 + "]" * 100_000 + "]"
    with pytest.raises(ProtocolError):
        Decoder(json_module).feed(text)


# -- property-based round trips -------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
with_binary = st.recursive(
    st.one_of(json_scalars, st.binary(max_size=64)),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
# (a namespace holding \x1e could not travel by long-polling: it is not JSON-escaped)
namespaces = st.one_of(
    st.just("/"),
    st.text(max_size=10).filter(lambda s: "," not in s and "\x1e" not in s).map(lambda s: "/" + s),
)
ack_ids = st.one_of(st.none(), st.integers(min_value=0, max_value=MAX_ACK_ID))
event_names = st.text().filter(lambda s: s not in RESERVED_EVENTS)


def _binary_count(value: Any) -> int:
    if isinstance(value, bytes):
        return 1
    if isinstance(value, list):
        return sum(_binary_count(v) for v in value)
    if isinstance(value, dict):
        return sum(_binary_count(v) for v in value.values())
    return 0


def _is_placeholder_free(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_placeholder_free(v) for v in value)
    if isinstance(value, dict):
        return value.get("_placeholder") is not True and all(
            _is_placeholder_free(v) for v in value.values()
        )
    return True


packets = st.one_of(
    st.builds(
        Packet,
        st.just(T.EVENT),
        namespaces,
        st.tuples(event_names, st.lists(with_binary, max_size=4)).map(lambda t: [t[0], *t[1]]),
        ack_ids,
    ),
    st.builds(Packet, st.just(T.ACK), namespaces, st.lists(with_binary, max_size=4), ack_ids),
    st.builds(
        Packet,
        st.just(T.CONNECT),
        namespaces,
        st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values, max_size=4)),
    ),
    st.builds(Packet, st.just(T.DISCONNECT), namespaces),
    st.builds(
        Packet,
        st.just(T.CONNECT_ERROR),
        namespaces,
        st.fixed_dictionaries({"message": st.text()}, optional={"data": json_values}),
    ),
)


@given(packets)
def test_round_trip(packet: Packet) -> None:
    items = Encoder().encode(packet)
    attachments = _binary_count(packet.data)
    assert len(items) == 1 + attachments
    assert isinstance(items[0], str)
    assert all(isinstance(item, bytes) for item in items[1:])
    decoded = decode_all(items, max_attachments=max(attachments, 1))
    if _is_placeholder_free(packet.data):
        assert decoded == [packet]
    else:  # user data that looks like a placeholder is only substituted in binary packets
        assert len(decoded) == 1


@given(packets)
def test_round_trip_through_engineio_payload(packet: Packet) -> None:
    items = Encoder().encode(packet)
    body = eio.encode_payload(eio.Packet(eio.PacketType.MESSAGE, item) for item in items)
    decoder = Decoder(max_attachments=max(len(items) - 1, 1))
    results = [decoder.feed(p.data) for p in eio.decode_payload(body)]  # type: ignore[arg-type]
    assert results[:-1] == [None] * (len(items) - 1)
    if _is_placeholder_free(packet.data):
        assert results[-1] == packet


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return False


@given(packets)
def test_encoders_agree(packet: Packet) -> None:
    # orjson, the compact stdlib and the default produce the same text, except
    # for the spelling of some floats (orjson: 1e-05 -> 0.00001, as JavaScript
    # does; the stdlib keeps Python's repr). The values are always the same.
    encoders = [Encoder(jsonlib.stdlib_json), Encoder()]
    if jsonlib.OrjsonJSON is not None:
        encoders.append(Encoder(jsonlib.OrjsonJSON()))
    results = [encoder.encode(packet) for encoder in encoders]
    if not _has_float(packet.data):
        assert all(result == results[0] for result in results)
    decoded = [decode_all(result, max_attachments=100) for result in results]
    assert all(d == decoded[0] for d in decoded)


# -- the JSON modules ---------------------------------------------------------------------------

DEFAULTS = [pytest.param(jsonlib.stdlib_json, id="stdlib")]
if jsonlib.OrjsonJSON is not None:
    DEFAULTS.append(pytest.param(jsonlib.OrjsonJSON(), id="orjson"))


@pytest.fixture(params=DEFAULTS)
def module(request: pytest.FixtureRequest) -> Any:
    return request.param


def test_default_prefers_orjson() -> None:
    try:
        import orjson  # noqa: F401
    except ImportError:
        assert jsonlib.default_json is jsonlib.stdlib_json
    else:
        assert isinstance(jsonlib.default_json, jsonlib.OrjsonJSON)  # type: ignore[arg-type]


class Color(IntEnum):
    RED = 1


class Name(str, Enum):
    ALICE = "alice"


class Flat(Enum):
    X = "x"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": [1, "b", None, True]}, '{"a":[1,"b",null,true]}'),
        ("caf\u00e9 \u2603 \U0001f600", '"caf\u00e9 \u2603 \U0001f600"'),
        ("\x00\x1f\x7f\u2028/\\\"", '"\\u0000\\u001f\x7f\u2028/\\\\\\""'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        (2**64, "18446744073709551616"),  # beyond orjson's range: stdlib takes over
        (-(2**70), "-1180591620717411303424"),
        ({1: "a", 2.5: "b", False: "c", None: "d"}, '{"1":"a","2.5":"b","false":"c","null":"d"}'),
        (float("nan"), "null"),
        ([float("inf"), -float("inf"), {"x": float("nan")}], '[null,null,{"x":null}]'),
        ("\ud800", '"\\ud800"'),  # lone surrogate: escaped like JSON.stringify
        (["\udfff x \u00e9"], '["\\udfff x \u00e9"]'),
        (Color.RED, "1"),
        ({"k": Name.ALICE}, '{"k":"alice"}'),
        (OrderedDict([("b", 1), ("a", 2)]), '{"b":1,"a":2}'),
        ((1, (2,)), "[1,[2]]"),
        (1.0, "1.0"),
        (1e16, "1e+16"),
    ],
)
def test_dumps(module: Any, value: Any, text: str) -> None:
    assert module.dumps(value) == text


@pytest.mark.parametrize("value", [b"x", bytearray(b"x"), {"a": {1, 2}}, object()])
def test_dumps_refuses_like_the_stdlib(module: Any, value: Any) -> None:
    with pytest.raises(TypeError):
        module.dumps(value)


def test_dumps_differences_with_the_stdlib(module: Any) -> None:
    import datetime
    import uuid

    # datetimes and dataclasses are refused like the stdlib does...
    with pytest.raises(TypeError):
        module.dumps(datetime.datetime(2020, 1, 1))
    # ...but orjson knows plain enums and UUIDs (documented difference).
    if module is jsonlib.stdlib_json:
        with pytest.raises(TypeError):
            module.dumps(Flat.X)
    else:
        assert module.dumps(Flat.X) == '"x"'
        u = uuid.UUID(int=1)
        assert module.dumps(u) == f'"{u}"'


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a":[1,"b",null,true,1.5]}', {"a": [1, "b", None, True, 1.5]}),
        (' [1] \n', [1]),
        ('"\\ud83d"', "\ud83d"),  # half an emoji from a JavaScript client
        ('"\\ud83d\\ude00"', "\U0001f600"),
        (b'{"a":1}', {"a": 1}),
    ],
)
def test_loads(module: Any, text: str | bytes, value: Any) -> None:
    assert module.loads(text) == value


def test_loads_big_integers(module: Any) -> None:
    # Beyond 64 bits orjson gives a float, like JSON.parse; the stdlib an exact int.
    value = module.loads("123456789012345678901234567890")
    if module is jsonlib.stdlib_json:
        assert value == 123456789012345678901234567890
    else:
        assert value == 1.2345678901234568e29
    assert module.loads("18446744073709551615") == 2**64 - 1
    assert module.loads("-9223372036854775808") == -(2**63)


def test_loads_deeper_than_orjson_allows(module: Any) -> None:
    # Still JSON for JSON.parse: the stdlib takes over from orjson. Before
    # Python 3.13 the stdlib's scanner stops at the recursion limit (about 1000
    # levels): a RecursionError there, which the Socket.IO decoder turns into a
    # ProtocolError (see test_deep_nesting_is_a_protocol_error_not_recursion_error).
    text = "[" * 2000 + "]" * 2000
    if sys.version_info < (3, 13):
        with pytest.raises(RecursionError):
            module.loads(text)
        return
    value = module.loads(text)
    depth = 0
    while value:
        value = value[0]
        depth += 1
    assert depth == 1999


@pytest.mark.parametrize(
    "text", ["NaN", "[Infinity]", "-Infinity", "{'a':1}", "[1,]", '"\x01"', "\ufeff[1]", "", "01"]
)
def test_loads_refuses_what_json_parse_refuses(module: Any, text: str) -> None:
    with pytest.raises(ValueError):
        module.loads(text)


@given(json_values)
def test_json_round_trip(value: Any) -> None:
    for module in [jsonlib.stdlib_json, jsonlib.default_json]:
        assert module.loads(module.dumps(value)) == value


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_json_floats(value: float) -> None:
    for module in [jsonlib.default_json, jsonlib.stdlib_json]:
        back = module.loads(module.dumps([value]))[0]
        if math.isfinite(value):
            assert back == value
        else:
            assert back is None
