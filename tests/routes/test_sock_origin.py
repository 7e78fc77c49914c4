"""The Origin policy of WebSocket routes (cross-site WebSocket hijacking).

A real client sends ``Origin`` headers to the own server and to Werkzeug's
(``flask run``) through the middleware: same origin by default, clients that
send none pass, ``allowed_origins`` (argument or ``SOCK_ALLOWED_ORIGINS``)
widens it, and a refusal is a 403 plus a warning naming the setting.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from flask_relay import Sock, WebSocketTestClient
from flask_relay.sock import UNSET
from flask_relay.ws_testing import UpgradeRefused

sys.path.insert(0, str(Path(__file__).parent))
from wshelpers import served_app as served  # noqa: E402

EVIL = "http://evil.example"
DEV = "http://localhost:3000"


def make_app(allowed: Any = UNSET, config: Any = UNSET) -> Flask:
    app = Flask(__name__)
    if config is not UNSET:
        app.config["SOCK_ALLOWED_ORIGINS"] = config
    sock = Sock(app, allowed_origins=allowed)

    @sock.route("/echo")
    def echo(ws: Any) -> None:
        while (message := ws.receive()) is not None:
            ws.send(message)

    @sock.route("/async")
    async def echo_async(ws: Any) -> None:
        await ws.send(await ws.receive())

    return app


def opens(port: int, origin: str | None, path: str = "/echo", **headers: str) -> bool:
    try:
        with connect(
            f"ws://127.0.0.1:{port}{path}", origin=origin,  # type: ignore[arg-type]
            additional_headers=headers, open_timeout=5,
        ) as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
            return True
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        assert b"is not allowed" in exc.response.body
        return False


@pytest.mark.parametrize("door", ["own", "werkzeug"])
def test_same_origin_by_default(door: str, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    with served(app, door) as port, caplog.at_level(logging.WARNING, "flask_relay.sock"):
        assert opens(port, None)  # not a browser
        assert opens(port, f"http://127.0.0.1:{port}")
        assert not opens(port, f"http://127.0.0.1:{port + 1}")  # another port
        assert not opens(port, EVIL)
        assert not opens(port, EVIL, path="/async")
        assert opens(port, "https://public.example", **{
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"})
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refusals) == 3, refusals
    assert f"from Origin {EVIL}" in refusals[1]
    assert f"Sock(app, allowed_origins=['{EVIL}'])" in refusals[1]
    assert f"app.config['SOCK_ALLOWED_ORIGINS'] = ['{EVIL}']" in refusals[1]
    assert "/async" in refusals[2]


@pytest.mark.parametrize(
    ("allowed", "config"),
    [([DEV], UNSET), (DEV, UNSET), (UNSET, [DEV]), (UNSET, "*"), ("*", None),
     (lambda origin: origin == DEV, UNSET), (lambda origin, environ: "3000" in origin, UNSET)],
)
def test_allowed_origins_argument_and_config(allowed: Any, config: Any) -> None:
    app = make_app(allowed, config)
    with served(app, "own") as port:
        assert opens(port, DEV)
        assert opens(port, None)
        wildcard = "*" in (allowed, config)
        assert opens(port, EVIL) is wildcard


def test_argument_wins_over_config_and_the_log_extends_the_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(allowed=["http://a.example"], config="*")
    with served(app, "own") as port, caplog.at_level(logging.WARNING, "flask_relay.sock"):
        assert opens(port, "http://a.example")
        assert not opens(port, DEV)
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"allowed_origins=['http://a.example', '{DEV}']" in message


def test_empty_list_turns_the_check_off() -> None:
    app = make_app(allowed=[])
    with served(app, "werkzeug") as port:
        assert opens(port, EVIL)


def test_test_client_sends_origin() -> None:
    client = WebSocketTestClient(make_app())
    with pytest.raises(UpgradeRefused) as info:
        client.connect("/echo", headers={"Origin": EVIL})
    assert info.value.status_code == 403
    with client.connect("/echo", headers={"Origin": "http://localhost"}) as ws:
        ws.send("same")
        assert ws.receive() == "same"
