"""A send made on the loop (an ``async def`` handler's emit or ack) keeps its order
against sends from other threads to the same client.

The engine delivers a loop-side send at once when nothing waits in the hub's
queue, and defers it behind what does (docs/performance.md, "Per-message
paths"). Checked with the python-socketio client over a WebSocket:

* a thread's emits and an ``async def`` handler's emits to one client, made at
  the same time, each arrive complete and in their own order;
* a thread's emit queued in the hub (held by ``batched()``, as the message
  queue's listener does) before the handler is woken arrives before the
  handler's emit: a loop-side send never overtakes a queued one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import socketio
from flask import Flask, request
from nodepeer import serving

from flask_relay import SocketIO, emit


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sid: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.go: asyncio.Event | None = None
        self.armed = threading.Event()
        self.emitted = threading.Event()


def make_app() -> tuple[Flask, SocketIO, State]:
    app = Flask(__name__)
    sio = SocketIO(app)
    state = State()

    @sio.on("hello")
    async def hello() -> str:
        state.sid = request.sid  # type: ignore[attr-defined]
        return "hi"

    @sio.on("ping")
    async def ping(n: int) -> int:
        emit("a", n)
        return n

    @sio.on("arm")
    async def arm() -> None:
        state.loop = asyncio.get_running_loop()
        state.go = asyncio.Event()
        state.armed.set()
        await state.go.wait()
        emit("loop", "after the thread's")
        state.emitted.set()

    return app, sio, state


class Client:
    def __init__(self, url: str) -> None:
        self.lock = threading.Lock()
        self.got: list[tuple[str, Any]] = []
        self.client = socketio.Client(reconnection=False, handle_sigint=False)
        self.client.on("*", self._on_any)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _on_any(self, event: str, *args: Any) -> None:
        with self.lock:
            self.got.append((event, args[0] if args else None))

    def events(self, name: str) -> list[Any]:
        with self.lock:
            return [value for event, value in self.got if event == name]

    def wait_for(self, predicate: Any, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate(list(self.got)):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.005)

    def close(self) -> None:
        self.client.disconnect()


@contextlib.contextmanager
def client_of(url: str) -> Iterator[Client]:
    client = Client(url)
    try:
        yield client
    finally:
        client.close()


def test_thread_and_async_handler_emits_each_keep_their_order() -> None:
    app, sio, state = make_app()
    n = 400
    with serving(app, sio) as url, client_of(url) as client:
        assert client.client.call("hello", timeout=10) == "hi"
        sid = state.sid

        def flood() -> None:
            for i in range(n):
                sio.emit("w", i, to=sid)

        worker = threading.Thread(target=flood)
        worker.start()
        for i in range(n):  # meanwhile: the async handler emits, on the loop
            client.client.emit("ping", i)
        worker.join(10)
        client.wait_for(
            lambda got: sum(1 for e, _ in got if e in ("a", "w")) == 2 * n, f"{2 * n} events"
        )
        assert client.events("w") == list(range(n))
        assert client.events("a") == list(range(n))


def test_a_loop_send_does_not_overtake_a_queued_thread_send() -> None:
    app, sio, state = make_app()
    with serving(app, sio) as url, client_of(url) as client:
        assert client.client.call("hello", timeout=10) == "hi"
        client.client.emit("arm")
        assert state.armed.wait(10)
        assert state.loop is not None and state.go is not None
        # The thread's emit waits in the hub (the wakeup is held to the end of
        # the block); the handler is woken after it was made and emits while
        # it still waits there.
        with sio.server.batched():
            sio.emit("thread", "first", to=state.sid)
            state.loop.call_soon_threadsafe(state.go.set)
            assert state.emitted.wait(10)
            time.sleep(0.05)  # time for a wrongly early write to reach the client
        client.wait_for(lambda got: len(got) >= 2, "both emits")
        assert [event for event, _ in client.got] == ["thread", "loop"]
