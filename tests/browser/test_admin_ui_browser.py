"""The official Socket.IO Admin UI dashboard in Chromium against ``socketio.instrument()``.

The npm package ``@socket.io/admin-ui`` ships the built dashboard in ``ui/dist``;
it is served by a static server on its own port (another origin, as the hosted
dashboard is) and pointed at tests/integration/admin_app.py. Two clients of the
official Node client are connected; the test logs in through the dashboard's own
form (a wrong password first) and reads the sockets, rooms and servers pages.
Requests leaving 127.0.0.1 (the page's web fonts) are refused: no network.
A screenshot of each page is left in the pytest tmp dir.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from admin_app import PASSWORD, USERNAME  # noqa: E402
from nodepeer import ROOT, NodePeer, ServerProcess, free_port, started  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
TIMEOUT_MS = 20_000


def dashboard_dir() -> Path:
    """``ui/dist`` of the npm package (node_modules, or a NODE_PATH entry)."""
    roots = [ROOT / "node_modules"]
    roots += [Path(p) for p in os.environ.get("NODE_PATH", "").split(os.pathsep) if p]
    for root in roots:
        dist = root / "@socket.io" / "admin-ui" / "ui" / "dist"
        if (dist / "index.html").is_file():
            return dist
    pytest.fail("the npm package @socket.io/admin-ui is required: run `make deps`")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    ui_port = free_port()
    ui_origin = f"http://127.0.0.1:{ui_port}"
    static = [sys.executable, "-m", "http.server", str(ui_port), "--bind", "127.0.0.1"]
    static += ["--directory", str(dashboard_dir())]
    port = free_port()
    app = [sys.executable, "tests/integration/admin_app.py", "--port", str(port)]
    with started(static, ui_port) as ui, started([*app, "--origin", ui_origin], port) as srv:
        yield ui, srv


@pytest.fixture
def page() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("Chromium is required: apt-get install -y chromium (make system-deps)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 900})
            ctx.set_default_timeout(TIMEOUT_MS)

            def local_only(route: Any) -> None:
                if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
                    route.continue_()
                else:
                    route.abort()

            ctx.route("**/*", local_only)
            yield ctx.new_page()
        finally:
            browser.close()


def log_in(page: Any, url: str, password: str) -> None:
    page.get_by_label("Server URL").fill(url)
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Connect").click()


@pytest.mark.slow
def test_dashboard_lists_sockets_rooms_and_server(
    servers: tuple[ServerProcess, ServerProcess], page: Any, tmp_path: Path
) -> None:
    ui, server = servers
    peer = NodePeer()
    try:
        ann = peer.connect("ann", server.url, transports=["websocket"])["sid"]
        bob = peer.connect("bob", server.url, transports=["polling"])["sid"]
        assert peer.call("ann", "join", "lobby") == ["joined"]
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(ui.url + "/")

        log_in(page, server.url, "wrong")
        expect(page.get_by_text("Invalid credentials")).to_be_visible()
        page.screenshot(path=str(tmp_path / "refused.png"))

        log_in(page, server.url, PASSWORD)
        expect(page.get_by_label("Password")).to_be_hidden()  # the login dialog closed

        page.goto(ui.url + "/#/sockets/")
        for sid in (ann, bob):
            expect(page.get_by_text(sid)).to_be_visible()
        page.screenshot(path=str(tmp_path / "sockets.png"))

        page.goto(ui.url + "/#/rooms/")
        expect(page.get_by_text("lobby")).to_be_visible()
        page.screenshot(path=str(tmp_path / "rooms.png"))

        page.goto(ui.url + "/#/servers/")
        expect(page.get_by_text("relay-test")).to_be_visible()
        page.screenshot(path=str(tmp_path / "servers.png"))

        page.goto(ui.url + "/#/")
        expect(page.get_by_text("/admin", exact=True)).to_be_visible()  # namespaces table
        page.wait_for_timeout(1500)  # two stats ticks for the charts
        page.screenshot(path=str(tmp_path / "dashboard.png"))
        print("screenshots in", tmp_path)
        assert errors == []
    finally:
        peer.close()
