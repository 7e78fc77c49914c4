"""Flask-SocketIO behaviours, each checked through the test client AND over the network.

Every test takes the ``peers`` fixture, so it runs twice: once with
``socketio.test_client()`` and once with the python-socketio client against
the extension's own server. Server-side observations made in handlers are
read after an acknowledged round trip (or polled for), never after a sleep.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask, g, request, session
from flask.sessions import SessionInterface, SessionMixin
from flask_face_peers import wait_until

from flask_relay import (
    ConnectionRefusedError,
    Namespace,
    SocketIO,
    call,
    close_room,
    disconnect,
    emit,
    join_room,
    leave_room,
    rooms,
    send,
)

# -- connecting -------------------------------------------------------------------


def test_connect_runs_in_the_handshake_request_context(peers, app: Flask, sio: SocketIO) -> None:
    seen: dict[str, Any] = {}

    @sio.on("connect")
    def on_connect(auth):
        seen["auth"] = auth
        seen["sid"] = request.sid
        seen["namespace"] = request.namespace
        seen["event"] = request.event["message"]
        seen["query"] = request.args.get("room")
        seen["header"] = request.headers.get("X-Token")
        g.hello = "from g"
        emit("welcome", {"sid": request.sid})

    peer = peers(app, sio, auth={"token": "abc"}, headers={"X-Token": "t1"}, query="room=lobby")
    assert peer.connected()
    assert peer.wait_for("welcome") == [[{"sid": peer.sid()}]]
    assert seen == {
        "auth": {"token": "abc"},
        "sid": peer.sid(),
        "namespace": "/",
        "event": "connect",
        "query": "lobby",
        "header": "t1",
    }


def test_connect_handler_without_auth_argument(peers, app: Flask, sio: SocketIO) -> None:
    calls = []

    @sio.on("connect")
    def on_connect():
        calls.append(request.sid)

    peer = peers(app, sio, auth={"ignored": True})
    assert peer.connected()
    assert calls == [peer.sid()]


def test_refusal_payload_reaches_the_client(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("connect")
    def on_connect(auth):
        if auth and auth.get("token") == "good":
            return None
        raise ConnectionRefusedError("unauthorized", {"need": "token"})

    refused = peers(app, sio, auth={"token": "bad"})
    assert not refused.connected()
    assert refused.connect_error() == {"message": "unauthorized", "data": {"need": "token"}}
    accepted = peers(app, sio, auth={"token": "good"})
    assert accepted.connected()


def test_return_false_refuses(peers, app: Flask, sio: SocketIO) -> None:
    sio.on("connect")(lambda: False)
    peer = peers(app, sio)
    assert not peer.connected()
    assert peer.connect_error() == {"message": "Connection rejected by server"}


def test_disconnect_in_the_connect_handler_refuses(peers, app: Flask, sio: SocketIO) -> None:
    """Deliberately unlike Flask-SocketIO (docs/migration.md): the client never
    believes it is connected; it gets connect_error, and no disconnect handler runs."""
    gone: list[Any] = []
    sio.on("connect")(lambda: disconnect())
    sio.on("disconnect")(lambda *args: gone.append(args))
    peer = peers(app, sio)
    assert not peer.connected()
    assert peer.connect_error() == {"message": "Connection rejected by server"}
    assert gone == []


def test_unknown_namespace_is_refused(peers, app: Flask, sio: SocketIO) -> None:
    sio.on("connect")(lambda: None)
    peer = peers(app, sio, namespaces=("/nowhere",))
    assert not peer.connected("/nowhere")
    assert peer.connect_error("/nowhere") == {"message": "Invalid namespace"}


# -- events and acknowledgements ----------------------------------------------------


def test_return_value_is_the_ack(peers, app: Flask, sio: SocketIO) -> None:
    sio.on("one")(lambda x: x * 2)
    sio.on("many")(lambda a, b: (b, a))
    sio.on("none")(lambda: None)
    sio.on("echo_event")(lambda *args: request.event["message"])
    peer = peers(app, sio)
    assert peer.ask("one", 21) == [42]
    assert peer.ask("many", 1, "x") == ["x", 1]
    assert peer.ask("none") == []
    assert peer.ask("echo_event", 1, 2) == ["echo_event"]


def test_emit_and_send_reply_to_the_sender_only(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("talk")
    def talk(text):
        emit("reply", text.upper())
        emit("pair", (1, 2))
        send("plain " + text)
        send({"as": "json"}, json=True)

    peer, other = peers(app, sio), peers(app, sio)
    peer.emit("talk", "hi")
    assert peer.take() == [
        ("reply", ["HI"]),
        ("pair", [1, 2]),
        ("message", ["plain hi"]),
        ("json", [{"as": "json"}]),
    ]
    assert other.take() == []


def test_message_event_and_send_from_the_client(peers, app: Flask, sio: SocketIO) -> None:
    got = []

    @sio.on("message")
    def message(data):
        got.append(data)
        return "ok"

    peer = peers(app, sio)
    assert peer.ask("message", "hello") == ["ok"]
    assert got == ["hello"]


def test_binary_payloads_both_ways(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("blob")
    def blob(data, meta):
        emit("blob_back", {"raw": data[::-1], "list": [b"\x00", meta]})
        return bytes(data) + b"!"

    peer = peers(app, sio)
    assert peer.ask("blob", b"\x01\x02\xff", {"n": 1}) == [b"\x01\x02\xff!"]
    assert peer.take() == [("blob_back", [{"raw": b"\xff\x02\x01", "list": [b"\x00", {"n": 1}]}])]


def test_events_of_one_client_run_in_order(peers, app: Flask, sio: SocketIO) -> None:
    order: list[int] = []
    sio.on("n")(order.append)
    peer = peers(app, sio)
    for i in range(50):
        peer.emit("n", i)
    peer.sync()
    assert order == list(range(50))


# -- namespaces ----------------------------------------------------------------------


def test_namespaces_are_separate(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("where")
    def where_root():
        emit("here", request.namespace)
        return "root"

    @sio.on("where", namespace="/chat")
    def where_chat():
        emit("here", request.namespace)
        return "chat"

    peer = peers(app, sio, namespaces=("/", "/chat"))
    assert peer.connected("/") and peer.connected("/chat")
    assert peer.sid("/") != peer.sid("/chat")
    assert peer.ask("where", namespace="/chat") == ["chat"]
    assert peer.ask("where") == ["root"]
    assert peer.take("/chat") == [("here", ["/chat"])]
    assert peer.take("/") == [("here", ["/"])]


def test_catch_all_event_and_namespace(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("known")
    def known():
        return "specific"

    @sio.on("*")
    def any_event(event, *args):
        return ["caught", event, list(args), request.event["message"]]

    @sio.on("*", namespace="*")
    def any_namespace(event, *args):
        return ["ns", request.namespace, event]

    @sio.on("connect", namespace="*")
    def connect_any():
        emit("joined", request.namespace)

    peer = peers(app, sio, namespaces=("/", "/anything"))
    assert peer.ask("known") == ["specific"]
    assert peer.ask("other", 1, 2) == [["caught", "other", [1, 2], "other"]]
    assert peer.connected("/anything")
    assert peer.take("/anything") == [("joined", ["/anything"])]
    assert peer.ask("ping", namespace="/anything") == [["ns", "/anything", "ping"]]


def test_class_based_namespace(peers, app: Flask, sio: SocketIO) -> None:
    log: list[Any] = []

    class Game(Namespace):
        def on_connect(self, auth):
            log.append(("connect", auth, request.namespace))
            self.enter_room(request.sid, "players")

        def on_move(self, where):
            self.emit("moved", {"to": where}, room="players")
            return ["ok", where, sorted(map(str, self.rooms(request.sid)))]

        def on_shout(self, text):
            self.send(text.upper(), room=request.sid)

        def on_overridden(self):
            return "method"

        def on_disconnect(self, reason):
            log.append(("disconnect", reason))

    sio.on_namespace(Game("/game"))
    sio.on("overridden", namespace="/game")(lambda: "decorator")

    peer = peers(app, sio, namespaces=("/game",), auth={"player": 1})
    sid = peer.sid("/game")
    assert log == [("connect", {"player": 1}, "/game")]
    assert peer.ask("move", "north", namespace="/game") == [
        ["ok", "north", sorted([sid, "players"])]
    ]
    assert peer.take("/game") == [("moved", [{"to": "north"}])]
    peer.emit("shout", "hey", namespace="/game")
    assert peer.take("/game") == [("message", ["HEY"])]
    assert peer.ask("overridden", namespace="/game") == ["decorator"]
    peer.close()
    wait_until(lambda: len(log) == 2, what="disconnect handler")
    # python-socketio's client.disconnect() queues DISCONNECT packets and closes
    # the transport at once, so over the network either may reach the server first.
    expected = {"client disconnect"}
    if peer.kind == "network":
        expected.add("transport close")
    assert log[1][0] == "disconnect" and log[1][1] in expected


# -- rooms and broadcasts ------------------------------------------------------------


def test_rooms_join_leave_close(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("join")
    def on_join(room):
        join_room(room)
        return sorted(map(str, rooms()))

    @sio.on("leave")
    def on_leave(room):
        leave_room(room)

    @sio.on("say")
    def on_say(room, text):
        emit("said", text, to=room)

    @sio.on("close")
    def on_close(room):
        close_room(room)

    a, b, c = peers(app, sio), peers(app, sio), peers(app, sio)
    assert a.ask("join", "red") == [sorted([a.sid(), "red"])]
    b.ask("join", "red")
    c.ask("join", "blue")
    c.ask("say", "red", "hello reds")
    a.sync()
    assert a.wait_for("said") == [["hello reds"]]
    assert b.wait_for("said") == [["hello reds"]]
    assert c.take() == []

    b.ask("leave", "red")
    c.ask("say", "red", "again")
    assert a.wait_for("said") == [["again"]]
    assert b.take() == []

    c.ask("close", "red")
    c.ask("say", "red", "nobody")
    assert a.take() == []
    # a sid is also a room
    c.ask("say", b.sid(), "direct")
    assert b.wait_for("said") == [["direct"]]


def test_broadcast_include_self_and_skip_sid(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("all")
    def to_all(text):
        emit("news", text, broadcast=True)

    @sio.on("others")
    def to_others(text):
        emit("news", text, broadcast=True, include_self=False)

    @sio.on("skip")
    def skipping(sid, text):
        emit("news", text, broadcast=True, skip_sid=sid)

    a, b, c = peers(app, sio), peers(app, sio), peers(app, sio)
    a.ask("all", "1")
    for p in (a, b, c):
        assert p.wait_for("news") == [["1"]]
    a.ask("others", "2")
    assert b.wait_for("news") == [["2"]] and c.wait_for("news") == [["2"]]
    assert a.take() == []
    a.ask("skip", b.sid(), "3")
    assert a.wait_for("news") == [["3"]] and c.wait_for("news") == [["3"]]
    assert b.take() == []


def test_server_emit_outside_handlers(peers, app: Flask, sio: SocketIO) -> None:
    sio.on("join")(lambda room: join_room(room))
    sio.on("connect", namespace="/other")(lambda: None)
    a = peers(app, sio, namespaces=("/", "/other"))
    b = peers(app, sio)
    a.ask("join", "vip")
    sio.emit("everyone", 1)
    sio.emit("vip_only", 2, to="vip")
    sio.emit("other_ns", 3, namespace="/other")
    sio.send("hi all", broadcast=True)  # Flask-SocketIO 4 style: accepted
    sio.emit("many", 1, 2, 3, room="vip")
    sio.emit("not_b", 4, skip_sid=[b.sid()])
    assert a.take() == [
        ("everyone", [1]),
        ("vip_only", [2]),
        ("message", ["hi all"]),
        ("many", [1, 2, 3]),
        ("not_b", [4]),
    ]
    assert a.take("/other") == [("other_ns", [3])]
    assert b.take() == [("everyone", [1]), ("message", ["hi all"])]


# -- server-to-client acknowledgements ------------------------------------------------


def test_call_from_a_handler_gets_the_client_answer(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("quiz")
    def quiz(question):
        answer = call("question", question, timeout=5)
        return {"client said": answer}

    peer = peers(app, sio)
    peer.on("question", lambda q: q + "? 42")
    assert peer.ask("quiz", "meaning") == [{"client said": "meaning? 42"}]


def test_socketio_call_from_outside_a_handler(peers, app: Flask, sio: SocketIO) -> None:
    peer = peers(app, sio)
    peer.on("add", lambda a, b: a + b)
    peer.on("pair", lambda: ("x", "y"))
    assert sio.call("add", 2, 3, to=peer.sid(), timeout=5) == 5
    assert sio.call("pair", to=peer.sid(), timeout=5) == ("x", "y")
    peer.on("bin", lambda: {"blob": b"\x00\xff"})
    assert sio.call("bin", to=peer.sid(), timeout=5) == {"blob": b"\x00\xff"}


def test_emit_callback_runs_in_the_emitters_request_context(
    peers, app: Flask, sio: SocketIO
) -> None:
    results: list[Any] = []
    done = threading.Event()

    @sio.on("start")
    def start():
        def callback(*args):
            results.append((request.sid, args))
            done.set()

        emit("please_ack", "data", callback=callback)

    peer = peers(app, sio)
    peer.on("please_ack", lambda data: (data, "acked"))
    peer.emit("start")
    assert done.wait(5)
    assert results == [(peer.sid(), ("data", "acked"))]


# -- errors ----------------------------------------------------------------------------


def test_error_handlers_return_the_ack(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("boom")
    def boom():
        raise ValueError("bad value")

    @sio.on("boom", namespace="/quiet")
    def boom_quiet():
        raise KeyError("k")

    @sio.on_error()
    def on_root_error(exc):
        return ["root handler", type(exc).__name__, request.event["message"]]

    @sio.on_error_default
    def on_any_error(exc):
        return ["default handler", type(exc).__name__, request.namespace]

    peer = peers(app, sio, namespaces=("/", "/quiet"))
    assert peer.ask("boom") == [["root handler", "ValueError", "boom"]]
    assert peer.ask("boom", namespace="/quiet") == [["default handler", "KeyError", "/quiet"]]


def test_namespace_error_method(peers, app: Flask, sio: SocketIO) -> None:
    class Careful(Namespace):
        def on_fail(self):
            raise RuntimeError("oops")

        def error(self, exc):
            return "handled: " + str(exc)

    sio.on_namespace(Careful("/careful"))
    peer = peers(app, sio, namespaces=("/careful",))
    assert peer.ask("fail", namespace="/careful") == ["handled: oops"]


# -- disconnects -------------------------------------------------------------------------


def test_server_side_disconnect(peers, app: Flask, sio: SocketIO) -> None:
    reasons: list[Any] = []

    @sio.on("kick_me")
    def kick_me():
        emit("bye")
        disconnect()

    @sio.on("disconnect")
    def on_disconnect(reason):
        reasons.append((request.sid, reason))

    peer = peers(app, sio)
    sid = peer.sid()
    peer.emit("kick_me")
    wait_until(lambda: not peer.connected(), what="client disconnected")
    wait_until(lambda: reasons, what="disconnect handler")
    assert reasons == [(sid, SocketIO.reason.SERVER_DISCONNECT)]


def test_disconnect_handler_without_reason_argument(peers, app: Flask, sio: SocketIO) -> None:
    gone: list[str] = []

    @sio.on("disconnect")
    def on_disconnect():
        gone.append(request.sid)

    peer = peers(app, sio)
    sid = peer.sid()
    peer.close()
    wait_until(lambda: gone, what="disconnect handler")
    assert gone == [sid]


# -- background tasks --------------------------------------------------------------------


def test_background_task_emits_reach_clients(peers, app: Flask, sio: SocketIO) -> None:
    stop = threading.Event()

    def ticker():
        n = 0
        while not stop.is_set() and n < 3:
            n += 1
            sio.emit("tick", n)
            sio.sleep(0.01)

    peer = peers(app, sio)
    task = sio.start_background_task(ticker)
    task.join(5)
    stop.set()
    assert peer.wait_for("tick", count=3) == [[1], [2], [3]]


# -- sessions ------------------------------------------------------------------------------


def _login_cookie(app: Flask, user: str) -> str:
    @app.route("/login/<name>")
    def login(name):
        session["user"] = name
        return "ok"

    client = app.test_client()
    client.get(f"/login/{user}")
    cookie = client.get_cookie("session")
    assert cookie is not None
    return f"session={cookie.value}"


def test_managed_session_is_a_per_connection_copy(peers, app: Flask, sio: SocketIO) -> None:
    cookie = _login_cookie(app, "ann")

    @sio.on("whoami")
    def whoami():
        return session.get("user"), session.get("visits", 0)

    @sio.on("visit")
    def visit():
        session["visits"] = session.get("visits", 0) + 1

    first = peers(app, sio, headers={"Cookie": cookie})
    second = peers(app, sio, headers={"Cookie": cookie})
    assert first.ask("whoami") == ["ann", 0]
    first.ask("visit")
    first.ask("visit")
    assert first.ask("whoami") == ["ann", 2]
    # another connection forked its own copy at connect time
    assert second.ask("whoami") == ["ann", 0]


class _MemorySession(dict[str, Any], SessionMixin):
    def __init__(self, sid: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(data or {})
        self.sid = sid
        self.modified = False

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.modified = True


class _ServerSideSessions(SessionInterface):
    """A minimal server-side session interface: the cookie holds only an id."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def open_session(self, app, request):
        sid = request.cookies.get("sid") or f"s{len(self.store) + 1}"
        with self.lock:
            return _MemorySession(sid, dict(self.store.get(sid, {})))

    def save_session(self, app, session, response):
        with self.lock:
            self.store[session.sid] = dict(session)
        response.set_cookie("sid", session.sid)


def test_unmanaged_session_shares_server_side_sessions(peers, app: Flask) -> None:
    app.session_interface = _ServerSideSessions()
    sio = SocketIO(app, manage_session=False)

    @app.route("/read")
    def read():
        return {"user": session.get("user"), "points": session.get("points")}

    @sio.on("score")
    def score(points):
        session["points"] = points
        return session.get("user")

    app.session_interface.store["abc"] = {"user": "bob"}
    peer = peers(app, sio, headers={"Cookie": "sid=abc"})
    assert peer.ask("score", 7) == ["bob"]
    http = app.test_client()
    http.set_cookie("sid", "abc")
    assert http.get("/read").get_json() == {"user": "bob", "points": 7}


# -- options visible to clients --------------------------------------------------------------


def test_always_connect_then_refuse(peers, app: Flask) -> None:
    sio = SocketIO(app, always_connect=True)
    seen = []

    @sio.on("connect")
    def on_connect(auth):
        seen.append(auth)
        return auth.get("ok", False)

    ok = peers(app, sio, auth={"ok": True})
    assert ok.connected()
    # python-socketio's connect() waits its whole wait_timeout when a namespace
    # is accepted then dropped: keep it short.
    refused = peers(app, sio, auth={"ok": False}, wait_timeout=0.5)
    # The server's view: only the accepted client is left.
    wait_until(lambda: sio.server.participants("/") == [ok.sid()], what="refused client dropped")
    assert seen == [{"ok": True}, {"ok": False}]
    if refused.kind == "local":
        assert not refused.connected()
    # (python-socketio's client ignores a DISCONNECT that arrives while its
    # connect() is still waiting, so its own view can lag behind: not checked.)


def test_namespaces_option_accepts_namespaces_without_handlers(peers, app: Flask) -> None:
    sio = SocketIO(app, namespaces=["/", "/silent"])
    peer = peers(app, sio, namespaces=("/", "/silent"))
    assert peer.connected("/silent")
    star = SocketIO(app, namespaces="*")
    assert star.server.namespaces == "*"


@pytest.mark.parametrize("json_module", ["flask", "stdlib"])
def test_json_option(peers, app: Flask, json_module: str) -> None:
    import datetime
    import json as stdlib_json

    import flask

    sio = SocketIO(app, json=flask.json if json_module == "flask" else stdlib_json)

    @sio.on("when")
    def when():
        if json_module == "flask":
            return datetime.date(2024, 1, 2)  # flask's provider knows dates
        return {"é": [1.5, None, True]}

    peer = peers(app, sio)
    if json_module == "flask":
        assert peer.ask("when") == ["Tue, 02 Jan 2024 00:00:00 GMT"]
    else:
        assert peer.ask("when") == [{"é": [1.5, None, True]}]


def test_each_event_gets_a_fresh_g_and_the_same_request(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("probe")
    def probe(value):
        had = hasattr(g, "value")
        g.value = value
        return [had, request.path, request.args.get("k"), request.sid]

    peer = peers(app, sio, query="k=v")
    for i in range(3):
        assert peer.ask("probe", i) == [[False, "/socket.io/", "v", peer.sid()]]


def test_catch_all_class_namespace(peers, app: Flask, sio: SocketIO) -> None:
    class Anywhere(Namespace):
        def on_connect(self):
            emit("hello", request.namespace)

        def on_where(self):
            return [request.namespace, self.namespace]

    sio.on_namespace(Anywhere("*"))
    peer = peers(app, sio, namespaces=("/x", "/y"))
    assert peer.take("/x") == [("hello", ["/x"])]
    assert peer.ask("where", namespace="/y") == [["/y", "*"]]


def test_context_functions_with_explicit_targets(peers, app: Flask, sio: SocketIO) -> None:
    @sio.on("put")
    def put(sid, room):
        join_room(room, sid=sid)
        return sorted(map(str, rooms(sid=sid, namespace="/")))

    @sio.on("take_out")
    def take_out(sid, room):
        leave_room(room, sid=sid, namespace="/")
        return sorted(map(str, rooms(sid)))

    @sio.on("relay")
    def relay(room, text):
        send(text, to=room, include_self=False)
        emit("other_ns", text, namespace="/side", broadcast=True)

    @sio.on("ask_other")
    def ask_other(sid):
        return call("ping", to=sid, timeout=5)

    @sio.on("kick")
    def kick(sid):
        disconnect(sid=sid)

    sio.on("connect", namespace="/side")(lambda: None)

    a = peers(app, sio)
    b = peers(app, sio, namespaces=("/", "/side"))
    b.on("ping", lambda: "pong from b")
    assert a.ask("put", b.sid(), "team") == [sorted([b.sid(), "team"])]
    a.ask("put", a.sid(), "team")
    a.ask("relay", "team", "hello team")
    assert b.wait_for("message") == [["hello team"]]
    assert b.wait_for("other_ns", namespace="/side") == [["hello team"]]
    assert a.take() == []
    assert a.ask("take_out", b.sid(), "team") == [[b.sid()]]
    assert a.ask("ask_other", b.sid()) == ["pong from b"]
    a.ask("kick", b.sid())
    wait_until(lambda: not b.connected("/"), what="b kicked from /")
    assert a.connected()


def test_async_def_handlers(peers, app: Flask, sio: SocketIO) -> None:
    import asyncio

    @sio.on("connect")
    async def on_connect(auth):
        await asyncio.sleep(0)
        emit("hello", [auth, request.sid])

    @sio.on("slow_add")
    async def slow_add(a, b):
        await asyncio.sleep(0.001)
        session["last"] = a + b
        return [a + b, request.event["message"], session["last"]]

    @sio.on("fail")
    async def fail():
        raise KeyError("async")

    @sio.on_error()
    async def on_error(exc):
        await asyncio.sleep(0)
        return "handled " + type(exc).__name__

    peer = peers(app, sio, auth={"async": True})
    assert peer.take() == [("hello", [[{"async": True}, peer.sid()]])]
    assert peer.ask("slow_add", 2, 3) == [[5, "slow_add", 5]]
    assert peer.ask("fail") == ["handled KeyError"]
