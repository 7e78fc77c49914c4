"""An app that monkey-patches itself, as apps written for Flask-SocketIO often do.

Environment: ``PATCH`` = ``eventlet`` | ``gevent`` (patch) | ``import`` (import
both libraries, patch nothing); ``WHEN`` = ``top`` (before ``SocketIO(app)``,
the usual place) | ``late`` (just before ``run()``); ``KIND`` = ``socketio``
| ``engineio`` (the standalone ``EngineIO.run``) | ``plain`` (a Flask app
without any extension, for the gunicorn worker's own check).

Usage: python patched_app.py PORT (or gunicorn ... patched_app:app), or
python patched_app.py test-client (an echo through ``socketio.test_client``).
"""

import os
import sys

PATCH = os.environ.get("PATCH", "import")
WHEN = os.environ.get("WHEN", "top")
KIND = os.environ.get("KIND", "socketio")


def patch() -> None:
    if PATCH == "eventlet":
        import eventlet

        eventlet.monkey_patch()
    elif PATCH == "gevent":
        from gevent import monkey

        monkey.patch_all()
    else:  # imported and not patching must change nothing
        import eventlet  # noqa: F401
        import gevent  # noqa: F401


if WHEN == "top":
    patch()

from flask import Flask  # noqa: E402

app = Flask(__name__)


@app.route("/hello")
def hello() -> str:
    return "hello from flask"


if KIND == "socketio":
    from flask_relay import SocketIO

    socketio = SocketIO(app)

    @socketio.on("echo")
    def echo(data: object) -> object:
        return data

elif KIND == "engineio":
    from flask_relay.engineio import EngineIO

    eio = EngineIO(app, path="/engine.io")


if __name__ == "__main__":
    if WHEN == "late":
        patch()
    if sys.argv[1] == "test-client":  # the app's own tests: no server, no loop
        client = socketio.test_client(app)
        print("echo:", client.emit("echo", "from the test client", callback=True))
        sys.exit(0)
    port = int(sys.argv[1])
    if KIND == "engineio":
        eio.run(app, port=port)
    else:
        socketio.run(app, port=port)
