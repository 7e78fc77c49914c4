"""Issue 3 item 2 through the public Flask face: every HTTP error and every option, raw.

tests/engine covers the same surface on the bare Engine.IO server; these run
``SocketIO(app, **flask_socketio_style_options)`` on its own server and talk raw
HTTP (``http.client``) and raw WebSocket (``websockets``) to it, so an option
that the Flask face drops or renames on its way to the engine fails here.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from typing import Any

import pytest
from acceptance_helpers import Response, request, serve, wait_until
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

PATH = "/socket.io/"


def _error(resp: Response) -> tuple[int, int, str]:
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"code", "message"}, body
    return resp.status, body["code"], body["message"]


def _open(port: int, **headers: str) -> tuple[Response, dict[str, Any]]:
    resp = request(port, "GET", PATH + "?EIO=4&transport=polling", headers=headers)
    assert resp.status == 200, (resp.status, resp.body)
    assert resp.text[0] == "0"
    return resp, json.loads(resp.text[1:])


def _sio_connect_polling(port: int) -> tuple[str, str]:
    """Engine.IO open + Socket.IO CONNECT over polling; (eio sid, socket.io sid)."""
    _, opened = _open(port)
    sid = opened["sid"]
    assert request(port, "POST", f"{PATH}?EIO=4&transport=polling&sid={sid}", "40").text == "ok"
    reply = request(port, "GET", f"{PATH}?EIO=4&transport=polling&sid={sid}").text
    assert reply.startswith("40{"), reply
    return sid, json.loads(reply[2:].split("\x1e")[0])["sid"]


@pytest.mark.parametrize(
    ("method", "query", "expected"),
    [
        ("GET", "EIO=4&transport=smoke-signals", (400, 0, "Transport unknown")),
        ("GET", "EIO=4", (400, 0, "Transport unknown")),
        ("GET", "EIO=4&transport=polling&sid=no-such-sid", (400, 1, "Session ID unknown")),
        ("POST", "EIO=4&transport=polling&sid=no-such-sid", (400, 1, "Session ID unknown")),
        ("POST", "EIO=4&transport=polling", (400, 2, "Bad handshake method")),
        ("DELETE", "EIO=4&transport=polling", (400, 2, "Bad handshake method")),
        ("GET", "EIO=4&transport=websocket", (400, 3, "Bad request")),  # no Upgrade header
        ("GET", "transport=polling", (400, 5, "Unsupported protocol version")),
        ("GET", "EIO=5&transport=polling", (400, 5, "Unsupported protocol version")),
    ],
)
def test_http_errors_are_json_code_and_message(method: str, query: str, expected: Any) -> None:
    connects: list[str] = []
    with serve() as served:
        served.sio.on("connect")(lambda: connects.append("connect"))
        body = b"40" if method != "GET" else b""
        resp = request(served.port, method, f"{PATH}?{query}", body)
        assert _error(resp) == expected
    assert connects == []


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_eio3_client_is_told_what_to_upgrade(transport: str) -> None:
    with serve() as served:
        query = f"EIO=3&transport={transport}"
        if transport == "polling":
            status, code, message = _error(request(served.port, "GET", f"{PATH}?{query}"))
        else:
            with pytest.raises(InvalidStatus) as info:
                connect(f"ws://127.0.0.1:{served.port}{PATH}?{query}", open_timeout=5)
            response = info.value.response
            status = response.status_code
            body = json.loads(response.body)
            code, message = body["code"], body["message"]
    assert (status, code) == (400, 5)
    # Names the mismatch (the client speaks v3, the server v4) and what to upgrade.
    assert "v3" in message and "v4" in message, message
    assert "upgrade" in message.lower() and "client" in message.lower(), message


def test_default_is_same_origin_only_for_polling_and_websocket() -> None:
    with serve() as served:
        same = f"http://127.0.0.1:{served.port}"
        resp, _ = _open(served.port, Origin=same)
        assert resp.headers["access-control-allow-origin"] == same
        refused = request(
            served.port, "GET", PATH + "?EIO=4&transport=polling",
            headers={"Origin": "http://evil.example"},
        )  # fmt: skip
        assert refused.status == 400
        assert refused.json() == "http://evil.example is not an accepted origin."
        assert "access-control-allow-origin" not in refused.headers
        with pytest.raises(InvalidStatus) as info:
            connect(served.ws_url, origin="http://evil.example", open_timeout=5)  # type: ignore[arg-type]
        assert info.value.response.status_code == 400
        with connect(served.ws_url, origin=same, open_timeout=5) as ws:  # type: ignore[arg-type]
            assert ws.recv(timeout=5).startswith("0{")
        # Without an Origin header (not a browser) the request goes through.
        _open(served.port)


def test_cors_allowed_origins_star_and_list() -> None:
    with serve(cors_allowed_origins="*") as served:
        resp, _ = _open(served.port, Origin="http://anything.example")
        assert resp.headers["access-control-allow-origin"] == "http://anything.example"
    with serve(cors_allowed_origins=["http://a.example"]) as served:
        _open(served.port, Origin="http://a.example")
        with pytest.raises(InvalidStatus) as info:
            connect(served.ws_url, origin="http://b.example", open_timeout=5)  # type: ignore[arg-type]
        assert info.value.response.status_code == 400


def test_empty_cors_list_disables_cors_handling() -> None:
    """Flask-SocketIO's ``cors_allowed_origins=[]``: no origin check, no CORS headers."""
    with serve(cors_allowed_origins=[]) as served:
        resp, _ = _open(served.port, Origin="http://elsewhere.example")
        assert not any(name.startswith("access-control-") for name in resp.headers)
        with connect(served.ws_url, origin="http://elsewhere.example", open_timeout=5) as ws:  # type: ignore[arg-type]
            assert ws.recv(timeout=5).startswith("0{")


def test_cors_star_in_a_list_and_a_callable_like_the_reference() -> None:
    """python-engineio: ``["*"]`` allows every origin; a callable decides per origin."""
    with serve(cors_allowed_origins=["*"]) as served:
        resp, _ = _open(served.port, Origin="http://any.example")
        assert resp.headers["access-control-allow-origin"] == "http://any.example"
    seen: list[Any] = []

    def allowed(origin: str, environ: dict[str, Any]) -> bool:
        seen.append((origin, environ["PATH_INFO"]))
        return origin.endswith(".good.example")

    with serve(cors_allowed_origins=allowed) as served:
        _open(served.port, Origin="http://a.good.example")
        refused = request(
            served.port, "GET", PATH + "?EIO=4&transport=polling",
            headers={"Origin": "http://bad.example"},
        )  # fmt: skip
        assert refused.status == 400
        assert refused.json() == "http://bad.example is not an accepted origin."
        with pytest.raises(InvalidStatus) as info:
            connect(served.ws_url, origin="http://bad.example", open_timeout=5)  # type: ignore[arg-type]
        assert info.value.response.status_code == 400
        with connect(served.ws_url, origin="http://b.good.example", open_timeout=5) as ws:  # type: ignore[arg-type]
            assert ws.recv(timeout=5).startswith("0{")
    assert seen[0] == ("http://a.good.example", PATH)
    with serve(cors_allowed_origins=lambda origin: origin == "http://one.example") as served:
        _open(served.port, Origin="http://one.example")  # the one-argument form


def test_same_origin_behind_a_proxy() -> None:
    """The page's origin as a proxy reports it (X-Forwarded-Proto / -Host) is the same origin."""
    with serve() as served:
        _open(served.port, Origin="https://public.example", **{
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"})  # fmt: skip
        _open(served.port, Origin="https://public.example", Host="public.example",
              **{"X-Forwarded-Proto": "https"})  # fmt: skip
        with connect(
            served.ws_url,
            origin="https://public.example",  # type: ignore[arg-type]
            additional_headers={"X-Forwarded-Host": "public.example", "X-Forwarded-Proto": "https"},
            open_timeout=5,
        ) as ws:
            assert ws.recv(timeout=5).startswith("0{")
        refused = request(
            served.port, "GET", PATH + "?EIO=4&transport=polling",
            headers={"Origin": "https://other.example", "X-Forwarded-Host": "public.example"},
        )  # fmt: skip
        assert refused.status == 400


def test_oversized_post_is_413_and_closes_the_session() -> None:
    disconnects: list[str] = []
    with serve(max_http_buffer_size=1000) as served:
        served.sio.on("disconnect")(lambda reason: disconnects.append(reason))
        sid, _ = _sio_connect_polling(served.port)
        target = f"{PATH}?EIO=4&transport=polling&sid={sid}"
        resp = request(served.port, "POST", target, '42["big","' + "x" * 2000 + '"]')
        assert resp.status == 413
        wait_until(lambda: disconnects, what="the disconnect handler")
        # The session is gone: the next request on it is told so.
        gone = request(served.port, "GET", target)
        assert gone.status == 400 or gone.text.startswith("1")


def test_open_packet_exact_keys_and_milliseconds_without_truncation() -> None:
    with serve(ping_interval=0.3, ping_timeout=0.25, max_http_buffer_size=12345) as served:
        _, opened = _open(served.port)
        assert set(opened) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
        assert opened["pingInterval"] == 300
        assert opened["pingTimeout"] == 250
        assert opened["maxPayload"] == 12345
        assert opened["upgrades"] == ["websocket"]
        with connect(served.ws_url, open_timeout=5) as ws:
            over_ws = json.loads(ws.recv(timeout=5)[1:])
        assert set(over_ws) == set(opened)
        assert (over_ws["pingInterval"], over_ws["upgrades"]) == (300, [])


def test_cors_credentials_option() -> None:
    with serve(cors_allowed_origins="*") as served:
        resp, _ = _open(served.port, Origin="http://x.example")
        assert resp.headers["access-control-allow-credentials"] == "true"
    with serve(cors_allowed_origins="*", cors_credentials=False) as served:
        resp, _ = _open(served.port, Origin="http://x.example")
        assert resp.headers["access-control-allow-origin"] == "http://x.example"
        assert "access-control-allow-credentials" not in resp.headers


def test_cookie_option() -> None:
    with serve(cookie={"name": "stick", "path": "/here", "httponly": True}) as served:
        resp, opened = _open(served.port)
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith(f"stick={opened['sid']}"), cookie
        assert "Path=/here" in cookie and "HttpOnly" in cookie
    # The reference's (python-engineio's) dict form: attribute names as written in the
    # header, True for a flag, callables for values computed per cookie.
    reference_style = {
        "name": "io",
        "SameSite": "Strict",
        "Secure": True,
        "HttpOnly": False,
        "Expires": lambda: "Wed, 01 Jan 2031 00:00:00 GMT",
    }
    with serve(cookie=reference_style) as served:
        resp, opened = _open(served.port)
        cookie = resp.headers["set-cookie"]
        attributes = [part.strip() for part in cookie.split(";")]
        assert attributes[0] == f"io={opened['sid']}"
        assert "Secure" in attributes and "SameSite=Strict" in attributes, cookie
        assert "Expires=Wed, 01 Jan 2031 00:00:00 GMT" in attributes, cookie
        assert "HttpOnly" not in attributes and "SameSite=Lax" not in attributes, cookie
    with serve(cookie=True) as served:  # True: the default name, like python-engineio
        resp, opened = _open(served.port)
        assert resp.headers["set-cookie"].startswith(f"io={opened['sid']};")
    with serve() as served:  # default: no cookie
        resp, _ = _open(served.port)
        assert "set-cookie" not in resp.headers


@pytest.mark.parametrize("grace", [0.0, 1.5])
def test_ping_interval_grace_period_delays_the_timeout(grace: float) -> None:
    # python-engineio's (interval, grace) form: a client that never answers the
    # ping is closed after ping_timeout without grace, after ping_timeout + grace with.
    with serve(ping_interval=(0.2, grace) if grace else 0.2, ping_timeout=0.2) as served:
        _, opened = _open(served.port)
        poll = f"{PATH}?EIO=4&transport=polling&sid={opened['sid']}"
        assert request(served.port, "GET", poll).text == "2"  # the ping; never answered
        # Probe with a POST (a GET would be held until the next packet).

        def state() -> str:
            resp = request(served.port, "POST", poll, "6")
            return "open" if resp.status == 200 else "closed"

        if grace:
            time.sleep(0.6)  # three ping timeouts: closed by now without the grace
            assert state() == "open"
        wait_until(lambda: state() == "closed", timeout=5)


def _poll_big(served: Any, size: int, encoding: str) -> Response:
    sid, sio_sid = _sio_connect_polling(served.port)
    served.sio.emit("big", "z" * size, to=sio_sid)
    return request(
        served.port, "GET", f"{PATH}?EIO=4&transport=polling&sid={sid}",
        headers={"Accept-Encoding": encoding},
    )  # fmt: skip


def test_http_compression_and_threshold() -> None:
    expected = b'42["big","' + b"z" * 3000 + b'"]'
    with serve(compression_threshold=1024) as served:  # http_compression defaults to True
        resp = _poll_big(served, 3000, "gzip")
        assert resp.headers.get("content-encoding") == "gzip"
        assert gzip.decompress(resp.body) == expected
        resp = _poll_big(served, 3000, "deflate")
        assert resp.headers.get("content-encoding") == "deflate"
        assert zlib.decompress(resp.body) == expected
        small = _poll_big(served, 100, "gzip")  # under the threshold
        assert "content-encoding" not in small.headers
        assert small.text == '42["big","' + "z" * 100 + '"]'
    with serve(compression_threshold=10_000) as served:
        assert "content-encoding" not in _poll_big(served, 3000, "gzip").headers
    with serve(http_compression=False, compression_threshold=10) as served:
        resp = _poll_big(served, 3000, "gzip")
        assert "content-encoding" not in resp.headers
        assert resp.body == expected


def test_allow_upgrades_false() -> None:
    with serve(allow_upgrades=False) as served:
        _, opened = _open(served.port)
        assert opened["upgrades"] == []
        url = served.ws_url + f"&sid={opened['sid']}"
        with pytest.raises(InvalidStatus) as info:
            connect(url, open_timeout=5)
        assert info.value.response.status_code == 400
        with connect(served.ws_url, open_timeout=5) as ws:  # a fresh WebSocket is fine
            assert ws.recv(timeout=5).startswith("0{")


def test_transports_websocket_only() -> None:
    with serve(transports=["websocket"]) as served:
        refused = request(served.port, "GET", PATH + "?EIO=4&transport=polling")
        assert _error(refused) == (400, 0, "Transport unknown")
        with connect(served.ws_url, open_timeout=5) as ws:
            assert ws.recv(timeout=5).startswith("0{")
            ws.send("40")
            assert ws.recv(timeout=5).startswith("40{")
