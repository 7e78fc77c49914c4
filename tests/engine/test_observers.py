"""engine/sio.py's hooks for monitoring, without Flask: ``server.observers``
(engine/observers.py), ``server.namespace_apps``, and ``serializer='msgpack'``.

Driven as tests/engine/test_sio.py drives the engine (local Engine.IO sessions,
inline dispatcher); its App and Client are reused.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_sio import App, Client

from flask_relay.engine.dispatch import InlineDispatcher
from flask_relay.engine.local import LocalEngine
from flask_relay.engine.observers import ServerObserver
from flask_relay.engine.sio import Socket, SocketIOServer
from flask_relay.protocol import msgpack as mp
from flask_relay.protocol.socketio import Packet, PacketType

T = PacketType


class Recorder(ServerObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.messages_in = 0
        self.messages_out = 0

    def connection_opened(self, conn: Any) -> None:
        self.seen.append(("opened",))

    def connection_closed(self, conn: Any, reason: str) -> None:
        self.seen.append(("closed", reason))

    def message_received(self, conn: Any, data: str | bytes) -> None:
        self.messages_in += 1

    def messages_sent(self, recipients: int, items: list[str | bytes]) -> None:
        self.messages_out += recipients * len(items)

    def socket_connected(self, sock: Socket) -> None:
        self.seen.append(("connected", sock.namespace))

    def socket_disconnected(self, sock: Socket, reason: str) -> None:
        self.seen.append(("disconnected", sock.namespace, reason))

    def room_joined(self, sock: Socket, room: Any) -> None:
        self.seen.append(("joined", room))

    def room_left(self, sock: Socket, room: Any) -> None:
        self.seen.append(("left", room))

    def event_received(self, sock: Socket, data: list[Any]) -> None:
        self.seen.append(("received", data))

    def event_sent(self, socks: list[Socket], data: list[Any]) -> None:
        self.seen.append(("sent", len(socks), data))


def build(
    serializer: str = "default", always_connect: bool = False
) -> tuple[App, SocketIOServer, LocalEngine, Recorder]:
    app = App()
    server = SocketIOServer(app, serializer=serializer, always_connect=always_connect)
    app.server = server
    engine = LocalEngine()
    engine.handler = server.attach(engine, InlineDispatcher())
    recorder = Recorder()
    server.observers.append(recorder)
    return app, server, engine, recorder


def test_every_hook_in_order() -> None:
    app, server, engine, rec = build()
    app.event = lambda sock, event, args: server.emit("pong", args[0], to=sock.sid)
    client = Client(engine)
    client.connect("/")
    sid = client.sid()
    client.send(Packet(T.EVENT, "/", ["ping", 1]))
    server.enter_room(sid, "r")
    server.enter_room(sid, "r")  # already in: no second report
    server.leave_room(sid, "r")
    server.leave_room(sid, "r")
    server.enter_room(sid, "s")
    server.close_room("s")
    client.send(Packet(T.DISCONNECT, "/"))
    client.session.close("client disconnect")
    assert rec.seen == [
        ("opened",),
        ("connected", "/"),
        ("received", ["ping", 1]),
        ("sent", 1, ["pong", 1]),
        ("joined", "r"),
        ("left", "r"),
        ("joined", "s"),
        ("left", "s"),
        ("disconnected", "/", "client disconnect"),
        ("closed", "client disconnect"),
    ]
    assert rec.messages_in == 3  # CONNECT, EVENT, DISCONNECT
    assert rec.messages_out == 2  # the CONNECT reply, pong


@pytest.mark.parametrize("always_connect", [False, True])
def test_refused_sockets_are_never_reported(always_connect: bool) -> None:
    app, server, engine, rec = build(always_connect=always_connect)
    app.connect = lambda sock, auth: auth == {"ok": 1}
    Client(engine).connect("/", {"ok": 0})
    Client(engine).connect("/", {"ok": 1})
    assert [s for s in rec.seen if s[0] != "opened"] == [("connected", "/")]


def test_a_failing_observer_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    app, server, engine, rec = build()

    class Broken(ServerObserver):
        def socket_connected(self, sock: Socket) -> None:
            raise RuntimeError("boom")

    server.observers.insert(0, Broken())
    client = Client(engine)
    with caplog.at_level(logging.ERROR, logger="flask_relay.sio"):
        assert client.connect("/").type is T.CONNECT
    assert ("connected", "/") in rec.seen
    assert "failed in socket_connected" in caplog.text


def test_namespace_apps_serve_a_namespace_of_their_own() -> None:
    app, server, engine, _ = build()
    other = App()
    other.namespaces = set()
    other.event = lambda sock, event, args: ("other", *args)
    server.namespace_apps["/ops"] = other
    client = Client(engine)
    assert client.connect("/ops").type is T.CONNECT  # accepted: the main app has no /ops
    client.send(Packet(T.EVENT, "/ops", ["hi", 2], 0))
    ack = [p for p in client.packets if p.type is T.ACK][0]
    assert ack.data == ["other", 2]
    assert [c[0] for c in other.calls] == ["connect", "event"]
    assert app.calls == []


def test_msgpack_serializer() -> None:
    app, server, engine, _ = build("msgpack")
    app.event = lambda sock, event, args: (b"\x00" + args[0],)
    client = Client(engine)
    client.encoder = mp.Encoder()  # type: ignore[assignment]
    client.decoder = mp.Decoder()  # type: ignore[assignment]
    client.connect("/")
    client.send(Packet(T.EVENT, "/", ["bin", b"\xff"], 4))
    ack = [p for p in client.packets if p.type is T.ACK][0]
    assert ack == Packet(T.ACK, "/", [b"\x00\xff"], 4)
    # A text packet is refused: the connection closes.
    client.session.send('2["x"]')
    assert client.closed is not None
