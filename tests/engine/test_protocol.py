"""Engine.IO over raw HTTP and WebSocket requests: handshake, polling, upgrade, errors."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import zlib
from typing import Any

import pytest
from eio_helpers import (
    Background,
    handshake,
    poll,
    post,
    request,
    wait_for,
    ws_connect,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

from flask_relay.engine.eio import SessionPhase

# -- handshake ------------------------------------------------------------------------


def test_handshake_open_packet(make_engine: Any) -> None:
    running = make_engine(ping_interval=0.3, ping_timeout=1.25, max_http_buffer_size=5000)
    resp = request(running.port, "GET", "/engine.io/?EIO=4&transport=polling&t=abc")
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/plain; charset=UTF-8"
    assert resp.text[0] == "0"
    data = json.loads(resp.text[1:])
    assert set(data) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert data["upgrades"] == ["websocket"]
    assert data["pingInterval"] == 300
    assert data["pingTimeout"] == 1250
    assert data["maxPayload"] == 5000
    assert isinstance(data["sid"], str) and data["sid"]
    wait_for(lambda: running.recorder.of("connect"))
    assert running.engine.transport(data["sid"]) == "polling"


@pytest.mark.parametrize(
    "options", [{"allow_upgrades": False}, {"transports": ["polling"]}], ids=["no-upgrades", "poll"]
)
def test_handshake_without_upgrades(make_engine: Any, options: dict[str, Any]) -> None:
    running = make_engine(**options)
    _, data = handshake(running.port)
    assert data["upgrades"] == []


def test_websocket_handshake(make_engine: Any) -> None:
    running = make_engine()
    with ws_connect(running.port) as ws:
        opened = ws.recv(timeout=5)
        assert opened[0] == "0"
        data = json.loads(opened[1:])
        assert set(data) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
        assert data["upgrades"] == []
        assert data["pingInterval"] == 25000 and data["pingTimeout"] == 20000
        ws.send("4hi")
        assert ws.recv(timeout=5) == "4hi"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=5) == b"\x00\xff"
        ws.send("bAQID")  # base64 binary in a text frame (forceBase64 clients)
        assert ws.recv(timeout=5) == b"\x01\x02\x03"
        ws.send("1")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport close"
    assert [e[2] for e in rec.of("message")] == ["hi", b"\x00\xff", b"\x01\x02\x03"]


# -- HTTP errors ---------------------------------------------------------------------------


def error(resp: Any) -> tuple[int, int, str]:
    body = resp.json()
    assert set(body) == {"code", "message"}
    assert resp.headers["content-type"] == "application/json"
    return resp.status, body["code"], body["message"]


@pytest.mark.parametrize(
    ("method", "query", "expected"),
    [
        ("GET", "EIO=4&transport=carrier-pigeon", (400, 0, "Transport unknown")),
        ("GET", "EIO=4", (400, 0, "Transport unknown")),
        ("GET", "EIO=4&transport=polling&sid=nope", (400, 1, "Session ID unknown")),
        ("POST", "EIO=4&transport=polling&sid=nope", (400, 1, "Session ID unknown")),
        ("POST", "EIO=4&transport=polling", (400, 2, "Bad handshake method")),
        ("PUT", "EIO=4&transport=polling", (400, 2, "Bad handshake method")),
        ("GET", "EIO=4&transport=websocket", (400, 3, "Bad request")),
        ("GET", "transport=polling", (400, 5, "Unsupported protocol version")),
        ("GET", "EIO=5&transport=polling", (400, 5, "Unsupported protocol version")),
    ],
)
def test_http_errors(make_engine: Any, method: str, query: str, expected: Any) -> None:
    running = make_engine()
    resp = request(running.port, method, f"/engine.io/?{query}", b"4x" if method != "GET" else b"")
    assert error(resp) == expected
    assert running.recorder.of("connect") == []


def test_eio3_client_is_told_to_upgrade(make_engine: Any) -> None:
    running = make_engine()
    resp = request(running.port, "GET", "/engine.io/?EIO=3&transport=polling")
    status, code, message = error(resp)
    assert (status, code) == (400, 5)
    assert "Engine.IO v3" in message and "Engine.IO v4" in message
    assert "v3 or later" in message and "v4" in message


def test_transport_not_enabled(make_engine: Any) -> None:
    running = make_engine(transports=["websocket"])
    resp = request(running.port, "GET", "/engine.io/?EIO=4&transport=polling")
    assert error(resp) == (400, 0, "Transport unknown")
    running = make_engine(transports=["polling"])
    with pytest.raises(InvalidStatus) as info:
        ws_connect(running.port)
    assert info.value.response.status_code == 400
    assert json.loads(info.value.response.body)["code"] == 0


def test_websocket_errors(make_engine: Any) -> None:
    running = make_engine()
    for query, code in [
        ("EIO=4&transport=websocket&sid=nope", 1),
        ("EIO=3&transport=websocket", 5),
        ("EIO=4&transport=polling", 0),
    ]:
        with pytest.raises(InvalidStatus) as info:
            ws_connect(running.port, query)
        assert info.value.response.status_code == 400
        assert json.loads(info.value.response.body)["code"] == code


@pytest.mark.parametrize(
    "body",
    [b"x-not-a-packet", b"", b"4ok\x1e", b"b!!not base64", b"4\xff\xfe"],
    ids=["type", "empty", "empty-packet", "base64", "utf8"],
)
def test_bad_post_body_closes_session(make_engine: Any, body: bytes) -> None:
    running = make_engine()
    sid, _ = handshake(running.port)
    resp = post(running.port, sid, body)
    assert resp.status == 400
    assert resp.json()["code"] == 3
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "parse error"
    # As the reference servers: the session is gone at once (no close packet waits).
    assert error(poll(running.port, sid))[:2] == (400, 1)


def test_bad_post_releases_the_held_get_with_a_close_packet(make_engine: Any) -> None:
    running = make_engine()
    sid, _ = handshake(running.port)
    held = Background(poll, running.port, sid)
    wait_for(lambda: running.engine._sessions[sid].held is not None)
    assert error(post(running.port, sid, "9"))[:2] == (400, 3)  # an unknown packet type
    assert held.result().text == "1"
    assert error(poll(running.port, sid))[:2] == (400, 1)


def test_oversized_post_is_413_and_closes(make_engine: Any) -> None:
    running = make_engine(max_http_buffer_size=1000)
    sid, data = handshake(running.port)
    assert data["maxPayload"] == 1000
    resp = post(running.port, sid, "4" + "x" * 2000)
    assert resp.status == 413
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport error"
    assert rec.of("message") == []
    # Exactly at the limit is fine.
    sid2, _ = handshake(running.port)
    assert post(running.port, sid2, "4" + "y" * 999).text == "ok"
    assert wait_for(lambda: rec.of("message"))[0][2] == "y" * 999


def test_oversized_websocket_message_closes(make_engine: Any) -> None:
    running = make_engine(max_http_buffer_size=1000)
    with ws_connect(running.port, max_size=None) as ws:
        ws.recv(timeout=5)
        ws.send("4" + "x" * 2000)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport error"


# -- long-polling --------------------------------------------------------------------------


def test_post_ok_and_held_get(make_engine: Any) -> None:
    running = make_engine(echo=False)
    sid, _ = handshake(running.port)
    held = Background(poll, running.port, sid)
    wait_for(lambda: running.engine._sessions[sid].held is not None)
    assert not held.done()
    resp = post(running.port, sid, "4one\x1e4two\x1ebAQID")
    assert (resp.status, resp.text) == (200, "ok")
    rec = running.recorder
    wait_for(lambda: len(rec.of("message")) == 3)
    assert [e[2] for e in rec.of("message")] == ["one", "two", b"\x01\x02\x03"]
    running.engine.send(sid, "back")
    assert held.result().text == "4back"


def test_payload_batching(make_engine: Any) -> None:
    running = make_engine(echo=False)
    sid, _ = handshake(running.port)
    engine = running.engine
    engine.send(sid, "a")
    engine.send_many(sid, ["b", b"\x00\x01"])
    prepared = engine.prepare(["c"])
    engine.send_prepared([sid], prepared)
    wait_for(lambda: len(engine._sessions[sid].queue) == 4)
    resp = poll(running.port, sid)
    assert resp.text == "4a\x1e4b\x1ebAAE=\x1e4c"


def test_overlapping_get_is_an_error(make_engine: Any) -> None:
    running = make_engine(echo=False)
    sid, _ = handshake(running.port)
    first = Background(poll, running.port, sid)
    wait_for(lambda: running.engine._sessions[sid].held is not None)
    second = poll(running.port, sid)
    assert error(second)[:2] == (400, 3)
    assert first.result().text == "1"
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport error"


def test_client_close_over_polling(make_engine: Any) -> None:
    running = make_engine(echo=False)
    sid, _ = handshake(running.port)
    held = Background(poll, running.port, sid)
    wait_for(lambda: running.engine._sessions[sid].held is not None)
    assert post(running.port, sid, "1").text == "ok"
    assert held.result().text == "6"
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport close"
    assert error(poll(running.port, sid))[:2] == (400, 1)


def test_abandoned_get_closes_session(make_engine: Any) -> None:
    import socket

    running = make_engine(echo=False)
    sid, _ = handshake(running.port)
    sock = socket.create_connection(("127.0.0.1", running.port))
    sock.sendall(
        f"GET /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    wait_for(lambda: running.engine._sessions[sid].held is not None)
    sock.close()
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport error"
    assert running.engine.session_count == 0


def test_server_disconnect_between_polls(make_engine: Any) -> None:
    running = make_engine(echo=False)
    sid, _ = handshake(running.port)
    running.engine.send(sid, "last words")
    running.engine.disconnect(sid)
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "forced close"
    # What was sent before the disconnect still arrives, then the close packet.
    assert poll(running.port, sid).text == "4last words\x1e1"
    assert error(poll(running.port, sid))[:2] == (400, 1)


def test_server_disconnect(make_engine: Any) -> None:
    running = make_engine(echo=False)
    sid, _ = handshake(running.port)
    held = Background(poll, running.port, sid)
    wait_for(lambda: running.engine._sessions[sid].held is not None)
    running.engine.disconnect(sid)
    assert held.result().text == "1"
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "forced close"
    with ws_connect(running.port) as ws:
        wsid = json.loads(ws.recv(timeout=5)[1:])["sid"]
        running.engine.disconnect(wsid, "custom reason")
        assert ws.recv(timeout=5) == "1"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert wait_for(lambda: len(rec.of("disconnect")) == 2)
    assert rec.of("disconnect")[1] == ("disconnect", wsid, "custom reason")


# -- heartbeat ------------------------------------------------------------------------------


def test_heartbeat_polling(make_engine: Any) -> None:
    running = make_engine(echo=False, ping_interval=0.2, ping_timeout=0.5)
    sid, _ = handshake(running.port)
    for _ in range(2):
        assert poll(running.port, sid).text == "2"
        assert post(running.port, sid, "3").text == "ok"
    assert running.recorder.of("disconnect") == []
    # No pong this time.
    assert poll(running.port, sid).text == "2"
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "ping timeout"
    assert error(poll(running.port, sid))[:2] == (400, 1)


def test_polling_ping_timeout_without_a_pending_get(make_engine: Any) -> None:
    """A client that stops polling altogether is closed after ping_interval +
    ping_timeout, and its next GET gets 400 (the session is gone, as in the
    reference servers)."""
    import time

    running = make_engine(echo=False, ping_interval=0.3, ping_timeout=0.4)
    sid, _ = handshake(running.port)
    opened = time.monotonic()
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"), timeout=10)[0][2] == "ping timeout"
    assert time.monotonic() - opened >= 0.3 + 0.4 - 0.05
    assert running.engine.session_count == 0
    assert error(poll(running.port, sid))[:2] == (400, 1)


def test_monitor_clients_off_keeps_silent_clients(make_engine: Any) -> None:
    running = make_engine(echo=False, ping_interval=0.2, ping_timeout=0.2, monitor_clients=False)
    sid, _ = handshake(running.port)
    # Pings still go out (clients need them), but missing pongs close nothing.
    for _ in range(3):
        assert poll(running.port, sid).text == "2"
    assert running.recorder.of("disconnect") == []
    assert running.engine.transport(sid) == "polling"


def test_heartbeat_websocket(make_engine: Any) -> None:
    running = make_engine(echo=False, ping_interval=0.2, ping_timeout=0.5)
    with ws_connect(running.port) as ws:
        ws.recv(timeout=5)
        for _ in range(2):
            assert ws.recv(timeout=5) == "2"
            ws.send("3")
        assert ws.recv(timeout=5) == "2"
        rec = running.recorder
        assert wait_for(lambda: rec.of("disconnect"))[0][2] == "ping timeout"
        assert ws.recv(timeout=5) == "1"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)


def test_ping_from_client_is_an_error(make_engine: Any) -> None:
    running = make_engine(echo=False)
    with ws_connect(running.port) as ws:
        ws.recv(timeout=5)
        ws.send("2")
        assert ws.recv(timeout=5) == "1"
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "parse error"


def test_invalid_utf8_text_frame(make_engine: Any) -> None:
    import socket

    running = make_engine(echo=False)
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    try:
        sock.sendall(
            b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        rec = running.recorder
        wait_for(lambda: rec.of("connect"))
        # A masked text frame "4\xff": not UTF-8.
        mask = b"\x01\x02\x03\x04"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"4\xff"))
        sock.sendall(b"\x81\x82" + mask + payload)
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        # The close frame carries 1007 (invalid frame payload data).
        assert b"\x88" in data and b"\x03\xef" in data
        assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport error"
        assert rec.of("message") == []
    finally:
        sock.close()


def test_garbage_websocket_packet(make_engine: Any) -> None:
    running = make_engine(echo=False)
    with ws_connect(running.port) as ws:
        ws.recv(timeout=5)
        ws.send("zzz")
        assert ws.recv(timeout=5) == "1"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "parse error"
    # The server carries on.
    sid, _ = handshake(running.port)
    assert sid


# -- upgrade --------------------------------------------------------------------------------


def test_upgrade_sequence(make_engine: Any) -> None:
    running = make_engine(echo=False)
    engine = running.engine
    sid, _ = handshake(running.port)
    held = Background(poll, running.port, sid)
    wait_for(lambda: engine._sessions[sid].held is not None)
    with ws_connect(running.port, f"EIO=4&transport=websocket&sid={sid}") as ws:
        # Still polling until the upgrade completes.
        assert engine.transport(sid) == "polling"
        ws.send("2probe")
        assert ws.recv(timeout=5) == "3probe"
        assert held.result().text == "6"
        # Sent during the upgrade: delivered over the WebSocket afterwards.
        engine.send(sid, "queued")
        wait_for(lambda: engine._sessions[sid].queue)
        ws.send("5")
        assert ws.recv(timeout=5) == "4queued"
        assert engine.transport(sid) == "websocket"
        ws.send("4over ws")
        rec = running.recorder
        assert wait_for(lambda: rec.of("message"))[0][2] == "over ws"
        # Polling requests for an upgraded session are refused.
        assert error(poll(running.port, sid))[:2] == (400, 3)
        # A second WebSocket for the same sid: accepted, then closed (as npm
        # engine.io does); the session goes on over the first one.
        with ws_connect(running.port, f"EIO=4&transport=websocket&sid={sid}") as second:
            with pytest.raises(ConnectionClosed) as closed:
                second.recv(timeout=5)
            assert closed.value.rcvd is not None
        engine.send(sid, "still here")
        assert ws.recv(timeout=5) == "4still here"
    assert wait_for(lambda: rec.of("disconnect"))[0][2] == "transport close"
    assert len(rec.of("connect")) == 1


def test_session_phase_follows_the_session(make_engine: Any) -> None:
    """SessionPhase through a session's life: polling, upgrading, back to polling
    (probe dropped), upgrading again, websocket, closed; and a polling session
    closed by the server lingers as CLOSING until its GET takes the close packet."""
    running = make_engine(echo=False)
    engine = running.engine
    sid, _ = handshake(running.port)
    session = engine._sessions[sid]
    assert session.phase is SessionPhase.POLLING
    with ws_connect(running.port, f"EIO=4&transport=websocket&sid={sid}") as ws:
        wait_for(lambda: session.phase is SessionPhase.UPGRADING)
    wait_for(lambda: session.phase is SessionPhase.POLLING)
    with ws_connect(running.port, f"EIO=4&transport=websocket&sid={sid}") as ws:
        ws.send("2probe")
        assert ws.recv(timeout=5) == "3probe"
        assert session.phase is SessionPhase.UPGRADING
        ws.send("5")
        wait_for(lambda: session.phase is SessionPhase.WEBSOCKET)
        assert engine.transport(sid) == "websocket"
    wait_for(lambda: session.phase is SessionPhase.CLOSED)

    sid, _ = handshake(running.port)
    session = engine._sessions[sid]
    engine.disconnect(sid)
    wait_for(lambda: session.phase is SessionPhase.CLOSING)
    assert poll(running.port, sid).text == "1"
    assert session.phase is SessionPhase.CLOSED


def test_upgrade_timeout_keeps_polling(make_engine: Any) -> None:
    running = make_engine(echo=False, upgrade_timeout=0.3)
    engine = running.engine
    sid, _ = handshake(running.port)
    with ws_connect(running.port, f"EIO=4&transport=websocket&sid={sid}") as ws:
        ws.send("2probe")
        assert ws.recv(timeout=5) == "3probe"
        # No "5": the probe socket is dropped, polling carries on.
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert engine.transport(sid) == "polling"
    engine.send(sid, "still here")
    assert poll(running.port, sid).text == "4still here"
    assert running.recorder.of("disconnect") == []


def test_probe_socket_closing_keeps_polling(make_engine: Any) -> None:
    running = make_engine(echo=False)
    engine = running.engine
    sid, _ = handshake(running.port)
    with ws_connect(running.port, f"EIO=4&transport=websocket&sid={sid}") as ws:
        ws.send("2probe")
        assert ws.recv(timeout=5) == "3probe"
    wait_for(lambda: engine._sessions[sid].probe is None)
    engine.send(sid, "polling")
    assert poll(running.port, sid).text == "4polling"
    assert running.recorder.of("disconnect") == []


def test_second_websocket_during_an_upgrade_or_on_a_websocket_session(
    make_engine: Any,
) -> None:
    """Accepted, then closed (npm engine.io); the first socket is not disturbed."""
    running = make_engine(echo=True)
    engine = running.engine
    sid, _ = handshake(running.port)
    query = f"EIO=4&transport=websocket&sid={sid}"
    with ws_connect(running.port, query) as probe:
        probe.send("2probe")
        assert probe.recv(timeout=5) == "3probe"
        with ws_connect(running.port, query) as second, pytest.raises(ConnectionClosed):
            second.recv(timeout=5)
        probe.send("5")
        probe.send("4echo me")
        assert probe.recv(timeout=5) == "4echo me"
    with ws_connect(running.port) as ws:
        wsid = json.loads(ws.recv(timeout=5)[1:])["sid"]
        again = f"EIO=4&transport=websocket&sid={wsid}"
        with ws_connect(running.port, again) as second, pytest.raises(ConnectionClosed):
            second.recv(timeout=5)
        ws.send("4and me")
        assert ws.recv(timeout=5) == "4and me"
    wait_for(lambda: engine.session_count == 0)


def test_upgrades_disabled(make_engine: Any) -> None:
    running = make_engine(allow_upgrades=False)
    sid, _ = handshake(running.port)
    with pytest.raises(InvalidStatus) as info:
        ws_connect(running.port, f"EIO=4&transport=websocket&sid={sid}")
    assert info.value.response.status_code == 400


# -- CORS, cookie, compression ----------------------------------------------------------


def test_same_origin_by_default(make_engine: Any) -> None:
    running = make_engine()
    host = f"127.0.0.1:{running.port}"
    resp = request(running.port, "GET", "/engine.io/?EIO=4&transport=polling",
                   headers={"Origin": f"http://{host}"})
    assert resp.status == 200
    assert resp.headers["access-control-allow-origin"] == f"http://{host}"
    assert resp.headers["access-control-allow-credentials"] == "true"
    resp = request(running.port, "GET", "/engine.io/?EIO=4&transport=polling",
                   headers={"Origin": "http://evil.example"})
    # python-engineio's answer: 400, the origin named in a JSON string.
    assert resp.status == 400
    assert resp.json() == "http://evil.example is not an accepted origin."
    assert resp.headers["content-type"] == "text/plain"
    with pytest.raises(InvalidStatus) as info:
        ws_connect(running.port, origin="http://evil.example")
    assert info.value.response.status_code == 400
    assert info.value.response.body == b'"http://evil.example is not an accepted origin."'
    with ws_connect(running.port, origin=f"http://{host}") as ws:
        assert ws.recv(timeout=5)[0] == "0"
    assert len(running.recorder.of("connect")) == 2


@pytest.mark.parametrize(
    ("allowed", "origin", "ok"),
    [
        ("*", "http://any.example", True),
        ("http://a.example", "http://a.example", True),
        ("http://a.example", "http://b.example", False),
        (["http://a.example", "http://b.example"], "http://b.example", True),
        (["http://a.example"], "http://c.example", False),
    ],
)
def test_cors_allowed_origins(make_engine: Any, allowed: Any, origin: str, ok: bool) -> None:
    running = make_engine(cors_allowed_origins=allowed, cors_credentials=False)
    resp = request(running.port, "GET", "/engine.io/?EIO=4&transport=polling",
                   headers={"Origin": origin})
    if ok:
        assert resp.status == 200
        assert resp.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in resp.headers
    else:
        assert resp.status == 400
        assert resp.json() == f"{origin} is not an accepted origin."
        assert "access-control-allow-origin" not in resp.headers


def test_refused_origin_is_logged_like_the_reference(
    make_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """python-engineio's _log_error_once: ERROR the first time, INFO after that."""
    running = make_engine(cors_allowed_origins=["http://a.example"])
    target = "/engine.io/?EIO=4&transport=polling"
    with caplog.at_level(logging.INFO, logger="flask_relay.engineio"):
        for origin in ("http://b.example", "http://c.example"):
            resp = request(running.port, "GET", target, headers={"Origin": origin})
            assert resp.status == 400
    refusals = [r for r in caplog.records if "is not an accepted origin" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.ERROR, logging.INFO]
    first, second = (r.getMessage() for r in refusals)
    assert first.startswith("http://b.example is not an accepted origin.")
    assert "cors_allowed_origins=['http://b.example']" in first  # the setting that allows it
    assert second.startswith("http://c.example is not an accepted origin.")


def test_cors_preflight(make_engine: Any) -> None:
    running = make_engine(cors_allowed_origins="*")
    resp = request(running.port, "OPTIONS", "/engine.io/?EIO=4&transport=polling", headers={
        "Origin": "http://x.example", "Access-Control-Request-Headers": "content-type"})
    assert resp.status == 204
    assert resp.headers["access-control-allow-origin"] == "http://x.example"
    assert "POST" in resp.headers["access-control-allow-methods"]
    assert resp.headers["access-control-allow-headers"] == "content-type"


def test_cookie(make_engine: Any) -> None:
    running = make_engine(cookie="io")
    resp = request(running.port, "GET", "/engine.io/?EIO=4&transport=polling")
    sid = json.loads(resp.text[1:])["sid"]
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"io={sid}; Path=/")
    running = make_engine(cookie={"name": "sticky", "path": "/x", "secure": True})
    resp = request(running.port, "GET", "/engine.io/?EIO=4&transport=polling")
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("sticky=") and "Path=/x" in cookie and "Secure" in cookie
    running = make_engine()
    resp = request(running.port, "GET", "/engine.io/?EIO=4&transport=polling")
    assert "set-cookie" not in resp.headers


def test_http_compression(make_engine: Any) -> None:
    running = make_engine(echo=False, compression_threshold=100)
    sid, _ = handshake(running.port)
    running.engine.send(sid, "x" * 500)
    wait_for(lambda: running.engine._sessions[sid].queue)
    resp = poll(running.port, sid, **{"Accept-Encoding": "gzip, deflate"})
    assert resp.headers["content-encoding"] == "gzip"
    assert gzip.decompress(resp.body) == b"4" + b"x" * 500
    running.engine.send(sid, "short")
    wait_for(lambda: running.engine._sessions[sid].queue)
    resp = poll(running.port, sid, **{"Accept-Encoding": "gzip"})
    assert "content-encoding" not in resp.headers and resp.text == "4short"
    running.engine.send(sid, "d" * 500)
    wait_for(lambda: running.engine._sessions[sid].queue)
    resp = poll(running.port, sid, **{"Accept-Encoding": "deflate"})
    assert resp.headers["content-encoding"] == "deflate"
    assert zlib.decompress(resp.body) == b"4" + b"d" * 500
    off = make_engine(echo=False, http_compression=False, compression_threshold=100)
    sid, _ = handshake(off.port)
    off.engine.send(sid, "y" * 500)
    wait_for(lambda: off.engine._sessions[sid].queue)
    resp = poll(off.port, sid, **{"Accept-Encoding": "gzip"})
    assert "content-encoding" not in resp.headers and resp.text == "4" + "y" * 500


# -- encode once, bounded output, shutdown ------------------------------------------------


def test_send_prepared_to_mixed_transports(make_engine: Any) -> None:
    running = make_engine(echo=False)
    engine = running.engine
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(ws_connect(running.port)) for _ in range(3)]
        ws_sids = [json.loads(ws.recv(timeout=5)[1:])["sid"] for ws in sockets]
        poll_sids = [handshake(running.port)[0] for _ in range(2)]
        prepared = engine.prepare(["hello", b"\x00\x01\x02"])
        engine.send_prepared(ws_sids + poll_sids + ["gone"], prepared)
        for ws in sockets:
            assert ws.recv(timeout=5) == "4hello"
            assert ws.recv(timeout=5) == b"\x00\x01\x02"
        for sid in poll_sids:
            assert poll(running.port, sid).text == "4hello\x1ebAAEC"


def test_polling_output_bound(make_engine: Any, caplog: Any) -> None:
    running = make_engine(
        echo=False, max_http_buffer_size=1000, max_send_buffer=2000, slow_consumer_timeout=0.5
    )
    engine = running.engine
    slow, _ = handshake(running.port)
    other, _ = handshake(running.port)
    for _ in range(3):
        engine.send(slow, "z" * 900)
    # Over its bound and not polling: closed as a slow consumer once the timeout passed.
    assert engine.wait_for_room([slow]) is True
    rec = running.recorder
    assert wait_for(lambda: rec.of("disconnect")) == [("disconnect", slow, "transport error")]
    assert any(
        "slow consumer" in r.getMessage() and slow in r.getMessage() for r in caplog.records
    )
    # Nothing half-delivered: the next GET gets just the close packet.
    assert poll(running.port, slow).text == "1"
    assert error(poll(running.port, slow))[:2] == (400, 1)
    engine.send(other, "fine")
    assert poll(running.port, other).text == "4fine"


def test_websocket_output_bound(make_engine: Any) -> None:
    import socket

    running = make_engine(echo=False, max_http_buffer_size=1000, max_send_buffer=2000)
    engine = running.engine
    # A raw client that completes the handshake and then never reads.
    sock = socket.create_connection(("127.0.0.1", running.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    rec = running.recorder
    sid = wait_for(lambda: rec.of("connect"))[0][1]
    try:
        with ws_connect(running.port) as good:
            good.recv(timeout=5)
            chunk = "w" * 100_000
            for _ in range(200):
                engine.send(sid, chunk)
                if rec.of("disconnect"):
                    break
            assert wait_for(lambda: rec.of("disconnect")) == [
                ("disconnect", sid, "transport error")
            ]
            good_sid = rec.of("connect")[1][1]
            engine.send(good_sid, "fine")
            assert good.recv(timeout=5) == "4fine"
    finally:
        sock.close()


def test_shutdown_closes_sessions_so_that_clients_reconnect(make_engine: Any) -> None:
    """No Engine.IO close packet at shutdown (python-socketio would not reconnect):
    a 1001 close frame, a held GET answered with its queue or else a 503."""
    running = make_engine(echo=False)
    sid, _ = handshake(running.port)
    queued, _ = handshake(running.port)
    held = Background(poll, running.port, sid)
    wait_for(lambda: running.engine._sessions[sid].held is not None)
    running.engine.send(queued, "last words")
    wait_for(lambda: running.engine._sessions[queued].queue)
    # A GET that finds a queue is answered at once, before the shutdown: waiting
    # for it here keeps it from racing the stop below (under load it could reach
    # a listener already closed).
    assert Background(poll, running.port, queued).result().text == "4last words"
    with ws_connect(running.port) as ws:
        ws_sid = json.loads(ws.recv(timeout=5)[1:])["sid"]
        running.engine.send(ws_sid, "sent before")
        running.server.stop()
        assert error(held.result()) == (503, 3, "server shutting down")  # 3: Bad request
        assert ws.recv(timeout=5) == "4sent before"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1001, "server shutting down"
        )
    reasons = [e[2] for e in running.recorder.of("disconnect")]
    assert reasons == ["server shutting down"] * 3


def test_errors_are_logged_on_the_given_logger(make_engine: Any, caplog: Any) -> None:
    import logging

    custom = logging.getLogger("tests.engine.custom")
    running = make_engine(logger=custom)
    with caplog.at_level(logging.INFO, logger="tests.engine.custom"):
        request(running.port, "GET", "/engine.io/?EIO=4&transport=polling&sid=nope")
        wait_for(lambda: any("Session ID unknown" in r.getMessage() for r in caplog.records))
    # Other loggers may be at INFO too (an earlier test's logger=True): the
    # engine's own record must be on the given logger.
    records = [r for r in caplog.records if "Session ID unknown" in r.getMessage()]
    assert [r.name for r in records] == ["tests.engine.custom"]
    assert "400" in records[0].getMessage()


def test_websocket_compression(make_engine: Any) -> None:
    running = make_engine(websocket_compression=True)
    engine = running.engine
    with ws_connect(running.port) as ws:  # websockets offers permessage-deflate
        sid = json.loads(ws.recv(timeout=5)[1:])["sid"]
        assert ws.protocol.extensions, "deflate was not negotiated"
        ws.send("4" + "compressible " * 100)
        assert ws.recv(timeout=5) == "4" + "compressible " * 100
        # Prepared frames are plain (RSV1 clear): valid on a deflate connection too.
        engine.send_prepared([sid], engine.prepare(["plain", b"\x01"]))
        assert ws.recv(timeout=5) == "4plain"
        assert ws.recv(timeout=5) == b"\x01"
    running = make_engine()
    with ws_connect(running.port) as ws:
        ws.recv(timeout=5)
        assert not ws.protocol.extensions
