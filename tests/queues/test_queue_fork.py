"""A message queue made before a fork (gunicorn ``--preload``, forked workers) works in both.

The child gets its own host id and connections and listens again once it
serves; without that, the two processes would take each other's messages for
their own (same host id) or the child would not listen at all.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys

import pytest
from brokers import channel, free_port, listening, machine_url, wait_for
from nodepeer import ServerProcess
from queue_helpers import HERE, PyClient


@pytest.mark.parametrize("backend", ["redis", "nats"])
def test_a_queue_made_before_fork_serves_both_processes(backend: str) -> None:
    url = machine_url(backend)
    port, port2 = free_port(), free_port()
    server = ServerProcess(
        [sys.executable, str(HERE / "fork_app.py"), "--port", str(port), "--port2", str(port2),
         "--queue", url, "--channel", channel()],
        port,
    )
    try:
        server.wait_listening()
        wait_for(lambda: listening(port2), what="the forked child")
        parent, child = PyClient(f"http://127.0.0.1:{port}"), PyClient(f"http://127.0.0.1:{port2}")
        try:
            assert parent.call("join", "r") == "joined"
            assert child.call("join", "r") == "joined"
            assert parent.call("send", "r", "from_parent", 1) == "sent"
            assert child.call("send", "r", "from_child", 2) == "sent"
            for client in (parent, child):
                assert client.wait("from_parent") == [[1]]
                assert client.wait("from_child") == [[2]]
            assert parent.call("call", child.sid, "double", 5) == 10
            assert child.call("call", parent.sid, "double", 6) == 12
        finally:
            parent.close()
            child.close()
    finally:
        server.stop()
        for pid in re.findall(r"child (\d+)", "".join(server.output)):
            # in case the parent could not stop it
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
