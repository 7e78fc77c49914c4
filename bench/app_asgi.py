"""The python-socketio + uvicorn fixture: the same handlers as bench/app_flask.py.

The plain WebSocket echo route at ``/ws`` is a bare ASGI WebSocket handler, which is what
this stack offers for raw WebSockets (``socketio.ASGIApp(other_asgi_app=...)``).

Usage: python bench/app_asgi.py PORT
"""

from __future__ import annotations

import sys
import urllib.parse
from typing import Any

import socketio  # type: ignore[import-untyped]
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi")


@sio.on("join")
async def on_join(sid: str, room: str) -> bool:
    await sio.enter_room(sid, room)
    return True


@sio.on("echo")
async def on_echo(sid: str, data: Any) -> Any:
    return data


@sio.on("burst")
async def on_burst(sid: str, req: dict[str, Any]) -> None:
    pad = "x" * int(req["size"])
    start = int(req["start"])
    for i in range(int(req["n"])):
        await sio.emit("tick", {"seq": start + i, "pad": pad}, to="room")


async def ws_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echo every message on ``/ws``; anything else is a 404."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket" and scope["path"] == "/ws":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg.get("bytes")})
    elif scope["type"] == "http" and scope["path"] == "/bench/burst":
        # The `burst` event's work over HTTP (bench/app_flask.py's /bench/burst).
        args = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
        await on_burst("", {"start": 1, "n": 1, "size": 80, **args})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
    else:
        await send({"type": "websocket.close", "code": 1008})


app = socketio.ASGIApp(sio, other_asgi_app=ws_echo)

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
