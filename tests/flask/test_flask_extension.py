"""The SocketIO extension's configuration surface: constructor, init_app, decorators, tasks."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from flask import Flask, request

import flask_relay
from flask_relay import Namespace, SocketIO, emit
from flask_relay.extension import DEFAULT_OPTIONS, MessageQueueNotSupported


def test_public_names() -> None:
    for name in (
        "SocketIO",
        "Namespace",
        "emit",
        "send",
        "call",
        "join_room",
        "leave_room",
        "close_room",
        "rooms",
        "disconnect",
        "ConnectionRefusedError",
        "SocketIOTestClient",
    ):
        assert name in flask_relay.__all__
        assert getattr(flask_relay, name) is not None
    assert issubclass(flask_relay.ConnectionRefusedError, ConnectionRefusedError)


def test_constructor_with_app(app: Flask) -> None:
    sio = SocketIO(app, ping_interval=10, manage_session=False)
    assert app.extensions["socketio"] is sio
    assert sio.server is not None
    assert sio.server_options["ping_interval"] == 10
    assert sio.manage_session is False
    assert sio.async_mode == "threading"


def test_factory_pattern_merges_options(app: Flask) -> None:
    sio = SocketIO(cors_allowed_origins="*", always_connect=True, path="/custom/")
    assert sio.server is None
    sio.init_app(app, ping_timeout=5, always_connect=False)
    assert app.extensions["socketio"] is sio
    assert sio.server_options == {
        "cors_allowed_origins": "*",
        "always_connect": False,
        "path": "/custom/",
        "ping_timeout": 5,
    }
    assert sio.server.always_connect is False
    assert sio.path == "custom"


def test_resource_is_an_alias_of_path(app: Flask) -> None:
    assert SocketIO(app, resource="/rt").path == "rt"


def test_defaults_match_flask_socketio(app: Flask) -> None:
    sio = SocketIO(app)
    assert sio.manage_session is True
    assert sio.path == "socket.io"
    assert DEFAULT_OPTIONS["channel"] == "flask-socketio"
    assert DEFAULT_OPTIONS["ping_interval"] == 25
    assert DEFAULT_OPTIONS["ping_timeout"] == 20
    assert DEFAULT_OPTIONS["max_http_buffer_size"] == 1_000_000
    assert DEFAULT_OPTIONS["cors_credentials"] is True
    assert sio.server.always_connect is False
    assert sio.server.namespaces == ["/"]
    assert sio.server.connect_timeout == 45
    assert sio.reason.CLIENT_DISCONNECT == "client disconnect"


@pytest.mark.parametrize("mode", ["eventlet", "gevent", "gevent_uwsgi"])
def test_green_async_modes_are_refused_with_an_explanation(app: Flask, mode: str) -> None:
    with pytest.raises(ValueError, match="not needed"):
        SocketIO(app, async_mode=mode)
    sio = SocketIO()
    with pytest.raises(ValueError, match="monkey patch"):
        sio.init_app(app, async_mode=mode)


def test_threading_async_mode_is_accepted(app: Flask) -> None:
    assert SocketIO(app, async_mode="threading").async_mode == "threading"
    with pytest.raises(ValueError, match="unknown async_mode"):
        SocketIO(app, async_mode="asyncio")


def test_message_queue_is_refused_clearly(app: Flask) -> None:
    with pytest.raises(NotImplementedError, match="no Kafka broker could be installed"):
        SocketIO(message_queue="kafka://127.0.0.1:9092")
    with pytest.raises(NotImplementedError, match="'sqs' is not supported"):
        SocketIO(app, message_queue="sqs://127.0.0.1//")
    with pytest.raises(MessageQueueNotSupported):
        SocketIO(app, client_manager=object())
    with pytest.raises(ValueError, match="serializer='cbor'"):
        SocketIO(app, serializer="cbor")


def test_msgpack_serializer_in_the_test_client(app: Flask) -> None:
    """serializer='msgpack': the test client speaks it too (tests/protocol/test_msgpack.py
    and tests/integration/test_msgpack_clients.py cover the wire)."""
    sio = SocketIO(app, serializer="msgpack")

    @sio.on("echo")
    def echo(*args: Any) -> Any:
        return args

    assert sio.server is not None and sio.server.codec.name == "msgpack"
    client = sio.test_client(app)
    assert client.emit("echo", b"\x00", {"a": [1.5]}, callback=True) == [b"\x00", {"a": [1.5]}]


def test_accepted_compatibility_options(app: Flask) -> None:
    sio = SocketIO(
        app,
        async_handlers=False,
        channel="x",
        logger=True,
        engineio_logger=True,
        monitor_clients=False,
        http_compression=False,
        cookie="io",
        connect_timeout=3,
        max_workers=4,
    )
    assert sio.server.connect_timeout == 3
    assert sio.server.max_workers == 4
    assert sio.server.logger.isEnabledFor(logging.INFO)


def test_logger_instance_is_used(app: Flask) -> None:
    mine = logging.getLogger("my.socketio")
    assert SocketIO(app, logger=mine).server.logger is mine


def test_event_decorator_forms(app: Flask, sio: SocketIO) -> None:
    @sio.event
    def ping():
        return "pong"

    @sio.event(namespace="/ns")
    def ns_ping():
        return "ns pong"

    def plain():
        return "plain"

    sio.on_event("plain", plain)
    sio.on_event("plain_ns", plain, namespace="/ns")

    @sio.on("a")
    @sio.on("b")
    def stacked():
        return request.event["message"]

    assert ping() == "pong"  # the decorators return the function itself
    client = sio.test_client(app)
    client.connect("/ns")
    assert client.emit("ping", callback=True) == "pong"
    assert client.emit("ns_ping", namespace="/ns", callback=True) == "ns pong"
    assert client.emit("plain", callback=True) == "plain"
    assert client.emit("plain_ns", namespace="/ns", callback=True) == "plain"
    assert client.emit("a", callback=True) == "a"
    assert client.emit("b", callback=True) == "b"


def test_decorators_before_init_app(app: Flask) -> None:
    sio = SocketIO()

    @sio.on("early")
    def early():
        return "registered before init_app"

    sio.init_app(app)
    assert sio.test_client(app).emit("early", callback=True) == "registered before init_app"


def test_on_namespace_and_error_registration_checks(sio: SocketIO) -> None:
    with pytest.raises(ValueError):
        sio.on_namespace(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sio.on_error_default("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sio.on_error("/x")("not callable")  # type: ignore[arg-type]
    ns = Namespace("/q")
    sio.on_namespace(ns)
    assert ns.socketio is sio and sio.namespace_handlers["/q"] is ns


def test_unregistered_namespace_methods_explain(sio: SocketIO) -> None:
    with pytest.raises(RuntimeError, match="on_namespace"):
        Namespace("/z").emit("x")


def test_error_without_handler_propagates_and_refusal_skips_handlers(
    app: Flask, sio: SocketIO
) -> None:
    handled: list[Any] = []
    sio.on_error_default(lambda exc: handled.append(exc))

    @sio.on("connect")
    def on_connect(auth):
        if auth:
            raise flask_relay.ConnectionRefusedError("no")

    refused = sio.test_client(app, auth={"x": 1})
    assert not refused.is_connected()
    assert handled == []  # a refusal is not an error


def test_manage_session_can_change_at_run_time(app: Flask, sio: SocketIO) -> None:
    from flask import session

    @app.route("/set")
    def set_cookie_session():
        session["n"] = 1
        return "ok"

    @sio.on("bump")
    def bump():
        session["n"] = session.get("n", 0) + 1
        return session["n"]

    http = app.test_client()
    http.get("/set")
    client = sio.test_client(app, flask_test_client=http)
    assert client.emit("bump", callback=True) == 2
    assert client.emit("bump", callback=True) == 3  # the managed copy keeps changes
    sio.manage_session = False
    # Flask's cookie interface reopens the cookie each time: changes are not kept
    assert client.emit("bump", callback=True) == 2
    assert client.emit("bump", callback=True) == 2


def test_emit_needs_init_app() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        SocketIO().emit("x")


def test_include_self_false_outside_a_handler_needs_a_request(sio: SocketIO) -> None:
    with pytest.raises(RuntimeError):
        sio.emit("x", include_self=False)


def test_context_functions_outside_handlers_explain(app: Flask, sio: SocketIO) -> None:
    with app.test_request_context("/"), pytest.raises(RuntimeError, match="Socket.IO handler"):
        emit("x")


def test_start_background_task_and_sleep(sio: SocketIO) -> None:
    got: list[Any] = []
    task = sio.start_background_task(lambda a, b=0: got.append((a, b)), 1, b=2)
    assert isinstance(task, threading.Thread)
    task.join(5)
    assert got == [(1, 2)]
    sio.sleep(0)
    sio.sleep()


def test_stop_without_run(sio: SocketIO) -> None:
    with pytest.raises(RuntimeError, match="Cannot stop"):
        sio.stop()


def test_server_session_helpers(app: Flask, sio: SocketIO) -> None:
    @sio.on("remember")
    def remember(value):
        with sio.server.session(request.sid) as s:
            s["v"] = value

    @sio.on("recall")
    def recall():
        return sio.server.get_session(request.sid)["v"]

    client = sio.test_client(app)
    client.emit("remember", 9)
    assert client.emit("recall", callback=True) == 9
    with pytest.raises(KeyError):
        sio.server.get_session("nope")
