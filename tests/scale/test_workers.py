"""Issue 12 item 4: ``gunicorn -w 4`` without sticky sessions.

Every request of the polling clients here uses a new TCP connection, so
gunicorn's workers take them in whatever order they accept: most requests of
a session reach a worker that does not own it, and must be forwarded to the
owner (``flask_relay.server.forward``). Without forwarding, they get 400
"Session ID unknown" and the clients fail.
"""

from __future__ import annotations

import concurrent.futures
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import socketio as socketio_client
from scale_helpers import HERE, PollingClient, Process, env_with_src, free_port, request, wait_until

sys.path.insert(0, str(HERE.parent / "integration"))
from nodepeer import NodePeer  # noqa: E402

pytestmark = pytest.mark.slow

CLIENTS = 100


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[Process, int]]:
    port = free_port()
    server = Process(
        [
            sys.executable, "-m", "gunicorn",
            "-k", "flask_relay.gunicorn.Worker",
            "-w", "4",
            "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "3",
            "scale_app:app",
        ],
        # The workers' unix sockets go in a directory of the test's own.
        env_with_src(XDG_RUNTIME_DIR=str(tmp_path)),
        cwd=HERE,
    )
    try:
        def up() -> bool:
            assert server.proc.poll() is None, server.output()
            try:
                return request("127.0.0.1", port, "GET", "/whoami", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(up, timeout=30, what="gunicorn serving")
        # Every worker booted: each has bound its forwarding socket. (Asking
        # /whoami until four pids answer depends on how the kernel spreads
        # accepts over workers sharing one listening socket: it timed out once
        # in CI with a worker that got no connection.)
        def four_workers() -> bool:
            return len(list(tmp_path.glob("flask-relay-*/*.sock"))) == 4

        wait_until(four_workers, timeout=30, what="four workers with their forwarding socket")
        yield server, port
        server.stop()
        # Each worker removed its socket, the last one the directory.
        assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))
    finally:
        server.kill()


def _one_client(port: int, n: int) -> tuple[int, int]:
    client = PollingClient("127.0.0.1", port)
    client.connect()
    pids = []
    for i in range(3):
        client.emit("echo", {"n": n, "i": i}, ack_id=i + 1)
        assert client.event("reply") == [{"n": n, "i": i}]
        (answer,) = client.ack(i + 1)
        assert answer["data"] == {"n": n, "i": i}
        pids.append(answer["pid"])
    client.close()
    assert len(set(pids)) == 1, pids  # one owner for the whole session
    return n, pids[0]


def test_polling_clients_with_a_new_connection_per_request(
    gunicorn: tuple[Process, int],
) -> None:
    server, port = gunicorn
    with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(lambda n: _one_client(port, n), range(CLIENTS)))
    assert len(results) == CLIENTS
    owners = {pid for _, pid in results}
    assert len(owners) >= 2, owners  # sessions spread over workers
    forwarded = server.count("forwarding GET") + server.count("forwarding POST")
    # Each session makes about ten requests; with four workers accepting
    # them at random, most are forwarded. Without forwarding none would pass.
    assert forwarded >= CLIENTS, server.output()
    assert server.count("Traceback") == 0, server.output()


def test_upgrades_to_websocket_reach_the_owner(gunicorn: tuple[Process, int]) -> None:
    """python-socketio's client polls on one kept-alive connection, then
    opens the WebSocket on a new one, which may reach another worker."""
    server, port = gunicorn
    clients = []
    try:
        for _ in range(12):
            client = socketio_client.Client(reconnection=False)
            client.connect(f"http://127.0.0.1:{port}", wait_timeout=10)
            clients.append(client)
        wait_until(
            lambda: all(c.transport() == "websocket" for c in clients),
            timeout=20,
            what="every client upgraded",
        )
        for n, client in enumerate(clients):
            answer = client.call("echo", n, timeout=10)
            assert answer["data"] == n
        assert server.count("forwarding the upgrade") >= 1, server.output()
    finally:
        for client in clients:
            client.disconnect()


def test_official_node_client_without_keep_alive(gunicorn: tuple[Process, int]) -> None:
    """npm socket.io-client with ``agent: false`` (a new connection for every
    request): polling-only clients, and clients that upgrade."""
    server, port = gunicorn
    node = NodePeer()
    try:
        url = f"http://127.0.0.1:{port}"
        ids = [f"p{i}" for i in range(10)] + [f"u{i}" for i in range(5)]
        for cid in ids:
            transports = ["polling"] if cid.startswith("p") else ["polling", "websocket"]
            report = node.connect(cid, url, transports=transports, agent=False)
            assert report["ev"] == "connect", report
        for round_ in range(3):
            for cid in ids:
                (answer,) = node.call(cid, "echo", f"{cid}-{round_}", timeout=20)
                assert answer["data"] == f"{cid}-{round_}"
                node.wait_event(cid, "reply", count=round_ + 1, timeout=20)
        for cid in ids:
            expected = "polling" if cid.startswith("p") else "websocket"
            assert node.info(cid)["transport"] == expected
        assert node.find(ev="disconnect") == []
        assert server.count("forwarding GET") > 0
    finally:
        node.close()
