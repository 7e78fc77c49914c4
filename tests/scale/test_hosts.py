"""Issue 12 item 4, across hosts: three hosts behind nginx round-robin, no affinity.

The hosts are network namespaces on this machine (``ip netns``), each joined
to a bridge by a veth pair, each running a Flask-Relay server
(``socketio.run(..., peer_address=<its own address>)``; the third one is
``gunicorn -w 2`` with ``FLASK_RELAY_PEER_ADDRESS``). A Redis server of the
test's own listens on the bridge, reachable from every host; nginx in front
balances every request round-robin (no ``ip_hash``, no upstream keep-alive, so
consecutive requests of one session reach different hosts). The hosts forward
requests for sessions they do not own to the owner, learned from the peers'
announcements on the queue.

Clients (python-socketio: long-polling only, WebSocket only, and polling
upgraded to WebSocket) join a room
through nginx and must see room broadcasts made on every host; after one
host's server is killed, its clients reconnect through nginx and carry on.

Needs root (namespaces); every namespace, link and process it creates is
removed even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import socketio as socketio_client
from scale_helpers import HERE, Process, env_with_src, free_port, request, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

HOSTS = 3
PORT = 5000  # each host is its own network namespace: no other listener there
GUNICORN_HOST = 2
GUNICORN_WORKERS = 2
NODES = HOSTS - 1 + GUNICORN_WORKERS


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@dataclass
class Network:
    """A bridge and HOSTS namespaces on 10.X.Y.0/24 (the bridge is .1)."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    prefix: str = field(
        default_factory=lambda: f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    )
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def bridge_ip(self) -> str:
        return f"{self.prefix}.1"

    def host_ip(self, n: int) -> str:
        return f"{self.prefix}.{11 + n}"

    def ns(self, n: int) -> str:
        return f"fr-{self.tag}-{n}"

    def create(self) -> None:
        bridge = f"frb{self.tag}"
        _run("ip", "link", "add", bridge, "type", "bridge")
        self.links.append(bridge)
        _run("ip", "addr", "add", f"{self.bridge_ip}/24", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        for n in range(HOSTS):
            ns = self.ns(n)
            _run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            outside, inside = f"frv{self.tag}{n}", f"frp{self.tag}{n}"
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            self.links.append(outside)
            _run("ip", "link", "set", outside, "master", bridge)
            _run("ip", "link", "set", outside, "up")
            _run("ip", "link", "set", inside, "netns", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.host_ip(n)}/24", "dev", inside)
            _run("ip", "-n", ns, "link", "set", inside, "up")

    def destroy(self) -> None:
        # Deleting a namespace deletes the veth end in it, and so the pair.
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)


NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream relay {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://relay;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 120s;
            proxy_buffering off;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


@dataclass
class Cluster:
    network: Network
    redis: Process
    nginx: Process
    nginx_port: int
    servers: dict[int, Process]

    def start_server(self, n: int, tmp: Path) -> Process:
        """Hosts 0 and 1: ``socketio.run(peer_address=...)``; host 2:
        ``gunicorn -w 2`` with ``FLASK_RELAY_PEER_ADDRESS`` (its workers
        forward to each other over unix sockets, to other hosts over TCP)."""
        net = self.network
        redis_port = self.redis.argv[self.redis.argv.index("--port") + 1]
        env = env_with_src(
            SCALE_QUEUE=f"redis://{net.bridge_ip}:{redis_port}/0",
            SCALE_NAME=f"h{n}",
        )
        netns = ["ip", "netns", "exec", net.ns(n)]
        if n == GUNICORN_HOST:
            env["FLASK_RELAY_PEER_ADDRESS"] = net.host_ip(n)
            env["XDG_RUNTIME_DIR"] = str(tmp)
            argv = [
                *netns, sys.executable, "-m", "gunicorn", "-k", "flask_relay.gunicorn.Worker",
                "-w", str(GUNICORN_WORKERS), "-b", f"0.0.0.0:{PORT}", "scale_app:app",
            ]
        else:
            argv = [
                *netns,
                sys.executable, str(HERE / "scale_app.py"), "0.0.0.0", str(PORT), net.host_ip(n),
            ]
        proc = Process(argv, env)
        self.servers[n] = proc

        def up() -> bool:
            assert proc.proc.poll() is None, proc.output()
            try:
                status, body = request(net.host_ip(n), PORT, "GET", "/whoami", timeout=2)
                return status == 200 and body.startswith(f"h{n} ".encode())
            except OSError:
                return False

        wait_until(up, timeout=30, what=f"host {n} serving")
        return proc


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is missing: run scripts/system-deps"
    network = Network()
    procs: list[Process] = []
    try:
        network.create()
        redis_port = free_port(network.bridge_ip)
        redis = Process(
            [
                "redis-server", "--bind", network.bridge_ip, "--port", str(redis_port),
                "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
                "--protected-mode", "no",  # on the test's private bridge only
            ],
            os.environ.copy(),
        )
        procs.append(redis)
        wait_until(lambda: redis.count("Ready to accept") > 0, timeout=10, what="redis")
        port = free_port()
        servers = "\n".join(
            f"        server {network.host_ip(n)}:{PORT} max_fails=0;" for n in range(HOSTS)
        )
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp_path, servers=servers, port=port))
        nginx_proc = Process([nginx, "-c", str(conf), "-p", str(tmp_path)], os.environ.copy())
        procs.append(nginx_proc)
        c = Cluster(network, redis, nginx_proc, port, {})
        for n in range(HOSTS):
            procs.append(c.start_server(n, tmp_path))

        def nginx_up() -> bool:
            assert nginx_proc.proc.poll() is None, nginx_proc.output()
            try:
                return request("127.0.0.1", port, "GET", "/whoami", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(nginx_up, timeout=15, what="nginx")
        # Each node learned the others from their announcements on the queue
        # ("flask_relay.forward peer <node> at <address>" lines; the
        # "forwarding as node ... peer address" line must not count).
        def nodes_in(n: int) -> int:
            return GUNICORN_WORKERS if n == GUNICORN_HOST else 1

        wait_until(
            lambda: all(
                p.count("flask_relay.forward peer ") >= (NODES - 1) * nodes_in(n)
                for n, p in c.servers.items()
            ),
            timeout=20,
            what="the hosts knowing each other",
        )
        # Round-robin: three requests, three hosts.
        names = {request("127.0.0.1", port, "GET", "/whoami")[1].split()[0] for _ in range(3)}
        assert names == {b"h0", b"h1", b"h2"}, names
        yield c
    finally:
        for proc in procs:
            proc.kill()
        network.destroy()
        for proc in procs:
            print(" ".join(proc.argv[-4:]), "\n", proc.output())
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert network.tag not in left, left


class Client:
    """A python-socketio client through nginx that (re)joins room "all" on
    every connect and records the shouts it receives."""

    def __init__(self, url: str, transport: str) -> None:
        # "upgrade": polling first, then the WebSocket upgrade (which lands on
        # any host and is proxied to the owner when it is another one).
        self.transport = transport
        self.shouts: list[dict[str, Any]] = []
        self.host = ""
        self.connects = 0
        self.lock = threading.Lock()
        self.sio = socketio_client.Client(
            reconnection_delay=0.3,
            reconnection_delay_max=1,
            randomization_factor=0.2,
            handle_sigint=False,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("shout", self._on_shout)
        transports = ["polling", "websocket"] if transport == "upgrade" else [transport]
        eio = self.sio.eio
        on_open = eio.handlers["connect"]
        self.sid = ""

        def opened() -> Any:
            self.sid = eio.sid or ""
            return on_open()

        eio.on("connect", opened)
        started = time.monotonic()
        try:
            self.sio.connect(url, transports=transports, wait_timeout=10)
        except socketio_client.exceptions.ConnectionError as exc:
            raise AssertionError(
                f"{transport} client's connect failed after {time.monotonic() - started:.1f} s "
                f"(Engine.IO sid {self.sid or 'none'}): {exc}"
            ) from exc

    def _on_connect(self) -> None:
        def join() -> None:
            host = self.sio.call("join", "all", timeout=10)
            with self.lock:
                self.host = host
                self.connects += 1

        self.sio.start_background_task(join)

    def _on_disconnect(self, *reason: Any) -> None:
        # Not on any host until the next connect has joined the room again
        # (a client of a live host loses its session too when its long-poll
        # was relayed through the host that is killed).
        with self.lock:
            self.host = ""

    def _on_shout(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.shouts.append(data)

    def heard(self, tag: str) -> set[str]:
        with self.lock:
            return {s["from"] for s in self.shouts if s["data"] == tag}


def _next_request_to(cluster: Cluster, n: int) -> None:
    """Advance nginx's round-robin (h0, h1, h2, h0, ...) until the next request
    goes to host ``n``: a connect makes a number of requests that depends on
    the transport, and a run of connects that each make a multiple of three
    would otherwise start every session on the same hosts."""
    before = f"h{(n - 1) % HOSTS}".encode()
    for _ in range(2 * HOSTS):
        if request("127.0.0.1", cluster.nginx_port, "GET", "/whoami")[1].split()[0] == before:
            return


def _shout_from_every_host(clients: list[Client], hosts: set[str], tag: str) -> None:
    """One client per host shouts ``tag`` to room "all" (the handler runs on its host)."""
    by_host: dict[str, Client] = {}
    for client in clients:
        by_host.setdefault(client.host, client)
    assert hosts <= set(by_host), (hosts, set(by_host))
    for host in hosts:
        assert by_host[host].sio.call("shout", ("all", tag), timeout=10) == host


def test_three_hosts_behind_round_robin_nginx(cluster: Cluster) -> None:
    url = f"http://127.0.0.1:{cluster.nginx_port}"
    clients: list[Client] = []
    try:
        every = {f"h{n}" for n in range(HOSTS)}
        kinds = ("polling", "websocket", "upgrade")
        for i in range(15):
            # Each handshake on the next host in turn (one session per host and
            # transport at least, whatever number of requests a connect makes).
            _next_request_to(cluster, i % HOSTS)
            clients.append(Client(url, kinds[i % 3]))
        wait_until(lambda: all(c.host for c in clients), timeout=20, what="every client joined")
        # The other clients' requests (their next long-polls) interleave with
        # the steering requests, so a host may still have no session: more
        # clients (at most 9) until each host has one.
        for extra in range(9):
            missing = sorted(every - {c.host for c in clients})
            if not missing:
                break
            _next_request_to(cluster, int(missing[0][1:]))
            clients.append(Client(url, kinds[extra % 3]))
            wait_until(lambda: clients[-1].host, timeout=20, what="the extra client joined")
        wait_until(
            lambda: all(
                c.sio.transport() == "websocket" for c in clients if c.transport == "upgrade"
            ),
            timeout=20,
            what="the upgrades",
        )
        hosts = {c.host for c in clients}
        # nginx spreads the handshakes: sessions on every host, both transports.
        assert hosts == every, [c.host for c in clients]

        # The queue's listeners may subscribe a moment after the servers answer.
        def all_heard(tag: str, want: set[str]) -> bool:
            return all(c.heard(tag) >= want for c in clients)

        _shout_from_every_host(clients, hosts, "first")
        wait_until(
            lambda: all_heard("first", hosts),
            timeout=20,
            what="every client hearing every host",
        )
        forwarded = sum(p.count("forwarding") for p in cluster.servers.values())
        assert forwarded > 0  # polling requests did reach other hosts

        # Kill one host's server: its clients reconnect through nginx elsewhere.
        victims = [c for c in clients if c.host == "h1"]
        assert victims
        before = {id(c): c.connects for c in victims}
        cluster.servers[1].kill()
        wait_until(
            lambda: all(c.connects > before[id(c)] and c.host != "h1" for c in victims),
            timeout=40,
            what="h1's clients reconnected to another host",
        )
        wait_until(
            lambda: all(c.sio.connected and c.host in ("h0", "h2") for c in clients),
            timeout=40,
            what="every client on a live host",
        )
        survivors = {"h0", "h2"}
        _shout_from_every_host(clients, survivors, "second")
        wait_until(
            lambda: all_heard("second", survivors),
            timeout=20,
            what="every client hearing the live hosts after the kill",
        )
        for server in (cluster.servers[0], cluster.servers[2]):
            assert server.count("Traceback") == 0, server.output()
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.sio.disconnect()
