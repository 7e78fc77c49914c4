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


def test_hold_wakes_the_loop_once_at_the_end_and_keeps_order() -> None:
    """Calls a thread makes inside ``hold()`` run in one loop turn, after the block."""
    hub = Hub()
    hub.start()
    try:
        seen: list[int] = []

        def record(i: int) -> None:
            seen.append(i)

        before = hub.wakeups
        with hub.hold():
            for i in range(50):
                hub.call(record, i)
            time.sleep(0.05)
            assert seen == []  # nothing woke the loop yet
        assert hub.run_sync(lambda: list(seen), timeout=5) == list(range(50))
        # One wakeup for the batch, one for run_sync.
        assert hub.wakeups - before <= 2
        # Waiting for the loop inside the block releases what is held first.
        with hub.hold():
            hub.call(record, 50)
            assert hub.run_sync(lambda: seen[-1], timeout=5) == 50
    finally:
        hub.stop()


def test_idle_here_only_on_the_loop_with_nothing_queued() -> None:
    """What lets the engine deliver a loop-side send at once without overtaking."""
    hub = Hub()
    hub.start()
    try:
        assert not hub.idle_here()  # not the loop thread
        assert hub.run_sync(hub.idle_here, timeout=5)
        seen: list[str] = []
        with hub.hold():
            hub.call(seen.append, "queued")
            # A held call waits in the queue: on the loop, idle_here() is False
            # until it ran (asked through the loop's own queue, not the hub's).
            answer: list[bool] = []
            hub.loop.call_soon_threadsafe(lambda: answer.append(hub.idle_here()))
            wait_for(lambda: answer)
            assert answer == [False] and seen == []
        wait_for(lambda: seen == ["queued"])
        assert hub.run_sync(hub.idle_here, timeout=5)
    finally:
        hub.stop()
