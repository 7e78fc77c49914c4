"""Fixtures for the message-queue tests (brokers: see brokers.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

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
