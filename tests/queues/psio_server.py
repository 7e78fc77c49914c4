"""A python-socketio server (what Flask-SocketIO runs on) on a message queue, for interop tests.

``python psio_server.py URL CHANNEL PORT``: ``socketio.Server`` with
``KombuManager`` (``amqp://``) or ``RedisManager`` (``redis://``),
``async_mode='threading'``, served by Werkzeug. A subprocess, so that its
listener thread (which has no stop method) ends with it.
"""

from __future__ import annotations

import sys
from typing import Any

import socketio
from werkzeug.serving import make_server


def main() -> None:
    url, channel, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if url.startswith("redis"):
        manager: Any = socketio.RedisManager(url, channel=channel)
    else:
        manager = socketio.KombuManager(url, channel=channel)
    server = socketio.Server(client_manager=manager, async_mode="threading")

    @server.on("whoami")
    def whoami(sid: str) -> str:
        return sid

    @server.on("join")
    def join(sid: str, room: str) -> str:
        server.enter_room(sid, room)
        return "joined"

    @server.on("send")
    def send(sid: str, to: str, event: str, value: Any) -> str:
        server.emit(event, value, to=to)
        return "sent"

    @server.on("call")
    def call(sid: str, to: str, event: str, value: Any) -> Any:
        return server.call(event, value, to=to, timeout=15)

    print("python-socketio server ready", flush=True)
    make_server("127.0.0.1", port, socketio.WSGIApp(server), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
