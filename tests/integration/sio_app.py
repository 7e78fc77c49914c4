"""The Socket.IO server the Node-client integration tests talk to (run as a subprocess).

Written against the Flask-SocketIO 5.x API (only the import differs), served by
``socketio.run()``: ``python tests/integration/sio_app.py --port N [--ping-interval S]``.

Instrumentation, not mocking: the real ``Encoder.encode`` and the Engine.IO
server's ``prepare`` / ``send_prepared`` are wrapped by counters, so a test can
see how many times a broadcast was encoded. ``GET /stats`` returns the counters
and ``POST /stats/reset`` zeroes them.
"""

from __future__ import annotations

import argparse
import functools
import threading
import time
from typing import Any

from flask import Flask, jsonify, request

from flask_relay import (
    ConnectionRefusedError,
    SocketIO,
    call,
    close_room,
    disconnect,
    emit,
    join_room,
    leave_room,
    rooms,
)

_lock = threading.Lock()
counters = {"encode": 0, "prepare": 0, "send_prepared_calls": 0, "send_prepared_sids": 0}


def _count(name: str, amount: int = 1) -> None:
    with _lock:
        counters[name] += amount


def instrument() -> None:
    """Wrap the real encoder and the engine's broadcast path with counters."""
    from flask_relay.engine.eio import EngineIOServer
    from flask_relay.protocol.socketio import Encoder

    encode = Encoder.encode

    @functools.wraps(encode)
    def counting_encode(self: Any, packet: Any) -> Any:
        _count("encode")
        return encode(self, packet)

    prepare = EngineIOServer.prepare

    @functools.wraps(prepare)
    def counting_prepare(self: Any, items: Any) -> Any:
        _count("prepare")
        return prepare(self, items)

    send_prepared = EngineIOServer.send_prepared

    @functools.wraps(send_prepared)
    def counting_send_prepared(self: Any, sids: Any, prepared: Any) -> Any:
        sids = list(sids)
        _count("send_prepared_calls")
        _count("send_prepared_sids", len(sids))
        return send_prepared(self, sids, prepared)

    Encoder.encode = counting_encode  # type: ignore[method-assign]
    EngineIOServer.prepare = counting_prepare  # type: ignore[method-assign]
    EngineIOServer.send_prepared = counting_send_prepared  # type: ignore[method-assign]


def create_app(
    ping_interval: float, ping_timeout: float, serializer: str = "default"
) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    socketio = SocketIO(
        app, ping_interval=ping_interval, ping_timeout=ping_timeout, serializer=serializer
    )

    @app.get("/stats")
    def stats() -> Any:
        with _lock:
            return jsonify(counters)

    @app.post("/stats/reset")
    def reset() -> Any:
        with _lock:
            for name in counters:
                counters[name] = 0
        return jsonify(counters)

    @socketio.on("echo")
    def echo(*args: Any) -> Any:
        return args

    @socketio.on("reverse_bytes")
    def reverse_bytes(blob: bytes, meta: dict[str, Any]) -> Any:
        # Binary both ways: an event carrying bytes back, and a binary ack.
        emit("bytes_back", {"blob": blob[::-1], "nested": [meta, bytes([len(blob) % 256])]})
        return blob[::-1], len(blob)

    @socketio.on("join")
    def on_join(room: str) -> Any:
        join_room(room)
        return sorted(str(r) for r in rooms())

    @socketio.on("leave")
    def on_leave(room: str) -> Any:
        leave_room(room)
        return sorted(str(r) for r in rooms())

    @socketio.on("to_room")
    def to_room(room: str, data: Any, include_self: bool = True) -> str:
        emit("room_msg", data, to=room, include_self=include_self)
        return "sent"

    @socketio.on("to_rooms")
    def to_rooms(room_list: list[str], data: Any, skip: Any = None) -> str:
        # A list of rooms: a client in several of them gets the event once.
        socketio.emit("rooms_msg", data, to=room_list, skip_sid=skip)
        return "sent"

    @socketio.on("shout")
    def shout(data: Any) -> str:
        emit("shouted", data, broadcast=True, include_self=False)
        return "sent"

    @socketio.on("close")
    def on_close(room: str) -> str:
        close_room(room)
        return "closed"

    @socketio.on("fanout")
    def fanout(room: str, data: Any) -> None:
        # No ack requested by the test: the only Socket.IO packet this emit encodes
        # is the broadcast itself.
        socketio.emit("fan", data, to=room)

    @socketio.on("ask")
    def ask(question: Any) -> Any:
        # Server -> client ack, blocking: the handler waits for the client's answer.
        answer = call("question", question, timeout=10)
        return ["client said", answer]

    @socketio.on("ask_later")
    def ask_later(question: Any) -> str:
        # Server -> client ack with a callback, answered from the callback.
        sid = request.sid  # type: ignore[attr-defined]

        def got(*answer: Any) -> None:
            socketio.emit("answered", list(answer), to=sid)

        emit("question", question, callback=got)
        return "asked"

    @socketio.on("sleep")
    def sleep(seconds: float) -> str:
        emit("sleeping", seconds)
        time.sleep(seconds)
        return "slept"

    @socketio.on("*")
    def anything(event: str, *args: Any) -> Any:
        # Catch-all: events without a handler of their own.
        return ["caught", event, *args]

    @socketio.on("watch")
    def watch() -> str:
        join_room("watchers")
        return "watching"

    @socketio.on("kick")
    def kick() -> None:
        disconnect()

    @socketio.on("disconnect")
    def gone(reason: str) -> None:
        sid = request.sid  # type: ignore[attr-defined]
        socketio.emit("gone", {"sid": sid, "reason": reason}, to="watchers")

    @socketio.on("connect", namespace="/admin")
    def admin_connect(auth: Any) -> Any:
        if not auth or auth.get("token") != "secret":
            raise ConnectionRefusedError("unauthorized", {"need": "token"})
        emit("welcome", {"namespace": "/admin"})
        return None

    @socketio.on("echo", namespace="/admin")
    def admin_echo(*args: Any) -> Any:
        return ("admin", *args)

    @socketio.on("whoami", namespace="/admin")
    def admin_whoami() -> Any:
        return {"namespace": request.namespace, "sid": request.sid}  # type: ignore[attr-defined]

    @socketio.on("connect", namespace="/refuse")
    def refuse() -> bool:
        return False

    return app, socketio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ping-interval", type=float, default=25)
    parser.add_argument("--ping-timeout", type=float, default=20)
    parser.add_argument("--serializer", default="default")
    options = parser.parse_args()
    instrument()
    app, socketio = create_app(options.ping_interval, options.ping_timeout, options.serializer)
    socketio.run(app, host="127.0.0.1", port=options.port)


if __name__ == "__main__":
    main()
