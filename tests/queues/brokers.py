"""Brokers for the message-queue tests: the machine's, our own restartable ones, and a TCP cut.

The machine's brokers (Redis 6379, RabbitMQ 5672, NATS 4222; ``make test``
starts any that is not running) serve the cross-process tests, each test on a
channel of its own. The outage tests never restart those (other tests use
them): they start their own ``redis-server`` / ``nats-server`` / ZeroMQ broker
/ RabbitMQ node (:class:`RabbitBroker`, a node of its own in a temporary
directory) on free ports and restart it, or put a :class:`TcpProxy` between
the servers and the machine's broker and cut it, which is what a network cut
looks like to every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
NATS_URL = "nats://127.0.0.1:4222"

_channels = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def channel() -> str:
    """A channel (and NATS subject, and RabbitMQ exchange) no other test uses."""
    return f"relay-test-{os.getpid()}-{next(_channels)}-{uuid.uuid4().hex[:8]}"


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def wait_for(predicate: object, timeout: float = 15.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def require(port: int, name: str) -> None:
    """The machine's broker on ``port`` must run (``make test`` starts it)."""
    if not listening(port):
        pytest.fail(f"{name} is not running on 127.0.0.1:{port}: run scripts/system-deps")


def machine_url(backend: str) -> str:
    """The URL of the machine's broker for ``backend`` (checked to be running)."""
    if backend == "redis":
        require(6379, "redis-server")
        return REDIS_URL
    if backend == "amqp":
        require(5672, "rabbitmq-server")
        return AMQP_URL
    if backend == "nats":
        require(4222, "nats-server")
        return NATS_URL
    raise ValueError(backend)


# -- processes we own ------------------------------------------------------------------


class Broker:
    """A broker process of ours on a fixed port, which can be stopped and started again."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
        )
        wait_for(lambda: listening(self.port), what=f"{self.argv[0]} on {self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RabbitBroker(Broker):
    """A RabbitMQ node of our own: its own node name, ports and data, in ``home``.

    ``/usr/lib/rabbitmq/bin/rabbitmq-server`` run directly (``/usr/sbin``'s
    wrapper would switch to the ``rabbitmq`` user and the machine's files),
    as whatever user runs the tests (root in CI): node
    ``relaytest-<port>@localhost``, AMQP and Erlang distribution on free
    loopback ports, Mnesia, logs, config, plugins list (none: no management
    listener) and Erlang cookie (``HOME``) under ``home``. It registers with
    the machine's ``epmd`` (4369) under that name, which never clashes with
    the machine's node. Starting takes about 8 s here (the Erlang VM and
    RabbitMQ's boot steps), a first start or a restart alike.

    :meth:`stop` is a full stop of the node: SIGTERM to the script, which
    stops the broker the way ``rabbitmqctl stop`` does (the script's own
    trap) and waits for the VM to exit; a node that did not stop in 30 s is
    killed (its whole process group). The restart loses every non-durable
    exchange, queue and binding (Flask-Relay's, like python-socketio's, are
    all non-durable), which is what a broker restart does in production.
    """

    def __init__(self, home: Path) -> None:
        port, dist = free_port(), free_port()
        super().__init__(["/usr/lib/rabbitmq/bin/rabbitmq-server"], port)
        self.home = home
        self.node = f"relaytest-{port}@localhost"
        (home / "enabled_plugins").write_text("[].\n")
        (home / "rabbit.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{port}\n")
        self.env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbit"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(home / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(home / "pid"),
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{port}//"
        #: Seconds each start took until the AMQP port listened.
        self.start_times: list[float] = []

    def start(self) -> None:
        assert self.proc is None
        if not Path(self.argv[0]).exists():
            pytest.fail("rabbitmq-server is required (scripts/system-deps installs it)")
        began = time.monotonic()
        with open(self.home / "console.log", "ab") as console:
            self.proc = subprocess.Popen(
                self.argv, stdout=console, stderr=subprocess.STDOUT, cwd=self.home,
                env=self.env, start_new_session=True,
            )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.home / "console.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"RabbitMQ node {self.node} exited:\n{log}")
            return listening(self.port)

        wait_for(up, timeout=90, what=f"RabbitMQ node {self.node} on {self.port}")
        self.start_times.append(time.monotonic() - began)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # The VM is the script's child: make sure it is gone too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        wait_for(lambda: not listening(self.port), what=f"{self.node} to close its port")


def redis_broker(port: int, *extra: str) -> Broker:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required (scripts/system-deps installs it)")
    return Broker(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         *extra],
        port,
    )


def nats_broker(port: int) -> Broker:
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        pytest.fail("nats-server is required (scripts/system-deps installs it)")
    return Broker([binary, "-a", "127.0.0.1", "-p", str(port)], port)


def zmq_broker(push_port: int, pub_port: int) -> Broker:
    broker = Broker(
        [sys.executable, "-m", "flask_relay.pubsub.zmq",
         f"tcp://127.0.0.1:{push_port}+{pub_port}"],
        push_port,
    )
    return broker


@contextlib.contextmanager
def running(broker: Broker) -> Iterator[Broker]:
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="relay-queue-") as name:
        yield Path(name)


# -- a network cut ---------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`cut` drops everything, :meth:`restore`.

    An asyncio loop in a thread. While cut, the port is closed (connections
    are refused) and every forwarded connection was closed, both ways.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.restore()

    def _run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_writer)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        self._run(self._cut())

    async def _switch(self, target_port: int) -> None:
        self.target = (self.target[0], target_port)
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def switch(self, target_port: int) -> None:
        """Forward new connections to ``target_port``; drop the current ones (a load
        balancer without affinity sending a reconnecting client elsewhere)."""
        self._run(self._switch(target_port))

    def restore(self) -> None:
        self._run(self._start())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# -- an outage per backend ---------------------------------------------------------------


class Outage:
    """A broker the test may take away (:meth:`down`) and bring back (:meth:`up`)."""

    how = "restart"

    def __init__(self, url: str, broker: Broker | None = None, proxy: TcpProxy | None = None):
        self.url = url
        self.broker = broker
        self.proxy = proxy
        if proxy is not None:
            self.how = "network cut"

    def down(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
        else:
            assert self.broker is not None
            self.broker.stop()

    def up(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        else:
            assert self.broker is not None
            self.broker.start()


@contextlib.contextmanager
def outage(backend: str, how: str = "restart") -> Iterator[Outage]:
    """Our own broker (restarted), or the machine's broker behind a proxy (``how="cut"``)."""
    if how == "cut":
        port = {"amqp": 5672, "redis": 6379, "nats": 4222}[backend]
        url = machine_url(backend)
        proxy = TcpProxy(port)
        try:
            yield Outage(url.replace(f":{port}", f":{proxy.port}"), proxy=proxy)
        finally:
            proxy.close()
        return
    if backend == "amqp":
        with temp_dir() as home, running(RabbitBroker(home)) as rabbit:
            yield Outage(rabbit.url, broker=rabbit)
        return
    port = free_port()
    if backend == "redis":
        broker, url = redis_broker(port), f"redis://127.0.0.1:{port}/0"
    elif backend == "nats":
        broker, url = nats_broker(port), f"nats://127.0.0.1:{port}"
    elif backend == "zmq":
        pub = free_port()
        broker, url = zmq_broker(port, pub), f"zmq+tcp://127.0.0.1:{port}+{pub}"
    else:
        raise ValueError(backend)
    with running(broker):
        yield Outage(url, broker=broker)
