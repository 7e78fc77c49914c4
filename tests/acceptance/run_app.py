"""A Flask-SocketIO-style app served by ``socketio.run()`` (issue 3 item 1 acceptance tests).

Usage: python run_app.py PORT [log_output|quiet|debug|reloader|tls CERTFILE KEYFILE].
Prints one line per Socket.IO connect/disconnect on stdout, then "returned" when
``run()`` returns.
"""

from __future__ import annotations

import sys
import threading

from flask import Flask, request

from flask_relay import SocketIO

app = Flask(__name__)
app.config["SECRET_KEY"] = "acceptance"
socketio = SocketIO(app)
_lock = threading.Lock()


def say(*words: object) -> None:
    """One whole line per call: handlers of different clients run in parallel threads."""
    with _lock:
        sys.stdout.write(" ".join(map(str, words)) + "\n")
        sys.stdout.flush()


@app.route("/hello")
def hello() -> str:
    return "hello from flask"


@app.route("/boom")
def boom() -> str:
    raise RuntimeError("boom in a view")


@socketio.on("connect")
def on_connect() -> None:
    say("connect", request.sid)  # type: ignore[attr-defined]


@socketio.on("disconnect")
def on_disconnect(reason: str) -> None:
    say("disconnect", request.sid, reason)  # type: ignore[attr-defined]


@socketio.on("echo")
def echo(data: object) -> object:
    return data


if __name__ == "__main__":
    port = int(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 else "quiet"
    if mode == "tls":
        socketio.run(app, port=port, certfile=sys.argv[3], keyfile=sys.argv[4])
    elif mode == "reloader":
        socketio.run(app, port=port, debug=True, reloader_options={"reloader_type": "stat"})
    elif mode == "debug":
        socketio.run(app, port=port, debug=True, use_reloader=False)
    else:
        socketio.run(app, port=port, log_output=(mode == "log_output"))
    say("returned")
