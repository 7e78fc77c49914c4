"""The app behind tests/server/test_strict_http.py: one of every kind of response.

Flask views (sized, streamed, empty, errors, redirects, static files), raw WSGI
answers that break the framing rules in every way an app can (duplicate or
wrong ``Content-Length``, its own ``Transfer-Encoding``, a body on a 204, a
CR/LF in a header, a crash before ``start_response``), the Socket.IO endpoint
and a WebSocket route. Served in process and by gunicorn (``strict_app:app``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import flask

from flask_relay import Sock, SocketIO

GOOD_ORIGIN = "http://good.example"
EIO_MAX_BODY = 1000


def _raw(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes] | None:
    """Answers under /raw/ written against the WSGI interface directly."""
    path = environ["PATH_INFO"]
    if path == "/raw/dup-cl":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5"),
                                  ("content-length", "5")])
        return [b"hello"]
    if path == "/raw/stream-cl":
        start_response("200 OK", [("Content-Length", "10")])
        return iter([b"hello", b"world"])
    if path == "/raw/too-long":
        start_response("200 OK", [("Content-Length", "3")])
        return iter([b"he", b"llo"])
    if path == "/raw/te":
        start_response("200 OK", [("Transfer-Encoding", "chunked")])
        return iter([b"not ", b"chunked ", b"by the app"])
    if path == "/raw/204-with-body":
        start_response("204 No Content", [("Content-Length", "5")])
        return [b"hello"]
    if path == "/raw/304":
        start_response("304 Not Modified", [("Content-Length", "12"), ("ETag", '"x"')])
        return []
    if path == "/raw/empty":
        start_response("200 OK", [])
        return []
    if path == "/raw/no-reason":
        start_response("200", [("Content-Length", "2")])
        return [b"ok"]
    if path == "/raw/conn-close":
        start_response("200 OK", [("Content-Length", "2"), ("Connection", "close")])
        return [b"ok"]
    if path == "/raw/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: 1")])
        return [b"never"]
    if path == "/raw/crash":
        raise RuntimeError("the app crashed before start_response")
    return None


class RawRoutes:
    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        answer = _raw(environ, start_response)
        return answer if answer is not None else self.wsgi_app(environ, start_response)


def create_app() -> flask.Flask:
    app = flask.Flask(
        __name__,
        static_folder=str(Path(__file__).parent / "strict_static"),
        static_url_path="/static",
    )
    SocketIO(app, cors_allowed_origins=[GOOD_ORIGIN], max_http_buffer_size=EIO_MAX_BODY)
    sock = Sock(app)

    @sock.route("/ws")
    def ws(socket: Any) -> None:
        socket.send("hi")

    @app.route("/text", methods=["GET"])
    def text() -> str:
        return "hello"

    @app.route("/echo", methods=["POST"])
    def echo() -> bytes:
        return flask.request.get_data()

    @app.route("/json")
    def json_view() -> dict[str, Any]:
        return {"h\u00e9llo": [1, 2, 3]}

    @app.route("/stream")
    def stream() -> flask.Response:
        def parts() -> Iterator[str]:
            yield "part one;"
            yield ""
            yield "part two"

        return flask.Response(parts(), mimetype="text/plain")

    @app.route("/nothing")
    def nothing() -> tuple[str, int]:
        return "", 204

    @app.route("/redirect")
    def redirect() -> flask.Response:
        return flask.redirect("/text")

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    app.wsgi_app = RawRoutes(app.wsgi_app)  # type: ignore[method-assign]
    return app


app = create_app()
