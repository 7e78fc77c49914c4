"""WebSocket routes (flask_relay.Sock) with real clients, behind both doors.

Every test runs against the own server and against Werkzeug's server (what
``app.run()``/``flask run`` use) through the foreign-server middleware.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict

import pytest
import wsapp
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from wshelpers import Served, run_peer

from flask_relay.server.http import Server


def test_echo_text_and_binary(served: Served) -> None:
    with connect(served.url("/echo")) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xff"
        big = "y" * 60_000
        ws.send(big)
        assert ws.recv(timeout=5) == big
    code, message, close_reason = served.reports.get("echo-closed")
    assert (code, close_reason) == (1000, 1000)


def test_async_route_echo(served: Served) -> None:
    with connect(served.url("/echo-async")) as ws:
        for text in ("one", "two", "three"):
            ws.send(text)
            assert ws.recv(timeout=5) == text
        ws.send(b"\x01\x02")
        assert ws.recv(timeout=5) == b"\x01\x02"


def test_url_variables_follow_ws(served: Served) -> None:
    with connect(served.url("/vars/41/alice")) as ws:
        assert ws.recv(timeout=5) == "42:alice:int"
        with pytest.raises(ClientClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 1000


def test_blueprint_route(served: Served) -> None:
    with connect(served.url("/things/hello")) as ws:
        assert ws.recv(timeout=5) == "blueprint things"


def test_view_decorator_refuses_in_http(served: Served) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(served.url("/private"))
    assert info.value.response.status_code == 401
    assert b"login required" in info.value.response.body
    with connect(served.url("/private?token=secret")) as ws:
        assert ws.recv(timeout=5) == "welcome"


def test_abort_before_the_handshake_is_an_http_answer(served: Served) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(served.url("/forbidden"))
    assert info.value.response.status_code == 403


def test_unknown_path_is_404(served: Served) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(served.url("/no/such/route"))
    assert info.value.response.status_code == 404


def test_before_and_after_request_hooks(served: Served) -> None:
    with connect(served.url("/hooks")) as ws:
        assert ws.recv(timeout=5) == "before:/hooks"
    path, hook, response_type = served.reports.get("after")
    assert (path, hook) == ("/hooks", "before:/hooks")
    assert response_type  # after_request got a response object


def test_plain_http_next_to_routes(served: Served) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/", timeout=5) as response:
        assert response.read() == b"plain HTTP still works"


def test_receive_timeout_poll_subprotocol_and_connected(served: Served) -> None:
    with connect(served.url("/api?timeout=0.2"), subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "superchat"
        assert ws.recv(timeout=5) == "subprotocol=superchat connected=True"
        assert ws.recv(timeout=5) == "timeout"  # receive(timeout) returned None
        ws.send("poll")
        assert ws.recv(timeout=5) == "None"  # receive(timeout=0) polls
        ws.send("binary")
        assert ws.recv(timeout=5) == b"\x00\xffbinary"
        ws.send(b"raw bytes")
        assert ws.recv(timeout=5) == b"raw bytes"


def test_no_subprotocol_when_none_matches(served: Served) -> None:
    with connect(served.url("/api"), subprotocols=["other"]) as ws:
        assert ws.subprotocol is None
        assert ws.recv(timeout=5) == "subprotocol=None connected=True"


def test_server_close_with_code_and_message(served: Served) -> None:
    with connect(served.url("/api")) as ws:
        ws.recv(timeout=5)
        ws.send("close:4001:see you")
        with pytest.raises(ClientClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 4001
    assert ws.close_reason == "see you"
    connected, late_send = served.reports.get("api-after-close")
    assert connected is False
    assert late_send == "ConnectionClosed"


def test_client_close_is_seen_by_the_route(served: Served) -> None:
    with connect(served.url("/api")) as ws:
        ws.recv(timeout=5)
        ws.send("wait-close")
        ws.close(4002, "client leaves")
    reason, message, close_reason, close_message, connected = served.reports.get(
        "api-peer-closed"
    )
    assert (reason, message) == (4002, "client leaves")
    assert (close_reason, close_message) == (4002, "client leaves")
    assert connected is False


def test_route_returning_closes_with_1000(served: Served) -> None:
    with connect(served.url("/bye")) as ws:
        assert ws.recv(timeout=5) == "bye"
        with pytest.raises(ClientClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 1000


def test_route_exception_closes_with_1011(served: Served) -> None:
    with connect(served.url("/boom")) as ws:
        assert ws.recv(timeout=5) == "about to fail"
        with pytest.raises(ClientClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 1011


def test_oversized_message_closes_with_1009(served: Served) -> None:
    with connect(served.url("/echo"), max_size=None) as ws:
        ws.send("z" * (64 * 1024 + 1))
        with pytest.raises(ClientClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 1009
    code, _message, _ = served.reports.get("echo-closed")
    assert code == 1009


def test_concurrent_send_from_8_threads(served: Served) -> None:
    count = 60
    with connect(served.url("/fanout"), max_size=None) as ws:
        ws.send(str(count))
        last: defaultdict[int, int] = defaultdict(lambda: -1)
        received = 0
        pattern = re.compile(r"(\d):(\d+):(x*)")
        while True:
            message = ws.recv(timeout=10)
            if message == "done":
                break
            assert isinstance(message, str)
            match = pattern.fullmatch(message)
            assert match, message[:80]
            i, j, pad = int(match[1]), int(match[2]), match[3]
            expected = (j * 7919) % 70000 if j % 5 == 0 else j % 200
            assert len(pad) == expected
            assert j == last[i] + 1  # each thread's messages arrive in its order
            last[i] = j
            received += 1
        assert received == 8 * count
        ws.send("thanks")


def test_client_ping_gets_pong(served: Served) -> None:
    with connect(served.url("/echo")) as ws:
        for payload in (b"", b"abc", b"x" * 125):
            assert ws.ping(payload).wait(5)
        ws.send("after pings")
        assert ws.recv(timeout=5) == "after pings"


def test_server_pings_keep_a_live_client(served_pinging: Served) -> None:
    # websockets answers pings automatically; five intervals later we are still connected.
    with connect(served_pinging.url("/echo")) as ws:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            ws.send("tick")
            assert ws.recv(timeout=5) == "tick"
            time.sleep(0.1)


def test_missing_pong_closes_with_1008(served_pinging: Served, node: str) -> None:
    result = run_peer(node, served_pinging.url("/watch"), "nopong")
    assert result["closeCode"] == 1008, result
    assert result["pings"] >= 1
    code, _late = served_pinging.reports.get("watch")
    assert code == 1008


def test_peer_vanishing(served: Served) -> None:
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    raw.sendall(
        b"GET /watch HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    while b"ready" not in data:
        chunk = raw.recv(4096)
        assert chunk
        data += chunk
    assert data.startswith(b"HTTP/1.1 101 ")
    # Vanish: reset the TCP connection without a closing handshake.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()
    code, late = served.reports.get("watch")
    assert code == 1006
    assert late == "ConnectionClosed"


def test_node_ws_client_echo(served: Served, node: str) -> None:
    result = run_peer(node, served.url("/echo"), "echo")
    assert result["messages"] == ["h\u00e9llo \U0001f600", {"hex": "000102ff"}], result
    assert result["closeCode"] == 1000


def test_node_invalid_utf8_closes_with_1007(served: Served, node: str) -> None:
    result = run_peer(node, served.url("/echo"), "badutf8")
    assert result["closeCode"] == 1007, result
    code, _message, _ = served.reports.get("echo-closed")
    assert code == 1007


def test_node_oversize_closes_with_1009(served: Served, node: str) -> None:
    result = run_peer(node, served.url("/echo"), "oversize")
    assert result["closeCode"] == 1009, result


def test_node_subprotocol(served: Served, node: str) -> None:
    result = run_peer(node, served.url("/api"), "subprotocol")
    assert result["protocol"] == "superchat"
    assert result["messages"][0] == "subprotocol=superchat connected=True"


def test_plain_get_to_a_route_is_refused(served: Served) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{served.port}/echo", timeout=5)
    assert info.value.code == 400


def test_routes_have_threads_of_their_own() -> None:
    # The own server's WSGI pool has 2 threads: 6 blocking routes running at
    # once, and plain HTTP next to them, show routes never occupy that pool.
    app, _sock, _reports = wsapp.make_app()
    server = Server(app, host="127.0.0.1", port=0, wsgi_threads=2, shutdown_timeout=2.0)
    server.start()
    try:
        with contextlib.ExitStack() as stack:
            url = f"ws://127.0.0.1:{server.port}/echo"
            clients = [stack.enter_context(connect(url)) for _ in range(6)]
            for i, ws in enumerate(clients):
                ws.send(str(i))
            for i, ws in enumerate(clients):
                assert ws.recv(timeout=5) == str(i)
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5) as r:
                assert r.read() == b"plain HTTP still works"
    finally:
        server.stop()


def test_slow_reader_back_pressure(served: Served) -> None:
    with connect(served.url("/slow-reader")) as ws:
        ws.send("500")
        for i in range(500):
            ws.send(str(i) * 100)
        assert ws.recv(timeout=10) == "ok"


def test_bad_handshake_gets_a_clear_http_error(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw:
        raw.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        )
        data = b""
        while chunk := raw.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 426 "), data
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in head
    assert b"Sec-WebSocket-Version" in body


def _route_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "flask-relay-ws-route")


def test_idle_async_routes_hold_no_thread() -> None:
    app, _sock, _reports = wsapp.make_app()
    server = Server(app, host="127.0.0.1", port=0, shutdown_timeout=2.0)
    server.start()
    try:
        with contextlib.ExitStack() as stack:
            base = f"ws://127.0.0.1:{server.port}"
            blocking = [stack.enter_context(connect(base + "/echo")) for _ in range(10)]
            idle = [stack.enter_context(connect(base + "/echo-async")) for _ in range(30)]
            for ws in blocking + idle:
                ws.send("x")
                assert ws.recv(timeout=5) == "x"
            # A blocking route keeps its thread; an async route's view thread
            # ends once the coroutine is scheduled on the loop.
            deadline = time.monotonic() + 5
            while _route_threads() > 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _route_threads() == 10
    finally:
        server.stop()
