"""Fuzzing the Engine.IO and Socket.IO decoders (bounded: a few seconds in all).

The property: whatever a peer sends, a decoder either returns well-formed
packets or raises :class:`ProtocolError`, never anything else (no
``IndexError``, ``UnicodeDecodeError``, ``RecursionError``...), because the I/O
layers above catch exactly that one type to close the connection cleanly.

Inputs are random bytes and text, and valid packets (built by hypothesis,
encoded by our encoders) mutated by byte/character edits, truncation,
splicing, and, for Socket.IO binary packets, dropped, extra, reordered or
interleaved attachments. Whatever the Socket.IO decoder accepts must also be
something our encoder can send back (a server echoes what it receives).
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
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

# CODEC_FUZZ_EXAMPLES=5000 for a long hunt; the default keeps the file at a few CPU seconds.
FUZZ = settings(
    max_examples=int(os.environ.get("CODEC_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

JSON_MODULES: list[Any] = [None, jsonlib.stdlib_json]
if jsonlib.OrjsonJSON is not None:
    JSON_MODULES.append(jsonlib.OrjsonJSON())
json_modules = st.sampled_from(JSON_MODULES)


# -- building blocks -------------------------------------------------------------------------

# Characters that mean something to one of the parsers, so that random text
# reaches past the first check more often than uniformly random text would.
SPECIAL = '0123456789-/,.eE[]{}":_btrueflsnN \t\r\n\x1e\\=+aAzZ\x00\x7f\u00e9\u2028\ud800\U0001f600'
special_text = st.text(alphabet=st.sampled_from(SPECIAL), max_size=60)
any_text = st.one_of(st.text(max_size=60), special_text)


@st.composite
def mutated(draw: st.DrawFn, original: str | bytes) -> str | bytes:
    """``original`` after a few random edits (insert, delete, replace, cut, repeat)."""
    value = original
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        size = len(value)
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "repeat", "swap"]))
        pos = draw(st.integers(min_value=0, max_value=size))
        if isinstance(value, str):
            piece: Any = draw(st.text(alphabet=st.sampled_from(SPECIAL), min_size=1, max_size=3))
        else:
            piece = draw(st.binary(min_size=1, max_size=3))
        if op == "insert":
            value = value[:pos] + piece + value[pos:]
        elif op == "delete":
            value = value[:pos] + value[pos + 1 :]
        elif op == "replace":
            value = value[:pos] + piece + value[pos + len(piece) :]
        elif op == "truncate":
            value = value[:pos]
        elif op == "repeat":
            value = value[:pos] + value[pos:] * 2
        elif size > 1:
            end = draw(st.integers(min_value=pos, max_value=size))
            value = value[pos:end] + value[:pos] + value[end:]
    return value


def _flip_type(value: str | bytes) -> str | bytes:
    """A binary frame as text and a text frame as binary: what a confused peer sends."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return value.decode("latin-1")


# -- Engine.IO -------------------------------------------------------------------------------

eio_packets = st.one_of(
    st.builds(
        eio.Packet,
        st.sampled_from(eio.PacketType),
        st.one_of(st.none(), st.text(max_size=20).filter(lambda s: eio.SEPARATOR not in s)),
    ),
    st.builds(eio.Packet, st.just(eio.PacketType.MESSAGE), st.binary(max_size=20)),
)


def check_eio_packet(packet: eio.Packet) -> None:
    assert type(packet) is eio.Packet
    assert type(packet.type) is eio.PacketType
    if isinstance(packet.data, bytes):
        assert packet.type is eio.PacketType.MESSAGE
    else:
        assert packet.data is None or (type(packet.data) is str and packet.data)


def eio_decode_packet(data: Any) -> None:
    try:
        packet = eio.decode_packet(data)
    except ProtocolError as exc:
        assert type(exc) is ProtocolError and exc.reason
        return
    check_eio_packet(packet)
    # What was accepted can be sent back (binary or text, whichever it was).
    assert eio.decode_packet(eio.encode_packet(packet)) == packet


def eio_decode_payload(data: Any) -> None:
    try:
        packets = eio.decode_payload(data)
    except ProtocolError as exc:
        assert type(exc) is ProtocolError and exc.reason
        return
    assert packets
    for packet in packets:
        check_eio_packet(packet)
    assert eio.decode_payload(eio.encode_payload(packets)) == packets


@FUZZ
@given(st.one_of(st.binary(max_size=80), any_text))
def test_engineio_random_input(data: str | bytes) -> None:
    eio_decode_packet(data)
    eio_decode_payload(data)
    eio_decode_packet(_flip_type(data))
    eio_decode_payload(_flip_type(data))


@FUZZ
@given(st.lists(eio_packets, min_size=1, max_size=6), st.data())
def test_engineio_mutated_payload(packets: list[eio.Packet], data: st.DataObject) -> None:
    body = eio.encode_payload(packets)
    eio_decode_payload(data.draw(mutated(body)))
    eio_decode_payload(data.draw(mutated(body.encode("utf-8", "surrogatepass"))))


@FUZZ
@given(eio_packets, st.data())
def test_engineio_mutated_packet(packet: eio.Packet, data: st.DataObject) -> None:
    encoded = eio.encode_packet(packet)
    eio_decode_packet(data.draw(mutated(encoded)))
    eio_decode_packet(data.draw(mutated(_flip_type(encoded))))
    if isinstance(packet.data, bytes):  # the base64 form, as in a payload or with forceBase64
        eio_decode_packet(data.draw(mutated(eio.encode_payload([packet]))))


@pytest.mark.parametrize("value", [None, 4, 4.5, ["4"], {"4": 1}, object()])
def test_engineio_non_text_input(value: Any) -> None:
    eio_decode_packet(value)
    eio_decode_payload(value)


# -- Socket.IO -------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
placeholders = st.builds(
    lambda num: {"_placeholder": True, "num": num},
    st.one_of(
        st.integers(min_value=-1, max_value=4),
        st.floats(max_value=4, allow_nan=False),
        st.text(max_size=1),
    ),
)


def _nest(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=4), children, max_size=4),
        ),
        max_leaves=12,
    )


values = _nest(st.one_of(json_scalars, st.binary(max_size=8), placeholders))
json_values = _nest(st.one_of(json_scalars, placeholders))  # CONNECT data holds no binary
namespaces = st.one_of(
    st.just("/"),
    st.text(max_size=6).filter(lambda s: "," not in s).map(lambda s: "/" + s),
)
ack_ids = st.one_of(st.none(), st.integers(min_value=0, max_value=MAX_ACK_ID))
names = st.one_of(st.sampled_from(sorted(RESERVED_EVENTS)), st.text(max_size=8), st.integers())
sio_packets = st.one_of(
    st.builds(
        Packet,
        st.just(PacketType.EVENT),
        namespaces,
        st.tuples(names, st.lists(values, max_size=3)).map(lambda t: [t[0], *t[1]]),
        ack_ids,
    ),
    st.builds(Packet, st.just(PacketType.ACK), namespaces, st.lists(values, max_size=3), ack_ids),
    st.builds(
        Packet,
        st.just(PacketType.CONNECT),
        namespaces,
        st.one_of(st.none(), st.dictionaries(st.text(max_size=4), json_values, max_size=3)),
    ),
    st.builds(Packet, st.just(PacketType.DISCONNECT), namespaces),
    st.builds(
        Packet,
        st.just(PacketType.CONNECT_ERROR),
        namespaces,
        st.one_of(
            st.text(max_size=8),
            st.fixed_dictionaries({"message": st.text(max_size=8)}, optional={"data": json_values}),
        ),
    ),
)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def check_sio_packet(packet: Packet, json_module: Any) -> None:
    """A decoded packet is well formed, and our encoder can send it back."""
    assert type(packet) is Packet
    assert packet.type in (
        PacketType.CONNECT,
        PacketType.DISCONNECT,
        PacketType.EVENT,
        PacketType.ACK,
        PacketType.CONNECT_ERROR,
    )
    assert packet.namespace.startswith("/") and "," not in packet.namespace
    assert packet.id is None or (type(packet.id) is int and 0 <= packet.id <= MAX_ACK_ID)
    if packet.type is PacketType.EVENT:
        assert isinstance(packet.data, list) and packet.data
        assert packet.data[0] not in RESERVED_EVENTS
    elif packet.type is PacketType.ACK:
        assert isinstance(packet.data, list)
    items = Encoder(json_module).encode(packet)
    decoder = Decoder(json_module, max_attachments=len(items))
    results = [decoder.feed(item) for item in items]
    assert results[:-1] == [None] * (len(items) - 1)
    again = results[-1]
    assert again is not None
    if _finite(packet.data):  # JSON has no Infinity: it is sent as null, like JSON.stringify
        assert again.data == packet.data
        assert (again.type, again.namespace, again.id) == (packet.type, packet.namespace, packet.id)


def feed_all(decoder: Decoder, items: list[Any], json_module: Any) -> None:
    """Feed every item; after the first ProtocolError, the decoder must refuse everything."""
    failed = False
    for item in items:
        try:
            packet = decoder.feed(item)
        except ProtocolError as exc:
            assert type(exc) is ProtocolError and exc.reason
            failed = True
            continue
        assert not failed, "the decoder accepted input after an error"
        if packet is not None:
            check_sio_packet(packet, json_module)


frames = st.one_of(st.binary(max_size=40), any_text)


@FUZZ
@given(st.lists(frames, min_size=1, max_size=6), json_modules, st.integers(0, 12))
def test_socketio_random_input(items: list[Any], json_module: Any, max_attachments: int) -> None:
    feed_all(Decoder(json_module, max_attachments=max_attachments), items, json_module)


@FUZZ
@given(st.lists(sio_packets, min_size=1, max_size=3), json_modules, st.data())
def test_socketio_mutated_packets(
    packets: list[Packet], json_module: Any, data: st.DataObject
) -> None:
    items: list[Any] = []
    for packet in packets:
        items.extend(Encoder(json_module).encode(packet))
    # Mutate some of the frames, then shuffle, drop or repeat a few of them.
    out: list[Any] = []
    for item in items:
        action = data.draw(st.sampled_from(["keep", "keep", "mutate", "flip", "drop", "dup"]))
        if action == "keep":
            out.append(item)
        elif action == "mutate":
            out.append(data.draw(mutated(item)))
        elif action == "flip":
            out.append(_flip_type(item))
        elif action == "dup":
            out.extend([item, item])
    if out and data.draw(st.booleans()):
        out = data.draw(st.permutations(out))
    if data.draw(st.booleans()):
        out.insert(data.draw(st.integers(0, len(out))), data.draw(frames))
    feed_all(Decoder(json_module), out, json_module)


@FUZZ
@given(sio_packets, json_modules)
def test_socketio_valid_packets_are_accepted(packet: Packet, json_module: Any) -> None:
    # The unmutated stream either decodes (then it is the same packet) or is
    # refused for a documented reason: a reserved event name, or a
    # placeholder-like value of the user's that a binary packet substitutes.
    items = Encoder(json_module).encode(packet)
    decoder = Decoder(json_module, max_attachments=max(len(items) - 1, 1))
    try:
        results = [decoder.feed(item) for item in items]
    except ProtocolError as exc:
        assert type(exc) is ProtocolError
        assert "reserved" in exc.reason or "placeholder" in exc.reason
        return
    decoded = results[-1]
    assert decoded is not None
    check_sio_packet(decoded, json_module)
    if _finite(packet.data) and (len(items) == 1 or not _has_placeholder(packet.data)):
        assert decoded == packet


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_placeholder(v) for v in value)
    if isinstance(value, dict):
        return value.get("_placeholder") is True or any(
            _has_placeholder(v) for v in value.values()
        )
    return False


@pytest.mark.parametrize("value", [None, 4, 4.5, ["2"], {"2": 1}, object()])
def test_socketio_non_text_input(value: Any) -> None:
    feed_all(Decoder(), [value, '2["ok"]'], None)


# -- regressions found by fuzzing ------------------------------------------------------------


def _nested(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("json_module", JSON_MODULES)
@pytest.mark.parametrize("depth", [500, 990, 1020, 3000, 50_000])
def test_deeply_nested_binary_packet(json_module: Any, depth: int) -> None:
    # Found by fuzzing: a binary packet nested about a thousand levels deep
    # parses as JSON, then the (recursive) placeholder check overflowed the
    # stack and a RecursionError escaped the decoder.
    text = '51-["a",' + _nested(depth, '{"_placeholder":true,"num":0}') + "]"
    decoder = Decoder(json_module)
    try:
        assert decoder.feed(text) is None
    except ProtocolError:  # the JSON module may refuse the depth: fine, cleanly
        return
    packet = decoder.feed(b"\x01")
    assert packet is not None
    inner = packet.data[1]
    for _ in range(depth):
        inner = inner[0]
    assert inner == b"\x01"


@pytest.mark.parametrize("json_module", JSON_MODULES)
def test_deeply_nested_placeholder_out_of_range(json_module: Any) -> None:
    text = '51-["a",' + _nested(3000, '{"_placeholder":true,"num":1}') + "]"
    with pytest.raises(ProtocolError):
        Decoder(json_module).feed(text)


def test_encoder_refuses_too_deep_data_with_value_error() -> None:
    # The encoder's errors are the caller's: ValueError/TypeError, as documented,
    # not a RecursionError (here: data too deep for the JSON module to write).
    data: Any = [b"x"]
    for _ in range(100_000):
        data = [data]
    for module in JSON_MODULES:
        with pytest.raises((ValueError, TypeError)):
            Encoder(module).encode(Packet(PacketType.EVENT, "/", ["ev", data]))
        with pytest.raises((ValueError, TypeError)):
            Encoder(module).encode(Packet(PacketType.ACK, "/", [data[0][0][0]]))


@pytest.mark.parametrize("json_module", JSON_MODULES)
@pytest.mark.parametrize(
    "text", ["2[1e999]", '2[-1e999,"x"]', '51-[1e400,{"_placeholder":true,"num":0}]']
)
def test_infinite_event_name(json_module: Any, text: str) -> None:
    # Found by fuzzing: "1e999" parses as an infinite float, accepted as a
    # numeric event name, but re-encoded as null, which no decoder accepts.
    with pytest.raises(ProtocolError, match="EVENT"):
        Decoder(json_module).feed(text)


def test_finite_numeric_event_names_still_work() -> None:
    assert Decoder().feed("2[1.5,2]") == Packet(PacketType.EVENT, "/", [1.5, 2])
    assert Decoder().feed("2[1e300]") == Packet(PacketType.EVENT, "/", [1e300])
