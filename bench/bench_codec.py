"""Micro-benchmark of the protocol codecs against python-socketio's, in one run.

Run: ``.venv/bin/python bench/bench_codec.py`` (about 30 s; ``--quick`` for a
rough run in a few seconds). It needs python-socketio/python-engineio (a test
dependency, so in ``.venv``) and measures, in the same process and on the same
inputs:

1. Engine.IO packets and long-polling payloads: ``flask_relay.protocol.engineio``
   against ``engineio.packet.Packet`` / ``engineio.payload.Payload``.
2. Socket.IO packets (small JSON events, events with a namespace and ack id,
   acks, binary attachments): ``flask_relay.protocol.socketio`` with its
   default JSON module and with the stdlib one (to separate the codec from the
   JSON library) against ``socketio.packet.Packet``. Our decoder validates
   everything the reference parser validates (see socketio.py); theirs does not,
   so the decode columns compare unequal amounts of work, to our disadvantage.
3. JSON modules: each available module's ``dumps``/``loads`` speed, and whether
   it is *correct* for this job, that is, behaves like ``JSON.stringify`` /
   ``JSON.parse`` on the peer (see :mod:`flask_relay.protocol.jsonlib`): NaN,
   big integers, lone surrogates, non-string keys, deep nesting, trailing
   commas. The default (:data:`jsonlib.default_json`) must be the fastest of the
   correct ones; the script says whether it is.

Figures of one run (2026-11-23) on the development machine: 2 cores shared
with other jobs, so the clock is CPU time (see :func:`ops_per_second`) and
figures still move by about 10 % between runs (the binary rows by more);
Python 3.13.0, orjson 3.13.0, python-socketio 5.18.1, python-engineio 4.15.1.
Operations per CPU second, higher is better; ratio = flask-relay with its
default JSON / python-socketio::

    case                              relay(default)  relay(stdlib)  python-socketio  ratio
    eio encode text packet                     1.62M              -            1.66M   1.0x
    eio decode text packet                     1.39M              -             613k   2.3x
    eio decode binary frame                    1.51M              -            1.32M   1.1x
    eio encode payload (5 packets)              243k              -             192k   1.3x
    eio decode payload (5 packets)              234k              -              98k   2.4x
    sio encode event                            945k           273k             125k   7.6x
    sio decode event                            633k           329k             160k   4.0x
    sio encode event /nsp + ack id              587k           259k             117k   5.0x
    sio decode event /nsp + ack id              479k           291k             140k   3.4x
    sio encode ack                              709k           310k             157k   4.5x
    sio decode ack                              606k           362k             161k   3.8x
    sio encode binary event (1 KiB)             187k            94k              89k   2.1x
    sio decode binary event (1 KiB)             172k           135k             109k   1.6x

    JSON module                small dumps  small loads  2 KiB dumps  2 KiB loads  correct
    jsonlib default                  3.40M        2.00M         293k         110k  yes
    jsonlib stdlib                    386k         552k          34k          40k  yes
    json (stdlib defaults)            371k         501k          37k          39k  no (1)
    orjson (bare)                    3.36M        2.09M         283k         103k  no (2)
    msgspec.json (bare)              2.81M        2.60M         183k          92k  no (3)
    msgspec + stdlib fallback        2.52M        2.33M         183k          97k  yes
    ujson (bare)                     1.01M         891k          69k          69k  no (4)
    ujson + stdlib fallback           933k         840k          70k          69k  no (4)
    python-rapidjson (bare)           951k         972k          70k          25k  no (5)
    simplejson (bare)                 151k         398k          14k          36k  no (6)

    (1) not compact (so int keys differ too), non-ASCII escaped, writes and reads NaN
    (2) refuses big ints, lone surrogates and int keys, refuses "\\ud83d"
    (3) refuses lone surrogates both ways
    (4) writes and reads NaN, writes lone surrogates raw (no exception: no fallback helps)
    (5) writes and reads NaN, refuses lone surrogates and int keys
    (6) writes NaN, refuses lone surrogates

"small" is ``["chat",{"text":"hello, world","n":1}]``, "2 KiB" a dict of 20
user records. Geometric mean of the four JSON figures, default = 1.00: msgspec
with the stdlib fallback 0.89, compact stdlib 0.20; every other module fails a
probe. So the default stays :class:`jsonlib.OrjsonJSON` (orjson where it agrees
with the stdlib, the stdlib elsewhere) when the ``orjson`` extra is installed,
and the compact stdlib otherwise: the fastest correct choice (msgspec decodes
small documents about 20 % faster but encodes 25-35 % slower, and is not a
dependency). The Socket.IO codec with the stdlib JSON alone is still 2-3x
python-socketio on events: that part of the gain is the codec, the rest orjson.
Our decoders also validate everything the reference parser validates, which
python-socketio's do not, so the decode columns count more work on our side.
The script recomputes the verdict on every run (the last lines it prints).
Modules that are not installed are left out: the figures above were taken with
msgspec 0.22, ujson 6.1, python-rapidjson 1.25 and simplejson 4.3 installed in a
directory on ``PYTHONPATH`` (``pip install --target DIR ...``), outside the venv.
"""

from __future__ import annotations

import argparse
import json as stdlib_json_module
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from flask_relay.protocol import engineio as eio  # noqa: E402
from flask_relay.protocol import jsonlib  # noqa: E402
from flask_relay.protocol import socketio as sio  # noqa: E402

try:
    from engineio import packet as their_eio_packet
    from engineio import payload as their_eio_payload
    from socketio import packet as their_sio_packet
except ImportError:  # pragma: no cover
    sys.exit("python-socketio is needed: pip install python-socketio (it is in the test extra)")

QUICK = False


def ops_per_second(fn: Callable[[], Any]) -> float:
    """Best of several timed batches of ``fn()`` calls, in calls per CPU second.

    The clock is this thread's CPU time, not the wall clock: the figures must
    survive a machine shared with other jobs (time spent descheduled is not
    counted; only cache and memory-bandwidth contention remain).
    """
    clock = time.thread_time
    target = 0.01 if QUICK else 0.02
    repeat = 2 if QUICK else 5
    number = 1
    while True:  # calibrate: a batch of about `target` seconds
        start = clock()
        for _ in range(number):
            fn()
        elapsed = clock() - start
        if elapsed >= target / 4:
            number = max(1, int(number * target / elapsed))
            break
        number *= 4
    best = math.inf
    for _ in range(repeat):
        start = clock()
        for _ in range(number):
            fn()
        best = min(best, clock() - start)
    return number / best


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.0f}k"


# -- inputs --------------------------------------------------------------------------------

EVENT_DATA = ["chat", {"text": "hello, world", "n": 1}]
ACK_DATA = ["ok", 42]
BLOB = bytes(range(256)) * 4  # 1 KiB
BINARY_DATA = ["upload", {"name": "photo.jpg", "data": BLOB}]

EIO_TEXT = '2["chat",{"text":"hello, world","n":1}]'
EIO_WIRE = "4" + EIO_TEXT
EIO_PACKETS = [
    eio.Packet(eio.PacketType.MESSAGE, EIO_TEXT),
    eio.Packet(eio.PacketType.MESSAGE, '2["typing",{"user":"ann"}]'),
    eio.Packet(eio.PacketType.MESSAGE, '3[12,"ok"]'),
    eio.Packet(eio.PacketType.PING),
    eio.Packet(eio.PacketType.MESSAGE, BLOB[:64]),
]
EIO_BODY = eio.encode_payload(EIO_PACKETS)


def their_eio_packets() -> list[Any]:
    return [their_eio_packet.Packet(int(p.type), p.data) for p in EIO_PACKETS]


# -- 1 and 2: codecs -----------------------------------------------------------------------


Case = tuple[str, Callable[[], Any], "Callable[[], Any] | None", Callable[[], Any]]


def codec_cases() -> list[Case]:
    """(name, ours with the default JSON, ours with the stdlib JSON or None, theirs)."""
    msg = eio.PacketType.MESSAGE
    Tp = their_eio_packet.Packet
    TPl = their_eio_payload.Payload
    encode_packet, decode_packet = eio.encode_packet, eio.decode_packet
    encode_payload, decode_payload = eio.encode_payload, eio.decode_payload
    E = eio.Packet
    cases: list[Any] = [
        ("eio encode text packet", lambda: encode_packet(E(msg, EIO_TEXT)), None,
         lambda: Tp(4, EIO_TEXT).encode()),
        ("eio decode text packet", lambda: decode_packet(EIO_WIRE), None,
         lambda: Tp(encoded_packet=EIO_WIRE)),
        ("eio decode binary frame", lambda: decode_packet(BLOB), None,
         lambda: Tp(encoded_packet=BLOB)),
        ("eio encode payload (5 packets)",
         lambda: encode_payload([E(p.type, p.data) for p in EIO_PACKETS]), None,
         lambda: TPl(packets=their_eio_packets()).encode()),
        ("eio decode payload (5 packets)", lambda: decode_payload(EIO_BODY), None,
         lambda: TPl(encoded_payload=EIO_BODY)),
    ]

    ours = sio.Encoder()
    ours_std = sio.Encoder(jsonlib.stdlib_json)
    dec = sio.Decoder()
    dec_std = sio.Decoder(jsonlib.stdlib_json)
    P = sio.Packet
    T = sio.PacketType
    SP = their_sio_packet.Packet
    EV, ACK = their_sio_packet.EVENT, their_sio_packet.ACK

    def sio_pair(name: str, packet: sio.Packet, their: Callable[[], Any]) -> None:
        cases.append((
            f"sio encode {name}",
            lambda: ours.encode(P(packet.type, packet.namespace, packet.data, packet.id)),
            lambda: ours_std.encode(P(packet.type, packet.namespace, packet.data, packet.id)),
            lambda: their().encode(),
        ))
        items = ours.encode(packet)
        their_items = their().encode()
        if isinstance(their_items, str):
            their_items = [their_items]
        assert [items[0], *items[1:]] == their_items, (items, their_items)
        text, *attachments = items
        if attachments:
            def decode_ours(d: sio.Decoder) -> Any:
                d.feed(text)
                for attachment in attachments:
                    result = d.feed(attachment)
                return result

            def decode_theirs() -> Any:
                p = SP(encoded_packet=text)
                for attachment in attachments:
                    p.add_attachment(attachment)
                return p

            cases.append((f"sio decode {name}", lambda: decode_ours(dec),
                          lambda: decode_ours(dec_std), decode_theirs))
        else:
            cases.append((f"sio decode {name}", lambda: dec.feed(text),
                          lambda: dec_std.feed(text), lambda: SP(encoded_packet=text)))

    sio_pair("event", P(T.EVENT, "/", EVENT_DATA), lambda: SP(EV, EVENT_DATA, "/"))
    sio_pair("event /nsp + ack id", P(T.EVENT, "/chat", EVENT_DATA, 7),
             lambda: SP(EV, EVENT_DATA, "/chat", id=7))
    sio_pair("ack", P(T.ACK, "/", ACK_DATA, 12), lambda: SP(ACK, ACK_DATA, "/", id=12))
    sio_pair("binary event (1 KiB)", P(T.EVENT, "/", BINARY_DATA),
             lambda: SP(EV, BINARY_DATA, "/"))
    return cases


def run_codecs() -> None:
    print(f"{'case':<36} {'relay(default)':>15} {'relay(stdlib)':>14} "
          f"{'python-socketio':>16} {'ratio':>7}")
    for name, ours, ours_std, theirs in codec_cases():
        a = ops_per_second(ours)
        b = ops_per_second(ours_std) if ours_std is not None else None
        c = ops_per_second(theirs)
        print(f"{name:<36} {fmt(a):>15} {fmt(b):>14} {fmt(c):>16} {a / c:>6.1f}x", flush=True)


# -- 3: JSON modules -----------------------------------------------------------------------


class Candidate:
    def __init__(self, name: str, dumps: Callable[[Any], Any], loads: Callable[[Any], Any]):
        self.name = name
        self.dumps = dumps
        self.loads = loads


def with_fallback(name: str, fast: Candidate) -> Candidate:
    """``fast`` where it succeeds, the stdlib where it raises: how OrjsonJSON is built.

    It fixes what a fast module refuses, not what it writes wrongly.
    """
    std = jsonlib.StdlibJSON
    fast_dumps, fast_loads = fast.dumps, fast.loads

    def dumps(obj: Any) -> Any:
        try:
            return fast_dumps(obj)
        except Exception:
            return std.dumps(obj)

    def loads(text: Any) -> Any:
        try:
            return fast_loads(text)
        except Exception:
            return std.loads(text)

    return Candidate(name, dumps, loads)


def candidates() -> list[Candidate]:
    out = [
        Candidate("jsonlib default", jsonlib.default_json.dumps, jsonlib.default_json.loads),
        Candidate("jsonlib stdlib", jsonlib.stdlib_json.dumps, jsonlib.stdlib_json.loads),
        Candidate("json (stdlib defaults)", stdlib_json_module.dumps, stdlib_json_module.loads),
    ]
    try:
        import orjson

        out.append(Candidate("orjson (bare)", lambda o: orjson.dumps(o).decode(), orjson.loads))
    except ImportError:
        pass
    try:
        import msgspec

        enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder()
        out.append(Candidate("msgspec.json (bare)", lambda o: enc.encode(o).decode(), dec.decode))
        out.append(with_fallback("msgspec + stdlib fallback", out[-1]))
    except ImportError:
        pass
    try:
        import ujson

        out.append(Candidate(
            "ujson (bare)", lambda o: ujson.dumps(o, ensure_ascii=False), ujson.loads
        ))
        out.append(with_fallback("ujson + stdlib fallback", out[-1]))
    except ImportError:
        pass
    try:
        import rapidjson

        out.append(Candidate(
            "python-rapidjson (bare)", lambda o: rapidjson.dumps(o, ensure_ascii=False),
            rapidjson.loads,
        ))
    except ImportError:
        pass
    try:
        import simplejson

        out.append(Candidate(
            "simplejson (bare)",
            lambda o: simplejson.dumps(o, ensure_ascii=False, separators=(",", ":")),
            simplejson.loads,
        ))
    except ImportError:
        pass
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def correctness(c: Candidate) -> list[str]:
    """The probes ``c`` fails: each is something a JavaScript peer relies on."""
    failed = []

    def dumps_probe(name: str, value: Any, expected: str) -> None:
        try:
            text = _text(c.dumps(value))
            text.encode("utf-8")  # must be sendable
            ok = text == expected
        except Exception:
            ok = False
        if not ok:
            failed.append(name)

    def loads_probe(name: str, text: str, expected: Any, refuse: bool = False) -> None:
        try:
            value = c.loads(text)
            ok = not refuse and value == expected
        except RecursionError:
            ok = False
        except Exception:
            ok = refuse
        if not ok:
            failed.append(name)

    # What JSON.stringify writes for the same value.
    dumps_probe("compact", {"a": [1, "x"]}, '{"a":[1,"x"]}')
    dumps_probe("non-ASCII", "caf\u00e9 \U0001f600", '"caf\u00e9 \U0001f600"')
    dumps_probe("NaN", [math.nan, math.inf], "[null,null]")
    dumps_probe("big int", 2**70, "1180591620717411303424")
    dumps_probe("surrogates", "\ud83d", '"\\ud83d"')
    dumps_probe("int key", {1: "a"}, '{"1":"a"}')
    # What JSON.parse accepts and refuses.
    loads_probe("NaN in", "[NaN]", None, refuse=True)
    loads_probe("trailing comma", "[1,]", None, refuse=True)
    loads_probe("surrogate in", '"\\ud83d"', "\ud83d")
    loads_probe("big int in", "18446744073709551616", 2**64)
    deep = 900  # JSON.parse takes far more; every Python we support takes this much
    loads_probe("depth", "[" * deep + "]" * deep, _nested(deep))
    return failed


def _nested(depth: int) -> Any:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def run_json() -> None:
    small = EVENT_DATA
    medium = {
        "users": [
            {"id": i, "name": f"user{i}", "tags": ["a", "b"], "score": i * 1.5, "ok": True}
            for i in range(20)
        ],
        "text": "caf\u00e9 \u2603 " * 10,
    }
    small_text = jsonlib.stdlib_json.dumps(small)
    medium_text = jsonlib.stdlib_json.dumps(medium)
    print(f"\n{'JSON module':<26} {'small dumps':>12} {'small loads':>12} "
          f"{'2 KiB dumps':>12} {'2 KiB loads':>12}  correct")
    results = []
    for c in candidates():
        figures = [
            ops_per_second(lambda c=c: c.dumps(small)),
            ops_per_second(lambda c=c: c.loads(small_text)),
            ops_per_second(lambda c=c: c.dumps(medium)),
            ops_per_second(lambda c=c: c.loads(medium_text)),
        ]
        failed = correctness(c)
        verdict = "yes" if not failed else "no: " + ", ".join(failed)
        print(f"{c.name:<26} " + " ".join(f"{fmt(f):>12}" for f in figures) + f"  {verdict}",
              flush=True)
        results.append((c, figures, failed))
    # Score: the geometric mean of the four figures, relative to the default's.
    def score(figures: list[float]) -> float:
        return math.prod(figures) ** (1 / len(figures))

    default = results[0]
    correct = sorted(
        ((c, score(f) / score(default[1])) for c, f, failed in results if not failed),
        key=lambda item: -item[1],
    )
    module_name = type(jsonlib.default_json).__name__
    print(f"\ndefault: jsonlib.default_json ({module_name}); correct modules by speed"
          " (geometric mean of the four figures, default = 1.00): "
          + ", ".join(f"{c.name} {r:.2f}" for c, r in correct))
    best, ratio = correct[0]
    if best is default[0] or ratio < 1.10:
        print("-> the default is the fastest correct module (within the +-10 % noise)")
    else:
        print(f"-> {best.name} is faster than the default by {ratio:.2f}x")


def main() -> None:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="rough figures in a few seconds")
    QUICK = parser.parse_args().quick
    from importlib.metadata import version

    print(f"Python {sys.version.split()[0]}, python-socketio {version('python-socketio')},"
          f" python-engineio {version('python-engineio')}; ops/s, higher is better;"
          " ratio = relay(default) / python-socketio\n")
    start = time.perf_counter()
    run_codecs()
    run_json()
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
