"""The msgpack codec (protocol/msgpack.py) against the npm ``socket.io-msgpack-parser``.

One Node process (tests/js/msgpack_peer.js) holds the reference parser for the
module. Packets built by hypothesis go both ways (our encoder -> its decoder,
its encoder -> our decoder) and must come out the same; fixed cases pin
``notepack.io``'s quirks (``ArrayBuffer`` as ext 0, ``undefined``, extra keys);
inputs both refuse, and those only we refuse, are listed. The fuzz at the end
holds the decoder to its contract: a packet or :class:`ProtocolError`, nothing
else, and whatever it accepts can be encoded back.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_relay.protocol import ProtocolError
from flask_relay.protocol.codecs import make_codec
from flask_relay.protocol.msgpack import Decoder, Encoder
from flask_relay.protocol.socketio import MAX_ACK_ID, RESERVED_EVENTS, Packet, PacketType

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT / "tests" / "js" / "msgpack_peer.js"
T = PacketType

interop = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(
    max_examples=int(os.environ.get("CODEC_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class MsgpackPeer:
    """The reference parser in a Node subprocess, spoken to line by line."""

    def __init__(self, node: str) -> None:
        self.proc = subprocess.Popen(
            [node, str(PEER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            cwd=ROOT,
        )

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def ask(self, op: str, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **request}) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            pytest.fail(
                "the Node peer died (is socket.io-msgpack-parser installed? run `make deps`): "
                + self.proc.stderr.read()[-500:]
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def encode(self, packet: dict[str, Any]) -> bytes:
        answer = self.ask("encode", packet=packet)
        assert "result" in answer, answer
        return base64.b64decode(answer["result"])

    def decode(self, data: bytes) -> dict[str, Any]:
        """``{"result": packet}`` or ``{"error": message}``."""
        return self.ask("decode", data=base64.b64encode(data).decode())


def require_npm(node: str, package: str) -> None:
    """Fail with the fix if ``package`` is not installed (node_modules or NODE_PATH)."""
    found = subprocess.run(
        [node, "-e", f"require.resolve({package!r})"], cwd=ROOT, capture_output=True
    )
    if found.returncode != 0:
        pytest.fail(f"the npm package {package} is required: run `make deps`")


@pytest.fixture(scope="module")
def peer(node: str) -> Iterator[MsgpackPeer]:
    require_npm(node, "socket.io-msgpack-parser")
    p = MsgpackPeer(node)
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
        if list(value) == ["$undef"]:
            return None
        return {k: from_wire(v) for k, v in value.items()}
    return value


def to_js(packet: Packet) -> dict[str, Any]:
    out: dict[str, Any] = {"type": int(packet.type), "nsp": packet.namespace}
    if packet.data is not None:
        out["data"] = to_wire(packet.data)
    if packet.id is not None:
        out["id"] = packet.id
    return out


def from_js(obj: dict[str, Any]) -> Packet:
    return Packet(PacketType(obj["type"]), obj["nsp"], from_wire(obj.get("data")), obj.get("id"))


def decode_one(data: bytes) -> Packet:
    packet = Decoder().feed(data)
    assert packet is not None
    return packet


# -- strategies --------------------------------------------------------------------------

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
keys = text.filter(lambda k: k != "__proto__")
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    # Within 2**53: the test's JSON line to Node writes integral floats as integers.
    st.floats(min_value=-(2.0**53), max_value=2.0**53),
    text,
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
namespaces = st.sampled_from(["/", "/chat", "/a/b", "/\u00e9"])
ack_ids = st.one_of(st.none(), st.integers(min_value=0, max_value=MAX_ACK_ID))
event_names = st.one_of(text.filter(lambda n: n not in RESERVED_EVENTS), st.integers(-1000, 1000))


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    kind = draw(st.sampled_from([T.CONNECT, T.DISCONNECT, T.EVENT, T.ACK, T.CONNECT_ERROR]))
    ns = draw(namespaces)
    if kind is T.EVENT:
        data = [draw(event_names), *draw(st.lists(values, max_size=4))]
        return Packet(kind, ns, data, draw(ack_ids))
    if kind is T.ACK:
        return Packet(kind, ns, draw(st.lists(values, max_size=4)), draw(st.integers(0, 2**31)))
    if kind is T.CONNECT:
        return Packet(
            kind, ns, draw(st.one_of(st.none(), st.dictionaries(keys, values, max_size=3)))
        )
    if kind is T.CONNECT_ERROR:
        return Packet(kind, ns, {"message": draw(text), "data": draw(values)})
    return Packet(kind, ns)


# -- round trips and interop ---------------------------------------------------------------


@given(packets())
@settings(max_examples=300, deadline=None)
def test_round_trip(packet: Packet) -> None:
    (encoded,) = Encoder().encode(packet)
    assert isinstance(encoded, bytes)
    assert decode_one(encoded) == packet


@given(packets())
@interop
def test_python_encodes_node_decodes(peer: MsgpackPeer, packet: Packet) -> None:
    (encoded,) = Encoder().encode(packet)
    assert isinstance(encoded, bytes)
    answer = peer.decode(encoded)
    assert "result" in answer, answer
    assert from_js(answer["result"]) == packet


@given(packets())
@interop
def test_node_encodes_python_decodes(peer: MsgpackPeer, packet: Packet) -> None:
    assert decode_one(peer.encode(to_js(packet))) == packet


def test_notepack_quirks(peer: MsgpackPeer) -> None:
    """What the official client sends beyond plain values."""
    sent = {
        "type": 2,
        "data": ["up", {"$ab": base64.b64encode(b"\x00\xff").decode()}, {"$undef": True}, [1.5]],
        "options": {"compress": True},  # socket.io-client adds this key to every EVENT
        "nsp": "/",
        "id": 3,
    }
    packet = decode_one(peer.encode(sent))
    assert packet == Packet(T.EVENT, "/", ["up", b"\x00\xff", None, [1.5]], 3)
    # An 8-byte ArrayBuffer is ext type 0 too (a Date would look the same).
    eight = {"$ab": base64.b64encode(bytes(range(8))).decode()}
    assert decode_one(peer.encode({"type": 3, "data": [eight], "nsp": "/", "id": 0})).data == [
        bytes(range(8))
    ]


def test_no_binary_types_on_the_wire(peer: MsgpackPeer) -> None:
    """BINARY_EVENT/ACK are sent as EVENT/ACK with the bytes inline, in one message."""
    items = Encoder().encode(Packet(T.BINARY_EVENT, "/x", ["b", b"\x01" * 300], 9))
    assert len(items) == 1
    assert msgpack.unpackb(items[0]) == {
        "type": 2,
        "data": ["b", b"\x01" * 300],
        "nsp": "/x",
        "id": 9,
    }
    assert peer.decode(items[0])["result"]["type"] == 2


REFUSED_BY_BOTH: list[Any] = [
    {"type": 5, "data": ["x"], "nsp": "/"},  # no binary types in this format
    {"type": -1, "nsp": "/"},
    {"type": "2", "data": ["x"], "nsp": "/"},
    {"type": 2, "data": ["x"]},  # no namespace
    {"type": 2, "data": ["x"], "nsp": 1},
    {"type": 2, "data": "x", "nsp": "/"},
    {"type": 3, "data": {"a": 1}, "nsp": "/", "id": 1},
    {"type": 0, "data": [1], "nsp": "/"},
    {"type": 1, "data": [], "nsp": "/"},
    {"type": 4, "data": 3, "nsp": "/"},
    {"type": 2, "data": ["x"], "nsp": "/", "id": 1.5},
    {"type": 2, "data": ["x"], "nsp": "/", "id": "1"},
    ["not", "a", "map"],
]


@pytest.mark.parametrize("value", REFUSED_BY_BOTH, ids=repr)
def test_refused_by_both(peer: MsgpackPeer, value: Any) -> None:
    data = msgpack.packb(value)
    assert "error" in peer.decode(data)
    with pytest.raises(ProtocolError):
        Decoder().feed(data)


STRICTER: list[Any] = [
    {"type": 2, "data": [], "nsp": "/"},  # the reference dispatches an event named undefined
    {"type": 2, "data": ["connect"], "nsp": "/"},
    {"type": 2, "data": [None], "nsp": "/"},
    {"type": 2, "data": [float("inf")], "nsp": "/"},
    {"type": 2, "data": ["x"], "nsp": "chat"},
    {"type": 2, "data": ["x"], "nsp": "/", "id": -1},
    {"type": 2, "data": ["x"], "nsp": "/", "id": 2**53},
]


@pytest.mark.parametrize("value", STRICTER, ids=repr)
def test_stricter_than_the_reference(peer: MsgpackPeer, value: Any) -> None:
    data = msgpack.packb(value)
    assert "result" in peer.decode(data)
    with pytest.raises(ProtocolError):
        Decoder().feed(data)


def test_text_messages_and_trailing_bytes_refused() -> None:
    with pytest.raises(ProtocolError, match="text"):
        Decoder().feed('2["x"]')
    valid = msgpack.packb({"type": 2, "data": ["x"], "nsp": "/"})
    with pytest.raises(ProtocolError):
        Decoder().feed(valid + b"\x00")
    with pytest.raises(ProtocolError):
        Decoder().feed(valid[:-1])
    decoder = Decoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\xc1")
    with pytest.raises(ProtocolError, match="unusable"):
        decoder.feed(valid)  # a decoder that failed stays failed


def test_encoder_refuses_what_cannot_be_sent() -> None:
    encoder = Encoder()
    for bad in (
        Packet(T.EVENT, "/", "not a list"),
        Packet(T.EVENT, "chat", ["x"]),
        Packet(T.EVENT, "/", ["x"], -1),
        Packet(T.EVENT, "/", ["x", 2**70]),
        Packet(T.DISCONNECT, "/", {"a": 1}),
    ):
        with pytest.raises(ValueError):
            encoder.encode(bad)
    with pytest.raises(TypeError):
        encoder.encode(Packet(T.EVENT, "/", ["x", object()]))


def test_codec_by_name() -> None:
    assert make_codec("msgpack").name == "msgpack"
    assert make_codec(None).name == make_codec("json").name == "default"
    assert isinstance(make_codec("msgpack").new_decoder(), Decoder)
    with pytest.raises(ValueError, match="cbor"):
        make_codec("cbor")


# -- fuzz ---------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding after a few random byte edits."""
    (data,) = Encoder().encode(draw(packets()))
    assert isinstance(data, bytes)
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        pos = draw(st.integers(0, len(buf)))
        if op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 3))]
        elif op == "replace" and pos < len(buf):
            buf[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del buf[pos:]
    return bytes(buf)


@given(st.one_of(st.binary(max_size=80), mutated(), st.text(max_size=20)))
@FUZZ
def test_decoder_only_raises_protocol_error(data: bytes | str) -> None:
    try:
        packet = Decoder().feed(data)
    except ProtocolError:
        return
    assert packet is not None
    assert packet.type in (T.CONNECT, T.DISCONNECT, T.EVENT, T.ACK, T.CONNECT_ERROR)
    # What the decoder accepts, the encoder can send back (a server echoes).
    Encoder().encode(packet)


def test_deep_nesting() -> None:
    """Nesting the unpacker can hold round-trips; deeper is a ProtocolError, not a crash."""
    head = msgpack.packb({"type": 2, "nsp": "/"})
    # 500, not 1000: comparing the result recurses once per level, and Python
    # 3.10 stops at 1,000 frames.
    for depth, accepted in ((500, True), (5000, False), (100_000, False)):
        # The same map with a third key: "data": ["x", [[[...nil...]]]].
        data = b"\x83" + head[1:] + b"\xa4data\x92\xa1x" + b"\x91" * depth + b"\xc0"
        if accepted:
            packet = decode_one(data)
            (again,) = Encoder().encode(packet)
            assert isinstance(again, bytes) and decode_one(again) == packet
        else:
            with pytest.raises(ProtocolError):
                Decoder().feed(data)
