"""Fixtures shared by every test directory."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"


@pytest.fixture(scope="session")
def node() -> str:
    """Path of the Node.js binary; the npm packages are installed by ``make deps``."""
    path = shutil.which("node")
    if path is None or not (NODE_MODULES / "socket.io-client").is_dir():
        pytest.fail("Node.js and the npm packages are required: run `make deps`")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
