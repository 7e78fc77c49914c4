"""nats-py internals that pubsub/nats.py relies on are still there.

After a failed publish batch, the NATS queue empties nats-py's buffer of
unsent publications (``Client._pending`` and ``Client._pending_data_size``,
undocumented): the batch stays in Flask-Relay's outbox, and nats-py must not
send it again after reconnecting, out of order with what the outbox holds.
If a nats-py release renames them, the queue still works but an outage could
deliver a batch twice; this test names the missing piece instead.
"""

from __future__ import annotations

import asyncio

import pytest

nats_client = pytest.importorskip("nats.aio.client")


def test_the_unsent_publications_buffer_is_where_the_queue_empties_it() -> None:
    async def make() -> object:
        return nats_client.Client()

    client = asyncio.run(make())
    assert isinstance(getattr(client, "_pending", None), list), (
        "nats-py's Client._pending (the buffer pubsub/nats.py empties after a failed "
        "batch) is gone or changed: update pubsub/nats.py for this nats-py release"
    )
    assert isinstance(getattr(client, "_pending_data_size", None), int), (
        "nats-py's Client._pending_data_size (reset with _pending) is gone or changed"
    )
