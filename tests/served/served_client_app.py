"""An app whose page loads the Socket.IO client from its own endpoint, for
tests/served/test_served_client.py. ``SERVE_CLIENT=0`` turns the files off.
Run as ``python served_client_app.py PORT`` (``socketio.run``); ``flask run``
and gunicorn load ``app``."""

from __future__ import annotations

import os
import sys
from typing import Any

from flask import Flask

import flask_relay
from flask_relay import SocketIO

PAGE = """<!doctype html>
<title>served client</title>
<script src="/socket.io/socket.io.min.js"></script>
<script>
  window.result = new Promise(resolve => {
    const socket = io({transports: ["polling", "websocket"]});
    socket.on("connect_error", e => resolve("connect_error: " + e.message));
    const echo = () => socket.emit("echo", "hé", answer => resolve(
      {answer, transport: socket.io.engine.transport.name}));
    socket.on("connect", () => {
      // After the upgrade to WebSocket (it may be done already).
      if (socket.io.engine.transport.name === "websocket") echo();
      else socket.io.engine.once("upgrade", echo);
    });
    setTimeout(() => resolve("timeout: " + (socket.io.engine
      ? socket.io.engine.transport.name : "no engine")), 15000);
  });
</script>
"""

app = Flask(__name__)
socketio = SocketIO(app, serve_client=os.environ.get("SERVE_CLIENT", "1") != "0")


@app.route("/")
def index() -> str:
    return PAGE


@app.route("/which")
def which() -> str:
    return flask_relay.__file__


@socketio.on("echo")
def on_echo(data: Any) -> Any:
    return data


if __name__ == "__main__":
    socketio.run(app, host="127.0.0.1", port=int(sys.argv[1]))
