"""A plain WSGI application written for gevent-websocket's interface
(``environ["wsgi.websocket"]``), served through ``WebSocketWSGI``."""

import sys

from flask_relay.sockets import WebSocketWSGI


def echo_app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello World!"]
    while True:
        message = ws.receive()
        if message is None:
            break
        ws.send(message)
    return []


app = WebSocketWSGI(echo_app)

if __name__ == "__main__":
    from flask_relay.server.http import Server

    Server(app, host="127.0.0.1", port=int(sys.argv[1])).serve_forever()
