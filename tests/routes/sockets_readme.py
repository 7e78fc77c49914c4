"""Flask-Sockets' first README example, written afresh with the import swapped
(``flask_sockets`` -> ``flask_relay``). The ``__main__`` block serves it with
Flask-Relay's own server where the README used gevent's pywsgi."""

import sys

from flask import Flask

from flask_relay import Sockets

app = Flask(__name__)
sockets = Sockets(app)


@sockets.route("/echo")
def echo_socket(ws):
    while not ws.closed:
        message = ws.receive()
        ws.send(message)


@app.route("/")
def hello():
    return "Hello World!"


if __name__ == "__main__":
    from flask_relay.server.http import Server

    Server(app, host="127.0.0.1", port=int(sys.argv[1])).serve_forever()
