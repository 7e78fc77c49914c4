"""The hub: calls from any thread run on the loop, in order."""

from __future__ import annotations

import time

from flask_relay.server.loop import Hub


def wait_for(predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_calls_run_on_the_loop_in_order() -> None:
    hub = Hub()
    seen: list[tuple[int, bool]] = []
    hub.call(lambda: seen.append((0, hub.in_loop_thread())))  # before the loop runs
    hub.start()
    try:
        for i in range(1, 100):
            hub.call(lambda i=i: seen.append((i, hub.in_loop_thread())))
        assert hub.run_sync(lambda: len(seen), timeout=5) == 100
        assert seen == [(i, True) for i in range(100)]
        # Errors in a call are logged; later calls still run.
        hub.call(lambda: 1 / 0)
        assert hub.run_sync(lambda: "alive", timeout=5) == "alive"
    finally:
        hub.stop()
