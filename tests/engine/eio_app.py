"""A standalone EngineIO app served by ``EngineIO.run`` (for the SIGTERM test).

Usage: python eio_app.py PORT ; prints "ready", then one line per event.
"""

from __future__ import annotations

import sys

from flask import Flask

from flask_relay.engineio import EngineIO

app = Flask(__name__)
eio = EngineIO(app)


@app.route("/hello")
def hello() -> str:
    return "hello from flask"


@eio.on("connect")
def connect(sid: str, environ: dict[str, object]) -> None:
    print("connect", sid, flush=True)


@eio.on("message")
def message(sid: str, data: str | bytes) -> None:
    eio.send(sid, data)


@eio.on("disconnect")
def disconnect(sid: str, reason: str) -> None:
    print("disconnect", sid, reason, flush=True)


if __name__ == "__main__":
    print("ready", flush=True)
    eio.run(app, host="127.0.0.1", port=int(sys.argv[1]))
    print("stopped", flush=True)
