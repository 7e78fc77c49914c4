"""Drive the official Socket.IO client under Node (tests/js/sio_peer.js) from Python.

One :class:`NodePeer` is one Node process that can hold any number of clients.
Commands go to its stdin as JSON lines; its reports (JSON lines, in the order
things happened in that process) are read by a thread into a list, and the tests
wait for them with :meth:`NodePeer.expect`, which polls with a deadline.

Binary values travel as ``{"$bin": base64}``; :func:`to_wire` and
:func:`from_wire` convert ``bytes`` both ways.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SIO_PEER = ROOT / "tests" / "js" / "sio_peer.js"

Report = dict[str, Any]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (as tests/conftest.py's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any, sio: Any) -> Iterator[str]:
    """Serve ``app`` with its Flask-Relay ``sio`` on a free port in this process;
    stops the server and the handler pool (no idle pool left for later tests)."""
    server = sio.make_server(app, "127.0.0.1", free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        sio.server.shutdown(wait=True)


def to_wire(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bin": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(value: Any) -> Any:
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$bin"), str):
            return base64.b64decode(value["$bin"])
        return {k: from_wire(v) for k, v in value.items()}
    return value


def node_binary() -> str:
    path = shutil.which("node")
    if path is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        raise RuntimeError("Node.js and the npm packages are required: run `make deps`")
    return path


class NodePeer:
    """A Node process running tests/js/sio_peer.js in line mode."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [node_binary(), str(SIO_PEER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=ROOT,
        )
        self.reports: list[Report] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self._tags = 0
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    # -- plumbing ------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.strip():
                continue
            report = json.loads(line)
            with self._cond:
                self.reports.append(report)
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, op: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        fields["op"] = op
        self.proc.stdin.write(json.dumps(to_wire(fields)) + "\n")
        self.proc.stdin.flush()

    def tag(self) -> str:
        self._tags += 1
        return f"t{self._tags}"

    def expect(
        self, predicate: Callable[[Report], bool], timeout: float = 10.0, what: str = "a report"
    ) -> Report:
        """The first report (from the start) matching ``predicate``; waits for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for report in self.reports:
                    if report.get("ev") == "fatal":
                        raise AssertionError(f"sio_peer.js failed: {report}")
                    if predicate(report):
                        return report
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = self.reports[-10:]
                    raise AssertionError(
                        f"timed out waiting for {what}; last reports: {tail}; "
                        f"stderr: {''.join(self.stderr)[-2000:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def find(self, **fields: Any) -> list[Report]:
        """Every report so far whose fields equal ``fields``."""
        with self._cond:
            return [r for r in self.reports if all(r.get(k) == v for k, v in fields.items())]

    def wait(self, timeout: float = 10.0, **fields: Any) -> Report:
        return self.expect(
            lambda r: all(r.get(k) == v for k, v in fields.items()), timeout, what=repr(fields)
        )

    # -- single clients --------------------------------------------------------------

    def connect(
        self,
        cid: str,
        url: str,
        namespace: str = "/",
        share: str | None = None,
        timeout: float = 10.0,
        **opts: Any,
    ) -> Report:
        """Connect client ``cid``; returns its ``connect`` or ``connect_error`` report."""
        fields: dict[str, Any] = {"id": cid, "url": url, "namespace": namespace}
        fields["opts"] = to_wire(opts)
        if share is not None:
            fields["share"] = share
        self.send("connect", **fields)
        return self.expect(
            lambda r: r.get("id") == cid and r["ev"] in ("connect", "connect_error"),
            timeout,
            what=f"{cid} to connect",
        )

    def emit(self, cid: str, event: str, *args: Any) -> None:
        self.send("emit", id=cid, event=event, args=to_wire(list(args)))

    def call(self, cid: str, event: str, *args: Any, timeout: float = 10.0) -> list[Any]:
        """Emit with an ack request; return the ack's arguments."""
        tag = self.call_nowait(cid, event, *args)
        return self.ack_of(tag, timeout=timeout)

    def call_nowait(self, cid: str, event: str, *args: Any) -> str:
        tag = self.tag()
        self.send("emit", id=cid, event=event, args=to_wire(list(args)), ack=True, tag=tag)
        return tag

    def ack_of(self, tag: str, timeout: float = 10.0) -> list[Any]:
        report = self.expect(
            lambda r: r.get("tag") == tag and r["ev"] in ("ack", "ack_error"),
            timeout,
            what=f"ack {tag}",
        )
        if report["ev"] == "ack_error":
            raise AssertionError(f"no ack: {report}")
        return list(from_wire(report["args"]))

    def events(self, cid: str, event: str | None = None) -> list[list[Any]]:
        """Arguments of every event received so far by ``cid`` (named ``event``)."""
        found = self.find(ev="event", id=cid)
        return [from_wire(r["args"]) for r in found if event is None or r["event"] == event]

    def wait_event(self, cid: str, event: str, count: int = 1, timeout: float = 10.0) -> Report:
        """The ``count``-th ``event`` received by ``cid`` (waits for it)."""

        def nth(reports: list[Report]) -> Report | None:
            found = [
                r
                for r in reports
                if r["ev"] == "event" and r.get("id") == cid and r.get("event") == event
            ]
            return found[count - 1] if len(found) >= count else None

        return self.until(nth, timeout, what=f"{cid} <- {event} x{count}")

    def until(
        self, fn: Callable[[list[Report]], Any], timeout: float = 10.0, what: str = "a condition"
    ) -> Any:
        """Wait until ``fn(all reports so far)`` returns something other than None/False."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for report in self.reports:
                    if report.get("ev") == "fatal":
                        raise AssertionError(f"sio_peer.js failed: {report}")
                result = fn(list(self.reports))
                if result is not None and result is not False:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"timed out waiting for {what}; last reports: {self.reports[-10:]}; "
                        f"stderr: {''.join(self.stderr)[-2000:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def info(self, cid: str) -> Report:
        tag = self.tag()
        self.send("info", id=cid, tag=tag)
        return self.wait(ev="info", tag=tag)

    def sync(self) -> None:
        """Wait until the Node process has read every command sent before."""
        tag = self.tag()
        self.send("echo", tag=tag)
        self.wait(ev="echo", tag=tag)

    # -- many clients ------------------------------------------------------------------

    def bulk(
        self,
        prefix: str,
        url: str,
        count: int,
        namespace: str = "/",
        timeout: float = 60.0,
        concurrency: int = 100,
        **opts: Any,
    ) -> Report:
        self.send(
            "bulk",
            prefix=prefix,
            url=url,
            count=count,
            namespace=namespace,
            opts=to_wire(opts),
            concurrency=concurrency,
        )
        return self.wait(timeout, ev="bulk_connected", prefix=prefix)

    def bulk_call(
        self, prefix: str, event: str, *args: Any, timeout: float = 60.0
    ) -> dict[int, Any]:
        """Every client of ``prefix`` emits with an ack ("$i" in args: its index)."""
        tag = self.tag()
        self.send(
            "bulk_emit", prefix=prefix, event=event, args=to_wire(list(args)), ack=True, tag=tag
        )
        report = self.wait(timeout, ev="bulk_acked", tag=tag)
        return {index: from_wire(answer) for index, answer in report["results"]}

    def bulk_counts(self, prefix: str) -> Report:
        tag = self.tag()
        self.send("bulk_counts", prefix=prefix, tag=tag)
        return self.wait(ev="bulk_counts", tag=tag)

    def bulk_wait(
        self, prefix: str, condition: Callable[[Report], bool], timeout: float = 30.0
    ) -> Report:
        """Poll the bulk counters until ``condition`` holds; return the last counters."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.bulk_counts(prefix)
            if condition(counts):
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(f"bulk {prefix}: condition not met; counters {counts}")
            time.sleep(0.05)

    def bulk_close(self, prefix: str) -> None:
        self.send("bulk_close", prefix=prefix)
        self.wait(ev="bulk_closed", prefix=prefix)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class ServerProcess:
    """A Python server started as a subprocess (``argv``), stopped by :meth:`stop`."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode}: {''.join(self.output)[-3000:]}"
                )
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"server not listening: {''.join(self.output)[-3000:]}")
            time.sleep(0.05)

    def threads(self) -> int:
        """The server process's OS thread count, from /proc/PID/status."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads line in /proc status")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        # Captured by pytest, shown when a test failed.
        print(f"--- server output (exit {self.proc.returncode}) ---")
        print("".join(self.output)[-5000:])


@contextlib.contextmanager
def started(
    argv: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A listening :class:`ServerProcess`, stopped when the block ends."""
    server = ServerProcess(argv, port, env)
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()
