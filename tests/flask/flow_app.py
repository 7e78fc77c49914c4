"""A server for the flow-control tests, run as a subprocess (its RSS is measured).

``python tests/flask/flow_app.py --port N [--slow-consumer-timeout S] [--max-send-buffer B]
[--door own|werkzeug]``

Written against the Flask-SocketIO / Flask-Sock API. Every line the tests look
for goes to stderr: the server's own log (WARNING and up, which includes the
slow-consumer warnings) and ``EVENT ...`` lines from the handlers below.

* Socket.IO: ``join`` puts the client in room ``"burst"``; ``burst(n, size)``
  emits ``n`` binary ``chunk`` events of ``size`` bytes to that room as fast
  as it can and acknowledges with the seconds it took.
* WebSocket route ``/burst``: receives ``"n size"``, then sends ``n`` binary
  messages of ``size`` bytes in a loop (each starts with its index);
  ``/burst-async`` the same from an ``async def`` route.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from flask import Flask, request

import flask_relay
from flask_relay import ConnectionClosed, Sock, SocketIO, emit, join_room


def chunk(i: int, size: int) -> bytes:
    """Message ``i``: its index, then a byte pattern that depends on it."""
    head = i.to_bytes(4, "big")
    return head + bytes([i % 251]) * (size - len(head))


def log(*parts: object) -> None:
    """One line on stderr, in one write (the tests read the file while it grows)."""
    line = " ".join(str(p) for p in ("EVENT", *parts, f"(at {time.monotonic():.2f})"))
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def create_app(slow_consumer_timeout: float, max_send_buffer: int) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    app.config["SOCK_SERVER_OPTIONS"] = {"slow_consumer_timeout": slow_consumer_timeout}
    socketio = SocketIO(
        app, slow_consumer_timeout=slow_consumer_timeout, max_send_buffer=max_send_buffer
    )
    sock = Sock(app)

    @socketio.on("join")
    def on_join() -> str:
        join_room("burst")
        log("joined", request.sid)  # type: ignore[attr-defined]
        return "joined"

    @socketio.on("burst")
    def on_burst(n: int, size: int) -> float:
        start = time.monotonic()
        log("burst-start")
        for i in range(n):
            emit("chunk", chunk(i, size), to="burst")
        elapsed = time.monotonic() - start
        log("burst-done", f"{elapsed:.2f}")
        return elapsed

    @socketio.on("disconnect")
    def on_disconnect(reason: str) -> None:
        log("disconnect", request.sid, reason)  # type: ignore[attr-defined]

    @sock.route("/burst")
    def burst(ws: flask_relay.sock.WebSocket) -> None:
        n, size = (int(x) for x in str(ws.receive()).split())
        start = time.monotonic()
        try:
            for i in range(n):
                ws.send(chunk(i, size))
        except ConnectionClosed as exc:
            log("route-closed", exc.reason, exc.message, f"{time.monotonic() - start:.2f}")
            return
        log("route-done", f"{time.monotonic() - start:.2f}")
        ws.receive(timeout=30)  # until the client closes

    @sock.route("/burst-async")
    async def burst_async(ws: flask_relay.sock.AsyncWebSocket) -> None:
        """The same on the event loop: ``await ws.send`` waits for the buffer to drain."""
        n, size = (int(x) for x in str(await ws.receive()).split())
        start = time.monotonic()
        try:
            for i in range(n):
                await ws.send(chunk(i, size))
        except ConnectionClosed as exc:
            log("async-route-closed", exc.reason, exc.message, f"{time.monotonic() - start:.2f}")
            return
        log("async-route-done", f"{time.monotonic() - start:.2f}")

    return app, socketio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow-consumer-timeout", type=float, default=10.0)
    parser.add_argument("--max-send-buffer", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--door", choices=("own", "werkzeug"), default="own")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(message)s (at %(relativeCreated).0f ms)",
    )
    log("module", flask_relay.__file__)
    app, socketio = create_app(args.slow_consumer_timeout, args.max_send_buffer)
    if args.door == "own":
        socketio.run(app, host="127.0.0.1", port=args.port)
    else:
        app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
