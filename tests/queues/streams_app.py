"""A server with connection state recovery on a ``redis+streams://`` queue, run as a subprocess.

``python tests/queues/streams_app.py --port N --queue URL --channel C --window S``.
Two of them share a stream (tests/queues/test_queue_streams_recovery.py). Its
clients join rooms and ask it to emit to a room, through events that
acknowledge once done. Flask-Relay's log lines go to stdout (INFO).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from flask import Flask, request

import flask_relay
from flask_relay import SocketIO, join_room, rooms


def build(queue: str, channel: str, window: float) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    socketio = SocketIO(
        app,
        message_queue=queue,
        channel=channel,
        connection_state_recovery={"max_disconnection_duration": window},
    )

    @socketio.on("join")
    def join(room: str) -> str:
        join_room(room)
        socketio.server.get_session(request.sid)["joined"] = room  # type: ignore[attr-defined]
        return "joined"

    @socketio.on("send")
    def send(room: str, event: str, value: Any) -> str:
        socketio.emit(event, value, to=room)
        return "sent"

    @socketio.on("state")
    def state() -> dict[str, Any]:
        sid = request.sid  # type: ignore[attr-defined]
        return {
            "sid": sid,
            "rooms": sorted(str(r) for r in rooms()),
            "session": socketio.server.get_session(sid),
            "recovered": socketio.server.get_socket(sid).recovered,  # type: ignore[union-attr]
            "process": os.getpid(),
        }

    return app, socketio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    for name in ("flask_relay.pubsub", "flask_relay.sio"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    print(f"flask_relay from {flask_relay.__file__}", flush=True)
    app, socketio = build(args.queue, args.channel, args.window)
    assert socketio.server.queue is not None
    if not socketio.server.queue.ready.wait(30):
        sys.exit("the message queue listener did not start")
    socketio.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
