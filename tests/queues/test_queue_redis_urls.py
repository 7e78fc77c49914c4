"""Redis URL forms against real servers: unix://, redis+sentinel://, rediss:// (TLS), valkey://.

Each test starts the redis-server it needs (a Unix socket in a temporary
directory, a sentinel process watching a master, a TLS port with a
certificate made by ``openssl``); ``valkey://`` uses the machine's Redis.
Two SocketIO instances on the URL stand for two processes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio as python_socketio
from brokers import channel, free_port, listening, machine_url, temp_dir, wait_for
from flask import Flask

from flask_relay import SocketIO, join_room
from flask_relay.pubsub.redis import parse_sentinel_url


def _redis_server(*args: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required (scripts/system-deps installs it)")
    return subprocess.Popen(
        [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


def _pair(url: str, **options: Any) -> Iterator[tuple[SocketIO, Any, str]]:
    """Two "processes" on ``url``; yields (emitter node, a client of the other node, channel)."""
    name = channel()
    nodes = []
    for i in range(2):
        app = Flask(f"node{i}")
        sio = SocketIO(app, message_queue=url, channel=name, **options)
        assert sio.server.queue is not None and sio.server.queue.ready.wait(10), url
        sio.on("join")(lambda room: join_room(room))
        nodes.append((app, sio))
    client = nodes[1][1].test_client(nodes[1][0])
    try:
        yield nodes[0][1], client, name
    finally:
        for _, sio in nodes:
            assert sio.server.queue is not None
            sio.server.queue.close()


def _got(client: Any, event: str) -> list[Any]:
    return [e["args"] for e in client.get_received() if e["name"] == event]


def _crosses(url: str, **options: Any) -> None:
    for emitter, client, _name in _pair(url, **options):
        client.emit("join", "room")
        emitter.emit("hello", {"via": url.split(":", 1)[0]}, to="room")
        wait_for(lambda c=client: _peek(c, "hello"), what=f"an emit through {url}")
        assert _got(client, "hello") == [[{"via": url.split(":", 1)[0]}]]


def _peek(client: Any, event: str) -> bool:
    with client._lock:
        return any(e["name"] == event for e in client.queue)


def test_unix_socket_url() -> None:
    with temp_dir() as tmp:
        sock = tmp / "redis.sock"
        proc = _redis_server(
            "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no",
        )
        try:
            wait_for(sock.exists, what="the redis unix socket")
            url = f"unix://{sock}?db=0"
            _crosses(url)
            # python-socketio's RedisManager takes the same URL: it reaches us too.
            for _, client, name in _pair(url):
                external = python_socketio.RedisManager(url, channel=name, write_only=True)
                external.emit("external", 1, namespace="/")
                wait_for(lambda c=client: _peek(c, "external"), what="RedisManager's emit")
        finally:
            _stop(proc)


def test_sentinel_url() -> None:
    master, sentinel = free_port(), free_port()
    with temp_dir() as tmp:
        config = tmp / "sentinel.conf"
        config.write_text(
            f"port {sentinel}\nbind 127.0.0.1\ndir {tmp}\n"
            f"sentinel monitor relaymaster 127.0.0.1 {master} 1\n"
            "sentinel down-after-milliseconds relaymaster 5000\n"
        )
        procs = [
            _redis_server("--port", str(master), "--bind", "127.0.0.1", "--save", ""),
            _redis_server(str(config), "--sentinel"),
        ]
        try:
            wait_for(lambda: listening(master) and listening(sentinel), what="master+sentinel")
            _crosses(f"redis+sentinel://127.0.0.1:{sentinel}/0/relaymaster")
            _crosses(f"valkey+sentinel://127.0.0.1:{sentinel}/0/relaymaster")
        finally:
            _stop(*procs)


def test_sentinel_url_parsing() -> None:
    assert parse_sentinel_url("redis+sentinel://u:p%40ss@h1:1,[::1]:2/3/svc") == (
        [("h1", 1), ("::1", 2)],
        "svc",
        {"username": "u", "password": "p@ss", "db": 3},
    )
    assert parse_sentinel_url("redis+sentinel://h:26379") == ([("h", 26379)], None, {})
    with pytest.raises(ValueError, match="host:port"):
        parse_sentinel_url("redis+sentinel://nohost/0")


def _certificate(tmp: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is required to make a test certificate")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def test_rediss_url_over_tls() -> None:
    port = free_port()
    with temp_dir() as tmp:
        cert, key = _certificate(tmp)
        proc = _redis_server(
            "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", "",
        )
        try:
            wait_for(lambda: listening(port), what="redis-server's TLS port")
            _crosses(f"rediss://127.0.0.1:{port}/0", redis_options={"ssl_ca_certs": str(cert)})
        finally:
            _stop(proc)


def test_valkey_url() -> None:
    _crosses(machine_url("redis").replace("redis://", "valkey://"))
