"""Fixtures for the Flask face: apps, and peers that run a test twice (local + network)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent))


from flask_face_peers import LocalPeer, NetworkPeer, Peer, free_port  # noqa: E402

from flask_relay import SocketIO  # noqa: E402


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test secret"
    app.config["TESTING"] = True
    return app


@pytest.fixture
def sio(app: Flask) -> SocketIO:
    return SocketIO(app)


@pytest.fixture(params=["local", "network"])
def peers(request: pytest.FixtureRequest) -> Iterator[Callable[..., Peer]]:
    """``peers(app, sio, namespaces=("/",), auth=None, headers=None, query=None)``.

    ``local``: the in-process test client. ``network``: python-socketio's
    client against ``sio``'s own HTTP server on 127.0.0.1 (started once per
    test, stopped at the end).
    """
    kind = request.param
    made: list[Peer] = []
    servers: dict[int, Any] = {}

    def make(app: Flask, sio: SocketIO, **kwargs: Any) -> Peer:
        peer: Peer
        if kind == "local":
            peer = LocalPeer(app, sio, **kwargs)
        else:
            server = servers.get(id(sio))
            if server is None:
                server = sio.make_server(app, "127.0.0.1", free_port())
                server.start()
                servers[id(sio)] = server
            peer = NetworkPeer(server.url, sio, **kwargs)
        made.append(peer)
        return peer

    make.kind = kind  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for peer in made:
            try:
                peer.close()
            except Exception:
                pass
        for server in servers.values():
            server.stop()
