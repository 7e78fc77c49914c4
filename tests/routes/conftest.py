"""Fixtures for the WebSocket route tests: the own server and Werkzeug's (app.run)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from wshelpers import Served, serve  # noqa: E402


@pytest.fixture(params=["own", "werkzeug"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The test app behind each door: the own server, and Werkzeug (what
    ``app.run()`` and ``flask run`` use) through the foreign-server middleware."""
    yield from serve(request.param)


@pytest.fixture(params=["own", "werkzeug"])
def served_pinging(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The same, with ``ping_interval`` 0.2 s."""
    yield from serve(request.param, ping_interval=0.2)
