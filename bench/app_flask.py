"""One Flask application for the Flask-Relay and Flask-SocketIO fixtures.

The handlers are written once against the Flask-SocketIO API; ``BENCH_IMPL`` picks the
import (``relay`` -> ``flask_relay``, ``gevent`` / ``threading`` -> ``flask_socketio`` in
that async mode), which is exactly the switch a user makes. The plain WebSocket echo route
at ``/ws`` uses what each server offers: ``flask_relay.Sock`` for Flask-Relay,
gevent-websocket's ``wsgi.websocket`` under gevent, and simple-websocket (what Flask-Sock
wraps; Flask-Sock itself is not installed) under Werkzeug's threaded server.

``BENCH_QUEUE`` (Flask-Relay only) sets ``message_queue`` (e.g. ``redis://127.0.0.1:6379/0``)
for the several-worker scenarios. ``GET /bench/broadcast?seq=N&size=B`` emits one
``tick`` to every client (through the queue, so to every worker's clients);
``GET /bench/burst?start=S&n=K&size=B`` does what the ``burst`` event does (``K`` ticks
to room ``room``) for a driver that is not a Socket.IO client (the bcast20k scenario).

Usage: BENCH_IMPL=relay python bench/app_flask.py PORT
"""

from __future__ import annotations

import os
import sys

IMPL = os.environ.get("BENCH_IMPL", "relay")

if IMPL == "gevent":
    # The documented way to run Flask-SocketIO on gevent: patch the standard library first.
    from gevent import monkey

    monkey.patch_all()

import logging  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask, request  # noqa: E402

if IMPL == "relay":
    from flask_relay import Sock, SocketIO, join_room
else:
    from flask_socketio import SocketIO, join_room  # type: ignore[no-redef]

if os.environ.get("BENCH_LOG"):  # e.g. INFO: the server's refusals and closes
    logging.basicConfig(level=os.environ["BENCH_LOG"], format="%(process)d %(name)s %(message)s")

app = Flask(__name__)
if IMPL == "relay":
    socketio = SocketIO(app, message_queue=os.environ.get("BENCH_QUEUE") or None)
else:
    socketio = SocketIO(app, async_mode=IMPL)


@socketio.on("join")
def on_join(room: str) -> int:
    join_room(room)
    return os.getpid()  # the generator counts clients per server process


@app.route("/bench/broadcast")
def broadcast_all() -> str:
    """One event to every connected client (of every worker, with a queue)."""
    pad = "x" * int(request.args.get("size", 20))
    socketio.emit("tick", {"seq": int(request.args.get("seq", 1)), "pad": pad})
    return "ok"


@app.route("/bench/burst")
def burst_http() -> str:
    """The ``burst`` event's work, triggered over HTTP."""
    args = request.args
    on_burst({"start": args.get("start", 1), "n": args.get("n", 1), "size": args.get("size", 80)})
    return "ok"


@socketio.on("echo")
def on_echo(data: Any) -> Any:
    return data


if IMPL == "relay":

    @socketio.on("echo_async")
    async def on_echo_async(data: Any) -> Any:
        """Flask-Relay only: an ``async def`` handler runs on the event loop, no thread."""
        return data


@socketio.on("burst")
def on_burst(req: dict[str, Any]) -> None:
    pad = "x" * int(req["size"])
    start = int(req["start"])
    for i in range(int(req["n"])):
        socketio.emit("tick", {"seq": start + i, "pad": pad}, to="room")


if IMPL == "relay":
    sock = Sock(app)

    @sock.route("/ws")
    def ws_echo(ws: Any) -> None:
        while True:
            ws.send(ws.receive())

    @sock.route("/ws-async")
    async def ws_echo_async(ws: Any) -> None:
        """Flask-Relay only: an ``async def`` route runs on the event loop, no thread."""
        while True:
            await ws.send(await ws.receive())

elif IMPL == "gevent":

    @app.route("/ws", websocket=True)  # Werkzeug routes upgrades only to such rules
    def ws_echo() -> Any:
        ws = request.environ.get("wsgi.websocket")
        if ws is None:
            return "WebSocket expected", 400
        while True:
            msg = ws.receive()
            if msg is None:
                break
            ws.send(msg)
        return ""

else:
    import simple_websocket  # type: ignore[import-untyped]
    from flask import Response

    class _Done(Response):
        """After the WebSocket closed, tell Werkzeug there is nothing more to write."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("WebSocket closed")

    @app.route("/ws", websocket=True)  # Werkzeug routes upgrades only to such rules
    def ws_echo() -> Any:
        ws = simple_websocket.Server(request.environ)
        try:
            while True:
                ws.send(ws.receive())
        except simple_websocket.ConnectionClosed:
            pass
        return _Done()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    if IMPL == "threading":
        socketio.run(app, host="127.0.0.1", port=port, allow_unsafe_werkzeug=True)
    else:
        socketio.run(app, host="127.0.0.1", port=port)
