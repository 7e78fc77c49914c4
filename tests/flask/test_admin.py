"""``socketio.instrument()`` options, in process (the test client shares the server).

The wire and the dashboard are covered by tests/integration/test_admin_ui.py
(the official Node client) and tests/browser/test_admin_ui_browser.py (the
dashboard page in Chromium); here: the auth forms, ``read_only``,
``mode="production"``, bad options, and that ``init_app`` keeps the instrumentation.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from flask_relay import SocketIO, join_room

CREDS = {"username": "admin", "password": "pw"}
_instrumented: list[Any] = []


@pytest.fixture(autouse=True)
def _stop_stats_threads() -> Any:
    yield
    while _instrumented:
        _instrumented.pop().shutdown()


def names(client: Any, namespace: str = "/admin") -> list[str]:
    return [item["name"] for item in client.get_received(namespace)]


def make(**options: Any) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    socketio = SocketIO(app)

    @socketio.on("join")
    def on_join(room: str) -> None:
        join_room(room)

    _instrumented.append(socketio.instrument(**options))
    return app, socketio


@pytest.mark.parametrize(
    "auth,good,bad",
    [
        (CREDS, CREDS, {"username": "admin", "password": "PW"}),
        ([CREDS, {"username": "b", "password": "c"}], {"username": "b", "password": "c"}, {}),
        (lambda given: given == {"token": "t"}, {"token": "t"}, {"token": "u"}),
        (False, None, None),
    ],
    ids=["dict", "list", "callable", "none"],
)
def test_auth_forms(auth: Any, good: Any, bad: Any) -> None:
    app, socketio = make(auth=auth)
    admin = socketio.test_client(app, namespace="/admin", auth=good)
    assert admin.is_connected("/admin")
    got = admin.get_received("/admin")
    login = ["session"] if auth is not False else []
    expected = [*login, "config", "all_sockets", "server_stats"]
    assert [item["name"] for item in got][: len(expected)] == expected
    if bad is not None:
        refused = socketio.test_client(app, namespace="/admin", auth=bad)
        assert not refused.is_connected("/admin")
        assert refused.get_connect_error("/admin") == {"message": "invalid credentials"}
        # The session id given at login replaces the password when reconnecting.
        session = got[0]["args"][0]
        again = socketio.test_client(app, namespace="/admin", auth={"sessionId": session})
        assert again.is_connected("/admin")
        forged = socketio.test_client(app, namespace="/admin", auth={"sessionId": session + "x"})
        assert not forged.is_connected("/admin")


def test_auth_is_required_and_options_checked() -> None:
    app = Flask(__name__)
    socketio = SocketIO(app)
    with pytest.raises(ValueError, match="auth"):
        socketio.instrument()
    with pytest.raises(ValueError, match="mode"):
        socketio.instrument(auth=False, mode="debug")
    with pytest.raises(ValueError, match="namespace"):
        socketio.instrument(auth=False, namespace="admin")


def test_development_reports_and_commands() -> None:
    app, socketio = make(auth=False, server_stats_interval=0.2)
    admin = socketio.test_client(app, namespace="/admin")
    admin.get_received("/admin")
    client = socketio.test_client(app)
    sid = client.get_sid()
    client.emit("join", "r1")
    got = admin.get_received("/admin")
    kinds = [item["name"] for item in got]
    assert kinds[:3] == ["socket_connected", "event_received", "room_joined"]
    assert got[0]["args"][0]["id"] == sid
    assert got[1]["args"][:3] == ["/", sid, ["join", "r1"]]
    admin.emit("join", "/", "r2", sid, namespace="/admin")
    assert socketio.server.rooms(sid) == [sid, "r1", "r2"]
    admin.emit("leave", "/", "r1", namespace="/admin")
    assert socketio.server.rooms(sid) == [sid, "r2"]
    admin.emit("_disconnect", "/", False, "r2", namespace="/admin")
    assert not client.is_connected()
    # server_stats keeps coming while the dashboard is connected.
    deadline = time.monotonic() + 10
    while "server_stats" not in names(admin):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_read_only_and_production() -> None:
    app, socketio = make(auth=False, read_only=True, mode="production")
    admin = socketio.test_client(app, namespace="/admin")
    got = admin.get_received("/admin")
    assert [item["name"] for item in got] == ["config", "server_stats"]
    assert got[0]["args"][0] == {"supportedFeatures": ["AGGREGATED_EVENTS"]}
    client = socketio.test_client(app)
    sid = client.get_sid()
    client.emit("join", "r1")
    admin.emit("join", "/", "r2", sid, namespace="/admin")  # refused: read-only
    assert socketio.server.rooms(sid) == [sid, "r1"]
    assert names(admin) == []  # production: no per-socket reports


def test_init_app_keeps_the_instrumentation() -> None:
    socketio = SocketIO()
    app = Flask(__name__)
    socketio.init_app(app)
    _instrumented.append(socketio.instrument(auth=False))
    socketio.init_app(app)  # a fresh server
    admin = socketio.test_client(app, namespace="/admin")
    assert admin.is_connected("/admin")
    _instrumented.extend(o for o in socketio.server.observers)


def test_python_socketio_spelling() -> None:
    """Flask-SocketIO users instrument ``socketio.server`` (python-socketio's method)."""
    app = Flask(__name__)
    socketio = SocketIO(app)
    admin_ui = socketio.server.instrument(auth=CREDS, mode="production", server_id="x")
    _instrumented.append(admin_ui)
    admin = socketio.test_client(app, namespace="/admin", auth=CREDS)
    got = admin.get_received("/admin")
    assert [item["name"] for item in got] == ["session", "config", "server_stats"]
    stats = got[2]["args"][0]
    assert stats["serverId"] == "x"
    assert {"name": "/admin", "socketsCount": 1} in stats["namespaces"]
    admin_ui.shutdown()
    assert socketio.server.observers == [] and "/admin" not in socketio.server.namespace_apps
