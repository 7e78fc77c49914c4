"""The in-process test client: Flask-SocketIO's API and what it adds."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask, request, session

from flask_relay import (
    ConnectionRefusedError,
    SocketIO,
    SocketIOTestClient,
    call,
    emit,
    join_room,
    send,
)


def test_connects_at_once_and_records_events(app: Flask, sio: SocketIO) -> None:
    @sio.on("connect")
    def on_connect():
        emit("hello", 1, 2)
        send("text")
        send({"k": "v"}, json=True)

    client = sio.test_client(app)
    assert isinstance(client, SocketIOTestClient)
    assert client.is_connected()
    assert client.eio_sid in SocketIOTestClient.clients
    assert client.get_received() == [
        {"name": "hello", "args": [1, 2], "namespace": "/"},
        {"name": "message", "args": "text", "namespace": "/"},
        {"name": "json", "args": {"k": "v"}, "namespace": "/"},
    ]
    assert client.get_received() == []


def test_handler_exceptions_surface_in_emit(app: Flask, sio: SocketIO) -> None:
    @sio.on("bad")
    def bad(x):
        return x + 1  # TypeError for a string: must not be taken for a signature problem

    client = sio.test_client(app)
    with pytest.raises(TypeError):
        client.emit("bad", "one")
    assert client.emit("bad", 1, callback=True) == 2


def test_connect_handler_exception_surfaces(app: Flask, sio: SocketIO) -> None:
    @sio.on("connect")
    def on_connect(auth):
        raise LookupError("inside connect")

    with pytest.raises(LookupError):
        sio.test_client(app)


def test_emit_callback_return_shapes(app: Flask, sio: SocketIO) -> None:
    sio.on("one")(lambda: "x")
    sio.on("two")(lambda: ("a", "b"))
    sio.on("zero")(lambda: None)
    sio.on("no_ack")(lambda: "ignored")
    client = sio.test_client(app)
    assert client.emit("one", callback=True) == "x"
    assert client.emit("two", callback=True) == ["a", "b"]
    assert client.emit("zero", callback=True) == []
    assert client.emit("no_ack") is None
    assert client.emit("unhandled", callback=True) is None
    assert client.send("m", callback=True) is None  # no 'message' handler
    got: list[Any] = []
    client.emit("two", callback=lambda *args: got.append(args))
    assert got == [("a", "b")]


def test_send_and_json_from_client(app: Flask, sio: SocketIO) -> None:
    sio.on("message")(lambda data: ["message", data])
    sio.on("json")(lambda data: ["json", data])
    client = sio.test_client(app)
    assert client.send("hi", callback=True) == ["message", "hi"]
    assert client.send({"a": 1}, json=True, callback=True) == ["json", {"a": 1}]


def test_extra_emit_kwargs_are_ignored(app: Flask, sio: SocketIO) -> None:
    sio.on("e")(lambda: "ok")
    client = sio.test_client(app)
    assert client.emit("e", callback=True, broadcast=True) == "ok"


def test_unencodable_data_raises_in_the_caller(app: Flask, sio: SocketIO) -> None:
    sio.on("e")(lambda: object())
    client = sio.test_client(app)
    with pytest.raises(TypeError):
        client.emit("e", object())
    with pytest.raises(TypeError):
        client.emit("e", callback=True)


def test_not_connected_errors(app: Flask, sio: SocketIO) -> None:
    sio.on("connect")(lambda: False)
    client = sio.test_client(app)
    assert not client.is_connected()
    for action in (
        lambda: client.emit("x"),
        lambda: client.get_received(),
        lambda: client.disconnect(),
    ):
        with pytest.raises(RuntimeError, match="not connected"):
            action()


def test_refusal_payload_shapes(app: Flask, sio: SocketIO) -> None:
    @sio.on("connect")
    def on_connect(auth):
        kind = auth["kind"]
        if kind == "bare":
            raise ConnectionRefusedError()
        if kind == "one":
            raise ConnectionRefusedError("just a message")
        if kind == "many":
            raise ConnectionRefusedError("msg", 1, 2)
        return kind != "false"

    def error(kind: str) -> Any:
        client = sio.test_client(app, auth={"kind": kind})
        assert not client.is_connected()
        return client.get_connect_error()

    assert error("bare") == {"message": "Connection rejected by server"}
    assert error("one") == {"message": "just a message"}
    assert error("many") == {"message": "msg", "data": [1, 2]}
    assert error("false") == {"message": "Connection rejected by server"}
    ok = sio.test_client(app, auth={"kind": "fine"})
    assert ok.is_connected() and ok.get_connect_error() is None


def test_namespaces_connect_disconnect(app: Flask, sio: SocketIO) -> None:
    events: list[Any] = []
    sio.on("connect", namespace="/a")(lambda: events.append(("connect", request.namespace)))
    sio.on("disconnect", namespace="/a")(lambda reason: events.append(("disconnect", reason)))
    sio.on("where", namespace="/a")(lambda: emit("here", request.namespace))

    client = sio.test_client(app, namespace="/a")
    assert client.is_connected("/a") and not client.is_connected()
    client.emit("where", namespace="/a")
    assert client.get_received("/a") == [{"name": "here", "args": ["/a"], "namespace": "/a"}]
    client.connect()
    assert client.is_connected("/")
    assert client.get_sid("/a") != client.sid
    client.disconnect(namespace="/a")
    assert not client.is_connected("/a") and client.is_connected("/")
    assert events == [("connect", "/a"), ("disconnect", "client disconnect")]


def test_query_string_and_headers(app: Flask, sio: SocketIO) -> None:
    seen = {}

    @sio.on("connect")
    def on_connect():
        seen["root"] = (request.args.get("q"), request.headers.get("X-A"), request.path)

    @sio.on("connect", namespace="/n")
    def on_connect_n():
        seen["n"] = request.args.get("q")

    client = sio.test_client(app, query_string="q=1", headers={"X-A": "b"})
    client.connect("/n", query_string="?q=2")
    assert seen == {"root": ("1", "b", "/socket.io/"), "n": "2"}


def test_flask_test_client_cookies_carry_the_session(app: Flask, sio: SocketIO) -> None:
    @app.route("/login")
    def login():
        session["user"] = "carol"
        return "ok"

    sio.on("whoami")(lambda: session.get("user"))
    http = app.test_client()
    http.get("/login")
    client = sio.test_client(app, flask_test_client=http)
    assert client.emit("whoami", callback=True) == "carol"
    anonymous = sio.test_client(app)
    assert anonymous.emit("whoami", callback=True) == []  # None: an empty ack


def test_client_handlers_answer_call_and_callbacks(app: Flask, sio: SocketIO) -> None:
    @sio.on("ask_client")
    def ask_client(x):
        return call("double", x, timeout=2)

    client = sio.test_client(app)

    @client.on("double")
    def double(x):
        return x * 2

    assert client.emit("ask_client", 21, callback=True) == 42
    # recorded too
    assert client.get_received() == [{"name": "double", "args": [21], "namespace": "/"}]

    caught: list[Any] = []
    client.on("*", lambda name, *args: caught.append((name, args)) or "star")
    assert sio.call("anything", 1, to=client.sid, timeout=2) == "star"
    assert caught == [("anything", (1,))]


def test_pending_acks_answered_later(app: Flask, sio: SocketIO) -> None:
    client = sio.test_client(app)
    acked: list[Any] = []
    sio.emit("confirm", "order 7", to=client.sid, callback=lambda *a: acked.append(a))
    [pending] = client.pending_acks()
    assert (pending.name, pending.args) == ("confirm", ["order 7"])
    pending.ack("yes", 1)
    assert acked == [("yes", 1)]
    assert client.pending_acks() == []


def test_call_times_out_without_an_answer(app: Flask, sio: SocketIO) -> None:
    client = sio.test_client(app)
    with pytest.raises(TimeoutError):
        sio.call("nobody_answers", to=client.sid, timeout=0.05)


def test_call_from_another_thread_answered_by_pending_ack(app: Flask, sio: SocketIO) -> None:
    client = sio.test_client(app)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(sio.call("q", to=client.sid, timeout=5)))
    thread.start()
    deadline = threading.Event()
    while not client.pending_acks() and not deadline.wait(0.005):
        pass
    client.pending_acks()[0].ack("answer")
    thread.join(5)
    assert result == ["answer"]


def test_server_disconnect_marks_client_disconnected(app: Flask, sio: SocketIO) -> None:
    client = sio.test_client(app)
    sio.server.disconnect(client.sid)
    assert not client.is_connected()


def test_broadcast_reaches_every_test_client(app: Flask, sio: SocketIO) -> None:
    sio.on("join")(lambda room: join_room(room))
    a, b, c = (sio.test_client(app) for _ in range(3))
    a.emit("join", "r")
    c.emit("join", "r")
    sio.emit("to_room", "x", to="r")
    assert (
        a.get_received()
        == c.get_received()
        == [{"name": "to_room", "args": ["x"], "namespace": "/"}]
    )
    assert b.get_received() == []


def test_background_thread_emits_reach_the_test_client(app: Flask, sio: SocketIO) -> None:
    client = sio.test_client(app)
    sio.start_background_task(sio.emit, "from_thread", 5).join(5)
    assert client.get_received() == [{"name": "from_thread", "args": [5], "namespace": "/"}]


def test_binary_through_the_test_client(app: Flask, sio: SocketIO) -> None:
    sio.on("b")(lambda data: {"len": len(data), "back": data})
    client = sio.test_client(app)
    assert client.emit("b", b"\x00\x01", callback=True) == {"len": 2, "back": b"\x00\x01"}


def test_new_server_after_init_app_gets_new_local_engine(app: Flask) -> None:
    sio = SocketIO()
    sio.on("x")(lambda: "first")
    sio.init_app(app)
    first = sio.test_client(app)
    assert first.emit("x", callback=True) == "first"
    other = Flask("other")
    sio.init_app(other)
    second = sio.test_client(other)
    assert second.emit("x", callback=True) == "first"


def test_namespace_methods(app: Flask, sio: SocketIO) -> None:
    from flask_relay import Namespace

    class Lobby(Namespace):
        def on_enter(self, room):
            self.enter_room(request.sid, room)
            return sorted(map(str, self.rooms(request.sid)))

        def on_leave(self, room):
            self.leave_room(request.sid, room)
            return sorted(map(str, self.rooms(request.sid)))

        def on_close(self, room):
            self.close_room(room)

        def on_announce(self, room):
            self.emit("news", ("two", "args"), room=room, include_self=False)

        def on_ask(self):
            return self.call("question", "q?", to=request.sid, timeout=2)

        def on_remember(self, value):
            with self.session(request.sid) as s:
                s["v"] = value
            return self.get_session(request.sid)["v"]

        def on_bye(self):
            self.disconnect(request.sid)

    sio.on_namespace(Lobby("/lobby"))
    a = sio.test_client(app, namespace="/lobby")
    b = sio.test_client(app, namespace="/lobby")
    assert a.emit("enter", "r", namespace="/lobby", callback=True) == sorted(
        [a.get_sid("/lobby"), "r"]
    )
    b.emit("enter", "r", namespace="/lobby")
    a.emit("announce", "r", namespace="/lobby")
    assert b.get_received("/lobby") == [
        {"name": "news", "args": ["two", "args"], "namespace": "/lobby"}
    ]
    assert a.get_received("/lobby") == []
    assert b.emit("leave", "r", namespace="/lobby", callback=True) == [b.get_sid("/lobby")]
    a.emit("close", "r", namespace="/lobby")
    assert a.emit("leave", "nothing", namespace="/lobby", callback=True) == [a.get_sid("/lobby")]
    a.on("question", lambda q: q + " answered", namespace="/lobby")
    assert a.emit("ask", namespace="/lobby", callback=True) == "q? answered"
    assert a.emit("remember", 3, namespace="/lobby", callback=True) == 3
    a.emit("bye", namespace="/lobby")
    assert not a.is_connected("/lobby")


def test_disconnect_in_the_connect_handler_refuses(app: Flask, sio: SocketIO) -> None:
    from flask_relay import disconnect

    gone: list[str] = []
    sio.on("connect")(lambda: disconnect())
    sio.on("disconnect")(gone.append)
    client = sio.test_client(app)
    assert not client.is_connected()
    assert client.get_connect_error() == {"message": "Connection rejected by server"}
    assert gone == []  # it never connected


def test_server_environ_and_saved_session(app: Flask, sio: SocketIO) -> None:
    @sio.on("remember")
    def remember():
        session["a"] = "b"

    client = sio.test_client(app, query_string="x=1")
    environ = sio.server.environ[client.eio_sid]
    assert environ["QUERY_STRING"] == "x=1"
    client.emit("remember")
    assert sio.server.environ[client.eio_sid]["saved_session"]["a"] == "b"
