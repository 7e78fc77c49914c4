"""The app of the scale-out tests: Socket.IO echo with acks, rooms, WebSocket groups.

Served by ``gunicorn -k flask_relay.gunicorn.Worker -w N scale_app:app`` or by
``python scale_app.py HOST PORT [PEER_ADDRESS]`` (``socketio.run``). The
message queue is ``$SCALE_QUEUE`` when set. Forwarding decisions are logged at
DEBUG on stderr (the tests count them).
"""

from __future__ import annotations

import logging
import os
import sys

from flask import Flask, request

from flask_relay import Sock, SocketIO, join_room

logging.basicConfig(
    stream=sys.stderr,
    level=os.environ.get("SCALE_LOG_LEVEL", "WARNING"),
    format="%(asctime)s %(process)d %(name)s %(message)s",
)
logging.getLogger("flask_relay.forward").setLevel(logging.DEBUG)

app = Flask(__name__)
queue = os.environ.get("SCALE_QUEUE") or None
channel = os.environ.get("SCALE_CHANNEL", "flask-socketio")
socketio = SocketIO(app, message_queue=queue, channel=channel, cors_allowed_origins="*")
sock = Sock(app)
NAME = os.environ.get("SCALE_NAME", "")


@app.route("/whoami")
def whoami() -> str:
    return f"{NAME} {os.getpid()}"


@socketio.on("echo")
def echo(data: object) -> object:
    # An event back to the sender, then the acknowledgement.
    socketio.emit("reply", data, to=request.sid)  # type: ignore[attr-defined]
    return {"data": data, "pid": os.getpid(), "name": NAME}


@socketio.on("join")
def join(room: str) -> str:
    join_room(room)
    return NAME


@socketio.on("shout")
def shout(room: str, data: object) -> str:
    socketio.emit("shout", {"data": data, "from": NAME}, to=room)
    return NAME


@sock.route("/group/<name>")
def group(ws, name):  # type: ignore[no-untyped-def]
    ws.join_room(name)
    ws.send(f"joined {name} {NAME}")
    while (message := ws.receive()) is not None:
        if message == "leave":
            ws.leave_room(name)
            ws.send("left")
        else:
            sock.send(f"{NAME}: {message}", to=name)


if __name__ == "__main__":
    peer = sys.argv[3] if len(sys.argv) > 3 else None
    socketio.run(app, host=sys.argv[1], port=int(sys.argv[2]), peer_address=peer)
