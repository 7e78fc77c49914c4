"""Interop with the reference codecs: npm engine.io-parser and socket.io-parser.

One Node process (tests/js/codec_peer.js) serves the whole module: each request
is a JSON line, each answer a JSON line. Binary values travel as
``{"$bin": "<base64>"}``. Every test checks both directions: what Python
encodes, the reference decodes to the same value, and the other way round;
where the output is deterministic the encoded text must be identical.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_relay.protocol import ProtocolError
from flask_relay.protocol import engineio as eio
from flask_relay.protocol.socketio import (
    MAX_ACK_ID,
    RESERVED_EVENTS,
    Decoder,
    Encoder,
    Packet,
    PacketType,
)

PEER = Path(__file__).resolve().parent.parent / "js" / "codec_peer.js"
T = PacketType
EIO_NAMES = ["open", "close", "ping", "pong", "message", "upgrade", "noop"]

interop = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class NodePeer:
    """The reference codecs in a Node subprocess, spoken to line by line."""

    def __init__(self, node: str) -> None:
        self.proc = subprocess.Popen(
            [node, str(PEER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def ask(self, op: str, **request: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # ensure_ascii keeps lone surrogates transportable (as \\u escapes).
        self.proc.stdin.write(json.dumps({"op": op, **request}) + "\n")
        line = self.proc.stdout.readline()
        assert line, "the Node peer died"
        answer = json.loads(line)
        if "error" in answer and "result" not in answer:
            raise AssertionError(f"peer failed on {op}: {answer['error']}")
        return answer["result"]


@pytest.fixture(scope="module")
def peer(node: str) -> Iterator[NodePeer]:
    p = NodePeer(node)
    try:
        yield p
    finally:
        p.close()


def to_wire(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bin": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(value: Any) -> Any:
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        if list(value) == ["$bin"]:
            return base64.b64decode(value["$bin"])
        return {k: from_wire(v) for k, v in value.items()}
    return value


def sio_to_js(packet: Packet) -> dict[str, Any]:
    out: dict[str, Any] = {"type": int(packet.type), "nsp": packet.namespace}
    if packet.data is not None:
        out["data"] = to_wire(packet.data)
    if packet.id is not None:
        out["id"] = packet.id
    return out


def sio_from_js(obj: dict[str, Any]) -> Packet:
    return Packet(PacketType(obj["type"]), obj["nsp"], from_wire(obj.get("data")), obj.get("id"))


def same(a: Any, b: Any) -> bool:
    """Equality as JavaScript sees it: 1 == 1.0, and dict order does not matter."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if (isinstance(a, float) and not math.isfinite(a) and b is None) or (
        isinstance(b, float) and not math.isfinite(b) and a is None
    ):
        # The Node peer answers in JSON, where JSON.stringify writes null for an
        # Infinity or NaN it decoded (from 8e308, say).
        return True
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        # One number type in JavaScript: doubles (so 2**53 + 1 reads as 2**53).
        return float(a) == float(b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def same_packet(a: Packet, b: Packet) -> bool:
    return a.type == b.type and a.namespace == b.namespace and a.id == b.id and same(a.data, b.data)


def js_decode(peer: NodePeer, items: list[str | bytes], max_attachments: int = 10) -> Any:
    return peer.ask("sio.decode", items=[to_wire(i) for i in items], maxAttachments=max_attachments)


def py_decode(
    items: list[str | bytes], max_attachments: int = 10
) -> tuple[list[Packet], str | None]:
    decoder = Decoder(max_attachments=max_attachments)
    packets = []
    for item in items:
        try:
            packet = decoder.feed(item)
        except ProtocolError as exc:
            return packets, exc.reason
        if packet is not None:
            packets.append(packet)
    return packets, None


# -- strategies ----------------------------------------------------------------------------

# JavaScript sees one number type, integers stay exact up to 2**53, and an object
# puts integer-like keys first: keep keys non-numeric so key order survives.
keys = st.text(max_size=8).filter(lambda k: not k.isdigit() and k != "$bin")
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.text(),
)
values = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(keys, c, max_size=4)),
    max_leaves=15,
)
values_with_floats = st.recursive(
    st.one_of(scalars, st.floats(allow_nan=False, allow_infinity=False)),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(keys, c, max_size=4)),
    max_leaves=15,
)
with_binary = st.recursive(
    st.one_of(scalars, st.binary(max_size=32)),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(keys, c, max_size=4)),
    max_leaves=15,
)
namespaces = st.one_of(
    st.just("/"),
    st.just("/admin"),
    st.text(max_size=8).filter(lambda s: "," not in s).map(lambda s: "/" + s),
)
ack_ids = st.one_of(st.none(), st.integers(min_value=0, max_value=MAX_ACK_ID))
event_names = st.one_of(st.text(), st.just("message")).filter(lambda s: s not in RESERVED_EVENTS)


def packets_with(data: st.SearchStrategy[Any]) -> st.SearchStrategy[Packet]:
    return st.one_of(
        st.builds(
            Packet,
            st.just(T.EVENT),
            namespaces,
            st.tuples(event_names, st.lists(data, max_size=3)).map(lambda t: [t[0], *t[1]]),
            ack_ids,
        ),
        st.builds(Packet, st.just(T.ACK), namespaces, st.lists(data, max_size=3), ack_ids),
        st.builds(
            Packet,
            st.just(T.CONNECT),
            namespaces,
            st.one_of(st.none(), st.dictionaries(keys, values, max_size=3)),
        ),
        st.builds(Packet, st.just(T.DISCONNECT), namespaces),
        st.builds(
            Packet,
            st.just(T.CONNECT_ERROR),
            namespaces,
            st.fixed_dictionaries({"message": st.text()}, optional={"data": values}),
        ),
    )


def _no_placeholders(value: Any) -> bool:
    if isinstance(value, list):
        return all(_no_placeholders(v) for v in value)
    if isinstance(value, dict):
        return "_placeholder" not in value and all(_no_placeholders(v) for v in value.values())
    return True


# -- Socket.IO -----------------------------------------------------------------------------


@interop
@given(packets_with(with_binary).filter(lambda p: _no_placeholders(p.data)))
def test_python_encodes_node_decodes(peer: NodePeer, packet: Packet) -> None:
    items = Encoder().encode(packet)
    answer = js_decode(peer, items, max_attachments=100)
    assert answer["error"] is None
    assert len(answer["packets"]) == 1
    assert same_packet(sio_from_js(answer["packets"][0]), packet)


@interop
@given(packets_with(with_binary).filter(lambda p: _no_placeholders(p.data)))
def test_node_encodes_python_decodes(peer: NodePeer, packet: Packet) -> None:
    items = [from_wire(i) for i in peer.ask("sio.encode", packet=sio_to_js(packet))]
    packets, error = py_decode(items, max_attachments=100)
    assert error is None
    assert len(packets) == 1
    assert same_packet(packets[0], packet)


@interop
@given(packets_with(with_binary))
def test_same_bytes_as_the_reference_encoder(peer: NodePeer, packet: Packet) -> None:
    # No floats: Python and JavaScript spell some of them differently (1.0 / 1).
    ours = Encoder().encode(packet)
    theirs = [from_wire(i) for i in peer.ask("sio.encode", packet=sio_to_js(packet))]
    assert ours == theirs


@interop
@given(packets_with(values_with_floats))
def test_floats_keep_their_value(peer: NodePeer, packet: Packet) -> None:
    items = Encoder().encode(packet)
    answer = js_decode(peer, items)
    assert answer["error"] is None
    assert same_packet(sio_from_js(answer["packets"][0]), packet)
    theirs = [from_wire(i) for i in peer.ask("sio.encode", packet=sio_to_js(packet))]
    assert same_packet(py_decode(theirs)[0][0], packet)


SPECIAL_STRINGS = [
    "\x00\x01\x1f\x7f",
    '\b\f\n\r\t"\\/',
    "\u2028\u2029",
    "caf\u00e9 \u2603 \U0001f600",
    "\ud83d",  # half an emoji, as a JavaScript client may send
    "x\udfffy",
    "</script>",
    "\ufeff",
]


@pytest.mark.parametrize("text", SPECIAL_STRINGS)
def test_string_escapes_match_json_stringify(peer: NodePeer, text: str) -> None:
    packet = Packet(T.EVENT, "/", ["ev", text, {text: [text]}])
    ours = Encoder().encode(packet)
    theirs = peer.ask("sio.encode", packet=sio_to_js(packet))
    assert ours == theirs
    # and Python decodes what Node wrote
    assert py_decode(theirs) == ([packet], None)


def test_non_finite_floats_become_null_like_json_stringify(peer: NodePeer) -> None:
    ours = Encoder().encode(Packet(T.EVENT, "/", ["ev", float("nan"), float("inf")]))
    assert ours == ['2["ev",null,null]']
    assert peer.ask("json.stringify", value=["ev", None, None]) == ours[0][1:]


# Text packets that both decoders must refuse. The reference decoder throws for
# each (checked here too), so a Python server closes exactly where Node would.
REFUSED_BY_BOTH = [
    "2{}",
    "2[]",
    '2abc["a"]',
    '212abc["a"]',
    "3{}",
    "1{}",
    "0[]",
    '0"x"',
    "4[]",
    "7",
    "x",
    "9[]",
    '2["a"',
    '2["a",NaN]',
    '5-["a"]',
    '50-["a"]',
    '5a-["a"]',
    '511-["a"]',
    '5["a"]',
    *[f'2["{name}"]' for name in sorted(RESERVED_EVENTS)],
]


@pytest.mark.parametrize("text", REFUSED_BY_BOTH)
def test_refused_by_both(peer: NodePeer, text: str) -> None:
    answer = js_decode(peer, [text])
    assert answer["error"] is not None and answer["packets"] == []
    packets, error = py_decode([text])
    assert error is not None and packets == []


@pytest.mark.parametrize(
    "items",
    [
        [b"\x01"],  # binary when nothing is pending
        ['51-["a",{"_placeholder":true,"num":0}]', '2["b"]'],  # text while pending
        ['51-["a",{"_placeholder":true,"num":1}]', b"x"],  # num out of range
        ['51-["a",{"_placeholder":true,"num":-1}]', b"x"],
        ['51-["a",{"_placeholder":true,"num":"0"}]', b"x"],
        ['51-["a",{"_placeholder":true}]', b"x"],
    ],
)
def test_binary_sequences_refused_by_both(peer: NodePeer, items: list[str | bytes]) -> None:
    answer = js_decode(peer, items)
    assert answer["error"] is not None and answer["packets"] == []
    packets, error = py_decode(items)
    assert error is not None and packets == []


# Where the reference's loose JavaScript number parsing lets garbage through, we
# refuse on purpose (see the socketio module docstring). Pin the reference's
# behaviour so the list stays honest if a new version tightens it.
STRICTER_THAN_REFERENCE = [
    "",  # Number("") is 0: CONNECT
    ' {"a":1}',  # Number(" ") is 0: CONNECT, and the space is ack id 0
    '2 ["a"]',  # " " read as ack id 0
    '5 1-["a",{"_placeholder":true,"num":0}]',
    '51e0-["a",{"_placeholder":true,"num":0}]',
    "2",  # EVENT without data
    "3",
    "4",
    '21234567890123456789["a"]',  # id beyond 2**53
    '51-["a",{"_placeholder":true,"num":0.5}]',  # substitutes undefined
    "2[1e999]",  # event named Infinity: cannot be sent back (JSON writes null)
]


@pytest.mark.parametrize("text", STRICTER_THAN_REFERENCE)
def test_stricter_than_the_reference(peer: NodePeer, text: str) -> None:
    items: list[str | bytes] = [text] if "_placeholder" not in text else [text, b"x"]
    answer = js_decode(peer, items)
    assert answer["error"] is None, "the reference now refuses it: move it to REFUSED_BY_BOTH"
    _, error = py_decode(items)
    assert error is not None


# Differential check on random mutations of valid packets: whatever Python
# accepts, the reference accepts with the same meaning.
ALPHABET = '0123456789-/,[]{}":_ab\x00 .\\e'


@st.composite
def mutated(draw: st.DrawFn) -> list[str | bytes]:
    packet = draw(packets_with(with_binary))
    items = Encoder().encode(packet)
    text = items[0]
    assert isinstance(text, str)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        pos = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(ALPHABET))
        if action == "insert":
            text = text[:pos] + char + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + 1 :]
        else:
            text = text[:pos] + char + text[pos + 1 :]
    extra = draw(st.lists(st.binary(max_size=4), max_size=2))
    return [text, *items[1:], *extra]


@settings(max_examples=int(os.environ.get("CODEC_DIFF_EXAMPLES", "400")), deadline=None)
@given(mutated())
@example(['51-/admin,["a",[null,{"_placeholder":true,"num":0}],8e308]', b""])  # found in CI
def test_what_python_accepts_the_reference_accepts(
    peer: NodePeer, items: list[str | bytes]
) -> None:
    packets, error = py_decode(items)
    answer = js_decode(peer, items)
    theirs = [sio_from_js(p) for p in answer["packets"]]
    if error is None:
        assert answer["error"] is None
        assert len(theirs) == len(packets)
        assert all(same_packet(a, b) for a, b in zip(packets, theirs, strict=False))
    else:
        # We may refuse more, but never deliver something the reference did not.
        assert len(packets) <= len(theirs)
        assert all(same_packet(a, b) for a, b in zip(packets, theirs, strict=False))


# -- Engine.IO -----------------------------------------------------------------------------


def eio_to_js(packet: eio.Packet) -> dict[str, Any]:
    out: dict[str, Any] = {"type": EIO_NAMES[packet.type]}
    if packet.data is not None:
        out["data"] = to_wire(packet.data)
    return out


def eio_from_js(obj: dict[str, Any]) -> eio.Packet:
    data = from_wire(obj.get("data"))
    return eio.Packet(eio.PacketType(EIO_NAMES.index(obj["type"])), data)


eio_text = st.builds(
    eio.Packet,
    st.sampled_from(eio.PacketType),
    st.one_of(st.none(), st.text(min_size=1).filter(lambda s: "\x1e" not in s)),
)
eio_binary = st.builds(eio.Packet, st.just(eio.PacketType.MESSAGE), st.binary())
eio_packets = st.one_of(eio_text, eio_binary)


@interop
@given(eio_packets)
def test_eio_packet_both_ways(peer: NodePeer, packet: eio.Packet) -> None:
    ours = eio.encode_packet(packet)
    theirs = from_wire(peer.ask("eio.encodePacket", packet=eio_to_js(packet), supportsBinary=True))
    assert ours == theirs
    assert eio_from_js(peer.ask("eio.decodePacket", data=to_wire(ours))) == packet
    assert eio.decode_packet(theirs) == packet
    # The base64 form (forceBase64 clients, polling) decodes the same both ways.
    b64 = peer.ask("eio.encodePacket", packet=eio_to_js(packet), supportsBinary=False)
    assert eio.decode_packet(b64) == packet


@interop
@given(st.lists(eio_packets, min_size=1, max_size=10))
def test_eio_payload_both_ways(peer: NodePeer, packets: list[eio.Packet]) -> None:
    ours = eio.encode_payload(packets)
    theirs = peer.ask("eio.encodePayload", packets=[eio_to_js(p) for p in packets])
    assert ours == theirs
    assert [eio_from_js(p) for p in peer.ask("eio.decodePayload", payload=ours)] == packets
    assert eio.decode_payload(theirs) == packets
    if not any(isinstance(p.data, str) and not _utf8_ok(p.data) for p in packets):
        assert eio.decode_payload(theirs.encode()) == packets


def _utf8_ok(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("payload", ["", "abc", "4a\x1e\x1e4b", "\x1e", "4a\x1e", "9", "4a\x1eX"])
def test_eio_payload_refused_by_both(peer: NodePeer, payload: str) -> None:
    decoded = peer.ask("eio.decodePayload", payload=payload)
    assert decoded[-1] == {"type": "error", "data": "parser error"}
    with pytest.raises(ProtocolError):
        eio.decode_payload(payload)


def test_socketio_binary_event_over_polling_both_ways(peer: NodePeer) -> None:
    # The full stack of a polling body: Socket.IO items as Engine.IO packets.
    packet = Packet(T.EVENT, "/chat", ["upload", {"a": b"\x00\xff", "b": [b"", b"z"]}], 3)
    items = Encoder().encode(packet)
    body = eio.encode_payload(eio.Packet(eio.PacketType.MESSAGE, i) for i in items)
    js_packets = peer.ask("eio.decodePayload", payload=body)
    assert all(p["type"] == "message" for p in js_packets)
    answer = js_decode(peer, [from_wire(p["data"]) for p in js_packets])
    assert answer["error"] is None
    assert same_packet(sio_from_js(answer["packets"][0]), packet)

    theirs = [from_wire(i) for i in peer.ask("sio.encode", packet=sio_to_js(packet))]
    js_body = peer.ask(
        "eio.encodePayload", packets=[{"type": "message", "data": to_wire(i)} for i in theirs]
    )
    assert js_body == body
    decoder = Decoder()
    results = [decoder.feed(p.data) for p in eio.decode_payload(js_body.encode())]  # type: ignore[arg-type]
    assert results[-1] == packet
