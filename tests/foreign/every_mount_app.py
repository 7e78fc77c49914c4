"""One app with every kind of endpoint, for tests/foreign/test_every_mount.py.

``SocketIO(app)`` at /socket.io, ``EngineIO(app, path="/engine.io")`` and a
``Sock`` route at /echo, each echoing. Run as ``python every_mount_app.py DOOR
PORT`` with DOOR ``socketio-run`` or ``eio-run``; ``flask --app every_mount_app
run`` and gunicorn load ``app``.
"""

from __future__ import annotations

import sys
from typing import Any

from flask import Flask

import flask_relay
from flask_relay import Sock, SocketIO
from flask_relay.engineio import EngineIO

app = Flask(__name__)
socketio = SocketIO(app)
sock = Sock(app)
eio = EngineIO(app, path="/engine.io")


@app.route("/")
def index() -> str:
    return "every mount: " + flask_relay.__file__


@socketio.on("echo")
def on_echo(data: Any) -> Any:
    return data


@sock.route("/echo")
def echo(ws: Any) -> None:
    while (message := ws.receive()) is not None:
        ws.send(message)


@eio.on("message")
def on_message(sid: str, data: str | bytes) -> None:
    eio.send(sid, data)


if __name__ == "__main__":
    door, port = sys.argv[1], int(sys.argv[2])
    if door == "socketio-run":
        socketio.run(app, host="127.0.0.1", port=port)
    elif door == "eio-run":
        eio.run(app, host="127.0.0.1", port=port)
    else:
        raise SystemExit(f"unknown door {door!r}")
