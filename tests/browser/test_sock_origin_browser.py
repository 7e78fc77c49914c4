"""Cross-site WebSocket hijacking, tried by Chromium: a page on another origin
(another port) opens ``new WebSocket`` to a Sock route and is refused; a page
of the server's own origin, or of an origin listed in ``allowed_origins``, is
accepted."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import sync_playwright

from flask_relay import Sock
from flask_relay.server.http import Server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

OPEN = """url => new Promise(resolve => {
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send("hi");
  ws.onmessage = e => { resolve("message:" + e.data); ws.close(); };
  ws.onerror = () => resolve("error");
  ws.onclose = e => resolve("closed:" + e.code);
})"""


def echo(ws: Any) -> None:
    while (message := ws.receive()) is not None:
        ws.send(message)


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


def page_app() -> Flask:
    app = Flask(__name__)
    app.route("/")(lambda: "<!doctype html><title>page</title>")
    return app


def test_other_origin_is_refused_own_origin_and_listed_origin_accepted(
    browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    other = Server(page_app(), host="127.0.0.1", port=0, shutdown_timeout=1.0)
    other.start()
    other_origin = f"http://127.0.0.1:{other.port}"
    app = page_app()
    Sock(app).route("/echo")(echo)  # the default: same origin only
    Sock(app, allowed_origins=[other_origin]).route("/dev", endpoint="dev")(echo)  # the fix
    server = Server(app, host="127.0.0.1", port=0, shutdown_timeout=1.0)
    server.start()
    ws_base = f"ws://127.0.0.1:{server.port}"
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        with caplog.at_level(logging.WARNING, "flask_relay.sock"):
            page.goto(f"{other_origin}/")
            assert page.evaluate(OPEN, f"{ws_base}/echo") == "error"
            assert page.evaluate(OPEN, f"{ws_base}/dev") == "message:hi"
            page.goto(f"http://127.0.0.1:{server.port}/")
            assert page.evaluate(OPEN, f"{ws_base}/echo") == "message:hi"
        (refusal,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert f"from Origin {other_origin}" in refusal
        assert f"allowed_origins=['{other_origin}']" in refusal
    finally:
        context.close()
        server.stop()
        other.stop()
