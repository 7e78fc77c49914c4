"""The Engine.IO endpoint from a real browser (Chromium via Playwright): the page and
the client bundle come from the Flask app on the same port; cross-origin pages are
refused by default and accepted when their origin is listed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from eio_helpers import ROOT, free_port
from playwright.sync_api import sync_playwright

from flask_relay.engineio import EngineIO
from flask_relay.server.http import Server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
BUNDLE = ROOT / "node_modules" / "engine.io-client" / "dist" / "engine.io.min.js"

PAGE = """<!doctype html><html><body><script src="/eio.js"></script><script>
const target = new URLSearchParams(location.search).get('target') || '';
const report = {events: [], messages: []};
window.report = report;
const socket = eio(target, {path: '/engine.io/'});
socket.on('open', () => {
  report.events.push('open:' + socket.transport.name);
  socket.send('hi');
  socket.send(new Uint8Array([1, 2, 255]).buffer);
});
socket.on('upgrade', (t) => { report.events.push('upgrade:' + t.name); report.upgraded = true; });
socket.on('message', (d) => {
  report.messages.push(typeof d === 'string' ? d : Array.from(new Uint8Array(d)));
});
socket.on('error', () => { report.failed = true; });
socket.on('close', (reason) => { report.events.push('close:' + reason); report.closed = true; });
</script></body></html>"""


def page_app() -> flask.Flask:
    app = flask.Flask(__name__)

    @app.route("/")
    def index() -> str:
        return PAGE

    @app.route("/eio.js")
    def bundle() -> flask.Response:
        return flask.Response(BUNDLE.read_bytes(), mimetype="application/javascript")

    return app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("Chromium is required: apt-get install -y chromium (make system-deps)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def serve() -> Iterator[Any]:
    stack: list[tuple[Server, EngineIO | None]] = []

    def start(app: flask.Flask, eio: EngineIO | None = None) -> int:
        port = free_port()
        server = eio.make_server(app, "127.0.0.1", port) if eio else Server(app, port=port)
        server.start()
        stack.append((server, eio))
        return port

    try:
        yield start
    finally:
        for server, eio in stack:
            server.stop()
            if eio is not None:
                eio.dispatcher.shutdown()


def echo_engine(app: flask.Flask, **options: Any) -> EngineIO:
    eio = EngineIO(app, **options)

    @eio.on("message")
    def message(sid: str, data: str | bytes) -> None:
        eio.send(sid, data.upper() if isinstance(data, str) else data[::-1])

    return eio


def run_page(browser: Any, url: str, until: str) -> dict[str, Any]:
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_function(until, timeout=15_000)
        report: dict[str, Any] = page.evaluate("window.report")
        return report
    finally:
        ctx.close()


def test_same_origin_page_polling_then_websocket(browser: Any, serve: Any) -> None:
    app = page_app()
    port = serve(app, echo_engine(app))
    report = run_page(browser, f"http://127.0.0.1:{port}/",
                      "window.report.messages.length === 2 && window.report.upgraded")
    assert report["events"][:2] == ["open:polling", "upgrade:websocket"]
    assert sorted(report["messages"], key=str) == sorted(["HI", [255, 2, 1]], key=str)


def test_cross_origin_refused_by_default(browser: Any, serve: Any) -> None:
    target_app = page_app()
    target = serve(target_app, echo_engine(target_app))
    other = serve(page_app())
    report = run_page(browser, f"http://127.0.0.1:{other}/?target=http://127.0.0.1:{target}",
                      "window.report.closed")
    assert report["messages"] == []
    assert report.get("failed") is True
    assert not any(e.startswith("open") for e in report["events"])


def test_cross_origin_allowed_when_listed(browser: Any, serve: Any) -> None:
    other_port = free_port()
    target_app = page_app()
    eio = echo_engine(target_app, cors_allowed_origins=[f"http://127.0.0.1:{other_port}"])
    target = serve(target_app, eio)
    other = Server(page_app(), port=other_port)
    other.start()
    try:
        report = run_page(
            browser, f"http://127.0.0.1:{other_port}/?target=http://127.0.0.1:{target}",
            "window.report.messages.length === 2 && window.report.upgraded")
    finally:
        other.stop()
    assert report["events"][:2] == ["open:polling", "upgrade:websocket"]
    assert "HI" in report["messages"]
