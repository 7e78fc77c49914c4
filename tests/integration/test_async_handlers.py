"""``async def`` Socket.IO event handlers run on the event loop (docs/handlers.md).

Checked with the official Node ``socket.io-client`` and the python-socketio
client against the own server:

* the handler runs on the loop thread, not in a worker, with the client's
  Flask request context: ``request.sid``, ``request.namespace``, the
  connection's ``session`` (shared with its blocking handlers) and a ``g`` of
  its own;
* its return value is the acknowledgement, ``emit()`` inside it reaches the
  client, class-based namespaces' ``async def on_<event>`` methods too;
* an exception goes to ``on_error`` (whose return value is the ack) or is
  logged, and the connection goes on;
* ``call()`` inside it raises instead of blocking the loop;
* one client's events start in arrival order across async and blocking
  handlers, and each waits for the previous to finish (under the order window);
* a handler awaiting something does not hold up other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio
from flask import Flask, g, request, session
from nodepeer import NodePeer, serving

from flask_relay import Namespace, SocketIO, emit
from flask_relay import call as sio_call


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, Any]] = []  # (what, value) in the order handlers ran
        self.threads: dict[str, str] = {}
        self.spans: dict[str, tuple[float, float]] = {}

    def add(self, what: str, value: Any) -> None:
        with self.lock:
            self.log.append((what, value))


def make_app(async_handlers: bool = True) -> tuple[Flask, SocketIO, Seen]:
    app = Flask(__name__)
    app.secret_key = "test"
    sio = SocketIO(app, async_handlers=async_handlers)
    seen = Seen()

    @sio.on("where")
    async def where() -> dict[str, Any]:
        g.mark = "async"  # a g of this handler's own
        seen.threads["async"] = threading.current_thread().name
        return {
            "sid": request.sid,  # type: ignore[attr-defined]
            "namespace": request.namespace,  # type: ignore[attr-defined]
            "path": request.path,
            "g": g.mark,
        }

    @sio.on("where_sync")
    def where_sync() -> dict[str, Any]:
        seen.threads["sync"] = threading.current_thread().name
        return {"g": getattr(g, "mark", None)}

    @sio.on("remember")
    async def remember(value: Any) -> None:
        session["value"] = value

    @sio.on("recall")
    async def recall() -> Any:
        return session.get("value")

    @sio.on("recall_sync")
    def recall_sync() -> Any:
        return session.get("value")

    @sio.on("echo")
    async def echo(*args: Any) -> Any:
        await asyncio.sleep(0)  # one trip through the loop, then answer
        emit("echoed", list(args))
        return args

    @sio.on("fail")
    async def fail(kind: str) -> None:
        raise ValueError(kind)

    @sio.on("try_call")
    async def try_call() -> str:
        try:
            sio_call("x", timeout=1)
        except RuntimeError as exc:
            return f"refused: {'event loop' in str(exc)}"
        return "called"

    @sio.on("aseq")
    async def aseq(n: int) -> None:
        seen.add("async", n)

    @sio.on("sseq")
    def sseq(n: int) -> None:
        time.sleep(0.005)
        seen.add("sync", n)

    @sio.on("nap")
    async def nap(name: str, seconds: float) -> str:
        began = time.monotonic()
        await asyncio.sleep(seconds)
        seen.spans[name] = (began, time.monotonic())
        return name

    @sio.on("timed")
    def timed(name: str) -> None:
        seen.spans[name] = (time.monotonic(), time.monotonic())

    class Room(Namespace):
        async def on_hello(self, who: str) -> str:
            seen.threads["namespace"] = threading.current_thread().name
            return f"hello {who} from {request.namespace}"  # type: ignore[attr-defined]

        async def on_boom(self) -> None:
            raise KeyError("boom")

        def error(self, exc: BaseException) -> Any:
            return f"handled {type(exc).__name__}"

    sio.on_namespace(Room("/room"))
    return app, sio, seen


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def peer() -> Iterator[NodePeer]:
    p = NodePeer()
    try:
        yield p
    finally:
        p.close()


@contextlib.contextmanager
def py_client(url: str, namespaces: list[str] | None = None) -> Iterator[socketio.Client]:
    client = socketio.Client(reconnection=False, handle_sigint=False)
    client.connect(url, transports=["websocket"], namespaces=namespaces, wait_timeout=10)
    try:
        yield client
    finally:
        client.disconnect()


def _is_worker(name: str) -> bool:
    return name.startswith("flask-relay-worker")


# -- context, ack, emit --------------------------------------------------------------


def test_context_and_ack_node_client(peer: NodePeer) -> None:
    app, sio, seen = make_app()
    with serving(app, sio) as url:
        sid = peer.connect("a", url)["sid"]
        [answer] = peer.call("a", "where")
        assert answer == {"sid": sid, "namespace": "/", "path": "/socket.io/", "g": "async"}
        # g is per handler call, as in Flask-SocketIO: the next one starts empty.
        assert peer.call("a", "where_sync") == [{"g": None}]
        assert peer.call("a", "echo", 1, "two", {"3": [4]}) == [1, "two", {"3": [4]}]
        assert peer.wait_event("a", "echoed")["args"] == [[1, "two", {"3": [4]}]]
    assert not _is_worker(seen.threads["async"])
    assert _is_worker(seen.threads["sync"])


def test_session_is_the_connections_in_async_and_blocking_handlers() -> None:
    app, sio, _seen = make_app()
    with serving(app, sio) as url, py_client(url) as client:
        assert client.call("recall", timeout=10) is None
        client.emit("remember", {"n": 1})
        assert client.call("recall", timeout=10) == {"n": 1}
        assert client.call("recall_sync", timeout=10) == {"n": 1}
        with py_client(url) as other:  # another connection: its own session
            assert other.call("recall", timeout=10) is None


def test_namespace_class_async_method_and_its_error_handler(peer: NodePeer) -> None:
    app, sio, seen = make_app()
    with serving(app, sio) as url:
        assert peer.connect("a", url, namespace="/room")["ev"] == "connect"
        assert peer.call("a", "hello", "ann") == ["hello ann from /room"]
        assert peer.call("a", "boom") == ["handled KeyError"]
    assert not _is_worker(seen.threads["namespace"])


# -- errors --------------------------------------------------------------------------


def test_exception_is_logged_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, sio, _seen = make_app()
    with (
        caplog.at_level(logging.ERROR, logger="flask_relay.sio"),
        serving(app, sio) as url,
        py_client(url) as client,
    ):
        client.emit("fail", "bad thing")
        assert client.call("recall", timeout=10) is None  # still served, in order
    errors = [r for r in caplog.records if "async handler" in r.getMessage()]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "bad thing" in str(errors[0].exc_info[1])


def test_on_error_answers_for_an_async_handler() -> None:
    app, sio, _seen = make_app()

    @sio.on_error()
    def oops(exc: BaseException) -> str:
        return f"oops {exc}"

    with serving(app, sio) as url, py_client(url) as client:
        assert client.call("fail", "x", timeout=10) == "oops x"


def test_call_inside_an_async_handler_raises_instead_of_blocking() -> None:
    app, sio, _seen = make_app()
    with serving(app, sio) as url, py_client(url) as client:
        assert client.call("try_call", timeout=10) == "refused: True"


# -- order and concurrency -----------------------------------------------------------


@pytest.mark.parametrize("async_handlers", [True, False])
def test_mixed_handlers_of_one_client_run_in_arrival_order(async_handlers: bool) -> None:
    app, sio, seen = make_app(async_handlers)
    with serving(app, sio) as url, py_client(url) as client:
        for n in range(300):
            # runs of each kind, and single alternations
            client.emit("aseq" if (n // 3) % 2 or n % 7 == 0 else "sseq", n)
        assert client.call("recall", timeout=30) is None
        wait_until(lambda: len(seen.log) == 300, 10, "300 events")
    assert [n for _what, n in seen.log] == list(range(300))
    assert {what for what, _n in seen.log} == {"async", "sync"}


def test_mixed_handlers_in_order_node_client(peer: NodePeer) -> None:
    app, sio, seen = make_app()
    with serving(app, sio) as url:
        peer.connect("a", url)
        for n in range(200):
            peer.emit("a", "aseq" if n % 2 else "sseq", n)
        assert peer.call("a", "where_sync", timeout=30) == [{"g": None}]
        wait_until(lambda: len(seen.log) == 200, 10, "200 events")
    assert [n for _what, n in seen.log] == list(range(200))


def test_next_event_of_the_client_waits_for_an_awaiting_handler() -> None:
    app, sio, seen = make_app()
    with serving(app, sio) as url, py_client(url) as client:
        client.emit("nap", ("nap", 0.1))  # below the 0.25 s order window
        client.emit("timed", "next")
        wait_until(lambda: len(seen.spans) == 2, 10, "both handlers")
    assert seen.spans["next"][0] >= seen.spans["nap"][1]


def test_an_awaiting_handler_does_not_hold_up_other_clients(peer: NodePeer) -> None:
    app, sio, _seen = make_app()
    with serving(app, sio) as url:
        peer.connect("slow", url)
        peer.connect("quick", url)
        tag = peer.call_nowait("slow", "nap", "long", 2.0)
        began = time.monotonic()
        assert peer.call("quick", "echo", "hi") == ["hi"]
        assert peer.call("quick", "where_sync") == [{"g": None}]
        assert time.monotonic() - began < 1.0
        assert peer.ack_of(tag, timeout=10) == ["long"]
