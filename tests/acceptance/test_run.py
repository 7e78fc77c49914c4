"""Issue 3 item 1: ``socketio.run()`` in a real process: signals, debug, log_output.

The app (run_app.py) is started as a subprocess; SIGTERM and SIGINT (Ctrl-C)
must shut it down cleanly: every client receives a close, the app's disconnect
handlers run, ``run()`` returns and the process exits with 0.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio as socketio_client
from acceptance_helpers import free_port, request, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from nodepeer import NodePeer  # noqa: E402
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

APP = Path(__file__).resolve().parent / "run_app.py"


class App:
    def __init__(self, mode: str, *extra: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), str(self.port), mode, *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group (the reloader has a child)
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

        def up() -> bool:
            if mode == "tls":
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", self.port)) == 0
            try:
                return request(self.port, "GET", "/hello", timeout=1).text == "hello from flask"
            except OSError:
                return False

        wait_until(up, timeout=15, what="socketio.run() serving")

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group: a reloader's child too
        except ProcessLookupError:
            pass
        self.proc.wait(10)


@pytest.fixture
def start() -> Iterator[Any]:
    apps: list[App] = []

    def make(mode: str = "quiet", *extra: str) -> App:
        app = App(mode, *extra)
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            app.stop()


def _client(transport: str) -> tuple[Any, list[Any]]:
    client = socketio_client.Client(reconnection=False, handle_sigint=False)
    closed: list[Any] = []
    client.on("disconnect", lambda *reason: closed.append(reason))
    return client, closed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_closes_clients_and_runs_disconnect_handlers(start: Any, signum: int) -> None:
    app = start()
    url = f"http://127.0.0.1:{app.port}"
    ws_client, ws_closed = _client("websocket")
    ws_client.connect(url, transports=["websocket"], wait_timeout=5)
    poll_client, poll_closed = _client("polling")
    poll_client.connect(url, transports=["polling"], wait_timeout=5)
    raw = connect(f"ws://127.0.0.1:{app.port}/socket.io/?EIO=4&transport=websocket")
    try:  # (not a with block: the close is what the test watches)
        assert raw.recv(timeout=5).startswith("0{")
        raw.send("40")
        raw_sid = raw.recv(timeout=5)
        assert raw_sid.startswith("40{")
        assert ws_client.call("echo", "x", timeout=5) == "x"
        assert poll_client.call("echo", "y", timeout=5) == "y"
        sids = {ws_client.get_sid(), poll_client.get_sid()}
        wait_until(lambda: len([ln for ln in app.lines if ln.startswith("connect")]) == 3)

        app.proc.send_signal(signum)

        # The raw WebSocket gets a closing handshake (1001), and no Engine.IO close
        # packet: that would keep python-socketio clients from reconnecting
        # (tests/acceptance/test_restart.py).
        received: list[str] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                received.append(str(raw.recv(timeout=10)))
        assert "1" not in received, received
        assert info.value.rcvd is not None, "TCP dropped without a WebSocket close frame"
        assert info.value.rcvd.code == 1001
        wait_until(lambda: ws_closed and poll_closed, what="both clients disconnected")
        assert app.proc.wait(15) == 0, app.err
    finally:
        raw.close()
        ws_client.disconnect()
        poll_client.disconnect()
    disconnects = [ln.split(" ", 2) for ln in app.lines if ln.startswith("disconnect")]
    assert len(disconnects) == 3, (app.lines, app.err)
    assert sids <= {d[1] for d in disconnects}
    assert all(d[2] == "server disconnect" or "shut" in d[2] for d in disconnects), disconnects
    assert app.lines[-1] == "returned", app.lines


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_debug_reloader_shuts_down_cleanly_on_a_group_signal(start: Any, signum: int) -> None:
    """``socketio.run(app, debug=True)``: Werkzeug's reloader runs the server in a thread
    of a child process; Ctrl-C in the terminal (the whole process group) must still
    close every client and run the disconnect handlers."""
    app = start("reloader")
    url = f"http://127.0.0.1:{app.port}"
    clients = []
    try:
        for transports in (["websocket"], ["polling"]):
            client, closed = _client(transports[0])
            client.connect(url, transports=transports, wait_timeout=5)
            assert client.call("echo", 1, timeout=5) == 1
            clients.append((client, closed))
        wait_until(lambda: len([ln for ln in app.lines if ln.startswith("connect")]) == 2)
        os.killpg(app.proc.pid, signum)
        wait_until(lambda: all(closed for _, closed in clients), what="both clients closed")
        assert app.proc.wait(15) == 0, app.err
    finally:
        for client, _ in clients:
            client.disconnect()
    reasons = [ln.split(" ", 2)[2] for ln in app.lines if ln.startswith("disconnect")]
    assert reasons == ["server disconnect", "server disconnect"], (app.lines, app.err)
    # The clients saw the transport end (so that they would reconnect), not a
    # deliberate disconnect.
    assert [closed for _, closed in clients] == [[("transport error",)]] * 2


def test_reloader_banner_names_the_reloader() -> None:
    """`` * Restarting with watchdog (inotify)``, as Werkzeug prints it: the watchdog
    loop names itself in ``__init__``, and the banner read its empty class attribute
    (`` * Restarting with `` under ``debug=True`` wherever watchdog is installed)."""
    pytest.importorskip("watchdog.observers")
    from flask_relay.extension import _reloader_name

    assert _reloader_name("stat") == "stat"
    assert _reloader_name("watchdog").startswith("watchdog (")


def test_log_output(start: Any) -> None:
    loud = start("log_output")
    quiet = start("quiet")
    for app in (loud, quiet):
        assert request(app.port, "GET", "/hello").status == 200
        request(app.port, "GET", "/nowhere/?x")
        app.proc.send_signal(signal.SIGTERM)
        assert app.proc.wait(15) == 0
    wait_until(lambda: loud.err, what="stderr of the log_output app")
    loud_err, quiet_err = "\n".join(loud.err), "\n".join(quiet.err)
    # log_output=True: the server logs what it does (serving address, shutdown)...
    assert f"127.0.0.1:{loud.port}" in loud_err
    assert "SIGTERM" in loud_err
    # ... and log_output=False keeps the server's info logging off.
    assert "SIGTERM" not in quiet_err


def test_log_output_logs_requests(start: Any) -> None:
    """Flask-SocketIO's log_output logs each request (Werkzeug's access log)."""
    app = start("log_output")
    assert request(app.port, "GET", "/hello").status == 200
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(15) == 0
    assert any("/hello" in line for line in app.err), app.err


def test_debug_keeps_werkzeug_debugger_for_http_routes(start: Any) -> None:
    app = start("debug")
    page = request(app.port, "GET", "/boom")
    assert page.status == 500
    text = page.text
    assert "RuntimeError" in text and "boom in a view" in text
    assert "Werkzeug" in text and "Debugger" in text  # the interactive debugger page
    quiet = start("quiet")
    plain = request(quiet.port, "GET", "/boom")
    assert plain.status == 500 and "boom in a view" not in plain.text


def test_tls_with_certfile_and_keyfile(start: Any, tmp_path: Path, node: str) -> None:
    """HTTPS for routes, long-polling, WebSocket and the upgrade between them."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    app = start("tls", str(cert), str(key))
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", app.port, context=context, timeout=10)
    try:
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"hello from flask"
    finally:
        conn.close()
    url = f"https://127.0.0.1:{app.port}"
    for transports in (["polling"], ["websocket"], None):  # None: polling, then upgrade
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the verify setting
        session.verify = str(cert)  # verified against our self-signed certificate
        client = socketio_client.Client(
            reconnection=False, handle_sigint=False, http_session=session
        )
        client.connect(url, transports=transports, wait_timeout=5)
        try:
            assert client.call("echo", {"over": "tls"}, timeout=5) == {"over": "tls"}
            if transports is None:
                wait_until(lambda c=client: c.transport() == "websocket", what="the upgrade")
        finally:
            client.disconnect()
    peer = NodePeer()
    try:
        for cid, transports in (("poll", ["polling"]), ("up", ["polling", "websocket"])):
            report = peer.connect(cid, url, transports=transports, rejectUnauthorized=False)
            assert report["ev"] == "connect", report
            assert peer.call(cid, "echo", "js") == ["js"]
    finally:
        peer.close()
