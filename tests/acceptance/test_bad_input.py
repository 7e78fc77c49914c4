"""Issue 3 "Done when": bad input never takes the server down (through the Flask face).

Malformed Socket.IO packets from a raw WebSocket client, a client vanishing in
the middle of the polling-to-WebSocket upgrade: each gets a clean close, is
logged at WARNING (bad packets) or INFO (a vanished client), and another client
connected all along keeps working.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from typing import Any

import pytest
import socketio as socketio_client
from acceptance_helpers import Served, request, serve, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


def _joined(served: Served) -> ClientConnection:
    ws = connect(served.ws_url, open_timeout=5)
    assert ws.recv(timeout=5).startswith("0{")
    ws.send("40")
    assert str(ws.recv(timeout=5)).startswith("40{")
    return ws


@pytest.mark.parametrize(
    "packet",
    [
        "42not json",
        "49",
        "4",
        "42[]",
        '42{"a":1}',
        "42[null]",
        '4299999999999999999999["echo"]',
        "40/chat,[1]",
        "42" + "[" * 5000,
    ],
)
def test_malformed_socketio_packet_closes_that_client_only(packet: str, caplog: Any) -> None:
    with serve() as served:
        reasons: list[str] = []
        served.sio.on("echo")(lambda data: data)
        served.sio.on("disconnect")(lambda reason: reasons.append(reason))
        bystander = _joined(served)
        with bystander, caplog.at_level(logging.INFO, logger="flask_relay"):
            with _joined(served) as ws:
                ws.send(packet)
                received: list[Any] = []
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        received.append(ws.recv(timeout=5))
                assert received == ["1"]  # an Engine.IO close packet, then a clean close
                assert info.value.rcvd is not None and info.value.rcvd.code == 1000
            wait_until(lambda: reasons, what="the disconnect handler")
            assert reasons == ["transport error"]
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert warnings and all(r.levelno == logging.WARNING for r in warnings), warnings
            bystander.send('420["echo","still here"]')
            assert bystander.recv(timeout=5) == '430["still here"]'


def test_client_vanishing_mid_upgrade() -> None:
    with serve(ping_interval=0.2, ping_timeout=0.3) as served:
        reasons: list[str] = []
        served.sio.on("echo")(lambda data: data)
        served.sio.on("disconnect")(lambda reason: reasons.append(reason))
        # A real client as the bystander: it answers the quick heartbeats by itself.
        bystander = socketio_client.Client(reconnection=False, handle_sigint=False)
        bystander.connect(served.url, transports=["websocket"], wait_timeout=5)
        try:
            opened = request(served.port, "GET", "/socket.io/?EIO=4&transport=polling")
            sid = json.loads(opened.text[1:])["sid"]
            target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
            assert request(served.port, "POST", target, "40").text == "ok"
            assert request(served.port, "GET", target).text.startswith("40{")
            # Start the upgrade: probe answered, then the client's TCP connection dies
            # without a close frame and no polling request ever comes again.
            probe = connect(served.ws_url + f"&sid={sid}", open_timeout=5)
            probe.send("2probe")
            assert probe.recv(timeout=5) == "3probe"
            sock = probe.socket
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST, as a crashed client
            wait_until(lambda: reasons, what="the vanished client's disconnect handler")
            assert reasons == [reasons[0]]
            assert reasons[0] in ("ping timeout", "transport close", "transport error")
            for n in range(3):  # the server and the bystander carry on
                assert bystander.call("echo", n, timeout=5) == n
            assert bystander.connected
            gone = request(served.port, "GET", target)
            # Closed: either already forgotten, or one last GET gets what was queued
            # (the unanswered ping) and the close packet.
            if gone.status == 200:
                assert gone.text.split("\x1e")[-1] == "1", gone.text
            else:
                assert gone.status == 400 and gone.json()["code"] == 1
        finally:
            bystander.disconnect()
