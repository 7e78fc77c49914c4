"""The Flask application the WebSocket route tests talk to.

Routes report what they saw (close codes, hook results, exceptions) through
:data:`reports` for in-process tests, and through ``GET /reports/<key>`` for
tests that run the app in another process.
"""

from __future__ import annotations

import functools
import os
import queue
import sys
import threading
from collections import defaultdict
from typing import Any

from flask import Blueprint, Flask, abort, g, jsonify, request

from flask_relay.sock import ConnectionClosed, Sock


class Reports:
    """Named queues: a route puts, a test waits (bounded) for the value."""

    def __init__(self) -> None:
        self._queues: defaultdict[str, queue.Queue[Any]] = defaultdict(queue.Queue)
        self._lock = threading.Lock()

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            q = self._queues[key]
        q.put(value)

    def get(self, key: str, timeout: float = 5.0) -> Any:
        with self._lock:
            q = self._queues[key]
        return q.get(timeout=timeout)


def login_required(f: Any) -> Any:
    """A ``flask_login.login_required``-like decorator: 401 without a token."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.args.get("token") != "secret":
            return "login required", 401
        return f(*args, **kwargs)

    return wrapper


def make_app(ping_interval: float | None = None) -> tuple[Flask, Sock, Reports]:
    app = Flask(__name__)
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": ping_interval,
        "max_message_size": 64 * 1024,
        "subprotocols": ["chat", "superchat"],
    }
    sock = Sock(app)
    reports = Reports()
    bp = Blueprint("things", __name__, url_prefix="/things")

    @app.before_request
    def before() -> None:
        g.hook = "before:" + request.path

    @app.after_request
    def after(response: Any) -> Any:
        if request.path.startswith("/hooks"):
            reports.put("after", (request.path, g.get("hook"), type(response).__name__))
        return response

    @sock.route("/echo")
    def echo(ws: Any) -> None:
        try:
            while True:
                ws.send(ws.receive())
        except ConnectionClosed as exc:
            reports.put("echo-closed", (exc.reason, exc.message, ws.close_reason))
            raise

    @sock.route("/echo-async")
    async def echo_async(ws: Any) -> None:
        while True:
            await ws.send(await ws.receive())

    @sock.route("/vars/<int:number>/<name>")
    def url_vars(ws: Any, number: int, name: str) -> None:
        ws.send(f"{number + 1}:{name}:{type(number).__name__}")

    @sock.route("/hello", bp=bp)
    def bp_hello(ws: Any) -> None:
        ws.send("blueprint " + request.blueprint)

    @sock.route("/private")
    @login_required
    def private(ws: Any) -> None:
        ws.send("welcome")

    @sock.route("/forbidden")
    def forbidden(ws: Any) -> None:
        abort(403)

    @sock.route("/hooks")
    def hooks(ws: Any) -> None:
        ws.send(g.hook)

    @sock.route("/api")
    def api(ws: Any) -> None:
        # Every ws method and attribute, driven by the client's commands.
        ws.send(f"subprotocol={ws.subprotocol} connected={ws.connected}")
        while True:
            command = ws.receive(timeout=float(request.args.get("timeout", "5")))
            if command is None:
                ws.send("timeout")
            elif isinstance(command, bytes):
                ws.send(command)
            elif command == "poll":
                ws.send(repr(ws.receive(timeout=0)))
            elif command == "binary":
                ws.send(b"\x00\xffbinary")
            elif command.startswith("close:"):
                _, code, message = command.split(":", 2)
                ws.close(int(code), message)
                reports.put("api-after-close", (ws.connected, _safe_send(ws)))
                return
            elif command == "wait-close":
                try:
                    ws.receive()
                except ConnectionClosed as exc:
                    reports.put(
                        "api-peer-closed",
                        (exc.reason, exc.message, ws.close_reason, ws.close_message,
                         ws.connected),
                    )
                    return
            else:
                ws.send(command)

    @sock.route("/fanout")
    def fanout(ws: Any) -> None:
        # 8 threads send at once on one connection: every frame must arrive whole.
        count = int(ws.receive())
        barrier = threading.Barrier(8)

        def sender(i: int) -> None:
            barrier.wait()
            for j in range(count):
                size = (j * 7919) % 70000 if j % 5 == 0 else j % 200
                ws.send(f"{i}:{j}:" + "x" * size)

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ws.send("done")
        ws.receive()

    @sock.route("/watch")
    def watch(ws: Any) -> None:
        # Reports how the connection ended (for the vanishing-peer test).
        ws.send("ready")
        try:
            while True:
                ws.receive()
        except ConnectionClosed as exc:
            try:
                ws.send("late")
                late = "sent"
            except ConnectionClosed:
                late = "ConnectionClosed"
            reports.put("watch", (exc.reason, late))

    @sock.route("/slow-reader")
    def slow_reader(ws: Any) -> None:
        # Reads nothing for a while: the loop stops reading the socket once 64
        # messages wait (TCP back-pressure), then resumes; nothing is lost.
        count = int(ws.receive())
        threading.Event().wait(0.3)
        got = [ws.receive(timeout=5) for _ in range(count)]
        ws.send("ok" if got == [str(i) * 100 for i in range(count)] else "mismatch")

    @sock.route("/boom")
    def boom(ws: Any) -> None:
        ws.send("about to fail")
        raise RuntimeError("route failure (expected by the test)")

    @sock.route("/bye")
    def bye(ws: Any) -> None:
        ws.send("bye")

    @app.route("/reports/<key>")
    def get_report(key: str) -> Any:
        try:
            return jsonify(reports.get(key, timeout=5.0))
        except queue.Empty:
            return "nothing reported", 404

    @app.route("/")
    def index() -> str:
        return "plain HTTP still works"

    app.register_blueprint(bp)
    return app, sock, reports


def _safe_send(ws: Any) -> str:
    try:
        ws.send("after close")
        return "sent"
    except ConnectionClosed:
        return "ConnectionClosed"


app, sock, reports = make_app(
    ping_interval=float(os.environ["WSAPP_PING"]) if os.environ.get("WSAPP_PING") else None
)


def _maybe_socketio() -> None:
    """Add a Socket.IO echo when the extension and its engine are available."""
    try:
        from flask_relay import SocketIO
        from flask_relay.engine import eio  # noqa: F401
    except ImportError:
        return
    socketio = SocketIO(app)

    @socketio.on("echo")
    def on_echo(data: Any) -> Any:
        return data


if os.environ.get("WSAPP_SOCKETIO") == "1":
    _maybe_socketio()


if __name__ == "__main__":
    # `python wsapp.py PORT`: Werkzeug's development server through app.run().
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
