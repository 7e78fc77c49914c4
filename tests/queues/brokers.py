"""Brokers for the message-queue tests: the machine's, our own restartable ones, and a TCP cut.

The machine's brokers (Redis 6379, RabbitMQ 5672, NATS 4222; ``make test``
starts any that is not running) serve the cross-process tests, each test on a
channel of its own. The outage tests never restart those (other tests use
them): they start their own ``redis-server`` / ``nats-server`` / ZeroMQ broker
on a free port and restart it, and for RabbitMQ (too heavy to start per test)
they put a :class:`TcpProxy` between the servers and the machine's broker and
cut it, which is what a network cut looks like to every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
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
    """Our own Redis / NATS / ZeroMQ broker (restarted), or a machine's broker behind a proxy.

    RabbitMQ is always cut (too heavy to start per test); ``how="cut"`` cuts
    Redis or NATS the same way.
    """
    if backend == "amqp" or how == "cut":
        port = {"amqp": 5672, "redis": 6379, "nats": 4222}[backend]
        url = machine_url(backend)
        proxy = TcpProxy(port)
        try:
            yield Outage(url.replace(f":{port}", f":{proxy.port}"), proxy=proxy)
        finally:
            proxy.close()
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
