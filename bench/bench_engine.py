"""CPU per delivery on the Engine.IO server's send path, without the network.

``PYTHONPATH=src python bench/bench_engine.py`` (run it again with another tree's
``src`` to compare). 1,000 WebSocket sessions whose transports take every byte
(``get_write_buffer_size() == 0``, as for clients that keep up), on a real hub:

* ``bcast``: ``send_prepared`` to all of them (what a room emit does), then the
  emitting thread's ``wait_for_room``; CPU time of the whole process per delivery;
* ``single``: ``send`` to one session at a time (an ack, an emit to one sid);
* ``loop``: ``send`` made on the loop thread, one per loop turn (an ``async def``
  handler's ack), its flush included.

It isolates what the flow-control accounting costs on the hot path, which the
end-to-end figures of ``bench/run.py`` cannot show on a loaded machine.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from typing import Any

from flask_relay.engine import eio
from flask_relay.protocol import websocket as wsproto
from flask_relay.server.loop import Hub


class TakeAllTransport(asyncio.Transport):
    """A transport whose kernel takes everything at once."""

    def write(self, data: Any) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def main(n_clients: int = 1000, n_bcast: int = 300, n_single: int = 20000) -> None:
    hub = Hub()
    hub.start()
    server = eio.EngineIOServer(None)
    server.attach(hub)
    sids: list[str] = []

    def setup() -> None:
        for i in range(n_clients):
            key = base64.b64encode(os.urandom(16)).decode()
            conn = wsproto.accept(
                "GET",
                "/",
                [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                 ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")],
            )
            assert isinstance(conn, wsproto.WebSocketConnection)
            link = eio._WSLink(server, conn)
            channel = link.channel
            channel.connection_made(TakeAllTransport())
            session = eio._Session(f"s{i}", {}, "websocket")
            session.ws = link
            link.session = session
            server._sessions[session.sid] = session
            sids.append(session.sid)

    hub.run_sync(setup)
    payload = '2["tick",{"seq":1,"pad":"' + "x" * 60 + '"}]'
    wait = getattr(server, "wait_for_room", None)

    def barrier() -> None:
        hub.run_sync(lambda: None)
        hub.run_sync(lambda: None)

    barrier()
    cpu0 = time.process_time()
    for _ in range(n_bcast):
        server.send_prepared(sids, server.prepare([payload]))
        if wait is not None:
            wait(sids)
        barrier()
    cpu1 = time.process_time()
    for i in range(n_single):
        sid = sids[i % n_clients]
        server.send(sid, payload)
        if wait is not None:
            wait((sid,))
    barrier()
    cpu2 = time.process_time()
    done = threading.Event()
    sent = [0]

    def loop_send() -> None:
        i = sent[0]
        if i == n_single:
            done.set()
            return
        sent[0] = i + 1
        server.send(sids[i % n_clients], payload)
        hub.loop.call_soon(loop_send)

    hub.loop.call_soon_threadsafe(loop_send)
    done.wait()
    barrier()
    cpu3 = time.process_time()
    hub.stop()
    print(
        f"bcast: {(cpu1 - cpu0) / (n_bcast * n_clients) * 1e9:.0f} ns CPU per delivery; "
        f"single: {(cpu2 - cpu1) / n_single * 1e6:.2f} us CPU per send; "
        f"loop: {(cpu3 - cpu2) / n_single * 1e6:.2f} us CPU per send"
    )


if __name__ == "__main__":
    main()
