"""The own HTTP/1.1 server: keep-alive, pipelining, WSGI passthrough, limits, timeouts."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import flask
import pytest

from flask_relay.server.http import HTTPLimits, Server
from flask_relay.server.pool import DaemonThreadPool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_app() -> flask.Flask:
    app = flask.Flask(__name__)

    @app.route("/hello")
    def hello() -> str:
        return "hello"

    @app.route("/echo", methods=["POST", "PUT"])
    def echo() -> flask.Response:
        data = flask.request.get_data()
        return flask.Response(data, headers={"X-Length": str(len(data))})

    @app.route("/info")
    def info() -> dict[str, Any]:
        return {
            "query": flask.request.query_string.decode(),
            "header": flask.request.headers.get("X-Test"),
            "remote": flask.request.remote_addr,
            "path": flask.request.path,
        }

    @app.route("/stream")
    def stream() -> flask.Response:
        return flask.Response((f"part{i};" for i in range(3)), mimetype="text/plain")

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    return app


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(app: Any = "default", **kwargs: Any) -> Server:
        server = Server(make_app() if app == "default" else app, port=free_port(),
                        shutdown_timeout=2, **kwargs)
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def raw(port: int, data: bytes, *, until_close: bool = True, timeout: float = 5) -> bytes:
    """Send bytes on a new connection; read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if until_close:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# -- keep-alive and pipelining -----------------------------------------------------------


def test_keep_alive_reuses_the_connection(serve: Any) -> None:
    server = serve()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/hello")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"hello")
        sock = conn.sock
        assert sock is not None
        conn.request("POST", "/echo", body=b"abc")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"abc")
        assert conn.sock is sock  # no reconnect happened
    finally:
        conn.close()


def test_pipelined_requests_answered_in_order(serve: Any) -> None:
    server = serve()
    data = (
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"
        b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = raw(server.port, data)
    assert out.count(b"HTTP/1.1 200") == 3
    assert out.index(b"hello") < out.index(b"first") < out.index(b"part0;")


def test_http10_closes_after_response(serve: Any) -> None:
    server = serve()
    out = raw(server.port, b"GET /hello HTTP/1.0\r\n\r\n")
    assert status_of(out) == 200 and out.endswith(b"hello")


# -- WSGI passthrough ----------------------------------------------------------------------


def test_wsgi_environ_and_bodies(serve: Any) -> None:
    server = serve(limits=HTTPLimits(spool_size=1000))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/info?a=1&b=%20", headers={"X-Test": "yes"})
        resp = conn.getresponse()
        assert resp.status == 200
        import json

        info = json.loads(resp.read())
        assert info == {"query": "a=1&b=%20", "header": "yes", "remote": "127.0.0.1",
                        "path": "/info"}
        big = bytes(range(256)) * 100  # past spool_size: buffered in a temporary file
        conn.request("PUT", "/echo", body=big)
        resp = conn.getresponse()
        assert resp.read() == big and resp.getheader("X-Length") == str(len(big))
        # A chunked request body.
        conn.putrequest("POST", "/echo")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.read() == b"abcde"
        # A streamed response without Content-Length is chunked.
        conn.request("GET", "/stream")
        resp = conn.getresponse()
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert resp.read() == b"part0;part1;part2;"
    finally:
        conn.close()


def test_app_errors_and_missing_app(serve: Any) -> None:
    server = serve()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/boom")
        assert conn.getresponse().status == 500
    finally:
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/nowhere")
        assert conn.getresponse().status == 404
    finally:
        conn.close()
    bare = serve(app=None)
    assert status_of(raw(bare.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) \
        == 404


def test_blocking_route_does_not_block_others(serve: Any) -> None:
    app = flask.Flask(__name__)
    release = threading.Event()

    @app.route("/wait")
    def wait() -> str:
        return "released" if release.wait(10) else "timeout"

    @app.route("/release")
    def do_release() -> str:
        release.set()
        return "ok"

    server = serve(app)
    result: list[bytes] = []
    waiter = threading.Thread(target=lambda: result.append(
        raw(server.port, b"GET /wait HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
    waiter.start()
    out = raw(server.port, b"GET /release HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"ok")
    waiter.join(10)
    assert result and result[0].endswith(b"released")


# -- limits -------------------------------------------------------------------------------


def test_body_too_large_413(serve: Any) -> None:
    server = serve(limits=HTTPLimits(max_body_size=100))
    out = raw(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n"
              + b"x" * 200)
    assert status_of(out) == 413
    # Chunked bodies are counted too.
    out = raw(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"c8\r\n" + b"x" * 200 + b"\r\n0\r\n\r\n")
    assert status_of(out) == 413
    out = raw(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
              b"Connection: close\r\n\r\n" + b"y" * 100)
    assert status_of(out) == 200


def test_target_too_long_414(serve: Any) -> None:
    server = serve(limits=HTTPLimits(max_target_size=1000))
    out = raw(server.port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(out) == 414


def test_headers_too_large_431(serve: Any) -> None:
    server = serve(limits=HTTPLimits(max_header_size=1000, max_headers=10))
    out = raw(server.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 2000
              + b"\r\n\r\n")
    assert status_of(out) == 431
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20))
    out = raw(server.port, b"GET /hello HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status_of(out) == 431


def test_malformed_request_400(serve: Any) -> None:
    server = serve()
    out = raw(server.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert status_of(out) == 400
    # The server carries on.
    out = raw(server.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"hello")


@pytest.mark.parametrize(
    ("data", "status", "logged"),
    [
        (b"GET /hello HTTP/1.1\r\n\r\n", 400, "HTTP/1.1 request without Host"),
        (b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "More than one Host"),
        (b"GET /hello\r\n", 400, "Request line without an HTTP version"),
        (b"GET /hello\r\nHost: x\r\n\r\n", 400, "Request line without an HTTP version"),
        (b"GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2.0 is not supported"),
    ],
)
def test_requests_refused_by_rfc_9112(
    serve: Any, caplog: pytest.LogCaptureFixture, data: bytes, status: int, logged: str
) -> None:
    """Answered at once (not at the header timeout), logged, and the connection closed."""
    server = serve(limits=HTTPLimits(header_timeout=30))
    with caplog.at_level("INFO", logger="flask_relay.server"):
        started = time.monotonic()
        out = raw(server.port, data, timeout=10)
        assert time.monotonic() - started < 8
    assert status_of(out) == status
    assert b"Connection: close\r\n" in out
    assert any(logged in record.getMessage() for record in caplog.records), caplog.text


def test_http10_without_host_is_served(serve: Any) -> None:
    server = serve()
    out = raw(server.port, b"GET /hello HTTP/1.0\r\n\r\n")
    assert status_of(out) == 200 and out.endswith(b"hello")


# -- timeouts --------------------------------------------------------------------------------


def test_header_timeout_408(serve: Any) -> None:
    server = serve(limits=HTTPLimits(header_timeout=0.3))
    out = raw(server.port, b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # headers never end
    assert status_of(out) == 408


def test_body_timeout_408(serve: Any) -> None:
    server = serve(limits=HTTPLimits(body_timeout=0.3))
    out = raw(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert status_of(out) == 408


def test_idle_keep_alive_closed(serve: Any) -> None:
    server = serve(limits=HTTPLimits(keep_alive_timeout=0.3))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"hello"):
            data += sock.recv(4096)
        assert status_of(data) == 200
        # Nothing more is sent: the server closes the idle connection.
        assert sock.recv(4096) == b""
    # An idle connection that never sent anything is closed too.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        assert sock.recv(4096) == b""


def test_stop_waits_for_requests_in_progress(serve: Any) -> None:
    app = flask.Flask(__name__)
    entered = threading.Event()

    @app.route("/slow")
    def slow() -> str:
        entered.set()
        time.sleep(0.3)
        return "finished"

    server = serve(app)
    result: list[bytes] = []
    client = threading.Thread(target=lambda: result.append(
        raw(server.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")))
    client.start()
    assert entered.wait(5)
    server.stop()
    client.join(10)
    assert result and status_of(result[0]) == 200 and result[0].endswith(b"finished")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


_STUCK_APP = """
import threading
from flask import Flask, Response
from flask_relay import SocketIO

app = Flask(__name__)
socketio = SocketIO(app)

@app.route("/events")
def events():
    def stream():
        yield "data: first\\n\\n"
        threading.Event().wait()  # like a Redis pubsub.listen() that never hears anything
    return Response(stream(), mimetype="text/event-stream")

socketio.run(app, port=PORT, shutdown_timeout=1)
"""


def test_sigterm_exits_while_a_view_never_returns(tmp_path: Path) -> None:
    """A Server-Sent Events view blocked for ever must not keep a stopped server's
    process alive: it used to log "Server stopped" and then wait for that thread."""
    port = free_port()
    script = tmp_path / "stuck_app.py"
    script.write_text(_STUCK_APP.replace("PORT", str(port)))
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "server.log"
                ).read_text()
                time.sleep(0.1)
        with sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"data: first" not in data:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            assert status_of(data) == 200
            proc.send_signal(signal.SIGTERM)
            # shutdown_timeout=1 for the request in progress, then the process exits.
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    "still running 10 s after SIGTERM:\n" + (tmp_path / "server.log").read_text()
                ) from None
        assert code == 0, (tmp_path / "server.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_daemon_thread_pool_bounds_reuses_and_reports() -> None:
    pool = DaemonThreadPool(max_workers=2, thread_name_prefix="t-pool")
    release = threading.Event()
    names: list[str] = []

    def blocked(i: int) -> int:
        names.append(threading.current_thread().name)
        assert threading.current_thread().daemon
        release.wait(5)
        return i

    futures = [pool.submit(blocked, i) for i in range(4)]
    time.sleep(0.2)
    assert sum(f.running() for f in futures) == 2  # the third and fourth wait for a thread
    release.set()
    assert [f.result(5) for f in futures] == [0, 1, 2, 3]
    assert set(names) == {"t-pool_0", "t-pool_1"}

    def boom() -> None:
        raise ValueError("boom")

    failed: Future[None] = pool.submit(boom)
    with pytest.raises(ValueError, match="boom"):
        failed.result(5)
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.submit(int)


def test_busy_wsgi_threads_are_logged_and_requests_wait(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Views that do not return (event streams) take every WSGI thread: the next
    request waits for one, and a WARNING says so (it used to hang without a word)."""
    app = flask.Flask(__name__)
    release = threading.Event()
    entered = threading.Semaphore(0)

    @app.route("/events")
    def events() -> flask.Response:
        def stream() -> Iterator[str]:
            yield "data: first\n\n"
            entered.release()
            release.wait(10)

        return flask.Response(stream(), mimetype="text/event-stream")

    @app.route("/hello")
    def hello() -> str:
        return "hello"

    server = serve(app, wsgi_threads=2)
    results: list[bytes] = []

    def get(path: str) -> None:
        results.append(raw(server.port, f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode()))

    streams = [threading.Thread(target=get, args=("/events",)) for _ in range(2)]
    for thread in streams:
        thread.start()
    assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
    with caplog.at_level("WARNING", logger="flask_relay.server"):
        waiting = threading.Thread(target=get, args=("/hello",))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not any(r.endswith(b"hello") for r in results)
        assert "WSGI threads" not in caplog.text  # reported once it has waited 1 s
        waiting.join(1.0)
        assert waiting.is_alive() and not any(r.endswith(b"hello") for r in results)
        assert "all 2 WSGI threads are busy" in caplog.text
        assert "1 requests wait" in caplog.text
    release.set()
    waiting.join(5)
    for thread in streams:
        thread.join(5)
    assert sum(r.endswith(b"hello") for r in results) == 1


def test_daemon_thread_pool_reports_saturation_once_per_episode() -> None:
    reports: list[int] = []
    pool = DaemonThreadPool(max_workers=2, on_saturated=reports.append)  # report_after 1 s
    # A burst of quick work is not reported; two blocking calls then run side by
    # side (the bound is two), and nothing is reported either.
    assert [f.result(5) for f in [pool.submit(abs, -i) for i in range(50)]] == list(range(50))
    time.sleep(0.1)
    release = threading.Event()
    blocked = [pool.submit(release.wait, 5) for _ in range(2)]
    wait_for(lambda: all(f.running() for f in blocked))
    assert reports == []
    more = [pool.submit(release.wait, 5) for _ in range(2)]
    wait_for(lambda: reports == [2])  # the third and fourth waited 1 s: one report
    time.sleep(1.2)
    assert reports == [2]
    release.set()
    assert all(f.result(5) for f in blocked + more)
    time.sleep(0.1)  # the threads are idle with nothing queued: re-armed
    release.clear()
    again = [pool.submit(release.wait, 5) for _ in range(3)]
    wait_for(lambda: reports == [2, 1])
    release.set()
    assert all(f.result(5) for f in again)
    pool.shutdown()


def wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
