"""The echo endpoint the Autobahn|Testsuite fuzzingclient talks to.

``python tests/routes/autobahn_echo.py PORT`` serves it with Flask-Relay's own
server; ``flask --app tests/routes/autobahn_echo.py run --port PORT`` serves it
through the Werkzeug development server and the foreign-server middleware.
``AUTOBAHN_DEFLATE=1`` enables permessage-deflate (for the 12.* and 13.* cases).
"""

from __future__ import annotations

import os
import sys

from flask import Flask

from flask_relay.sock import Sock

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {
    "compression": os.environ.get("AUTOBAHN_DEFLATE", "") == "1",
    "max_message_size": 16 * 1024 * 1024,
}
sock = Sock(app)


@sock.route("/echo")
def echo(ws):  # type: ignore[no-untyped-def]
    while True:
        ws.send(ws.receive())


@sock.route("/echo-async")
async def echo_async(ws):  # type: ignore[no-untyped-def]
    while True:
        await ws.send(await ws.receive())


if __name__ == "__main__":
    from flask_relay.server.http import Server

    Server(app, host="127.0.0.1", port=int(sys.argv[1])).serve_forever()
