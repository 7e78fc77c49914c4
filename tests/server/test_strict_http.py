"""Every kind of response our servers write, checked by two strict HTTP parsers.

The raw bytes of each exchange (one TCP connection, requests pipelined, read
until the server closes) go to ``h11`` and to Node's llhttp
(``tests/js/strict_http.js``, as Node's own client parses), and both must read
exactly the expected responses from them. A second pass fetches the plain
pages with Node's ``http.request`` (keep-alive) and ``fetch``.

Doors: the own server in process (``socketio.make_server``, what
``socketio.run`` serves), the gunicorn worker ``flask_relay.gunicorn.Worker``,
and gunicorn's gthread worker (the foreign door: Werkzeug or gunicorn write
the pages, but the answers to long-polls and refused upgrades on a taken
socket are ours).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from strict_app import EIO_MAX_BODY, GOOD_ORIGIN, create_app  # noqa: E402

from flask_relay.server.http import HTTPLimits, Server  # noqa: E402

PEER = ROOT / "tests" / "js" / "strict_http.js"
BIN = Path(sys.executable).parent
EVIL = "http://evil.example"
POLL = "/socket.io/?EIO=4&transport=polling"
WS_HEADERS = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


ANY = 0


def _same(got: list[int], expected: list[int]) -> bool:
    if len(got) != len(expected):
        return False
    return all(e in (ANY, g) for g, e in zip(got, expected, strict=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def req(method: str, target: str, extra: str = "", body: bytes = b"", *,
        close: bool = False, version: str = "1.1") -> bytes:
    head = f"{method} {target} HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra}"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode("latin-1") + body


@dataclass
class Case:
    """One connection: what is sent, and the statuses of the final responses."""

    name: str
    data: list[bytes]  # sent in this order, with a pause between the pieces
    methods: list[str]  # of the requests that get an answer (HEAD has no body)
    statuses: list[int]  # ANY: whatever it is
    upgrade: bool = False  # the last answer switches protocols
    pause: float = 0.3
    informational: list[int] = field(default_factory=list)  # 1xx expected before


def exchange(port: int, case: Case, timeout: float = 15) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for i, piece in enumerate(case.data):
            if i:
                time.sleep(case.pause)
            sock.sendall(piece)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if case.upgrade:
                sock.settimeout(0.5)  # the 101 and maybe a frame, then we stop
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


# -- the two parsers --------------------------------------------------------------------


def parse_h11(data: bytes, case: Case) -> list[dict[str, Any]]:
    """The responses h11 (as a client that sent these requests) reads from ``data``."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    conn.receive_data(b"")  # the server closed the connection
    responses: list[dict[str, Any]] = []
    for i, method in enumerate(case.methods):
        if i:
            conn.start_next_cycle()
        headers = [("Host", "127.0.0.1")]
        if case.upgrade and i == len(case.methods) - 1:
            headers += [("Upgrade", "websocket"), ("Connection", "Upgrade")]
        conn.send(h11.Request(method=method, target="/", headers=headers))
        conn.send(h11.EndOfMessage())
        current: dict[str, Any] | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                raise AssertionError(f"h11: response {i + 1} of {case.name!r} is incomplete")
            if event is h11.PAUSED:  # switched protocols
                assert current is not None
                responses.append(current)
                return responses
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    current = {"status": 101, "headers": event.headers, "body": b""}
                continue
            if isinstance(event, h11.Response):
                current = {"status": event.status_code, "headers": event.headers, "body": b""}
            elif isinstance(event, h11.Data):
                assert current is not None
                current["body"] += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                responses.append(current)  # type: ignore[arg-type]
                break
            else:
                raise AssertionError(f"h11: unexpected {event!r} in {case.name!r}")
    # Nothing may follow the last response but the end of the connection.
    leftover = conn.next_event()
    assert isinstance(leftover, h11.ConnectionClosed) or leftover is h11.PAUSED or (
        leftover is h11.NEED_DATA
    ), (case.name, leftover)
    return responses


def parse_llhttp(node: str, cases: list[tuple[Case, bytes]]) -> dict[str, Any]:
    payload = [
        {"name": case.name, "methods": case.methods, "data": base64.b64encode(data).decode()}
        for case, data in cases
    ]
    proc = subprocess.run(
        [node, str(PEER), "parse"], input=json.dumps(payload), capture_output=True,
        text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def check_framing(name: str, headers: list[tuple[bytes, bytes]], status: int) -> None:
    names = [bytes(k).lower() for k, _ in headers]
    assert names.count(b"content-length") <= 1, (name, headers)
    assert names.count(b"transfer-encoding") <= 1, (name, headers)
    assert not (b"content-length" in names and b"transfer-encoding" in names), (name, headers)
    if status < 200 or status == 204:
        assert b"content-length" not in names and b"transfer-encoding" not in names, (name,
                                                                                      headers)


def run_cases(node: str, port: int, cases: list[Case]) -> dict[str, list[dict[str, Any]]]:
    """Run every case against the server; both parsers must agree with the expectation.

    Returns h11's responses by case name, for checks of the contents.
    """
    raw = [(case, exchange(port, case)) for case in cases]
    llhttp = parse_llhttp(node, raw)
    seen: dict[str, list[dict[str, Any]]] = {}
    for case, data in raw:
        node_view = llhttp[case.name]
        assert "error" not in node_view, (case.name, node_view["error"], data[:2000])
        node_statuses = [r["status"] for r in node_view["responses"]]
        assert _same(node_statuses, case.informational + case.statuses), (case.name, data[:2000])
        if case.upgrade:
            assert node_view.get("upgraded"), case.name
        try:
            responses = parse_h11(data, case)
        except h11.RemoteProtocolError as exc:
            raise AssertionError(f"h11 refused {case.name!r}: {exc}\n{data[:2000]!r}") from None
        assert _same([r["status"] for r in responses], case.statuses), (case.name, data[:2000])
        finals = [r for r in node_view["responses"] if r["status"] >= 200 or r["status"] == 101]
        for ours, theirs in zip(responses, finals, strict=True):
            check_framing(case.name, ours["headers"], ours["status"])
            assert ours["body"] == base64.b64decode(theirs["body"]), case.name
        seen[case.name] = responses
    return seen


# -- the cases ----------------------------------------------------------------------------


def page_cases() -> list[Case]:
    """Flask views, static files, raw WSGI answers, HEAD: one keep-alive connection."""
    pipeline = [
        ("GET", "/text", "", 200),
        ("HEAD", "/text", "", 200),
        ("GET", "/json", "", 200),
        ("GET", "/stream", "", 200),
        ("HEAD", "/stream", "", 200),
        ("GET", "/nothing", "", 204),
        ("GET", "/redirect", "", 302),
        ("GET", "/missing", "", 404),
        ("HEAD", "/missing", "", 404),
        ("POST", "/text", "", 405),
        ("GET", "/boom", "", 500),
        ("HEAD", "/boom", "", 500),
        ("GET", "/static/hello.txt", "", 200),
        ("HEAD", "/static/hello.txt", "", 200),
        ("GET", "/static/hello.txt", "Range: bytes=0-5\r\n", 206),
        ("GET", "/static/hello.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n", 304),
        ("GET", "/raw/dup-cl", "", 200),
        ("GET", "/raw/stream-cl", "", 200),
        ("GET", "/raw/te", "", 200),
        ("GET", "/raw/204-with-body", "", 204),
        ("GET", "/raw/304", "", 304),
        ("HEAD", "/raw/empty", "", 200),
        ("GET", "/raw/empty", "", 200),
        ("GET", "/raw/no-reason", "", 200),
        ("POST", "/echo", "", 200),
        ("GET", "/raw/too-long", "", 200),
    ]
    data = b"".join(req(m, t, h) for m, t, h, _ in pipeline) + req("GET", "/text", close=True)
    return [
        Case("pipeline", [data], [m for m, *_ in pipeline] + ["GET"],
             [s for *_, s in pipeline] + [200]),
        Case("crash", [req("GET", "/raw/crash")], ["GET"], [500]),
        Case("crash-head", [req("HEAD", "/raw/crash")], ["HEAD"], [500]),
        Case("bad-header", [req("GET", "/raw/bad-header")], ["GET"], [500]),
        Case("app-says-close", [req("GET", "/raw/conn-close") + req("GET", "/text")],
             ["GET"], [200]),
        Case("http10-stream", [req("GET", "/stream", version="1.0")], ["GET"], [200]),
        Case("http10-keep-alive",
             [req("GET", "/text", "Connection: keep-alive\r\n", version="1.0")
              + req("GET", "/stream", version="1.0")], ["GET", "GET"], [200, 200]),
        Case("expect-100",
             [req("POST", "/echo", "Expect: 100-continue\r\nContent-Length: 5\r\n", close=True)
              .replace(b"Content-Length: 0\r\n", b""), b"hello"],
             ["POST"], [200], informational=[100]),
        # The answer (the page, or a refusal) is the WebSocket routes' business.
        Case("upgrade-to-a-page", [req("GET", "/text", WS_HEADERS)], ["GET"], [ANY]),
    ]


def error_cases(*, limits: bool) -> list[Case]:
    """The server's own refusals (``limits``: the in-process server's small limits)."""
    cases = [
        Case("malformed", [b"GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n"], ["GET"], [400]),
        Case("no-host", [b"GET /text HTTP/1.1\r\n\r\n"], ["GET"], [400]),
        Case("two-hosts", [b"GET /text HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"], ["GET"], [400]),
        Case("no-version", [b"GET /\r\n"], ["GET"], [400]),
        Case("no-version-headers", [b"GET /\r\nHost: 127.0.0.1\r\n\r\n"], ["GET"], [400]),
        Case("http2-as-text", [b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n"], ["GET"], [505]),
        Case("target-414", [req("GET", "/" + "a" * 5000)], ["GET"], [414]),
        Case("headers-431",
             [req("GET", "/text", "".join(f"X-{i}: {i}\r\n" for i in range(200)))],
             ["GET"], [431]),
        Case("after-good-request",
             [req("GET", "/text") + b"BROKEN\r\n\r\n"], ["GET", "GET"], [200, 400]),
    ]
    if limits:
        cases += [
            Case("body-413", [req("POST", "/echo", body=b"x" * 5000)], ["POST"], [413]),
            Case("headers-408", [b"GET /text HTTP/1.1\r\nHost: x\r\n"], ["GET"], [408]),
        ]
    return cases


def engine_cases(port: int, *, own_server: bool) -> list[Case]:
    """Engine.IO long-polling (CORS, errors) and WebSocket upgrades, accepted or refused."""
    sid = _handshake(port)
    post = req("POST", f"{POLL}&sid={sid}",
               f"Content-Type: text/plain;charset=UTF-8\r\nOrigin: {GOOD_ORIGIN}\r\n", b"40")
    get = req("GET", f"{POLL}&sid={sid}")
    upgrade_eio = f"/socket.io/?EIO=4&transport=websocket&sid={_handshake(port)}"
    cases = [
        Case("eio-handshake", [req("GET", POLL, close=True)], ["GET"], [200]),
        Case("eio-refused-origin", [req("GET", POLL, f"Origin: {EVIL}\r\n", close=True)],
             ["GET"], [400]),
        Case("eio-preflight",
             [req("OPTIONS", POLL, f"Origin: {GOOD_ORIGIN}\r\nAccess-Control-Request-Method: POST"
                  "\r\nAccess-Control-Request-Headers: content-type\r\n", close=True)],
             ["OPTIONS"], [204]),
        Case("eio-bad-sid", [req("GET", f"{POLL}&sid=nope", close=True)], ["GET"], [400]),
        Case("eio-head", [req("HEAD", POLL, close=True)], ["HEAD"], [400]),
        Case("eio-bad-transport", [req("GET", "/socket.io/?EIO=4&transport=x", close=True)],
             ["GET"], [400]),
        Case("eio-413",
             [req("POST", f"{POLL}&sid={_handshake(port)}", body=b"4" * (EIO_MAX_BODY + 10))],
             ["POST"], [413]),
        Case("ws-101", [req("GET", upgrade_eio, WS_HEADERS)], ["GET"], [101], upgrade=True),
        Case("ws-new-101", [req("GET", "/socket.io/?EIO=4&transport=websocket", WS_HEADERS)],
             ["GET"], [101], upgrade=True),
        Case("ws-refused-origin",
             [req("GET", "/socket.io/?EIO=4&transport=websocket", WS_HEADERS
                  + f"Origin: {EVIL}\r\n")], ["GET"], [400]),
        Case("ws-no-key",
             [req("GET", "/socket.io/?EIO=4&transport=websocket",
                  WS_HEADERS.replace("Sec-WebSocket-Key", "X-Key"))], ["GET"], [400]),
        Case("ws-version",
             [req("GET", "/socket.io/?EIO=4&transport=websocket",
                  WS_HEADERS.replace("Version: 13", "Version: 8"))], ["GET"], [426]),
        Case("route-101", [req("GET", "/ws", WS_HEADERS)], ["GET"], [101], upgrade=True),
        Case("route-no-key", [req("GET", "/ws", WS_HEADERS.replace("Sec-WebSocket-Key", "X"))],
             ["GET"], [400]),
        Case("route-missing", [req("GET", "/nowhere", WS_HEADERS)], ["GET"], [404]),
    ]
    if own_server:
        # Keep-alive: a polling session and pages on one connection.
        cases.append(Case(
            "eio-http10-keep-alive",
            [req("GET", POLL, "Connection: keep-alive\r\n", version="1.0")
             + req("GET", "/text", version="1.0")], ["GET", "GET"], [200, 200],
        ))  # fmt: skip
        cases.append(Case(
            "eio-session",
            [post + get + req("GET", "/text") + req("GET", f"{POLL}&sid=nope")
             + req("GET", "/text", close=True)],
            ["POST", "GET", "GET", "GET", "GET"], [200, 200, 200, 400, 200],
        ))  # fmt: skip
    else:
        # The foreign door closes each connection after a mount's answer.
        cases += [
            Case("eio-post", [post], ["POST"], [200]),
            Case("eio-poll", [get], ["GET"], [200]),
        ]
    return cases


def _handshake(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", POLL)
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200 and body.startswith("0"), body
        sid: str = json.loads(body[1:])["sid"]
        return sid
    finally:
        conn.close()


def check_contents(seen: dict[str, list[dict[str, Any]]]) -> None:
    """What the bytes say, beyond being parsable (only the cases present)."""
    if "pipeline" in seen:
        by_order = seen["pipeline"]
        assert by_order[0]["body"] == b"hello"
        assert by_order[3]["body"] == b"part one;part two"
        assert by_order[16]["body"] == b"hello"  # /raw/dup-cl
        assert by_order[17]["body"] == b"helloworld"
        assert by_order[18]["body"] == b"not chunked by the app"
        assert by_order[19]["body"] == b""  # a 204 has no body, whatever the app sends
        assert by_order[25]["body"] == b"hel"  # cut at the app's Content-Length
    if "eio-refused-origin" in seen:
        refused = seen["eio-refused-origin"][0]
        assert refused["body"] == f'"{EVIL} is not an accepted origin."'.encode()
    if "ws-refused-origin" in seen:
        refused = seen["ws-refused-origin"][0]
        assert refused["body"] == f'"{EVIL} is not an accepted origin."'.encode()
    if "eio-http10-keep-alive" in seen:
        first = dict(seen["eio-http10-keep-alive"][0]["headers"])
        assert first[b"connection"] == b"keep-alive"
    if "eio-session" in seen:
        posted = dict(seen["eio-session"][0]["headers"])
        assert posted[b"access-control-allow-origin"] == GOOD_ORIGIN.encode()
        assert seen["eio-session"][1]["body"].startswith(b'40{"sid":')
    if "eio-poll" in seen:
        assert seen["eio-poll"][0]["body"].startswith(b'40{"sid":')


def fetch_requests(port: int) -> list[dict[str, Any]]:
    base = f"http://127.0.0.1:{port}"
    return [
        {"name": name, "url": base + path, "method": method, "headers": headers}
        for name, method, path, headers in [
            ("text", "GET", "/text", {}),
            ("text-head", "HEAD", "/text", {}),
            ("json", "GET", "/json", {}),
            ("stream", "GET", "/stream", {}),
            ("nothing", "GET", "/nothing", {}),
            ("missing", "GET", "/missing", {}),
            ("boom", "GET", "/boom", {}),
            ("static", "GET", "/static/hello.txt", {}),
            ("dup-cl", "GET", "/raw/dup-cl", {}),
            ("raw-te", "GET", "/raw/te", {}),
            ("eio", "GET", POLL, {}),
            ("eio-preflight", "OPTIONS", POLL, {"Origin": GOOD_ORIGIN,
                                                "Access-Control-Request-Method": "POST"}),
            ("eio-refused", "GET", POLL, {"Origin": EVIL}),
        ]
    ]


FETCH_STATUSES = {"text": 200, "text-head": 200, "json": 200, "stream": 200, "nothing": 204,
                  "missing": 404, "boom": 500, "static": 200, "dup-cl": 200, "raw-te": 200,
                  "eio": 200, "eio-preflight": 204, "eio-refused": 400}


def check_with_node_clients(node: str, port: int) -> None:
    proc = subprocess.run(
        [node, str(PEER), "fetch"], input=json.dumps(fetch_requests(port)),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name, result in json.loads(proc.stdout).items():
        for client in ("http", "fetch"):
            assert result[client].get("status") == FETCH_STATUSES[name], (name, client, result)


# -- the doors ----------------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[int]:
    app = create_app()
    limits = HTTPLimits(max_body_size=4096, max_target_size=2048, max_headers=30,
                        header_timeout=1.0)
    server = app.extensions["socketio"].make_server(app, port=free_port(), limits=limits,
                                                    shutdown_timeout=2)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def test_own_server_responses_parse_strictly(own_server: int, node: str) -> None:
    cases = page_cases() + error_cases(limits=True) + engine_cases(own_server, own_server=True)
    check_contents(run_cases(node, own_server, cases))
    check_with_node_clients(node, own_server)


def test_server_without_app_404_parses_strictly(node: str) -> None:
    server = Server(None, port=free_port(), shutdown_timeout=2)
    server.start()
    try:
        run_cases(node, server.port, [
            Case("no-app", [req("GET", "/x") + req("HEAD", "/x") + req("GET", "/x", close=True)],
                 ["GET", "HEAD", "GET"], [404, 404, 404]),
        ])  # fmt: skip
    finally:
        server.stop()


def _start(door: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``door``: a gunicorn worker class, or ``flask-run``."""
    port = free_port()
    log = tmp / "server.log"
    if door == "flask-run":
        command = [str(BIN / "flask"), "--app", "strict_app", "run", "--port", str(port)]
    else:
        command = [
            str(BIN / "gunicorn"), "--chdir", str(HERE), "-b", f"127.0.0.1:{port}",
            "-k", door, "--threads", "4", "--graceful-timeout", "3",
            "--limit-request-line", "2048", "--limit-request-fields", "30",
            "--control-socket", str(tmp / "gunicorn.ctl"), "strict_app:app",
        ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=HERE, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(HERE)])),
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            _handshake(port)
            return proc, port
        except (OSError, AssertionError, http.client.HTTPException):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise RuntimeError(f"{door} did not start:\n{log.read_text()}") from None
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.slow
def test_gunicorn_worker_responses_parse_strictly(tmp_path: Path, node: str) -> None:
    proc, port = _start("flask_relay.gunicorn.Worker", tmp_path)
    try:
        cases = page_cases() + error_cases(limits=False) + engine_cases(port, own_server=True)
        check_contents(run_cases(node, port, cases))
        check_with_node_clients(node, port)
    finally:
        _stop(proc)


@pytest.mark.slow
@pytest.mark.parametrize("door", ["gthread", "flask-run"])
def test_foreign_door_responses_parse_strictly(tmp_path: Path, node: str, door: str) -> None:
    """gunicorn gthread, ``flask run``: our bytes are the mount answers (long-polls,
    refusals) written on the socket taken from the server, and its route refusals."""
    proc, port = _start(door, tmp_path)
    try:
        check_contents(run_cases(node, port, engine_cases(port, own_server=False)))
    finally:
        _stop(proc)
