"""Helpers of the message-queue tests: server processes and a recording python-socketio client."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

from brokers import free_port, wait_for
from nodepeer import ServerProcess, started

HERE = Path(__file__).resolve().parent
APP = str(HERE / "queue_app.py")


def serve(url: str, channel: str) -> contextlib.AbstractContextManager[ServerProcess]:
    """A queue_app.py server process on ``url``/``channel`` (stopped when the block ends)."""
    port = free_port()
    return started(
        [sys.executable, APP, "--port", str(port), "--queue", url, "--channel", channel], port
    )


class PyClient:
    """The python-socketio client, recording every event it gets.

    Its Engine.IO client runs each event handler in a thread of its own, so
    events that arrive close together may be recorded in any order.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        import socketio

        self.client = socketio.Client(reconnection=False, handle_sigint=False)
        self.events: list[tuple[str, list[Any]]] = []
        self._lock = threading.Lock()
        self.client.on("*", self._record)
        self.client.on("double", lambda value: value * 2)
        self.client.connect(url, wait_timeout=10, **kwargs)

    def _record(self, event: str, *args: Any) -> None:
        with self._lock:
            self.events.append((event, list(args)))

    @property
    def sid(self) -> str:
        sid = self.client.get_sid()
        assert sid is not None
        return sid

    def call(self, event: str, *args: Any, timeout: float = 15) -> Any:
        return self.client.call(event, args if len(args) != 1 else args[0], timeout=timeout)

    def got(self, event: str) -> list[list[Any]]:
        with self._lock:
            return [args for name, args in self.events if name == event]

    def wait(self, event: str, count: int = 1, timeout: float = 15) -> list[list[Any]]:
        wait_for(lambda: len(self.got(event)) >= count, timeout, f"{count} {event!r} events")
        return self.got(event)

    def close(self) -> None:
        try:
            self.client.disconnect()
        except Exception:
            pass


