"""The Socket.IO engine on its own: engine/sio.py without Flask.

A SocketIOServer is driven through the in-process Engine.IO engine
(engine/local.py) and the inline dispatcher (engine/dispatch.py), so every
handler runs in the test's thread, and the client side speaks real Socket.IO
packets through protocol/socketio.py's encoder and decoder. What the Flask face
adds (request contexts, Namespace classes, the test client) is not involved.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from flask_relay.engine.dispatch import InlineDispatcher
from flask_relay.engine.local import LocalEngine
from flask_relay.engine.sio import (
    NOT_HANDLED,
    ConnectionRefusedError,
    DisconnectReason,
    Socket,
    SocketIOServer,
)
from flask_relay.protocol.socketio import Decoder, Encoder, Packet, PacketType

T = PacketType


class App:
    """A SocketIOApplication recording every call; behaviour set per test."""

    def __init__(self) -> None:
        self.server: SocketIOServer | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.connect: Any = lambda sock, auth: True
        self.event: Any = lambda sock, event, args: NOT_HANDLED
        self.namespaces = {"/", "/chat"}

    def has_namespace(self, namespace: str) -> bool:
        return namespace in self.namespaces

    def on_connect(self, socket: Socket, auth: Any) -> Any:
        self.calls.append(("connect", socket.sid, socket.namespace, auth))
        return self.connect(socket, auth)

    def on_event(self, socket: Socket, event: Any, args: list[Any]) -> Any:
        self.calls.append(("event", socket.sid, event, args))
        return self.event(socket, event, args)

    def on_disconnect(self, socket: Socket, reason: str) -> None:
        self.calls.append(("disconnect", socket.sid, reason))


class Client:
    """One Engine.IO session of the local engine, speaking Socket.IO packets."""

    def __init__(self, engine: LocalEngine, answer_acks: Any = None) -> None:
        self.decoder = Decoder()
        self.encoder = Encoder()
        self.packets: list[Packet] = []
        self.closed: str | None = None
        self.answer_acks = answer_acks  # (event args) -> ack args, or None: no answer
        self.session = engine.open({"REMOTE_ADDR": "127.0.0.1"}, self._receive, self._closed)

    def _receive(self, data: str | bytes) -> None:
        packet = self.decoder.feed(data)
        if packet is None:
            return
        self.packets.append(packet)
        if packet.type is T.EVENT and packet.id is not None and self.answer_acks is not None:
            self.send(Packet(T.ACK, packet.namespace, self.answer_acks(packet.data), packet.id))

    def _closed(self, reason: str) -> None:
        self.closed = reason

    def send(self, packet: Packet) -> None:
        for item in self.encoder.encode(packet):
            self.session.send(item)

    def connect(self, namespace: str = "/", auth: Any = None) -> Packet:
        self.send(Packet(T.CONNECT, namespace, auth))
        reply = [p for p in self.packets if p.namespace == namespace][0]
        return reply

    def sid(self, namespace: str = "/") -> str:
        for p in self.packets:
            if p.type is T.CONNECT and p.namespace == namespace:
                return str(p.data["sid"])
        raise AssertionError(f"not connected to {namespace}")

    def events(self, namespace: str = "/") -> list[list[Any]]:
        return [p.data for p in self.packets if p.type is T.EVENT and p.namespace == namespace]


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def server(app: App) -> SocketIOServer:
    srv = SocketIOServer(app)
    app.server = srv
    return srv


@pytest.fixture
def engine(server: SocketIOServer) -> LocalEngine:
    local = LocalEngine()
    local.handler = server.attach(local, InlineDispatcher())
    return local


# -- connect ---------------------------------------------------------------------


def test_connect_reply_comes_before_what_the_handler_emitted(
    app: App, server: SocketIOServer, engine: LocalEngine
) -> None:
    def on_connect(sock: Socket, auth: Any) -> bool:
        server.emit("welcome", auth["name"], to=sock.sid)
        server.emit("everyone", 1)  # the whole namespace, the new socket included
        return True

    app.connect = on_connect
    client = Client(engine)
    client.connect("/", {"name": "ann"})
    assert [p.type for p in client.packets] == [T.CONNECT, T.EVENT, T.EVENT]
    assert client.events() == [["welcome", "ann"], ["everyone", 1]]
    sid = client.sid()
    assert app.calls == [("connect", sid, "/", {"name": "ann"})]
    assert server.participants("/") == [sid]
    assert sid != client.session.sid  # never the Engine.IO sid


def test_namespaces_are_separate_sockets_of_one_connection(
    app: App, server: SocketIOServer, engine: LocalEngine
) -> None:
    client = Client(engine)
    client.connect("/")
    client.connect("/chat")
    root, chat = client.sid("/"), client.sid("/chat")
    assert root != chat
    server.emit("hi", namespace="/chat")
    assert client.events("/chat") == [["hi"]] and client.events("/") == []


def test_refusals(app: App, server: SocketIOServer, engine: LocalEngine) -> None:
    client = Client(engine)
    client.send(Packet(T.CONNECT, "/unknown"))
    assert client.packets[-1] == Packet(
        T.CONNECT_ERROR, "/unknown", {"message": "Invalid namespace"}
    )

    def refuse_false(sock: Socket, auth: Any) -> bool:
        server.emit("held back", to=sock.sid)  # dropped with the refusal
        return False

    app.connect = refuse_false
    client.send(Packet(T.CONNECT, "/"))
    assert client.packets[-1] == Packet(
        T.CONNECT_ERROR, "/", {"message": "Connection rejected by server"}
    )

    def refuse_raise(sock: Socket, auth: Any) -> bool:
        raise ConnectionRefusedError("not you", {"retry": False})

    app.connect = refuse_raise
    client.send(Packet(T.CONNECT, "/chat"))
    assert client.packets[-1] == Packet(
        T.CONNECT_ERROR, "/chat", {"message": "not you", "data": {"retry": False}}
    )
    assert client.events("/") == [] and server.participants("/") == []
    # Refused sockets were never connected: no disconnect handler for them.
    client.session.close()
    assert [c[0] for c in app.calls] == ["connect", "connect"]


def test_a_refused_namespace_can_connect_again(
    app: App, server: SocketIOServer, engine: LocalEngine
) -> None:
    answers = iter([False, True])
    app.connect = lambda sock, auth: next(answers)
    client = Client(engine)
    client.send(Packet(T.CONNECT, "/"))
    client.send(Packet(T.CONNECT, "/"))
    assert [p.type for p in client.packets] == [T.CONNECT_ERROR, T.CONNECT]


# -- acknowledgements ------------------------------------------------------------


def test_client_to_server_ack_carries_the_handler_result(app: App, engine: LocalEngine) -> None:
    results: dict[str, Any] = {"one": "x", "many": ("a", 2), "none": None}
    app.event = lambda sock, event, args: results[event]
    client = Client(engine)
    client.connect()
    for n, event in enumerate(results):
        client.send(Packet(T.EVENT, "/", [event, n], n))
    acks = [(p.id, p.data) for p in client.packets if p.type is T.ACK]
    assert acks == [(0, ["x"]), (1, ["a", 2]), (2, [])]
    assert [c[2:] for c in app.calls if c[0] == "event"] == [
        ("one", [0]),
        ("many", [1]),
        ("none", [2]),
    ]


def test_unhandled_event_gets_no_ack(app: App, engine: LocalEngine) -> None:
    client = Client(engine)
    client.connect()
    client.send(Packet(T.EVENT, "/", ["nobody listens"], 7))
    assert [p.type for p in client.packets] == [T.CONNECT]


def test_server_to_client_ack_runs_the_callback(
    server: SocketIOServer, engine: LocalEngine
) -> None:
    client = Client(engine)
    client.connect()
    got: list[tuple[Any, ...]] = []
    server.emit("question", (1, 2), to=client.sid(), callback=lambda *a: got.append(a))
    event = client.packets[-1]
    assert event.type is T.EVENT and event.data == ["question", 1, 2] and event.id is not None
    client.send(Packet(T.ACK, "/", ["answer", 42], event.id))
    assert got == [("answer", 42)]
    client.send(Packet(T.ACK, "/", ["again"], event.id))  # an ack id is used once
    assert got == [("answer", 42)]


def test_call_returns_the_acknowledgement(server: SocketIOServer, engine: LocalEngine) -> None:
    client = Client(engine, answer_acks=lambda data: [data[1] * 2])
    client.connect()
    assert server.call("double", 21, to=client.sid(), timeout=5) == 42
    several = Client(engine, answer_acks=lambda data: ["a", "b"])
    several.connect()
    assert server.call("pair", sid=several.sid(), timeout=5) == ("a", "b")


def test_call_timeouts(server: SocketIOServer, engine: LocalEngine) -> None:
    silent = Client(engine)
    silent.connect()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="no acknowledgement"):
        server.call("ping", to=silent.sid(), timeout=0.2)
    assert 0.15 <= time.monotonic() - start < 5
    with pytest.raises(TimeoutError, match="no client"):
        server.call("ping", to="nobody", timeout=5)
    with pytest.raises(ValueError, match="broadcast"):
        server.call("ping", timeout=5)


def test_call_ends_when_the_client_leaves(server: SocketIOServer, engine: LocalEngine) -> None:
    client = Client(engine)
    client.connect()
    timer = threading.Timer(0.2, client.session.close)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="disconnected before acknowledging"):
            server.call("ping", to=client.sid(), timeout=60)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 30  # not the 60 s timeout


# -- rooms -----------------------------------------------------------------------


def test_rooms(server: SocketIOServer, engine: LocalEngine) -> None:
    a, b, c = Client(engine), Client(engine), Client(engine)
    for client in (a, b, c):
        client.connect()
    server.enter_room(a.sid(), "red")
    server.enter_room(b.sid(), "red")
    server.enter_room(c.sid(), "blue")
    assert server.rooms(a.sid()) == [a.sid(), "red"]  # own room first
    server.emit("to red", to="red")
    server.emit("to red but a", to="red", skip_sid=a.sid())
    server.emit("to both", to=["red", "blue"])
    server.leave_room(b.sid(), "red")
    server.emit("red after b left", to="red")
    server.close_room("blue")
    server.emit("blue after close", to="blue")
    server.emit("to c alone", to=c.sid())
    assert a.events() == [["to red"], ["to both"], ["red after b left"]]
    assert b.events() == [["to red"], ["to red but a"], ["to both"]]
    assert c.events() == [["to both"], ["to c alone"]]
    assert sorted(server.participants("/", "red")) == [a.sid()]
    assert server.rooms(c.sid()) == [c.sid()]


def test_rooms_are_per_namespace(server: SocketIOServer, engine: LocalEngine) -> None:
    client = Client(engine)
    client.connect("/")
    client.connect("/chat")
    server.enter_room(client.sid("/chat"), "room", namespace="/chat")
    server.emit("root room", to="room")
    server.emit("chat room", to="room", namespace="/chat")
    assert client.events("/") == [] and client.events("/chat") == [["chat room"]]


# -- disconnects -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine_reason", "handler_reason"),
    [
        ("transport close", DisconnectReason.TRANSPORT_CLOSE),
        ("transport error", DisconnectReason.TRANSPORT_ERROR),
        ("ping timeout", DisconnectReason.PING_TIMEOUT),
        ("parse error", DisconnectReason.TRANSPORT_ERROR),
        ("forced close", DisconnectReason.SERVER_DISCONNECT),
        ("server shutting down", DisconnectReason.SERVER_DISCONNECT),
    ],
)
def test_engine_close_reasons(
    app: App, server: SocketIOServer, engine: LocalEngine, engine_reason: str, handler_reason: str
) -> None:
    client = Client(engine)
    client.connect("/")
    client.connect("/chat")
    sids = {client.sid("/"), client.sid("/chat")}
    client.session.close(engine_reason)
    gone = [c for c in app.calls if c[0] == "disconnect"]
    assert {c[1] for c in gone} == sids and {c[2] for c in gone} == {handler_reason}
    assert server.participants("/") == [] and server.participants("/chat") == []


def test_client_and_server_disconnect(
    app: App, server: SocketIOServer, engine: LocalEngine
) -> None:
    client = Client(engine)
    client.connect("/")
    client.connect("/chat")
    root, chat = client.sid("/"), client.sid("/chat")
    client.send(Packet(T.DISCONNECT, "/chat"))
    server.disconnect(root)
    assert client.packets[-1] == Packet(T.DISCONNECT, "/")
    assert [c for c in app.calls if c[0] == "disconnect"] == [
        ("disconnect", chat, DisconnectReason.CLIENT_DISCONNECT),
        ("disconnect", root, DisconnectReason.SERVER_DISCONNECT),
    ]
    assert client.closed is None  # the Engine.IO connection stays; the client closes it
    server.emit("after", to=root)
    assert client.events("/") == []


def test_malformed_packet_closes_the_connection(app: App, engine: LocalEngine) -> None:
    client = Client(engine)
    client.connect()
    client.session.send("2[unterminated")
    assert client.closed == "parse error"
    assert app.calls[-1][0] == "disconnect" and app.calls[-1][2] == DisconnectReason.TRANSPORT_ERROR


# -- several engines -------------------------------------------------------------


def test_two_engines_share_one_server(
    app: App, server: SocketIOServer, engine: LocalEngine
) -> None:
    # Each engine calls the server's own engine_message / engine_disconnected
    # (EngineBinding holds them); the server finds the connection by sid alone.
    other = LocalEngine()
    other.handler = server.attach(other, InlineDispatcher())
    app.event = lambda sock, event, args: ("echo", sock.connection.binding.engine is other)
    a, b = Client(engine), Client(other)
    a.connect()
    b.connect()
    conn_a = server.connection(a.session.sid)
    conn_b = server.connection(b.session.sid)
    assert conn_a is not None and conn_a.binding.engine is engine
    assert conn_b is not None and conn_b.binding.engine is other
    assert set(server.environ) == {a.session.sid, b.session.sid}
    a.send(Packet(T.EVENT, "/", ["hi"], 1))
    b.send(Packet(T.EVENT, "/", ["hi"], 2))
    acks = [(p.id, p.data) for c in (a, b) for p in c.packets if p.type is T.ACK]
    assert acks == [(1, ["echo", False]), (2, ["echo", True])]
    server.emit("to all")
    assert a.events() == [["to all"]] and b.events() == [["to all"]]
    b.session.close("transport close")
    assert server.connection(b.session.sid) is None
    assert set(server.environ) == {a.session.sid}
    assert [c[1] for c in app.calls if c[0] == "disconnect"] == [b.sid()]
    server.emit("after b left")
    assert a.events() == [["to all"], ["after b left"]] and b.events() == [["to all"]]
