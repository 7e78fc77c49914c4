"""Fixtures for the Engine.IO server tests (helpers live in eio_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from eio_helpers import Running, engine_factory


@pytest.fixture
def make_engine() -> Iterator[Callable[..., Running]]:
    """Start Engine.IO servers at /engine.io; all are stopped at the end."""
    yield from engine_factory()
