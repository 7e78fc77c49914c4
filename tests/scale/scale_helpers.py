"""Helpers of the scale-out tests: a server subprocess, a raw polling client.

The polling client opens a NEW TCP connection for every request
(``Connection: close``), so a server with several workers sees each request
of a session arrive at whichever worker accepts it: no client-side affinity.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def env_with_src(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


class Process:
    """A subprocess in its own session; stdout and stderr lines are collected."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path = HERE) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def count(self, text: str) -> int:
        return sum(1 for line in list(self.lines) if text in line)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, and wait for the exit."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def output(self) -> str:
        return "\n".join(self.lines[-60:])


def request(
    host: str, port: int, method: str, target: str, body: bytes = b"", timeout: float = 60
) -> tuple[int, bytes]:
    """One request on a new connection, closed after the answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        if body:
            headers["Content-Type"] = "text/plain;charset=UTF-8"
        conn.request(method, target, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class PollingClient:
    """A Socket.IO client over Engine.IO long-polling, one connection per request."""

    def __init__(self, host: str, port: int, path: str = "/socket.io/") -> None:
        self.host, self.port, self.path = host, port, path
        self.sid = ""
        self.packets: list[str] = []

    def _url(self) -> str:
        url = f"{self.path}?EIO=4&transport=polling&t={time.monotonic_ns()}"
        return url + (f"&sid={self.sid}" if self.sid else "")

    def _get(self) -> list[str]:
        status, body = request(self.host, self.port, "GET", self._url())
        assert status == 200, (status, body)
        return body.decode().split("\x1e")

    def _post(self, *packets: str) -> None:
        status, body = request(
            self.host, self.port, "POST", self._url(), "\x1e".join(packets).encode()
        )
        assert status == 200 and body == b"ok", (status, body)

    def connect(self) -> dict[str, Any]:
        (opening,) = self._get()
        assert opening.startswith("0"), opening
        info: dict[str, Any] = json.loads(opening[1:])
        self.sid = info["sid"]
        self._post("40")
        connected = self.wait(lambda p: p.startswith("40"))
        assert "sid" in json.loads(connected[2:])
        return info

    def wait(self, match: Callable[[str], bool], timeout: float = 60) -> str:
        """Poll until a packet matching ``match`` arrives (answering pings)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, packet in enumerate(self.packets):
                if match(packet):
                    del self.packets[i]
                    return packet
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching packet; got {self.packets}")
            for packet in self._get():
                if packet == "2":
                    self._post("3")
                elif packet == "1":
                    raise AssertionError("the server closed the session")
                elif packet != "6":
                    self.packets.append(packet)

    def emit(self, event: str, data: Any, ack_id: int) -> None:
        self._post(f"42{ack_id}" + json.dumps([event, data], separators=(",", ":")))

    def ack(self, ack_id: int) -> Any:
        packet = self.wait(lambda p: p.startswith(f"43{ack_id}["))
        return json.loads(packet[len(f"43{ack_id}") :])

    def event(self, name: str) -> Any:
        prefix = '42["' + name + '"'
        packet = self.wait(lambda p: p.startswith(prefix))
        return json.loads(packet[2:])[1:]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._post("41", "1")


def python() -> str:
    return sys.executable
