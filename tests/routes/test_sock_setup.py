"""Every way Flask-Sock is set up, served by the own server and by Werkzeug
(``flask run``'s server, through the foreign-server middleware), driven by a
real WebSocket client and by :class:`WebSocketTestClient`.

Flask-Sock's ``Sock`` takes an app or a blueprint, or nothing and
``init_app`` later; routes may come before or after ``init_app``, on a
blueprint given to ``route(bp=...)``, and one extension may serve several
apps (an app factory called twice).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from flask_relay import Sock, WebSocketTestClient

sys.path.insert(0, str(Path(__file__).parent))
from wshelpers import served_app as served  # noqa: E402


def echo_with(tag: str) -> Callable[..., None]:
    def route(ws: Any, **variables: Any) -> None:
        while (message := ws.receive()) is not None:
            ws.send(f"{tag}:{message}:{sorted(variables.items())}")

    route.__name__ = f"echo_{tag.replace('-', '_')}"
    return route


def assert_echo(app: Flask, door: str, path: str, tag: str, variables: str = "[]") -> None:
    if door == "test-client":
        with WebSocketTestClient(app).connect(path) as tws:
            tws.send("hi")
            assert tws.receive() == f"{tag}:hi:{variables}"
        return
    with served(app, door) as port, connect(f"ws://127.0.0.1:{port}{path}") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == f"{tag}:hi:{variables}"


def assert_404(app: Flask, door: str, path: str) -> None:
    with served(app, door) as port, pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5)
    assert info.value.response.status_code == 404


DOORS = ["own", "werkzeug", "test-client"]


@pytest.mark.parametrize("door", DOORS)
def test_sock_app(door: str) -> None:
    app = Flask(__name__)
    sock = Sock(app)
    sock.route("/ws/<int:n>")(echo_with("direct"))
    assert sock.app is app and sock.bp is None
    assert_echo(app, door, "/ws/4", "direct", "[('n', 4)]")


@pytest.mark.parametrize("door", DOORS)
def test_init_app_with_routes_before_and_after(door: str) -> None:
    sock = Sock()
    sock.route("/before")(echo_with("before"))
    assert sock.app is None and sock.bp is not None
    app = Flask(__name__)
    sock.init_app(app)
    assert sock.app is app
    sock.route("/after")(echo_with("after"))  # was silently dropped (404)
    assert_echo(app, door, "/before", "before")
    assert_echo(app, door, "/after", "after")


@pytest.mark.parametrize("door", DOORS)
def test_sock_on_a_blueprint_registered_later(door: str) -> None:
    # Flask-Sock accepts a blueprint: a module of routes made before any app.
    bp = Blueprint("live", __name__)
    sock = Sock(bp)  # was: AttributeError 'Blueprint' object has no attribute 'extensions'
    sock.route("/feed/<name>")(echo_with("bp"))
    assert sock.app is bp
    app = Flask(__name__)  # no Sock on the app: the blueprint brings the middleware
    app.register_blueprint(bp, url_prefix="/live")
    assert_echo(app, door, "/live/feed/x", "bp", "[('name', 'x')]")
    if door != "test-client":
        assert_404(app, door, "/feed/x")


@pytest.mark.parametrize("door", DOORS)
def test_route_bp_argument_without_init_app(door: str) -> None:
    sock = Sock()
    bp = Blueprint("api", __name__)
    sock.route("/ws", bp=bp)(echo_with("api"))
    assert sock.app is None and sock.bp is None
    app = Flask(__name__)
    app.register_blueprint(bp, url_prefix="/api")
    assert_echo(app, door, "/api/ws", "api")


@pytest.mark.parametrize("door", DOORS)
def test_route_bp_argument_with_init_app_and_nested_blueprints(door: str) -> None:
    sock = Sock()
    parent, child = Blueprint("parent", __name__), Blueprint("child", __name__)
    sock.route("/ws", bp=child)(echo_with("nested"))
    parent.register_blueprint(child, url_prefix="/child")
    app = Flask(__name__)
    sock.init_app(app)
    app.register_blueprint(parent, url_prefix="/parent")
    sock.route("/ws")(echo_with("app"))
    assert_echo(app, door, "/parent/child/ws", "nested")
    assert_echo(app, door, "/ws", "app")


@pytest.mark.parametrize("door", DOORS)
def test_app_factory_called_twice(door: str) -> None:
    sock = Sock()
    sock.route("/ws")(echo_with("factory"))

    def create_app(name: str) -> Flask:
        app = Flask(name)
        app.config["NAME"] = name
        sock.init_app(app)
        return app

    first, second = create_app("first"), create_app("second")
    assert sock.app is second
    assert_echo(first, door, "/ws", "factory")
    assert_echo(second, door, "/ws", "factory")


def test_init_app_on_a_blueprint_then_routes_and_the_test_client_needs_an_app() -> None:
    sock = Sock()
    sock.route("/early")(echo_with("early"))
    bp = Blueprint("late", __name__)
    sock.init_app(bp)
    sock.route("/late")(echo_with("late"))
    app = Flask(__name__)
    app.register_blueprint(bp, url_prefix="/bp")
    assert_echo(app, "test-client", "/bp/early", "early")
    assert_echo(app, "test-client", "/bp/late", "late")
    with pytest.raises(RuntimeError, match="needs the Flask app"):
        sock.test_client()
    assert sock.test_client(app).app is app


def test_two_sock_instances_with_waiting_routes_on_one_app() -> None:
    # Two modules of an app each with their own Sock() (Flask-Sock raises
    # ValueError: both private blueprints are named "__flask_sock").
    first, second = Sock(), Sock()
    first.route("/one")(echo_with("one"))
    second.route("/two")(echo_with("two"))
    app = Flask(__name__)
    first.init_app(app)
    second.init_app(app)
    first.init_app(app)  # again: nothing new, no error
    assert_echo(app, "own", "/one", "one")
    assert_echo(app, "test-client", "/two", "two")
