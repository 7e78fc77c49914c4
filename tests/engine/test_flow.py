"""Flow control in the Engine.IO server: back-pressure, slow consumers, bounds.

Real sockets on loopback: a raw WebSocket client that completes the handshake
and then never reads (its receive buffer made small), and the ``websockets``
client reading. The sending side is this test's thread, as a handler's would
be: ``engine.send`` then ``engine.wait_for_room``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from eio_helpers import Running, wait_for, ws_connect

CHUNK = 100_000


def stuck_client(running: Running) -> tuple[socket.socket, str]:
    """A WebSocket session whose client never reads after the handshake."""
    rec = running.recorder
    before = len(rec.of("connect"))
    sock = socket.create_connection(("127.0.0.1", running.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sid: str = wait_for(lambda: len(rec.of("connect")) > before and rec.of("connect")[-1][1])
    return sock, sid


def slow_consumer_lines(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if "slow consumer" in r.getMessage()]


def test_a_stuck_client_is_closed_and_the_emitter_waits_once(make_engine: Any, caplog: Any) -> None:
    running = make_engine(
        echo=False, max_http_buffer_size=100_000, max_send_buffer=1_000_000,
        slow_consumer_timeout=1.0,
    )
    engine = running.engine
    sock, sid = stuck_client(running)
    rec = running.recorder
    waits: list[float] = []
    try:
        with caplog.at_level(logging.WARNING, logger="flask_relay.engineio"):
            for _ in range(200):
                engine.send(sid, "x" * CHUNK)
                started = time.monotonic()
                engine.wait_for_room([sid])
                waits.append(time.monotonic() - started)
                if rec.of("disconnect"):
                    break
            disconnects = wait_for(lambda: rec.of("disconnect"))
            assert disconnects == [("disconnect", sid, "transport error")]
        # The emitter waited for the stuck client about slow_consumer_timeout, each
        # wait at most that plus two watch ticks: once, or twice when the kernel was
        # still taking bytes as the client went over its bound (see handlers.md).
        long_waits = [w for w in waits if w > 0.2]
        assert 1 <= len(long_waits) <= 2, waits
        assert all(w < 2.5 for w in long_waits), waits
        assert 0.9 < sum(long_waits) < 4.5, waits
        (line,) = slow_consumer_lines(caplog)
        port = sock.getsockname()[1]
        assert f"Closing {sid} from 127.0.0.1:{port}: slow consumer:" in line
        assert "bytes queued, no byte read for 1.0 s" in line
        assert engine.total_output_size == 0
    finally:
        sock.close()


def test_a_reading_client_gets_everything_however_fast_the_emitter(make_engine: Any) -> None:
    running = make_engine(
        echo=False, max_http_buffer_size=100_000, max_send_buffer=300_000,
        slow_consumer_timeout=1.0,
    )
    engine = running.engine
    count = 60
    with ws_connect(running.port) as ws:
        ws.recv(timeout=5)  # the open packet
        sid = running.recorder.of("connect")[0][1]
        got: list[str] = []

        def read() -> None:
            while len(got) < count:
                got.append(ws.recv(timeout=10))
                time.sleep(0.01)  # a reader slower than the emitter: about 10 MB/s

        reader = threading.Thread(target=read)
        reader.start()
        peak = 0
        for i in range(count):
            engine.send(sid, f"{i:04d}" + "y" * CHUNK)
            assert engine.wait_for_room([sid]) is True
            peak = max(peak, engine.output_size(sid) or 0)
        reader.join(30)
        assert [int(m[1:5]) for m in got] == list(range(count))
        assert running.recorder.of("disconnect") == []
        # The emitter was held to the bound (plus the message it just added).
        assert peak <= 300_000 + CHUNK + 100, peak


def test_loop_side_sends_never_wait_and_a_hard_cap_holds(make_engine: Any, caplog: Any) -> None:
    running = make_engine(
        echo=False, max_http_buffer_size=100_000, max_send_buffer=200_000,
        slow_consumer_timeout=30,
    )
    engine = running.engine
    sock, sid = stuck_client(running)
    hub = running.server.hub

    def burst() -> float:
        started = time.monotonic()
        for _ in range(100):  # 10 MB: more than the kernel takes, more than 4 x 200 KB
            engine.send(sid, "z" * CHUNK)
            engine.wait_for_room([sid])  # on the loop: returns at once
        return time.monotonic() - started

    try:
        with caplog.at_level(logging.WARNING, logger="flask_relay.engineio"):
            assert hub.run_sync(burst, timeout=10) < 1.0
            assert wait_for(lambda: running.recorder.of("disconnect")) == [
                ("disconnect", sid, "transport error")
            ]
        (line,) = slow_consumer_lines(caplog)
        assert "over 4 x max_send_buffer=200000" in line
    finally:
        sock.close()


def test_the_total_bound_makes_emitters_wait(make_engine: Any, caplog: Any) -> None:
    running = make_engine(
        echo=False, max_http_buffer_size=100_000, max_send_buffer=3_000_000,
        max_total_send_buffer=3_000_000, slow_consumer_timeout=5.0,
    )
    engine = running.engine
    first, sid1 = stuck_client(running)
    second, sid2 = stuck_client(running)
    try:
        # Each client under its own bound, both together over the total (what the
        # kernel takes is not counted: send until the loop holds enough).
        for _ in range(400):
            for sid in (sid1, sid2):
                engine.send(sid, "t" * CHUNK)
            time.sleep(0.005)
            if engine.total_output_size > 3_300_000:
                break
        assert wait_for(lambda: engine.total_output_size > 3_300_000)
        assert max(engine.output_size(sid1) or 0, engine.output_size(sid2) or 0) < 3_000_000
        with ws_connect(running.port) as ws:
            ws.recv(timeout=5)
            sid3 = running.recorder.of("connect")[2][1]
            engine.send(sid3, "hello")
            started = time.monotonic()
            assert engine.wait_for_room([sid3], timeout=0.5) is False
            assert 0.4 < time.monotonic() - started < 2
            assert ws.recv(timeout=5) == "4hello"  # sent at once; only the emitter waits
        # Nobody was over their own bound: the stuck clients are still open.
        assert {e[1] for e in running.recorder.of("disconnect")} <= {sid3}
    finally:
        first.close()
        second.close()
