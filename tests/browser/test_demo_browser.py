"""The demo in a real browser (Chromium via Playwright): two tabs chatting, the live
panel updating, the WebSocket echo page; every request must stay on 127.0.0.1."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from nodepeer import ROOT, ServerProcess, free_port, started  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def demo() -> Iterator[ServerProcess]:
    port = free_port()
    app = ROOT / "examples" / "demo" / "app.py"
    with started([sys.executable, str(app)], port, env={"DEMO_PORT": str(port)}) as server:
        yield server


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
def context(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A browser context where any request leaving 127.0.0.1 is refused and recorded:
    the demo must work with no internet."""
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []

    def guard(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ctx.route("**/*", guard)
    try:
        yield ctx, outside
    finally:
        ctx.close()


def _open_chat(ctx: Any, url: str, nick: str, errors: list[str]) -> Any:
    page = ctx.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{nick}: {exc}"))
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#nick", nick)
    page.dispatch_event("#nick", "change")
    page.wait_for_function(
        "nick => [...document.querySelectorAll('#members li')].some(li => li.textContent === nick)",
        arg=nick,
    )
    return page


def _lines(page: Any) -> list[str]:
    texts: list[str] = page.eval_on_selector_all(
        "#messages li:not(.system)", "items => items.map(li => li.textContent)"
    )
    # Drop the leading time stamp ("12:34:56 nick: text").
    return [text.split(" ", 1)[1] for text in texts]


def _wait_line(page: Any, line: str) -> None:
    page.wait_for_function(
        "line => [...document.querySelectorAll('#messages li:not(.system)')]"
        ".some(li => li.textContent.endsWith(line))",
        arg=line,
    )


def test_two_tabs_chat(demo: ServerProcess, context: tuple[Any, list[str]]) -> None:
    ctx, outside = context
    errors: list[str] = []
    alice = _open_chat(ctx, demo.url, "alice", errors)
    bob = _open_chat(ctx, demo.url, "bob", errors)
    for page, other in ((alice, "bob"), (bob, "alice")):
        page.wait_for_function(
            "nick => [...document.querySelectorAll('#members li')]"
            ".some(li => li.textContent === nick)",
            arg=other,
        )

    # Typing in one tab shows a notice in the other.
    alice.type("#text", "hello bob")
    bob.wait_for_function(
        "document.getElementById('typing').textContent.startsWith('alice is typing')"
    )
    alice.press("#text", "Enter")
    bob.fill("#text", "hi alice")
    bob.click("#send")
    for page in (alice, bob):
        _wait_line(page, "alice: hello bob")
        _wait_line(page, "bob: hi alice")
        lines = _lines(page)
        assert lines.index("alice: hello bob") < lines.index("bob: hi alice"), lines
    # Sending ended alice's typing notice in bob's tab.
    bob.wait_for_function("document.getElementById('typing').textContent === ''")

    # Both tabs receive the live panel's values.
    for page in (alice, bob):
        page.wait_for_function("document.getElementById('live-n').textContent !== '–'")
        first = int(page.text_content("#live-n"))
        page.wait_for_function(
            "n => Number(document.getElementById('live-n').textContent) > n", arg=first
        )
        value = float(page.text_content("#live-value"))
        assert 0 <= value <= 100
    assert alice.text_content("#transport") in ("polling", "websocket")

    assert errors == []
    assert outside == []


def test_echo_page(demo: ServerProcess, context: tuple[Any, list[str]]) -> None:
    ctx, outside = context
    page = ctx.new_page()
    page.goto(demo.url + "/echo")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#echo-text", "ping from the browser")
    page.click("#echo-send")
    page.wait_for_selector("#echo-log li.in")
    assert page.text_content("#echo-log li.in") == "\u2190 ping from the browser"
    assert outside == []
