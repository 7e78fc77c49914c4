"""Flask-Sockets' blueprint README example, written afresh with the import
swapped (``flask_sockets`` -> ``flask_relay``); served as in sockets_readme.py."""

import sys

from flask import Blueprint, Flask

from flask_relay import Sockets

html = Blueprint(r"html", __name__)
ws = Blueprint(r"ws", __name__)


@html.route("/")
def hello():
    return "Hello World!"


@ws.route("/echo")
def echo_socket(socket):
    while not socket.closed:
        message = socket.receive()
        socket.send(message)


app = Flask(__name__)
sockets = Sockets(app)

app.register_blueprint(html, url_prefix=r"/")
sockets.register_blueprint(ws, url_prefix=r"/")


if __name__ == "__main__":
    from flask_relay.server.http import Server

    Server(app, host="127.0.0.1", port=int(sys.argv[1])).serve_forever()
