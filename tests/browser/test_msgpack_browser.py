"""The served ``socket.io.msgpack.min.js`` (the official browser client built with
``socket.io-msgpack-parser``) in Chromium against ``serializer='msgpack'``.

The page is one of the server's own (same origin, no network); the client sends
an ``ArrayBuffer`` (the browser build of ``notepack.io`` writes it as msgpack
``bin``) and gets bytes back in an ack, over WebSocket and long-polling.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from nodepeer import ServerProcess, free_port, started  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

ROUND_TRIP = """async (transport) => {
  const socket = io({ transports: [transport], reconnection: false });
  await new Promise((ok, fail) => { socket.on("connect", ok); socket.on("connect_error", fail); });
  // The whole ack (emitWithAck resolves with its first argument only).
  const call = (...args) => new Promise((ok) => socket.emit(...args, (...ack) => ok(ack)));
  const sent = new Uint8Array([1, 2, 3, 255]);
  const [back, length] = await call("reverse_bytes", sent.buffer, { n: 1 });
  const echoed = await call("echo", "h\\u00e9", 1.5, [null, true]);
  const transportName = socket.io.engine.transport.name;
  socket.disconnect();
  return { back: Array.from(new Uint8Array(back)), isBuffer: back instanceof ArrayBuffer,
           length, echoed, transportName };
}"""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    port = free_port()
    app = [sys.executable, "tests/integration/sio_app.py", "--port", str(port)]
    with started([*app, "--serializer", "msgpack"], port) as s:
        yield s


@pytest.fixture(scope="module")
def page(server: ServerProcess) -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("Chromium is required: apt-get install -y chromium (make system-deps)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(server.url + "/stats")  # any page of the server: its origin
            page.add_script_tag(url=server.url + "/socket.io/socket.io.msgpack.min.js")
            yield page
        finally:
            browser.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_browser_client_with_msgpack(page: Any, transport: str) -> None:
    result = page.evaluate(ROUND_TRIP, transport)
    assert result == {
        "back": [255, 3, 2, 1],
        "isBuffer": True,
        "length": 4,
        "echoed": ["h\u00e9", 1.5, [None, True]],
        "transportName": transport,
    }
