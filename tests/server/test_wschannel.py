"""WSChannel: coalesced writes over real TCP connections, one flush callback per loop turn."""

from __future__ import annotations

import asyncio
import base64
import gc
import socket
import weakref
from typing import Any

from flask_relay.protocol.websocket import WebSocketConnection, accept, build_frame
from flask_relay.server.wschannel import WSChannel

KEY = base64.b64encode(b"0123456789abcdef").decode()
HEADERS = [
    ("Host", "localhost"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


class Listener:
    def message_received(self, data: str | bytes) -> None: ...

    def pong_received(self, data: bytes) -> None: ...

    def connection_closed(self, code: int, reason: str) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


def read_messages(sock: socket.socket, count: int) -> list[str]:
    """The 101 response, then ``count`` unmasked text frames from the server."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    out: list[str] = []
    while len(out) < count:
        while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7F):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(out)} messages"
            buf += chunk
        assert buf[0] == 0x81 and buf[1] < 126  # final text frame, short, unmasked
        n = buf[1]
        out.append(buf[2 : 2 + n].decode())
        buf = buf[2 + n :]
    return out


def test_a_broadcast_to_many_channels_is_flushed_by_one_callback_in_order() -> None:
    n = 60
    loop = asyncio.new_event_loop()
    channels: list[WSChannel] = []

    def make_channel() -> WSChannel:
        conn = accept("GET", "/ws", HEADERS)
        assert isinstance(conn, WebSocketConnection)
        channel = WSChannel(conn, Listener(), loop, close_timeout=1.0)
        channels.append(channel)
        return channel

    server = loop.run_until_complete(loop.create_server(make_channel, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    try:

        async def connected() -> None:
            while len(channels) < n or any(c.transport is None for c in channels):
                await asyncio.sleep(0.01)

        loop.run_until_complete(asyncio.wait_for(connected(), 5))
        # Every channel's 101 went out; now count the callbacks a broadcast schedules.
        loop.run_until_complete(asyncio.sleep(0.05))
        scheduled: list[Any] = []
        real_call_soon = loop.call_soon

        def counting_call_soon(callback: Any, *args: Any, **kwargs: Any) -> Any:
            scheduled.append(callback)
            return real_call_soon(callback, *args, **kwargs)

        loop.call_soon = counting_call_soon  # type: ignore[method-assign]

        async def broadcast() -> None:
            for seq in range(3):  # one loop turn: three shared frames to every channel
                frame = build_frame(f"tick {seq}")
                for channel in channels:
                    channel.send_frames(frame)
            for i, channel in enumerate(channels):
                channel.send(f"own {i}")
            await asyncio.sleep(0)

        loop.run_until_complete(broadcast())
        flushes = [cb for cb in scheduled if getattr(cb, "__name__", "") in ("run", "flush")]
        assert len(flushes) == 1, flushes
        loop.call_soon = real_call_soon  # type: ignore[method-assign]

        async def read_all() -> list[list[str]]:
            return await asyncio.gather(
                *(asyncio.to_thread(read_messages, c, 4) for c in clients)
            )

        got = loop.run_until_complete(asyncio.wait_for(read_all(), 10))
        for i, messages in enumerate(got):
            assert messages == ["tick 0", "tick 1", "tick 2", f"own {i}"]
    finally:
        for c in clients:
            c.close()
        server.close()
        for channel in channels:
            if channel.transport is not None:
                channel.transport.abort()
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()


def test_a_finished_loop_is_not_kept_alive_by_its_channels_flush_queue() -> None:
    loop = asyncio.new_event_loop()
    conn = accept("GET", "/ws", HEADERS)
    assert isinstance(conn, WebSocketConnection)
    channel = WSChannel(conn, Listener(), loop, close_timeout=1.0)
    channel.send("queued")  # schedules the loop's flush callback
    loop.run_until_complete(asyncio.sleep(0))  # which runs (no transport: nothing to write)
    loop.close()
    gone = weakref.ref(loop)
    del loop, channel, conn
    gc.collect()
    assert gone() is None
