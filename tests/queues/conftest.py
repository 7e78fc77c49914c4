"""Fixtures for the message-queue tests (brokers: see brokers.py)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "integration"))

from nodepeer import NodePeer  # noqa: E402


@pytest.fixture
def peer() -> Iterator[NodePeer]:
    p = NodePeer()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def no_stream_keys_left() -> Iterator[None]:
    """Delete this process's test streams and sessions once the module is done (a
    queue that closes late, or a server that keeps a session as it shuts down, may
    write after a test's own cleanup). For the redis+streams:// modules."""
    yield
    import redis

    client = redis.Redis(port=6379)
    time.sleep(0.5)
    keys = list(client.scan_iter(match=f"relay-test-{os.getpid()}-*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client() -> Iterator[Any]:
    """A client of the machine's Redis on 127.0.0.1:6379."""
    import redis

    client = redis.Redis(port=6379)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.fail("these tests need the machine's Redis on 127.0.0.1:6379")
    yield client
    client.close()
