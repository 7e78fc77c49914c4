"""1,000 idle WebSocket clients: few threads, and a broadcast framed once for all."""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import re
import threading
from typing import Any

from eio_helpers import wait_for

import flask_relay.engine.eio as eio_module

CLIENTS = 1000


async def open_clients(port: int, count: int) -> list[tuple[asyncio.StreamReader, Any]]:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()

    async def one() -> tuple[asyncio.StreamReader, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await reader.readuntil(b"\r\n\r\n")  # the 101
        head = await reader.readexactly(2)  # the open packet's frame header
        assert head[0] == 0x81
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        await reader.readexactly(length)
        return reader, writer

    results: list[tuple[asyncio.StreamReader, Any]] = []
    for start in range(0, count, 100):  # bounded handshake bursts (listen backlog)
        burst = min(count, start + 100) - start
        results.extend(await asyncio.gather(*(one() for _ in range(burst))))
    return results


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(length)


def test_thousand_idle_websockets(make_engine: Any, monkeypatch: Any) -> None:
    running = make_engine(echo=False)
    engine = running.engine
    frames_built: list[int] = []
    real_build = eio_module.wsproto.build_frame

    def counting_build(data: Any) -> bytes:
        frames_built.append(1)
        return real_build(data)

    monkeypatch.setattr(eio_module.wsproto, "build_frame", counting_build)
    loop = asyncio.new_event_loop()
    before = threading.enumerate()
    try:
        clients = loop.run_until_complete(open_clients(running.port, CLIENTS))
        wait_for(lambda: engine.session_count == CLIENTS, timeout=20)
        # No thread per connection: the loop, the test's own, a few pools.
        # No thread per connection: the loop, a few pools. Counted as growth
        # from before the clients came, since earlier tests' idle handler
        # pools may linger in this process for their idle timeout.
        names = [re.sub(r"\d+", "N", t.name) for t in threading.enumerate()]
        grown = len(names) - len(before)
        assert grown <= 30, collections.Counter(names).most_common()
        prepared = engine.prepare(["broadcast", b"\x00\x01"])
        engine.send_prepared(engine.session_ids(), prepared)
        assert len(frames_built) == 2  # framed once, whatever the number of recipients

        async def receive_two(reader: asyncio.StreamReader) -> list[bytes]:
            return [await read_frame(reader), await read_frame(reader)]

        async def receive_all() -> list[list[bytes]]:
            return list(await asyncio.gather(*(receive_two(r) for r, _ in clients)))

        received = loop.run_until_complete(asyncio.wait_for(receive_all(), 30))
        assert all(frames == [b"4broadcast", b"\x00\x01"] for frames in received)
        async def close_all() -> None:
            for _, writer in clients:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for _, w in clients), return_exceptions=True)

        loop.run_until_complete(close_all())
        wait_for(lambda: engine.session_count == 0, timeout=20)
        assert len(running.recorder.of("disconnect")) == CLIENTS
    finally:
        loop.close()
