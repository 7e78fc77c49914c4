"""The dispatcher: per-key order, concurrency across keys, limits, failures."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from flask_relay.engine.dispatch import Dispatcher, DispatchQueueFull, InlineDispatcher


@pytest.fixture
def dispatcher():
    d = Dispatcher(max_workers=4)
    yield d
    d.shutdown(wait=True)


def test_same_key_runs_in_order_and_never_overlaps(dispatcher: Dispatcher) -> None:
    seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    active: dict[str, int] = {k: 0 for k in seen}
    overlap = []
    lock = threading.Lock()
    done = threading.Semaphore(0)

    def job(key: str, i: int) -> None:
        with lock:
            active[key] += 1
            if active[key] > 1:
                overlap.append((key, i))
        time.sleep(0)  # let other threads interleave
        seen[key].append(i)
        with lock:
            active[key] -= 1
        done.release()

    for i in range(200):
        for key in seen:
            dispatcher.submit(key, job, key, i)
    for _ in range(600):
        assert done.acquire(timeout=10)
    assert overlap == []
    for key in seen:
        assert seen[key] == list(range(200))


def test_different_keys_run_concurrently(dispatcher: Dispatcher) -> None:
    # Both calls must be inside at once to pass the barrier: proves concurrency
    # without timing.
    barrier = threading.Barrier(3, timeout=10)
    results = []

    def job(name: str) -> None:
        barrier.wait()
        results.append(name)

    dispatcher.submit("k1", job, "one")
    dispatcher.submit("k2", job, "two")
    barrier.wait()
    dispatcher.shutdown(wait=True)
    assert sorted(results) == ["one", "two"]


def test_max_workers_bounds_threads() -> None:
    d = Dispatcher(max_workers=2)
    release = threading.Event()
    started = threading.Semaphore(0)
    names: set[str] = set()

    def job() -> None:
        names.add(threading.current_thread().name)
        started.release()
        release.wait(10)

    try:
        for i in range(6):
            d.submit(i, job)
        assert started.acquire(timeout=10)
        assert started.acquire(timeout=10)
        assert d.thread_count == 2
        assert d.pending() == 4
        release.set()
        for _ in range(4):
            assert started.acquire(timeout=10)
    finally:
        release.set()
        d.shutdown()
    assert len(names) == 2


def test_exception_is_logged_and_worker_survives(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    done = threading.Event()

    def boom() -> None:
        raise ValueError("kaboom")

    with caplog.at_level(logging.ERROR, logger="flask_relay.dispatch"):
        dispatcher.submit("k", boom)
        dispatcher.submit("k", done.set)
        assert done.wait(10)
    assert any("kaboom" in (r.exc_text or "") for r in caplog.records)


def test_per_key_limit() -> None:
    d = Dispatcher(max_workers=1, max_pending_per_key=3)
    gate = threading.Event()
    started = threading.Event()

    def block() -> None:
        started.set()
        gate.wait(10)

    try:
        d.submit("k", block)
        assert started.wait(10)
        for _ in range(3):
            d.submit("k", lambda: None)
        with pytest.raises(DispatchQueueFull, match="max_pending_per_key=3"):
            d.submit("k", lambda: None)
        d.submit("other", lambda: None)  # another key is not affected
    finally:
        gate.set()
        d.shutdown()


def test_total_limit() -> None:
    d = Dispatcher(max_workers=1, max_pending=2)
    gate = threading.Event()
    started = threading.Event()

    def block() -> None:
        started.set()
        gate.wait(10)

    try:
        d.submit(0, block)
        assert started.wait(10)
        d.submit(1, lambda: None)
        d.submit(2, lambda: None)
        with pytest.raises(DispatchQueueFull, match="max_pending=2"):
            d.submit(3, lambda: None)
    finally:
        gate.set()
        d.shutdown()


def test_shutdown_drains_then_refuses() -> None:
    d = Dispatcher(max_workers=1)
    out: list[int] = []
    for i in range(50):
        d.submit("k", out.append, i)
    d.shutdown(wait=True)
    assert out == list(range(50))
    assert d.thread_count == 0
    with pytest.raises(RuntimeError, match="shutdown"):
        d.submit("k", out.append, 1)


def test_idle_workers_exit() -> None:
    d = Dispatcher(max_workers=2, idle_timeout=0.05)
    done = threading.Event()
    d.submit("k", done.set)
    assert done.wait(10)
    deadline = time.monotonic() + 10
    while d.thread_count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert d.thread_count == 0
    done.clear()
    d.submit("k", done.set)  # a new thread starts on demand
    assert done.wait(10)
    d.shutdown()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Dispatcher(max_workers=0)
    with pytest.raises(ValueError):
        Dispatcher(max_pending_per_key=0)


def test_inline_dispatcher_runs_now_and_keeps_order_on_reentry() -> None:
    d = InlineDispatcher()
    out: list[str] = []

    def outer() -> None:
        out.append("outer-start")
        d.submit("k", out.append, "inner")  # same key: after outer
        d.submit("j", out.append, "other")  # other key: right away
        out.append("outer-end")

    d.submit("k", outer)
    assert out == ["outer-start", "other", "outer-end", "inner"]
    with pytest.raises(ZeroDivisionError):
        d.submit("k", lambda: 1 / 0)
    d.submit("k", out.append, "again")
    assert out[-1] == "again"


# -- lazy wake-up: one awake worker drains the queue, blocked ones get help -----


def test_blocked_handler_does_not_starve_a_later_key_with_no_further_submissions() -> None:
    # submit() wakes no worker while one is awake; the key submitted second must
    # still run while the first handler blocks, although nothing else is submitted
    # that could notice the stuck queue. The first handler waits for the second
    # one: without a second worker it would time out and record False.
    d = Dispatcher(max_workers=4)
    first_started = threading.Event()
    second_ran = threading.Event()
    seen: list[bool] = []

    def first() -> None:
        first_started.set()
        seen.append(second_ran.wait(10))

    try:
        d.submit("a", first)
        assert first_started.wait(10)
        d.submit("b", second_ran.set)  # the last submission
        assert second_ran.wait(10)
    finally:
        second_ran.set()
        d.shutdown(wait=True)
    assert seen == [True]


def test_keys_submitted_in_one_burst_all_run_while_each_blocks() -> None:
    # Submitted before any worker runs: the first worker takes one key and leaves
    # the others behind; each handler blocks until all four are inside at once.
    d = Dispatcher(max_workers=4)
    barrier = threading.Barrier(5, timeout=10)
    passed: list[str] = []

    def job(name: str) -> None:
        barrier.wait()
        passed.append(name)

    try:
        for name in "abcd":
            d.submit(name, job, name)
        barrier.wait()
    finally:
        d.shutdown(wait=True)
    assert sorted(passed) == ["a", "b", "c", "d"]


def test_per_key_order_holds_with_blocking_and_fast_keys_mixed() -> None:
    d = Dispatcher(max_workers=3)
    gate = threading.Event()
    out: dict[str, list[int]] = {"slow": [], "fast": []}
    fast_done = threading.Event()

    def slow(i: int) -> None:
        if i == 0:
            gate.wait(10)
        out["slow"].append(i)

    def fast(i: int) -> None:
        out["fast"].append(i)
        if i == 99:
            fast_done.set()

    try:
        for i in range(100):
            d.submit("slow", slow, i)
            d.submit("fast", fast, i)
        # The fast key finishes while the slow one is stuck on its first call.
        assert fast_done.wait(10)
        assert out["slow"] == []
        gate.set()
    finally:
        gate.set()
        d.shutdown(wait=True)
    assert out["slow"] == list(range(100))
    assert out["fast"] == list(range(100))


def test_watcher_thread_exits_with_the_idle_pool() -> None:
    prefix = f"dispatch-test-{id(object())}"
    d = Dispatcher(max_workers=2, idle_timeout=0.05, thread_name_prefix=prefix)

    def ours() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]

    try:
        for _ in range(2):  # the pool empties, then starts again on demand
            done = threading.Event()
            d.submit("k", done.set)
            assert done.wait(10)
            deadline = time.monotonic() + 10
            while ours() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ours() == []
            assert d.thread_count == 0
    finally:
        d.shutdown()


# -- the order window (async_handlers=True) ---------------------------------------


def test_order_window_lets_a_later_call_of_the_key_release_a_blocked_one() -> None:
    # A game loop: the first call waits for the key's own second call. Strictly
    # serial it would wait for ever; past the window the second one runs beside it.
    d = Dispatcher(max_workers=4, order_window=0.05)
    stop = threading.Event()
    result: list[bool] = []
    try:
        d.submit("client", lambda: result.append(stop.wait(10)))
        d.submit("client", stop.set)
        assert stop.wait(10)
    finally:
        stop.set()
        d.shutdown(wait=True)
    assert result == [True]


def test_without_order_window_the_key_is_strictly_serial() -> None:
    d = Dispatcher(max_workers=4)  # order_window=None
    first_done = threading.Event()
    starts: list[tuple[str, bool]] = []

    def first() -> None:
        starts.append(("first", True))
        time.sleep(0.3)
        first_done.set()

    try:
        d.submit("client", first)
        d.submit("client", lambda: starts.append(("second", first_done.is_set())))
        wait_for = time.monotonic() + 10
        while len(starts) < 2 and time.monotonic() < wait_for:
            time.sleep(0.01)
    finally:
        d.shutdown(wait=True)
    assert starts == [("first", True), ("second", True)]


def test_quick_calls_keep_their_order_inside_the_window() -> None:
    d = Dispatcher(max_workers=8, order_window=0.25)
    seen: list[int] = []
    overlap: list[int] = []
    active = [0]
    lock = threading.Lock()
    done = threading.Event()

    def job(i: int) -> None:
        with lock:
            active[0] += 1
            if active[0] > 1:
                overlap.append(i)
        seen.append(i)
        with lock:
            active[0] -= 1
        if i == 999:
            done.set()

    try:
        for i in range(1000):
            d.submit("client", job, i)
        assert done.wait(20)
    finally:
        d.shutdown(wait=True)
    assert seen == list(range(1000))
    assert overlap == []


def test_a_barrier_is_never_overtaken() -> None:
    d = Dispatcher(max_workers=4, order_window=0.02)
    connect_done = threading.Event()
    later: list[bool] = []
    try:

        def connect() -> None:
            time.sleep(0.3)  # well past the window
            connect_done.set()

        d.submit_barrier("client", connect)
        d.submit("client", lambda: later.append(connect_done.is_set()))
        deadline = time.monotonic() + 10
        while not later and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        d.shutdown(wait=True)
    assert later == [True]


def test_released_key_still_counts_its_pending_calls_and_forgets_itself() -> None:
    d = Dispatcher(max_workers=4, order_window=0.02)
    gate = threading.Event()
    ran = threading.Event()
    try:
        d.submit("k", gate.wait, 10)
        d.submit("k", ran.set)
        assert ran.wait(10)  # ran beside the blocked call
        deadline = time.monotonic() + 10
        while d.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert d.pending("k") == 0
        gate.set()
        done = threading.Event()
        d.submit("k", done.set)  # the key works as before once all is done
        assert done.wait(10)
    finally:
        gate.set()
        d.shutdown(wait=True)
    assert d._queues == {} and d._held == {}


# -- the pool grows while handlers block, to its cap ------------------------------


def test_pool_grows_past_blocked_handlers_and_shrinks_when_idle() -> None:
    d = Dispatcher(max_workers=1000, order_window=0.25, idle_timeout=0.2)
    release = threading.Event()
    inside = threading.Semaphore(0)

    def block() -> None:
        inside.release()
        release.wait(20)

    try:
        for i in range(200):
            d.submit(("blocked", i), block)
        for _ in range(200):  # all 200 are inside at once: 200 threads
            assert inside.acquire(timeout=20)
        canary = threading.Event()
        d.submit("canary", canary.set)
        assert canary.wait(5)
        assert d.thread_count >= 200
        release.set()
        deadline = time.monotonic() + 20
        while d.thread_count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.thread_count == 0
    finally:
        release.set()
        d.shutdown(wait=True)


def test_at_the_cap_work_waits_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    d = Dispatcher(max_workers=3)
    release = threading.Event()
    ran: list[int] = []
    done = threading.Semaphore(0)

    def job(i: int) -> None:
        if i < 3:
            release.wait(20)
        ran.append(i)
        done.release()

    caplog.set_level(logging.WARNING, logger="flask_relay.dispatch")
    try:
        for i in range(10):
            d.submit(i, job, i)
        deadline = time.monotonic() + 10
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the watcher keeps checking: still one warning
        assert d.thread_count == 3
        assert ran == []  # the seven others wait for a thread
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "all 3 worker threads are busy" in warnings[0].getMessage()
        assert "max_workers" in warnings[0].getMessage()
        release.set()
        for _ in range(10):
            assert done.acquire(timeout=10)
    finally:
        release.set()
        d.shutdown(wait=True)
    assert sorted(ran) == list(range(10))


# -- calls run elsewhere (async def handlers on the loop) ------------------------------


def test_hold_takes_an_idle_key_and_later_calls_wait_for_release(dispatcher: Dispatcher) -> None:
    token = dispatcher.hold("k")
    assert token is not None
    assert dispatcher.hold("k") is None  # busy: the caller must queue instead
    ran = threading.Event()
    dispatcher.submit("k", ran.set)
    assert not ran.wait(0.1)  # held: strictly serial without an order window
    assert dispatcher.hold("other") is not None  # other keys are not affected
    dispatcher.release("k", object())  # a stale token changes nothing
    assert not ran.wait(0.05)
    dispatcher.release("k", token)
    assert ran.wait(2)
    deadline = time.monotonic() + 2
    while dispatcher.hold("k") is None and time.monotonic() < deadline:
        time.sleep(0.005)  # free again once the queued call finished


def test_calls_run_elsewhere_keep_their_place_among_worker_calls(
    dispatcher: Dispatcher,
) -> None:
    order: list[str] = []
    started: list[tuple[object, str, str]] = []  # (token, name, starting thread)
    lock = threading.Lock()

    def start(token: object, name: str) -> None:
        # Stands for "hand over to the loop": here the test thread finishes it.
        with lock:
            started.append((token, name, threading.current_thread().name))

    def blocking(name: str) -> None:
        time.sleep(0.02)
        with lock:
            order.append(name)

    dispatcher.submit("k", blocking, "b1")
    dispatcher.submit_elsewhere("k", start, "e1")
    dispatcher.submit_elsewhere("k", start, "e2")
    dispatcher.submit("k", blocking, "b2")
    deadline = time.monotonic() + 2
    while not started and time.monotonic() < deadline:
        time.sleep(0.005)
    assert order == ["b1"]  # e1 started only after b1 finished, by a worker
    token1, name1, thread1 = started[0]
    assert name1 == "e1" and thread1.startswith("flask-relay-worker")
    time.sleep(0.05)
    assert len(started) == 1 and order == ["b1"]  # e2 and b2 wait for e1
    dispatcher.release("k", token1)
    # e2 runs elsewhere too: release() started it at once, in this thread.
    token2, name2, thread2 = started[1]
    assert name2 == "e2" and thread2 == threading.current_thread().name
    time.sleep(0.05)
    assert order == ["b1"]
    dispatcher.release("k", token2)
    deadline = time.monotonic() + 2
    while order != ["b1", "b2"] and time.monotonic() < deadline:
        time.sleep(0.005)
    assert order == ["b1", "b2"]
    assert dispatcher.pending() == 0


def test_order_window_lets_calls_past_a_long_call_run_elsewhere() -> None:
    # No worker thread exists when the key is held: the watcher still lets the
    # queued call through once the held call is past the window.
    d = Dispatcher(max_workers=2, order_window=0.1)
    try:
        token = d.hold("k")
        assert token is not None
        ran = threading.Event()
        began = time.monotonic()
        d.submit("k", ran.set)
        assert ran.wait(2)
        assert 0.09 <= time.monotonic() - began < 1.0
        d.release("k", token)  # the late release of a released key changes nothing
        assert d.pending() == 0
    finally:
        d.shutdown(wait=True)


def test_a_failing_start_releases_the_key(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    def start(token: object) -> None:
        raise RuntimeError("loop closed")

    ran = threading.Event()
    with caplog.at_level(logging.ERROR, logger="flask_relay.dispatch"):
        dispatcher.submit_elsewhere("k", start)
        dispatcher.submit("k", ran.set)
        assert ran.wait(2)
    assert any("loop closed" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
