"""A Flask-SocketIO-style server on a message queue, run as a subprocess by the queue tests.

``python tests/queues/queue_app.py --port N --queue URL --channel C``. Its
clients ask it, through events, to act on other clients (which may live in
another process): every handler returns an acknowledgement, so a test also
sees that no handler failed. The queue's log lines go to stderr (INFO), so a
test can count them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from flask import Flask, request

import flask_relay
from flask_relay import (
    SocketIO,
    close_room,
    disconnect,
    emit,
    join_room,
    leave_room,
    rooms,
)


def build(queue: str, channel: str) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    socketio = SocketIO(app, message_queue=queue, channel=channel)

    @socketio.on("whoami")
    def whoami() -> str:
        return request.sid  # type: ignore[attr-defined,no-any-return]

    @socketio.on("join")
    def join(room: str, sid: str | None = None) -> str:
        join_room(room, sid=sid)
        return "joined"

    @socketio.on("leave")
    def leave(room: str, sid: str | None = None) -> str:
        leave_room(room, sid=sid)
        return "left"

    @socketio.on("close")
    def close(room: str) -> str:
        close_room(room)
        return "closed"

    @socketio.on("rooms")
    def my_rooms() -> list[str]:
        return sorted(str(r) for r in rooms())

    @socketio.on("send")
    def send(to: str | None, event: str, *args: Any) -> str:
        # ``to`` None: everyone but the sender, in every process (skip_sid).
        if to is None:
            emit(event, args, broadcast=True, include_self=False)
        else:
            socketio.emit(event, args if len(args) != 1 else args[0], to=to)
        return "sent"

    @socketio.on("call")
    def call(sid: str, event: str, value: Any) -> Any:
        return socketio.call(event, value, to=sid, timeout=15)

    @socketio.on("emit_with_ack")
    def emit_with_ack(sid: str, event: str, value: Any) -> str:
        asker = request.sid  # type: ignore[attr-defined]

        def answered(*args: Any) -> None:
            socketio.emit("acked", tuple(args), to=asker)

        socketio.emit(event, value, to=sid, callback=answered)
        return "asked"

    @socketio.on("kick")
    def kick(sid: str) -> str:
        disconnect(sid=sid)
        return "kicked"

    @socketio.on("peers")
    def peers() -> int:
        # The other Flask-Relay processes this one has heard on the channel.
        assert socketio.server.queue is not None
        return len(socketio.server.queue.peers)

    @socketio.on("participants")
    def participants(room: str) -> int:
        # What this process's manager view shows (its own clients only).
        return len(list(socketio.server.manager.get_participants("/", room)))

    return app, socketio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--channel", required=True)
    args = parser.parse_args()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    queue_logger = logging.getLogger("flask_relay.pubsub")
    queue_logger.addHandler(handler)
    queue_logger.setLevel(logging.INFO)
    print(f"flask_relay from {flask_relay.__file__}", flush=True)
    app, socketio = build(args.queue, args.channel)
    assert socketio.server.queue is not None
    if not socketio.server.queue.ready.wait(30):
        sys.exit("the message queue listener did not subscribe")
    socketio.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
