"""A Flask-Relay server with the Socket.IO Admin UI instrumented (run as a subprocess).

``python tests/integration/admin_app.py --port N [--origin URL]`` serves a small
chat app (``echo``, ``join``, ``say`` to a room) and ``socketio.instrument()``
with ``admin``/``s3cret``, stats every half second. ``--origin`` allows the
dashboard's page (served from another port) to connect.
"""

from __future__ import annotations

import argparse
from typing import Any

from flask import Flask

from flask_relay import SocketIO, emit, join_room

USERNAME = "admin"
PASSWORD = "s3cret"


def create_app(origin: str | None) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    socketio = SocketIO(app, cors_allowed_origins=[origin] if origin else None)
    socketio.instrument(
        auth={"username": USERNAME, "password": PASSWORD},
        server_id="relay-test",
        server_stats_interval=0.5,
    )

    @socketio.on("echo")
    def echo(*args: Any) -> Any:
        return args

    @socketio.on("join")
    def on_join(room: str) -> str:
        join_room(room)
        return "joined"

    @socketio.on("say")
    def say(room: str, text: str) -> str:
        emit("said", text, to=room)
        return "sent"

    return app, socketio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--origin", default=None)
    options = parser.parse_args()
    app, socketio = create_app(options.origin)
    socketio.run(app, host="127.0.0.1", port=options.port)


if __name__ == "__main__":
    main()
