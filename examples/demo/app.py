"""The Flask-Relay demo: a chat, a live panel and a WebSocket echo, on one port.

Run it with ``make demo`` (installs everything first) or, once installed::

    .venv/bin/python examples/demo/app.py [--host 127.0.0.1] [--port 5000]

then open http://127.0.0.1:5000 in two browser tabs. ``DEMO_PORT`` / ``DEMO_HOST``
in the environment work too (the tests use them).

It is written exactly as a Flask-SocketIO + Flask-Sock app would be; only the
imports name ``flask_relay``. What it shows:

* ``/`` - a chat with nicknames and rooms (``join_room`` / ``leave_room``, emits
  to a room, "is typing" notices that skip the sender), and a live panel fed by
  one background thread that pushes a value to every page once a second
  (``socketio.start_background_task`` + ``socketio.emit`` from outside any handler).
* ``/echo`` - a plain WebSocket route (``Sock``) echoing what the page sends.

The page needs no internet: the Socket.IO browser client is served by the
Socket.IO endpoint itself at ``/socket.io/socket.io.min.js`` (``SocketIO``'s
``serve_client`` option, on by default, as in Node's server); the package
carries the files of the npm ``socket.io-client`` release it was built with.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import threading
import time
from collections import deque
from typing import Any

from flask import Flask, render_template, request

from flask_relay import Sock, SocketIO, emit, join_room, leave_room

DEFAULT_ROOM = "lobby"
HISTORY = 50  # messages kept per room, replayed to newcomers
MAX_TEXT = 500
MAX_NAME = 24


def _clean(value: Any, limit: int) -> str:
    return str(value if value is not None else "").strip()[:limit]


class Chat:
    """Who is where, and the recent messages of each room (guarded by one lock,
    because handlers of different clients run in different threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users: dict[str, dict[str, str]] = {}  # sid -> {"nick", "room"}
        self.history: dict[str, deque[dict[str, Any]]] = {}

    def members(self, room: str) -> list[str]:
        return sorted(u["nick"] for u in self.users.values() if u["room"] == room)

    def rooms(self) -> dict[str, int]:
        counts: dict[str, int] = {DEFAULT_ROOM: 0}
        for user in self.users.values():
            counts[user["room"]] = counts.get(user["room"], 0) + 1
        return dict(sorted(counts.items()))

    def record(self, room: str, message: dict[str, Any]) -> None:
        self.history.setdefault(room, deque(maxlen=HISTORY)).append(message)


class Live:
    """The live panel's source: a random walk, sampled once a second."""

    def __init__(self) -> None:
        self.tick = 0
        self.value = 50.0
        self.started = False
        self.lock = threading.Lock()

    def step(self) -> float:
        self.tick += 1
        drift = 8 * math.sin(self.tick / 10)
        self.value = max(0.0, min(100.0, self.value + random.uniform(-6, 6) + drift / 10))
        return round(self.value, 2)


def create_app() -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("DEMO_SECRET_KEY", os.urandom(16).hex())
    socketio = SocketIO(app)
    sock = Sock(app)
    chat = Chat()
    live = Live()

    # -- pages -------------------------------------------------------------------------

    @app.get("/")
    def index() -> str:
        return render_template("index.html", default_room=DEFAULT_ROOM)

    @app.get("/echo")
    def echo_page() -> str:
        return render_template("echo.html")

    # -- the live panel ------------------------------------------------------------------

    def ticker() -> None:
        # One thread for all pages: a blocking loop is fine, it is a plain thread.
        while True:
            socketio.sleep(1)
            with chat.lock:
                online = len(chat.users)
            socketio.emit(
                "tick",
                {
                    "n": live.tick + 1,
                    "value": live.step(),
                    "time": time.strftime("%H:%M:%S"),
                    "online": online,
                },
            )

    def start_ticker() -> None:
        with live.lock:
            if not live.started:
                live.started = True
                socketio.start_background_task(ticker)

    # -- the chat --------------------------------------------------------------------------

    def announce_rooms() -> None:
        with chat.lock:
            rooms = chat.rooms()
        socketio.emit("rooms", rooms)

    def announce_members(room: str) -> None:
        with chat.lock:
            members = chat.members(room)
        socketio.emit("members", {"room": room, "members": members}, to=room)

    def system(room: str, text: str) -> None:
        message = {"nick": None, "text": text, "room": room, "time": time.strftime("%H:%M:%S")}
        with chat.lock:
            chat.record(room, message)
        socketio.emit("message", message, to=room)

    @socketio.on("connect")
    def on_connect() -> None:
        start_ticker()

    @socketio.on("hello")
    def hello(data: Any) -> dict[str, Any]:
        """First message of a page: its nickname and room. The ack carries the
        room's members and recent history."""
        data = data if isinstance(data, dict) else {}
        nick = _clean(data.get("nick"), MAX_NAME) or f"guest-{random.randint(100, 999)}"
        room = _clean(data.get("room"), MAX_NAME) or DEFAULT_ROOM
        sid = request.sid  # type: ignore[attr-defined]
        with chat.lock:
            chat.users[sid] = {"nick": nick, "room": room}
        join_room(room)
        system(room, f"{nick} joined")
        announce_members(room)
        announce_rooms()
        with chat.lock:
            return {
                "nick": nick,
                "room": room,
                "members": chat.members(room),
                "history": list(chat.history.get(room, ())),
                "rooms": chat.rooms(),
            }

    @socketio.on("say")
    def say(text: Any) -> dict[str, Any]:
        sid = request.sid  # type: ignore[attr-defined]
        text = _clean(text, MAX_TEXT)
        with chat.lock:
            user = chat.users.get(sid)
        if user is None or not text:
            return {"ok": False}
        message = {
            "nick": user["nick"],
            "text": text,
            "room": user["room"],
            "time": time.strftime("%H:%M:%S"),
        }
        with chat.lock:
            chat.record(user["room"], message)
        emit("message", message, to=user["room"])
        emit("typing", {"nick": user["nick"], "typing": False}, to=user["room"], include_self=False)
        return {"ok": True}

    @socketio.on("typing")
    def typing(active: Any) -> None:
        sid = request.sid  # type: ignore[attr-defined]
        with chat.lock:
            user = chat.users.get(sid)
        if user is not None:
            emit(
                "typing",
                {"nick": user["nick"], "typing": bool(active)},
                to=user["room"],
                include_self=False,
            )

    @socketio.on("switch")
    def switch(room: Any) -> dict[str, Any]:
        sid = request.sid  # type: ignore[attr-defined]
        room = _clean(room, MAX_NAME) or DEFAULT_ROOM
        with chat.lock:
            user = chat.users.get(sid)
            if user is None:
                return {"ok": False}
            old = user["room"]
            user["room"] = room
        if old != room:
            leave_room(old)
            system(old, f"{user['nick']} went to #{room}")
            announce_members(old)
            join_room(room)
            system(room, f"{user['nick']} joined")
            announce_members(room)
            announce_rooms()
        with chat.lock:
            return {
                "ok": True,
                "room": room,
                "members": chat.members(room),
                "history": list(chat.history.get(room, ())),
            }

    @socketio.on("rename")
    def rename(nick: Any) -> dict[str, Any]:
        sid = request.sid  # type: ignore[attr-defined]
        nick = _clean(nick, MAX_NAME)
        with chat.lock:
            user = chat.users.get(sid)
            if user is None or not nick:
                return {"ok": False}
            old, user["nick"] = user["nick"], nick
        if old != nick:
            system(user["room"], f"{old} is now {nick}")
            announce_members(user["room"])
        return {"ok": True, "nick": nick}

    @socketio.on("disconnect")
    def on_disconnect(reason: Any = None) -> None:
        sid = request.sid  # type: ignore[attr-defined]
        with chat.lock:
            user = chat.users.pop(sid, None)
        if user is not None:
            system(user["room"], f"{user['nick']} left")
            announce_members(user["room"])
            announce_rooms()

    # -- the plain WebSocket echo -------------------------------------------------------------

    @sock.route("/ws/echo")
    def ws_echo(ws: Any) -> None:
        # Flask-Sock style: a blocking loop in its own thread; the loop does the I/O.
        while True:
            data = ws.receive()
            if data is None:
                break
            ws.send(data)

    return app, socketio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "5000")))
    parser.add_argument("--debug", action="store_true", help="Flask debug mode with reloader")
    options = parser.parse_args(argv)
    app, socketio = create_app()
    print(f" * Demo: open http://{options.host}:{options.port}/ in two tabs", file=sys.stderr)
    socketio.run(app, host=options.host, port=options.port, debug=options.debug)


if __name__ == "__main__":
    main()
