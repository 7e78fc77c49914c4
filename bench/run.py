"""Benchmark driver: Flask-Relay against its anchors, measured in the same run.

Starts each server fixture in turn (pinned to one core), drives it with the Node load
generator ``bench/gen.js`` (pinned to another core), stops everything it started, prints
one table with ratios of Flask-Relay against each anchor, and writes the raw results as
JSON to ``bench/results/``.

    python bench/run.py            # full run (several minutes)
    python bench/run.py --quick    # short durations, smaller storms
    python bench/run.py --fixtures relay,node --scenarios ack,echo
    python bench/run.py --scenarios bcast_workers   # gunicorn -w 1/2/4 + Redis
    python bench/run.py --scenarios scale50k        # 50,000 clients on 3 workers
    python bench/run.py --fixtures relay,node --scenarios bcast20k
                                    # broadcast to 20,000 clients (two generators; the
                                    # descriptor limit may cap it: see descriptor_room)

Not part of the test suite: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable


@dataclass
class Fixture:
    key: str
    label: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # group -> why it is not run for this fixture
    skip: dict[str, str] = field(default_factory=dict)


FIXTURES = [
    Fixture("relay", "Flask-Relay", [PY, "bench/app_flask.py"], {"BENCH_IMPL": "relay"}),
    Fixture(
        "gevent", "Flask-SocketIO gevent", [PY, "bench/app_flask.py"], {"BENCH_IMPL": "gevent"}
    ),
    Fixture(
        "threading",
        "Flask-SocketIO threading",
        [PY, "bench/app_flask.py"],
        {"BENCH_IMPL": "threading"},
        skip={
            # Two threads per WebSocket: 5,000 clients make ~12,000 threads, which
            # starves every other process on the machine for minutes.
            "bcast5k": "skipped: thread per connection (~12,000 threads)",
            "scale": "skipped: thread per connection",
            "bcast20k": "skipped: thread per connection",
        },
    ),
    Fixture(
        "gunicorn",
        "Flask-Relay under gunicorn",
        [
            str(Path(PY).parent / "gunicorn"),
            "-k",
            "flask_relay.gunicorn.Worker",
            "-w",
            "1",
            "--chdir",
            "bench",
            "-b",
            "127.0.0.1:{port}",
            "--log-level",
            "warning",
            "app_flask:app",
        ],
        {"BENCH_IMPL": "relay"},
    ),
    Fixture("uvicorn", "python-socketio + uvicorn", [PY, "bench/app_asgi.py"]),
    Fixture("node", "Node socket.io 4.8", ["node", "bench/server_node.js"]),
]
SUBJECT = "relay"
SUBJECT_VARIANTS = ("gunicorn",)  # Flask-Relay in another deployment: no ratio column


@dataclass
class Row:
    key: str
    label: str
    unit: str
    higher_is_better: bool = True


ROWS = [
    Row("ack", "ack round trips/s, 100 clients, ~100 B JSON", "/s"),
    Row("ack10", "ack round trips/s, 10 clients", "/s"),
    Row("ack1", "ack round trips/s, 1 client", "/s"),
    Row("ack_async", "ack round trips/s, 100 clients, Relay `async def` handler", "/s"),
    Row("ack_async10", "ack round trips/s, 10 clients, Relay `async def` handler", "/s"),
    Row("ack_async1", "ack round trips/s, 1 client, Relay `async def` handler", "/s"),
    Row("bcast1k", "broadcast deliveries/s, 1,000 clients in a room", "/s"),
    Row("bcast5k", "broadcast deliveries/s, 5,000 clients in a room", "/s"),
    Row("bcast20k", "broadcast deliveries/s, 20,000 clients in a room (two generators)", "/s"),
    Row("lat_p50", "emit -> last of 1,000 deliveries, p50", "ms", False),
    Row("lat_p99", "emit -> last of 1,000 deliveries, p99", "ms", False),
    Row("lat5k_p50", "emit -> last of 5,000 deliveries, p50", "ms", False),
    Row("lat5k_p99", "emit -> last of 5,000 deliveries, p99", "ms", False),
    Row("lat20k_p50", "emit -> last of 20,000 deliveries, p50", "ms", False),
    Row("lat20k_p99", "emit -> last of 20,000 deliveries, p99", "ms", False),
    Row("echo", "raw WebSocket echo msgs/s, 100 clients", "/s"),
    Row(
        "echo_async", "raw WebSocket echo msgs/s, Relay `async def` route (anchors: as above)", "/s"
    ),
    Row("storm_ws", "connect storm, WebSocket, connects/s", "/s"),
    Row("storm_up", "connect storm, polling -> upgrade, connects/s", "/s"),
    Row("mem", "memory per idle WebSocket connection", "KB", False),
    Row("threads", "OS threads with 1,000 idle connections", "", False),
    Row("scale", "idle WebSocket clients held by one process (of 19,000)", ""),
    Row("scale_mem", "memory per connection at 19,000", "KB", False),
]

# Flask-Relay-only groups (an ``async def`` handler or route): the anchors' cells of
# these rows are their figures for the group named here (same clients, same work).
ASYNC_OF = {
    "ack_async": "ack",
    "ack_async10": "ack10",
    "ack_async1": "ack1",
    "echo_async": "echo",
}

# Scenario groups: each runs against a freshly started server.
GROUPS = [
    "ack",
    "ack10",
    "ack1",
    "ack_async",
    "ack_async10",
    "ack_async1",
    "bcast1k",
    "bcast5k",
    "bcast20k",
    "echo",
    "echo_async",
    "storm_ws",
    "storm_up",
    "idle",
    "scale",
]
# Flask-Relay under gunicorn with several workers and a private Redis; not per fixture.
WORKER_GROUPS = ["bcast_workers", "scale50k"]
# Run only when asked for with --scenarios (minutes of connecting on slow servers).
OPTIONAL_GROUPS = {"scale", "bcast20k", *WORKER_GROUPS}


# 20,000 receivers from two `gen.js idle` processes (one process cannot open them all:
# descriptors); bursts of `burst` ticks of the bcast1k/5k payload (pad of `size`).
BCAST20K: dict[str, Any] = {
    "clients": 20000,
    "procs": 2,
    "concurrency": 500,
    "burst": 3,
    "size": 80,
    "burst_timeout": 60,
    "connect_timeout": 120,
}


def settings(quick: bool) -> dict[str, dict[str, Any]]:
    """Generator options per scenario group; --quick shortens everything."""
    if quick:
        return {
            "ack": {"clients": 100, "warmup": 1, "duration": 3},
            "ack10": {"clients": 10, "warmup": 1, "duration": 3},
            "ack1": {"clients": 1, "warmup": 1, "duration": 3},
            "ack_async": {"clients": 100, "warmup": 1, "duration": 3, "event": "echo_async"},
            "ack_async10": {"clients": 10, "warmup": 1, "duration": 3, "event": "echo_async"},
            "ack_async1": {"clients": 1, "warmup": 1, "duration": 3, "event": "echo_async"},
            "bcast1k": {"clients": 1000, "duration": 3, "probes": 15, "burst_timeout": 15},
            "bcast5k": {
                "clients": 5000,
                "duration": 3,
                "probes": 5,
                "burst_timeout": 15,
                "connect_timeout": 60,
            },
            "echo": {"clients": 100, "warmup": 1, "duration": 3},
            "echo_async": {"clients": 100, "warmup": 1, "duration": 3, "path": "/ws-async"},
            "storm_ws": {"clients": 300, "transport": "websocket"},
            "storm_up": {"clients": 300, "transport": "upgrade"},
            "idle": {"clients": 1000},
            "scale": {"clients": 19000, "procs": 2, "concurrency": 500},
            "bcast20k": BCAST20K | {"duration": 3, "probes": 5},
            "bcast_workers": {
                "workers": "1/2/4",
                "no_queue_reference": 1,
                "clients": 1000,
                "duration": 5,
                "probes": 10,
                "burst_timeout": 30,
            },
            "scale50k": {"clients": 6000, "workers": 3, "procs": 3, "concurrency": 200},
        }
    return {
        "ack": {"clients": 100, "warmup": 3, "duration": 15},
        "ack10": {"clients": 10, "warmup": 3, "duration": 15},
        "ack1": {"clients": 1, "warmup": 3, "duration": 15},
        "ack_async": {"clients": 100, "warmup": 3, "duration": 15, "event": "echo_async"},
        "ack_async10": {"clients": 10, "warmup": 3, "duration": 15, "event": "echo_async"},
        "ack_async1": {"clients": 1, "warmup": 3, "duration": 15, "event": "echo_async"},
        "bcast1k": {"clients": 1000, "duration": 10, "probes": 100, "burst_timeout": 30},
        "bcast5k": {
            "clients": 5000,
            "duration": 10,
            "probes": 30,
            "burst_timeout": 30,
            "connect_timeout": 120,
        },
        "echo": {"clients": 100, "warmup": 3, "duration": 15},
        "echo_async": {"clients": 100, "warmup": 3, "duration": 15, "path": "/ws-async"},
        "storm_ws": {"clients": 1000, "transport": "websocket"},
        "storm_up": {"clients": 1000, "transport": "upgrade"},
        "idle": {"clients": 1000},
        "scale": {"clients": 19000, "procs": 2, "concurrency": 500},
        "bcast20k": BCAST20K | {"duration": 10, "probes": 30},
        "bcast_workers": {
            "workers": "1/2/4",
            "no_queue_reference": 1,
            "clients": 1000,
            "duration": 10,
            "probes": 30,
            "burst_timeout": 30,
        },
        # Three workers (20,000 descriptors each), three generators (one source address
        # each: ~28,000 ephemeral ports per address and destination).
        "scale50k": {"clients": 50000, "workers": 3, "procs": 3, "concurrency": 150},
    }


# ---------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int | None) -> Any:
    if core is None:
        return None

    def _pin() -> None:
        os.sched_setaffinity(0, {core})

    return _pin


class Server:
    """One fixture process, in its own process group so that stopping it is complete."""

    def __init__(self, fixture: Fixture, core: int | None, log_path: Path) -> None:
        self.fixture = fixture
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, **fixture.env, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [a.replace("{port}", str(self.port)) for a in fixture.cmd]
            if any("{port}" in a for a in fixture.cmd)
            else [*fixture.cmd, str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=pin(core),
        )
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        probe = f"{self.url}/socket.io/?EIO=4&transport=polling"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(probe, timeout=2) as resp:
                    if resp.status == 200 and resp.read(1) == b"0":
                        return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout:.0f}s: {last}")

    def _tree(self) -> list[psutil.Process]:
        """The server and its children (gunicorn: the arbiter and its worker)."""
        procs = [self.ps]
        try:
            procs += self.ps.children(recursive=True)
        except psutil.Error:
            pass
        return procs

    def _sum(self, fn: Any) -> float:
        total = 0.0
        for p in self._tree():
            try:
                total += fn(p)
            except psutil.Error:
                pass  # a child that just exited
        return total

    def rss(self) -> int:
        return int(self._sum(lambda p: p.memory_info().rss))

    def threads(self) -> int:
        return int(self._sum(lambda p: p.num_threads()))

    def cpu(self) -> float:
        return self._sum(lambda p: sum(p.cpu_times()[:2]))

    def writes(self) -> int:
        """write/writev system calls so far (/proc/PID/io syscw), summed over the tree."""
        return int(self._sum(lambda p: p.io_counters().write_count))

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self.log.close()


class Broker:
    """A private Redis for the several-worker scenarios: started and stopped here, so
    other sessions' broker restarts cannot touch a run, and its CPU time is known."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = open(log_path, "ab")  # noqa: SIM115
        if shutil.which("redis-server") is None:
            self.log.close()
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def cpu(self) -> float:
        try:
            return float(sum(self.ps.cpu_times()[:2]))
        except psutil.Error:
            return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def gen_cmd(scenario: str, url: str, opts: dict[str, Any]) -> list[str]:
    return ["node", str(HERE / "gen.js"), scenario, url, *(f"{k}={v}" for k, v in opts.items())]


def run_gen(
    scenario: str,
    url: str,
    opts: dict[str, Any],
    core: int | None,
    timeout: float,
    log_path: Path,
    server: Server | None = None,
    broker: Broker | None = None,
) -> dict[str, Any]:
    """Run one generator scenario; sample the server's CPU time over the measured window
    (and the broker's, when there is one)."""
    marks: dict[str, tuple[float, float]] = {}
    broker_marks: dict[str, float] = {}
    write_marks: dict[str, int] = {}
    result: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    with open(log_path, "ab") as log:
        gen = subprocess.Popen(
            gen_cmd(scenario, url, opts),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=pin(core),
        )
        assert gen.stdout is not None
        killer = threading.Timer(timeout, gen.kill)
        killer.start()
        try:
            for raw in gen.stdout:
                if not raw.startswith(b"{"):
                    continue
                msg = json.loads(raw)
                event = msg.get("event")
                if event in ("measure_start", "measure_end"):
                    if server is not None and server.proc.poll() is None:
                        marks[event] = (server.cpu(), time.monotonic())
                        try:
                            write_marks[event] = server.writes()
                        except (psutil.Error, AttributeError):
                            pass  # no /proc/PID/io access
                    if broker is not None:
                        broker_marks[event] = broker.cpu()
                else:
                    result = msg
            gen.wait()
        finally:
            killer.cancel()
            if gen.poll() is None:
                gen.kill()
                gen.wait()
    if time.monotonic() >= deadline:
        return {"error": f"generator killed after {timeout:.0f}s"}
    if not result:
        return {"error": "generator printed no result"}
    if "measure_start" in marks and "measure_end" in marks:
        (c0, t0), (c1, t1) = marks["measure_start"], marks["measure_end"]
        result["server_cpu"] = (c1 - c0) / (t1 - t0) if t1 > t0 else None
        if len(write_marks) == 2:
            result["server_writes"] = write_marks["measure_end"] - write_marks["measure_start"]
        if len(broker_marks) == 2 and t1 > t0:
            result["broker_cpu"] = (broker_marks["measure_end"] - broker_marks["measure_start"]) / (
                t1 - t0
            )
    return result


def connect_errors(firsts: list[dict[str, Any]]) -> dict[str, int]:
    """The connect errors of several generators' first reports, summed by message."""
    errors: dict[str, int] = {}
    for f in firsts:
        for key, v in (f.get("errors") or {}).items():
            errors[key] = errors.get(key, 0) + v
    return errors


def measure_idle(
    server: Server, opts: dict[str, Any], core: int | None, log_path: Path
) -> dict[str, Any]:
    """RSS delta per connection and thread count with N idle WebSocket connections."""
    # Warm up once (lazy imports, first-connection caches), then take the baseline.
    warm = subprocess.Popen(
        gen_cmd("idle", server.url, {"clients": 20}),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin(core),
    )
    assert warm.stdout is not None and warm.stdin is not None
    warm.stdout.readline()
    warm.stdin.write(b"done\n")
    warm.stdin.flush()
    warm.communicate(timeout=30)
    time.sleep(1.5)
    base_rss = server.rss()
    base_threads = server.threads()
    n = int(opts["clients"])
    procs = int(opts.get("procs", 1))  # generator processes (one has < 20,000 descriptors)
    per = [n // procs + (1 if k < n % procs else 0) for k in range(procs)]
    gens: list[subprocess.Popen[bytes]] = []
    firsts: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    with open(log_path, "ab") as log:
        try:
            for count in per:
                gens.append(
                    subprocess.Popen(
                        gen_cmd("idle", server.url, {**opts, "clients": count}),
                        cwd=ROOT,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        preexec_fn=pin(core),
                    )
                )
            for gen in gens:
                assert gen.stdout is not None
                firsts.append(json.loads(gen.stdout.readline() or "{}"))
            time.sleep(2.0)  # let the server settle (threads spawned, buffers allocated)
            alive = server.proc.poll() is None
            rss = server.rss() if alive else 0
            threads = server.threads() if alive else 0
            for gen in gens:
                assert gen.stdin is not None
                gen.stdin.write(b"done\n")
                gen.stdin.flush()
            for gen in gens:
                rest, _ = gen.communicate(timeout=120)
                for ln in rest.decode().splitlines():
                    if ln.startswith("{"):
                        finals.append(json.loads(ln))
        finally:
            for gen in gens:
                if gen.poll() is None:
                    gen.kill()
                    gen.wait()
    connected = sum(int(f.get("connected", 0)) for f in firsts)
    errors = connect_errors(firsts)
    result: dict[str, Any] = {
        "clients": n,
        "connected": connected,
        "connect_seconds": max((float(f.get("seconds", 0)) for f in firsts), default=None),
        "alive_at_end": sum(int(f.get("alive_at_end") or 0) for f in finals),
        "base_rss": base_rss,
        "rss": rss,
        "base_threads": base_threads,
        "threads": threads,
        "errors": errors,
    }
    if not alive:
        result["error"] = f"server died (exit {server.proc.returncode})"
    elif connected:
        result["kb_per_conn"] = (rss - base_rss) / connected / 1024
    if connected < n:
        result["error"] = f"only {connected}/{n} idle clients connected"
    elif result["alive_at_end"] < connected:
        result["error"] = f"{connected - result['alive_at_end']} connections dropped while idle"
    return result


# ---------------------------------------------------------------------------------------
# broadcast to 20,000 receivers held by two generator processes (bcast20k)

FD_RESERVE = 1000  # descriptors a server keeps beside its clients (listener, epoll, logs)


def descriptor_room(n: int) -> int:
    """Clients one server process can hold: ``n``, or fewer (whole thousands) when the
    hard open-file limit cannot be raised that far (20,000 here, as for ``scale``)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= n + FD_RESERVE:
        return n
    return max(0, (hard - FD_RESERVE) // 1000 * 1000)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile, as gen.js computes it."""
    if not values:
        return None
    ordered = sorted(values)
    i = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[i]


class Generators:
    """Several ``gen.js idle`` processes driven line by line (stdin commands, stdout JSON).

    One reader thread per process fills a queue, so every read has a deadline and a
    generator that stalls or dies becomes an error, never a hang."""

    def __init__(
        self, url: str, counts: list[int], opts: dict[str, Any], core: int | None, log: Any
    ) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.lines: list[queue.Queue[dict[str, Any] | None]] = []
        self.readers: list[threading.Thread] = []
        try:
            for count in counts:
                proc = subprocess.Popen(
                    gen_cmd("idle", url, {**opts, "clients": count}),
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    preexec_fn=pin(core),
                )
                self.procs.append(proc)
                lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
                self.lines.append(lines)
                reader = threading.Thread(target=self._read, args=(proc, lines), daemon=True)
                reader.start()
                self.readers.append(reader)
        except BaseException:
            self.kill()
            raise
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], lines: queue.Queue[dict[str, Any] | None]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if raw.startswith(b"{"):
                lines.put(json.loads(raw))
        lines.put(None)  # end of output

    def send(self, line: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()

    def read_all(self, timeout: float) -> list[dict[str, Any]]:
        """The next JSON line of every generator, within ``timeout`` seconds overall."""
        deadline = time.monotonic() + timeout
        out = []
        for k, lines in enumerate(self.lines):
            try:
                msg = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"generator {k} silent for {timeout:.0f}s") from None
            if msg is None:
                raise RuntimeError(f"generator {k} exited (code {self.procs[k].poll()})")
            out.append(msg)
        return out

    def cpu(self) -> float:
        total = 0.0
        for p in self.ps:
            try:
                total += sum(p.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    def finish(self, timeout: float) -> list[dict[str, Any]]:
        """Ask every generator to close its clients; their final results."""
        self.send("done")
        return self.read_all(timeout)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for reader in self.readers:
            reader.join(5)  # at the end of its output now
        for proc in self.procs:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


class BurstIncomplete(RuntimeError):
    pass


def measure_bcast20k(
    server: Server, opts: dict[str, Any], core: int | None, log_path: Path
) -> dict[str, Any]:
    """Bursts of ``burst`` ticks to room 'room', whose members are the light clients of
    ``procs`` generator processes; each burst is an HTTP request (``/bench/burst``) and
    lasts from that request to the last delivery over all generators (``wait TOTAL``).

    rate = deliveries / the bursts' summed durations; ``server_cpu`` is the server's CPU
    time over the same durations, so rate / server_cpu = deliveries per CPU-second."""
    wanted = int(opts["clients"])
    n = descriptor_room(wanted)
    procs = int(opts["procs"])
    k, size = int(opts["burst"]), int(opts["size"])
    timeout = float(opts["burst_timeout"])
    result: dict[str, Any] = {"clients": n, "wanted": wanted, "generators": procs, "burst": k}
    if n < wanted:
        result["capped_by"] = (
            f"RLIMIT_NOFILE hard limit {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}"
        )
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    gen_opts = {"join": 1, "concurrency": opts["concurrency"], "connect_timeout": 60}
    state = {"total": 0, "seq": 0}

    def burst(count: int) -> float:
        """One burst of ``count`` ticks; ms from the trigger to the last delivery."""
        start = state["seq"] + 1
        state["seq"] += count
        state["total"] += count  # events every client has had, cumulatively
        gens.send(f"wait {state['total']} {timeout:.0f} {state['seq']}")
        t_send = time.monotonic_ns()
        url = f"{server.url}/bench/burst?start={start}&n={count}&size={size}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
        got = gens.read_all(timeout + 30)
        complete = sum(int(d.get("complete", 0)) for d in got)
        wrong = sum(int(d.get("seq_wrong") or 0) for d in got)
        if complete < connected or wrong:
            result["partial"] = complete / connected
            raise BurstIncomplete(
                f"burst of {count} reached {complete}/{connected} clients completely"
                + (f", {wrong} with a wrong last seq" if wrong else "")
            )
        return (max(int(d["last_ns"]) for d in got) - t_send) / 1e6

    with open(log_path, "ab") as log:
        gens = Generators(server.url, per, gen_opts, core, log)
    try:
        firsts = gens.read_all(float(opts["connect_timeout"]) + 60)
        connected = sum(int(f.get("connected", 0)) for f in firsts)
        result.update(
            connected=connected,
            connect_errors=connect_errors(firsts),
            connect_seconds=max(float(f.get("seconds", 0)) for f in firsts),
        )
        if connected < n:
            result["error"] = f"only {connected}/{n} clients connected and joined"
            return result
        burst(1)  # warm-up: a single tick, then a full-size burst, both unmeasured
        burst(k)
        durations: list[float] = []
        c0, g0, t0 = server.cpu(), gens.cpu(), time.monotonic()
        while time.monotonic() - t0 < float(opts["duration"]):
            durations.append(burst(k))
        c1, g1, t1 = server.cpu(), gens.cpu(), time.monotonic()
        busy = sum(durations) / 1000
        delivered = connected * k * len(durations)
        result.update(
            bursts=len(durations),
            delivered=delivered,
            seconds=busy,
            burst_ms_median=statistics.median(durations),
            rate=delivered / busy,
            server_cpu=(c1 - c0) / busy,
            gen_cpu=(g1 - g0) / (t1 - t0),  # both generators share one core
        )
        latencies = []
        c0, g0 = server.cpu(), gens.cpu()
        for _ in range(int(opts["probes"])):
            latencies.append(burst(1))
            time.sleep(0.02)
        busy = sum(latencies) / 1000  # CPU shares while a probe was in flight
        result["probe_server_cpu"] = (server.cpu() - c0) / busy if busy else None
        result["probe_gen_cpu"] = (gens.cpu() - g0) / busy if busy else None
        result["latencies_ms"] = [round(v, 1) for v in latencies]
        result["latency_p50_ms"] = percentile(latencies, 50)
        result["latency_p99_ms"] = percentile(latencies, 99)
        finals = gens.finish(120)
        result["alive_at_end"] = sum(int(f.get("alive_at_end") or 0) for f in finals)
        if result["alive_at_end"] < connected:
            result["error"] = f"{connected - result['alive_at_end']} connections dropped"
    except (RuntimeError, OSError, ValueError) as exc:  # BurstIncomplete, HTTP errors too
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        gens.kill()
    return result


def run_group(
    fixture: Fixture,
    group: str,
    opts: dict[str, Any],
    server_core: int | None,
    gen_core: int | None,
    logdir: Path,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    log_path = logdir / f"{fixture.key}.{group}.log"
    profilers: list[subprocess.Popen[bytes]] = []
    server = Server(fixture, server_core, log_path)
    try:
        try:
            server.wait_ready()
        except RuntimeError as exc:
            return {"error": str(exc)}
        spy = None
        if profile_dir is not None and fixture.cmd[0] == PY:
            # Sample the server while the scenario runs; py-spy writes its collapsed
            # stacks when the server exits (see bench/profile_summary.py).
            spy = subprocess.Popen(
                [
                    str(Path(PY).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--gil",  # only the thread holding the GIL: where CPU time goes
                    "-o",
                    str(profile_dir / f"{fixture.key}.{group}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=pin(gen_core),
            )
            profilers.append(spy)
        if group in ("idle", "scale"):
            return measure_idle(server, opts, gen_core, log_path)
        if group == "bcast20k":
            result = measure_bcast20k(server, opts, gen_core, log_path)
            if server.proc.poll() is not None:
                result["error"] = f"server died (exit {server.proc.returncode})"
            return result
        scenario = {
            "bcast1k": "broadcast",
            "bcast5k": "broadcast",
            "storm_ws": "storm",
            "storm_up": "storm",
            "echo_async": "echo",
            "ack10": "ack",
            "ack1": "ack",
            "ack_async": "ack",
            "ack_async10": "ack",
            "ack_async1": "ack",
        }.get(group, group)
        result = run_gen(scenario, server.url, opts, gen_core, 600, log_path, server)
        result["server_threads"] = server.threads() if server.proc.poll() is None else None
        result["server_rss_mb"] = server.rss() / 2**20 if server.proc.poll() is None else None
        if server.proc.poll() is not None:
            result["error"] = f"server died (exit {server.proc.returncode})"
        return result
    finally:
        server.stop()
        for spy in profilers:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


# ---------------------------------------------------------------------------------------
# several workers (gunicorn -w N, Redis between them)


def gunicorn_fixture(workers: int, queue: str | None, extra_ports: tuple[int, ...] = ()) -> Fixture:
    """The gunicorn fixture with ``workers`` workers and a message queue (and more
    listening ports: every worker accepts on each)."""
    base = next(f for f in FIXTURES if f.key == "gunicorn")
    cmd = list(base.cmd)
    cmd[cmd.index("-w") + 1] = str(workers)
    for port in extra_ports:
        cmd[cmd.index("-b") : cmd.index("-b")] = ["-b", f"127.0.0.1:{port}"]
    return Fixture(
        f"gunicorn_w{workers}",
        f"gunicorn -w {workers}",
        cmd,
        {"BENCH_IMPL": "relay", "BENCH_QUEUE": queue or "", "BENCH_LOG": "INFO"},
    )


def workers_of(server: Server) -> list[psutil.Process]:
    try:
        return list(server.ps.children())
    except psutil.Error:
        return []


def wait_workers(server: Server, n: int, timeout: float = 60.0) -> None:
    """Until gunicorn's ``n`` workers serve (each answers a request on its own)."""
    deadline = time.monotonic() + timeout
    while len(workers_of(server)) < n:
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{n} workers did not start")
        time.sleep(0.1)
    time.sleep(2.0)  # each worker imports the app and subscribes to the queue


def _sum_over(procs: list[psutil.Process], fn: Any) -> float:
    total = 0.0
    for p in procs:
        try:
            total += fn(p)
        except psutil.Error:
            pass
    return total


def clients_of(proc: psutil.Process, ports: list[int]) -> int:
    """Established connections a worker holds on the server's ports."""
    try:
        conns = proc.net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(
        1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr[1] in ports
    )


NO_QUEUE = "1, no queue"


def run_bcast_workers(conf: dict[str, Any], repeat: int, logdir: Path) -> dict[str, Any]:
    """Broadcast to one room whose members are spread over 1, 2 and 4 workers.

    Nothing is pinned: several workers are only worth measuring if they can use
    both cores. The generator (one Node process) and the private Redis share them.
    With ``no_queue_reference``, one worker without the queue too (what the queue costs).
    """
    opts = dict(conf)
    counts = [int(w) for w in str(opts.pop("workers")).split("/")]
    configs = [(str(w), w, True) for w in counts]
    if opts.pop("no_queue_reference", False):
        configs.insert(0, (NO_QUEUE, 1, False))
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in configs}
    try:
        broker = Broker(logdir / "redis.bcast_workers.log")
    except RuntimeError as exc:
        print(f"bcast_workers: {exc}", file=sys.stderr)
        return {label: {"error": str(exc)} for label in runs}
    try:
        for _ in range(repeat):  # alternate 1, 2, 4, 1, 2, 4: a noisy minute hurts all
            for label, w, queued in configs:
                fixture = gunicorn_fixture(w, broker.url if queued else None)
                log_path = logdir / f"{fixture.key}.bcast_workers.log"
                server = Server(fixture, None, log_path)
                t0 = time.monotonic()
                try:
                    server.wait_ready()
                    wait_workers(server, w)
                    r = run_gen("broadcast", server.url, opts, None, 600, log_path, server, broker)
                    r["worker_threads"] = [
                        _sum_over([p], lambda p: p.num_threads()) for p in workers_of(server)
                    ]
                    if r.get("rate") and r.get("server_cpu"):
                        r["rate_per_cpu"] = r["rate"] / r["server_cpu"]
                    if r.get("delivered") and r.get("server_writes") is not None:
                        r["writes_per_1k"] = 1000 * r["server_writes"] / r["delivered"]
                    if server.proc.poll() is not None:
                        r["error"] = f"server died (exit {server.proc.returncode})"
                except RuntimeError as exc:
                    r = {"error": str(exc)}
                finally:
                    server.stop()
                r["wall_seconds"] = time.monotonic() - t0
                r["loadavg_1min"] = os.getloadavg()[0]
                runs[label].append(r)
                brief = {
                    k: r.get(k)
                    for k in ("rate", "server_cpu", "broker_cpu", "gen_cpu", "per_process", "error")
                    if r.get(k) is not None
                }
                print(f"bcast_workers w={label} {json.dumps(brief)}", file=sys.stderr)
    finally:
        broker.stop()
    return {label: median_result(rs) for label, rs in runs.items()}


def bcast_workers_table(res: dict[str, Any]) -> str:
    def val(r: dict[str, Any], per_cpu: bool) -> float | None:
        if r.get("error") or not r.get("rate"):
            return None
        if per_cpu:  # the median over runs of rate / server CPU
            return float(r["rate_per_cpu"]) if r.get("rate_per_cpu") else None
        return float(r["rate"])

    counts = list(res)
    base = res[next(c for c in counts if c != NO_QUEUE)]
    lines = [
        "| workers | clients per worker | deliveries/s | vs 1 worker | server CPU (cores) "
        "| deliveries per server CPU-s | vs 1 worker | Redis CPU | generator CPU "
        "| server writes per 1,000 deliveries |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in counts:
        r = res[w]
        cells = [w, " / ".join(str(v) for v in sorted((r.get("per_process") or {}).values()))]
        for per_cpu in (False, True):
            v, b = val(r, per_cpu), val(base, per_cpu)
            cells.append(fmt(v, "/s") if v is not None else "fails")
            cells.append(f"{v / b:.2f}x" if v is not None and b else "-")
            if not per_cpu:
                cells.append(f"{r['server_cpu']:.2f}" if r.get("server_cpu") else "-")
        cells.append(f"{r['broker_cpu']:.2f}" if r.get("broker_cpu") is not None else "-")
        g = r.get("gen_cpu")
        cells.append(f"{g:.2f}" + (" *" if g and g >= 0.9 else "") if g is not None else "-")
        wr = r.get("writes_per_1k")
        cells.append(f"{wr:.0f}" if wr is not None else "-")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    lines.append("`*`: the generator used >= 90% of a core, so the figure is a lower bound.")
    return "\n".join(lines)


def run_scale50k(conf: dict[str, Any], logdir: Path) -> dict[str, Any]:
    """``clients`` idle WebSocket clients on ``workers`` gunicorn workers, then one
    broadcast (an HTTP request to one worker, through Redis to all) that must reach
    every client; RSS per connection from the workers' RSS before and after."""
    n = int(conf["clients"])
    w = int(conf["workers"])
    procs = int(conf["procs"])
    result: dict[str, Any] = {"clients": n, "workers": w, "generators": procs}
    try:
        broker = Broker(logdir / "redis.scale50k.log")
    except RuntimeError as exc:
        print(f"scale50k: {exc}", file=sys.stderr)
        return {**result, "error": str(exc)}
    # One destination port per generator: the ephemeral ports (~28,000) are per source
    # address and destination. (Several source addresses work too, gen.js local_address=,
    # but bind() with an explicit address searches the port space: ~1 ms per connection
    # at 10,000 sockets here, so the connect rate collapses.)
    extra_ports = tuple(free_port() for _ in range(procs - 1))
    fixture = gunicorn_fixture(w, broker.url, extra_ports)
    log_path = logdir / f"{fixture.key}.scale50k.log"
    server = Server(fixture, None, log_path)
    gens: list[subprocess.Popen[bytes]] = []
    try:
        server.wait_ready()
        wait_workers(server, w)
        workers = workers_of(server)
        result["worker_pids"] = [p.pid for p in workers]
        # Warm-up: a few clients on every worker and one broadcast through the queue.
        warm = subprocess.Popen(
            gen_cmd("idle", server.url, {"clients": 30 * w}),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert warm.stdout is not None and warm.stdin is not None
        warm.stdout.readline()
        warm.stdin.write(b"wait 1 20\n")
        warm.stdin.flush()
        urllib.request.urlopen(f"{server.url}/bench/broadcast?seq=0", timeout=30).read()
        warm.stdout.readline()
        warm.stdin.write(b"done\n")
        warm.stdin.flush()
        warm.communicate(timeout=30)
        time.sleep(2.0)
        rss = lambda p: p.memory_info().rss  # noqa: E731
        result["base_rss"] = [_sum_over([p], rss) for p in workers]
        result["base_threads"] = [_sum_over([p], lambda p: p.num_threads()) for p in workers]

        per = [n // procs + (1 if k < n % procs else 0) for k in range(procs)]
        ports = [server.port, *extra_ports]
        t0 = time.monotonic()
        with open(log_path, "ab") as log:
            for k, count in enumerate(per):
                opts = {"clients": count, "concurrency": conf["concurrency"]}
                url = f"http://127.0.0.1:{ports[k]}"
                gens.append(
                    subprocess.Popen(
                        gen_cmd("idle", url, opts),
                        cwd=ROOT,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                    )
                )
        firsts = []
        for gen in gens:
            assert gen.stdout is not None
            firsts.append(json.loads(gen.stdout.readline() or "{}"))
        result["connect_seconds"] = time.monotonic() - t0
        connected = sum(int(f.get("connected", 0)) for f in firsts)
        result.update(connected=connected, connect_errors=connect_errors(firsts))
        time.sleep(3.0)  # let the workers settle (buffers allocated, threads idle)
        alive = [p.is_running() for p in workers]
        result["rss"] = [_sum_over([p], rss) for p in workers]
        result["threads"] = [_sum_over([p], lambda p: p.num_threads()) for p in workers]
        # Open descriptors per worker: its clients (+ listeners, Redis, epoll...).
        result["fds"] = [_sum_over([p], lambda p: p.num_fds()) for p in workers]
        result["per_worker"] = [clients_of(p, ports) for p in workers]
        if connected:
            result["kb_per_conn"] = (
                (sum(result["rss"]) - sum(result["base_rss"])) / connected / 1024
            )

        # The broadcast: each generator reports when all its clients have it.
        for gen in gens:
            assert gen.stdin is not None
            gen.stdin.write(b"wait 1 120\n")
            gen.stdin.flush()
        t_send = time.monotonic_ns()
        with urllib.request.urlopen(f"{server.url}/bench/broadcast?seq=1", timeout=60) as resp:
            resp.read()
        result["trigger_ms"] = (time.monotonic_ns() - t_send) / 1e6
        deliveries = []
        for gen in gens:
            assert gen.stdout is not None
            deliveries.append(json.loads(gen.stdout.readline() or "{}"))
        result["deliveries"] = deliveries
        result["received"] = sum(int(d.get("complete", 0)) for d in deliveries)
        lasts = [int(d["last_ns"]) for d in deliveries if d.get("last_ns")]
        firsts_ns = [int(d["first_ns"]) for d in deliveries if d.get("first_ns")]
        if lasts:
            result["first_delivery_ms"] = (min(firsts_ns) - t_send) / 1e6
            result["last_delivery_ms"] = (max(lasts) - t_send) / 1e6

        finals = []
        for gen in gens:
            assert gen.stdin is not None
            gen.stdin.write(b"done\n")
            gen.stdin.flush()
        for gen in gens:
            rest, _ = gen.communicate(timeout=120)
            finals += [json.loads(ln) for ln in rest.decode().splitlines() if ln.startswith("{")]
        result["alive_at_end"] = sum(int(f.get("alive_at_end") or 0) for f in finals)
        if not all(alive) or server.proc.poll() is not None:
            result["error"] = "a worker died"
        elif connected < n:
            result["error"] = f"only {connected}/{n} clients connected"
        elif result["received"] < connected:
            result["error"] = f"the broadcast reached {result['received']}/{connected}"
        elif result["alive_at_end"] < connected:
            result["error"] = f"{connected - result['alive_at_end']} connections dropped"
    except (RuntimeError, OSError, ValueError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for gen in gens:
            if gen.poll() is None:
                gen.kill()
                gen.wait()
        server.stop()
        broker.stop()
    return result


def scale50k_table(r: dict[str, Any]) -> str:
    def mb(v: float) -> str:
        return f"{v / 2**20:.0f} MB"

    rows = [
        ("clients connected / wanted", f"{r.get('connected', 0):,} / {r['clients']:,}"),
        ("server workers / generator processes", f"{r['workers']} / {r['generators']}"),
        ("connect time (all generators)", f"{r.get('connect_seconds', 0):.0f} s"),
        ("clients per worker", " / ".join(f"{v:,}" for v in r.get("per_worker", []))),
        ("one broadcast reached", f"{r.get('received', 0):,}"),
        ("trigger -> first delivery", f"{r.get('first_delivery_ms', 0):.0f} ms"),
        ("trigger -> last delivery", f"{r.get('last_delivery_ms', 0):.0f} ms"),
        ("RSS per worker before", " / ".join(mb(v) for v in r.get("base_rss", []))),
        ("RSS per worker with clients", " / ".join(mb(v) for v in r.get("rss", []))),
        ("RSS per connection (workers' sum)", f"{r.get('kb_per_conn', 0):.1f} KB"),
        ("threads per worker", " / ".join(f"{v:.0f}" for v in r.get("threads", []))),
        ("still connected at the end", f"{r.get('alive_at_end', 0):,}"),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    if r.get("error"):
        lines.append(f"\nerror: {r['error']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# table


def _skipped(r: dict[str, Any]) -> bool:
    return str(r.get("error", "")).startswith("skipped")


def cell_values(res: dict[str, Any], per_cpu: bool = False) -> dict[str, float | None]:
    """Map a fixture's group results to the table rows (None: failed or not measured)."""

    def ok(group: str, key: str = "rate") -> float | None:
        r = res.get(group) or {}
        if r.get("error") or r.get(key) is None:
            return None
        if per_cpu:
            cpu = r.get("server_cpu")
            return float(r[key]) / cpu if cpu else None
        return float(r[key])

    def subject_only(group: str) -> float | None:
        # The subject's own figure; an anchor's for the same work (ASYNC_OF).
        if group not in res:
            return None
        if not _skipped(res[group]):
            return ok(group)
        return ok(ASYNC_OF[group])

    return {
        "ack": ok("ack"),
        "ack10": ok("ack10"),
        "ack1": ok("ack1"),
        "ack_async": subject_only("ack_async"),
        "ack_async10": subject_only("ack_async10"),
        "ack_async1": subject_only("ack_async1"),
        "bcast1k": ok("bcast1k"),
        "bcast5k": ok("bcast5k"),
        "lat_p50": ok("bcast1k", "latency_p50_ms"),
        "lat_p99": ok("bcast1k", "latency_p99_ms"),
        "lat5k_p50": ok("bcast5k", "latency_p50_ms"),
        "lat5k_p99": ok("bcast5k", "latency_p99_ms"),
        "bcast20k": ok("bcast20k"),
        "lat20k_p50": ok("bcast20k", "latency_p50_ms"),
        "lat20k_p99": ok("bcast20k", "latency_p99_ms"),
        "echo": ok("echo"),
        "echo_async": subject_only("echo_async"),
        "storm_ws": ok("storm_ws") if not (res.get("storm_ws") or {}).get("errors") else None,
        "storm_up": ok("storm_up") if not (res.get("storm_up") or {}).get("errors") else None,
        "mem": ok("idle", "kb_per_conn"),
        "threads": ok("idle", "threads"),
        "scale": ok("scale", "alive_at_end"),
        "scale_mem": ok("scale", "kb_per_conn"),
    }


#: The scenario group a row's figure comes from, where the row is named otherwise.
ROW_GROUP = {
    "lat_p50": "bcast1k",
    "lat_p99": "bcast1k",
    "lat5k_p50": "bcast5k",
    "lat5k_p99": "bcast5k",
    "lat20k_p50": "bcast20k",
    "lat20k_p99": "bcast20k",
    "mem": "idle",
    "threads": "idle",
    "scale_mem": "scale",
}


def why_missing(res: dict[str, Any], row: str) -> str:
    group = ROW_GROUP.get(row, row)
    r = res.get(group)
    if r is None:
        return "-"
    if str(r.get("error", "")).startswith("skipped"):
        return "skipped"
    if "partial" in r:
        return f"fails ({100 * r['partial']:.0f}%)"
    if r.get("error") or r.get("errors"):
        return "fails"
    return "-"


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "/s":
        return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"
    if unit == "ms":
        return f"{v:.1f} ms"
    if unit == "KB":
        return f"{v:.0f} KB"
    return f"{v:.0f}"


def gen_bound(res: dict[str, Any], row: str) -> bool:
    group = ROW_GROUP.get(row, row)
    r = res.get(group) or {}
    if row in ("lat20k_p50", "lat20k_p99"):  # its generators' share during the probes
        return float(r.get("probe_gen_cpu") or 0) >= 0.9
    return float(r.get("gen_cpu") or 0) >= 0.9


PER_CPU_ROWS = (
    "ack",
    "ack10",
    "ack1",
    "ack_async",
    "ack_async10",
    "ack_async1",
    "bcast1k",
    "bcast5k",
    "bcast20k",
    "echo",
    "echo_async",
)


def row_label(row: Row, results: dict[str, dict[str, Any]]) -> str:
    """The row's label; a bcast20k row names the clients it had (fewer than 20,000 when
    the descriptor limit capped them, see descriptor_room)."""
    if row.key not in ("bcast20k", "lat20k_p50", "lat20k_p99"):
        return row.label
    counts = {r["bcast20k"].get("clients") for r in results.values() if "bcast20k" in r}
    counts.discard(None)
    if len(counts) != 1:
        return row.label
    return row.label.replace("20,000", f"{counts.pop():,}")


def table(
    results: dict[str, dict[str, Any]], fixtures: list[Fixture], per_cpu: bool = False
) -> str:
    present = [f for f in fixtures if f.key in results]
    values = {f.key: cell_values(results[f.key], per_cpu) for f in present}
    anchors = [f for f in present if f.key not in (SUBJECT, *SUBJECT_VARIANTS)]
    header = ["scenario", *(f.label for f in present)]
    if SUBJECT in values:
        header += [f"Relay / {f.label}" for f in anchors]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ROWS:
        if per_cpu and row.key not in PER_CPU_ROWS:
            continue
        if all(
            values[f.key][row.key] is None and why_missing(results[f.key], row.key) == "-"
            for f in present
        ):
            continue  # scenario not run
        cells = [row_label(row, results) + ("" if row.higher_is_better else " (lower is better)")]
        for f in present:
            v = values[f.key][row.key]
            text = fmt(v, row.unit) if v is not None else why_missing(results[f.key], row.key)
            if v is not None and gen_bound(results[f.key], row.key):
                text += " *"
            cells.append(text)
        if SUBJECT in values:
            mine = values[SUBJECT][row.key]
            for f in anchors:
                theirs = values[f.key][row.key]
                if mine is None or theirs is None or theirs == 0 or mine == 0:
                    cells.append("-")
                else:
                    cells.append(f"{mine / theirs:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if per_cpu:
        lines.append(
            "Each rate divided by the server's CPU share over the measured window "
            "(work per CPU-second of the server's core): robust when other processes "
            "share the machine."
        )
        return "\n".join(lines)
    lines.append("`*`: the generator used >= 90% of its core, so the figure is a lower bound.")
    lines.append("Ratios are Flask-Relay / anchor (for 'lower is better' rows, < 1 is better).")
    return "\n".join(lines)


def median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of repeated runs for the numeric fields the table uses."""
    if len(runs) == 1:
        return runs[0]
    good = [r for r in runs if not r.get("error")]
    if not good:
        return runs[0]
    out = dict(good[0])
    keys = ("rate", "latency_p50_ms", "latency_p99_ms", "kb_per_conn", "threads", "gen_cpu")
    for key in (*keys, "server_cpu", "broker_cpu", "rate_per_cpu", "writes_per_1k"):
        vals = [r[key] for r in good if r.get(key) is not None]
        if vals:
            out[key] = statistics.median(vals)
    out["runs"] = runs
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short durations")
    parser.add_argument(
        "--fixtures",
        default=",".join(f.key for f in FIXTURES),
        help="comma-separated: " + ",".join(f.key for f in FIXTURES),
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(g for g in GROUPS if g not in OPTIONAL_GROUPS),
        help="comma-separated: "
        + ",".join(GROUPS + WORKER_GROUPS)
        + " (scale, bcast20k, bcast_workers, scale50k only when named)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the Python servers with py-spy into bench/results/profile-*/",
    )
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--gen-core", type=int, default=0)
    args = parser.parse_args(argv)

    cores = os.sched_getaffinity(0)
    server_core = args.server_core if args.server_core in cores else None
    gen_core = args.gen_core if args.gen_core in cores and args.gen_core != server_core else None
    if server_core is None or gen_core is None:
        print("warning: fewer than 2 usable cores; not pinning", file=sys.stderr)
        server_core = gen_core = None

    # Stop cleanly (servers stopped in `finally`) on SIGTERM as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # Many sockets per process: raise the open-file limit for us and our children.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    wanted = args.fixtures.split(",")
    fixtures = [f for f in FIXTURES if f.key in wanted]
    groups = [g for g in GROUPS if g in args.scenarios.split(",")]
    conf = settings(args.quick)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    outdir = HERE / "results"
    logdir = outdir / f"logs-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    profile_dir = outdir / f"profile-{stamp}" if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir()

    results: dict[str, dict[str, Any]] = {f.key: {} for f in fixtures}
    started = time.monotonic()
    load_before = os.getloadavg()
    # Fixtures are interleaved per scenario, so that a noisy minute on a shared machine
    # hurts every fixture of one row alike instead of one whole column.
    for group in groups:
        for fixture in fixtures:
            if group in ASYNC_OF and fixture.key != SUBJECT:
                results[fixture.key][group] = {"error": "skipped: Flask-Relay only"}
                continue
            if group in fixture.skip:
                results[fixture.key][group] = {"error": fixture.skip[group]}
                print(f"{fixture.key:10} {group:9} {fixture.skip[group]}", file=sys.stderr)
                continue
            prev = results[fixture.key].get(
                {"bcast5k": "bcast1k", "bcast20k": "bcast5k"}.get(group, "")
            )
            if prev is not None and prev.get("error"):
                smaller = "1,000" if group == "bcast5k" else "5,000"
                results[fixture.key][group] = {"error": f"skipped: failed at {smaller} clients"}
                print(f"{fixture.key:10} {group:9} skipped (failed at {smaller})", file=sys.stderr)
                continue
            runs = []
            for _ in range(args.repeat):
                t0 = time.monotonic()
                r = run_group(
                    fixture, group, conf[group], server_core, gen_core, logdir, profile_dir
                )
                r["wall_seconds"] = time.monotonic() - t0
                r["loadavg_1min"] = os.getloadavg()[0]
                runs.append(r)
                brief = {
                    k: r.get(k)
                    for k in ("rate", "kb_per_conn", "threads", "gen_cpu", "server_cpu", "error")
                    if r.get(k) is not None
                }
                print(f"{fixture.key:10} {group:9} {json.dumps(brief)}", file=sys.stderr)
            results[fixture.key][group] = median_result(runs)

    worker_results: dict[str, Any] = {}
    extra: list[str] = []
    named = args.scenarios.split(",")
    if "bcast_workers" in named:
        res = run_bcast_workers(conf["bcast_workers"], args.repeat, logdir)
        worker_results["bcast_workers"] = res
        extra.append("broadcast across workers (Redis):\n\n" + bcast_workers_table(res))
    if "scale50k" in named:
        res = run_scale50k(conf["scale50k"], logdir)
        worker_results["scale50k"] = res
        extra.append("idle clients on several workers:\n\n" + scale50k_table(res))

    text = "\n\n".join(
        ([table(results, fixtures), table(results, fixtures, per_cpu=True)] if groups else [])
        + extra
    )
    doc = {
        "when": stamp,
        "quick": args.quick,
        "repeat": args.repeat,
        "server_core": server_core,
        "gen_core": gen_core,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": conf,
        "seconds": time.monotonic() - started,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "results": results,
        "workers": worker_results,
        "table": text,
    }
    path = outdir / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(doc, indent=1))
    print(text)
    print(
        f"\nraw results: {path.relative_to(ROOT)}; server/generator logs: "
        f"{logdir.relative_to(ROOT)}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
