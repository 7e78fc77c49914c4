"""A python-socketio server on a Redis channel (what Flask-SocketIO runs on), for interop tests.

Usage: python python_socketio_server.py REDIS_URL CHANNEL PORT. Run as a
subprocess so that its Redis listener thread (which has no stop method) ends
with it.
"""

from __future__ import annotations

import sys

import socketio
from werkzeug.serving import make_server


def main() -> None:
    url, channel, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = socketio.Server(
        client_manager=socketio.RedisManager(url, channel=channel), async_mode="threading"
    )

    @server.on("join")
    def join(sid, room):
        server.enter_room(sid, room)
        return "joined"

    make_server("127.0.0.1", port, socketio.WSGIApp(server), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
