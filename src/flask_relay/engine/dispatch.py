"""A pool of worker threads with one serial queue per key.

The event loop never runs user code: it decodes a packet and hands the handler
call to a :class:`Dispatcher`. Keying the work by connection gives the two
guarantees Flask-SocketIO users asked for and never had together (Flask-SocketIO
#1420, python-socketio #284):

* the events of one client run one at a time, in arrival order;
* the events of different clients run concurrently, on up to ``max_workers``
  threads.

How it works: every key with pending work has a FIFO of calls. A key is either
*idle* (no pending calls, forgotten), *ready* (waiting in the round-robin queue of
keys) or *running* (a worker holds it). A worker takes the next ready key, runs
**one** call, and puts the key back at the end of the ready queue if it still has
work, so a client flooding the server cannot starve the others. Because a key is
held by at most one worker, calls with the same key never overlap.

Waking a thread is what a call costs most on the loop (a context switch and a
GIL hand-back per ``notify``), so :meth:`Dispatcher.submit` wakes a worker only
when **no worker is awake**, or when the ready queue has made no progress for
``wake_delay`` (2 ms): one awake worker drains the ready queue by itself, and a
handler that blocks still gets other clients served by a second worker shortly
after. Since that second check in ``submit`` needs another submission to fire, a
watcher thread re-checks the ready queue every ``wake_delay`` while any worker is
awake, so a key that became ready while every awake worker is blocked in a
handler is picked up even if nothing else arrives. The watcher runs no user code
and parks (costing nothing) once the pool has been idle for a while.

Threads are started lazily, only when no idle worker is there to take new work,
and exit after ``idle_timeout`` seconds without work, so an idle server holds no
threads at all (the watcher exits with the last worker).

Limits (every queue is bounded, see ``DESIGN.md`` principle 5):

``max_workers`` (default 32)
    Threads running calls at once. A call that blocks (for example ``call()``
    waiting for a client's acknowledgement) holds its thread, so with 32 such
    calls in flight the other clients wait.
``max_pending_per_key`` (default 1,000)
    Calls waiting for one key. A client sending faster than its handlers run
    eventually makes :meth:`Dispatcher.submit` raise :class:`DispatchQueueFull`;
    the Socket.IO server then disconnects that client alone.
``max_pending`` (default 100,000)
    Calls waiting over all keys; the same error past it.

Exceptions raised by a call are logged (logger ``flask_relay.dispatch``) and
never kill a worker.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["DispatchQueueFull", "Dispatcher", "DispatcherClosed", "InlineDispatcher"]

logger = logging.getLogger("flask_relay.dispatch")

_monotonic = time.monotonic

_Call = tuple[Callable[..., Any], tuple[Any, ...]]


class DispatchQueueFull(RuntimeError):
    """A submission went past ``max_pending_per_key`` or ``max_pending``.

    Nothing was queued. The caller decides what to drop (the Socket.IO server
    closes the offending connection).
    """


class DispatcherClosed(RuntimeError):
    """A submission after :meth:`Dispatcher.shutdown`: nothing was queued.

    A distinct type so callers can tell it from a :class:`RuntimeError` raised
    by user code that an :class:`InlineDispatcher` runs in the submitter.
    """


class Dispatcher:
    """Run calls in worker threads, serially per key, concurrently across keys.

    ``submit`` is safe from any thread (the event loop, workers, user threads).
    """

    #: Seconds the ready queue may go without progress while workers are awake
    #: before another worker is woken (they may all be blocked in handlers).
    wake_delay = 0.002
    #: Seconds the pool must be idle before the watcher stops polling and parks.
    watch_park_after = 0.05

    def __init__(
        self,
        max_workers: int = 32,
        *,
        max_pending_per_key: int = 1000,
        max_pending: int = 100_000,
        idle_timeout: float = 30.0,
        thread_name_prefix: str = "flask-relay-worker",
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_pending_per_key < 1 or max_pending < 1:
            raise ValueError("queue limits must be at least 1")
        self.max_workers = max_workers
        self.max_pending_per_key = max_pending_per_key
        self.max_pending = max_pending
        self.idle_timeout = idle_timeout
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        # key -> FIFO of pending calls; present while the key is ready or running.
        self._queues: dict[Hashable, collections.deque[_Call]] = {}
        # Keys with pending calls that no worker holds, in round-robin order.
        self._ready: collections.deque[Hashable] = collections.deque()
        # When the ready queue last became non-empty or last had a key taken.
        self._ready_since = 0.0
        self._pending = 0
        self._threads: set[threading.Thread] = set()
        # Wake locks (held) of workers waiting for work; the last one is woken
        # first, so surplus threads stay asleep and time out. A worker is awake
        # exactly when its lock is not in this list, which is why the pool does
        # not use a Condition: it cannot tell which waiter a notify reached.
        self._sleepers: list[threading.Lock] = []
        self._counter = 0
        self._shutdown = False
        self._watcher: threading.Thread | None = None
        self._watch_cond = threading.Condition(self._lock)
        self._watch_parked = False

    # -- public API ------------------------------------------------------------

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` behind the earlier calls with the same ``key``.

        Raises :class:`DispatchQueueFull` when a limit is reached and
        :class:`DispatcherClosed` after :meth:`shutdown`.
        """
        with self._lock:
            if self._shutdown:
                raise DispatcherClosed("cannot submit after shutdown")
            if self._pending >= self.max_pending:
                raise DispatchQueueFull(
                    f"{self._pending} calls already pending (max_pending={self.max_pending})"
                )
            queue = self._queues.get(key)
            if queue is not None:
                # The key is ready or running: its worker will get to this call.
                if len(queue) >= self.max_pending_per_key:
                    raise DispatchQueueFull(
                        f"{len(queue)} calls already pending for {key!r} "
                        f"(max_pending_per_key={self.max_pending_per_key})"
                    )
                queue.append((fn, args))
                self._pending += 1
                return
            self._queues[key] = collections.deque([(fn, args)])
            self._pending += 1
            ready = self._ready
            ready.append(key)
            now = _monotonic()
            if len(ready) == 1:
                self._ready_since = now
            # An awake worker always looks at the ready queue before sleeping, so
            # one is enough unless the awake ones are stuck (the watcher checks
            # that too, for when no further submission comes).
            if (
                len(self._threads) == len(self._sleepers)
                or now - self._ready_since > self.wake_delay
            ):
                self._ready_since = now
                self._wake()

    def pending(self, key: Hashable | None = None) -> int:
        """Calls waiting (not running), for one key or in total."""
        with self._lock:
            if key is None:
                return self._pending
            queue = self._queues.get(key)
            return 0 if queue is None else len(queue)

    @property
    def thread_count(self) -> int:
        """Worker threads alive right now (the watcher thread not counted)."""
        with self._lock:
            return len(self._threads)

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new calls; workers finish the queued ones, then exit.

        With ``wait`` the caller blocks until every worker has exited (a
        worker calling this does not wait for itself).
        """
        with self._lock:
            self._shutdown = True
            # Every worker awake: the queued calls drain in parallel, and no
            # watcher is needed any more.
            while self._sleepers:
                self._sleepers.pop().release()
            self._watch_cond.notify_all()
            threads = list(self._threads)
            if self._watcher is not None:
                threads.append(self._watcher)
        if wait:
            current = threading.current_thread()
            for thread in threads:
                if thread is not current:
                    thread.join()

    # -- workers ---------------------------------------------------------------

    def _wake(self) -> None:
        # Called with the lock held: one more worker awake, if the pool allows.
        if self._sleepers:
            self._sleepers.pop().release()
        elif len(self._threads) < self.max_workers:
            self._start_thread()
        else:
            return
        self._kick_watcher()

    def _kick_watcher(self) -> None:
        # Called with the lock held whenever a worker becomes awake: a parked
        # watcher resumes polling. Costs nothing while it polls (under load).
        if self._watch_parked:
            self._watch_cond.notify()

    def _start_thread(self) -> None:
        # Called with the lock held.
        self._counter += 1
        thread = threading.Thread(
            target=self._work, name=f"{self._prefix}-{self._counter}", daemon=True
        )
        self._threads.add(thread)
        thread.start()
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name=f"{self._prefix}-watcher", daemon=True
            )
            self._watcher.start()

    def _work(self) -> None:
        lock = self._lock
        me = threading.current_thread()
        wake = threading.Lock()
        wake.acquire()
        key: Hashable = None
        call: _Call | None = None
        while True:
            with lock:
                if call is not None:
                    # Done with the previous call: give the key back.
                    queue = self._queues[key]
                    if queue:
                        if not self._ready:
                            self._ready_since = _monotonic()
                        self._ready.append(key)
                    else:
                        del self._queues[key]
                    call = None
                while not self._ready:
                    if self._shutdown:
                        self._threads.discard(me)
                        return
                    self._sleepers.append(wake)
                    lock.release()
                    try:
                        woken = wake.acquire(True, self.idle_timeout)
                    finally:
                        lock.acquire()
                    if woken:
                        continue
                    try:
                        self._sleepers.remove(wake)
                    except ValueError:
                        # Woken just as the wait timed out: the waker released
                        # the lock (under ``lock``), take it back for next time.
                        wake.acquire(False)
                        continue
                    if not self._ready:
                        self._threads.discard(me)
                        if not self._threads:
                            self._kick_watcher()  # so it exits with the pool
                        return
                    self._kick_watcher()  # awake again without a _wake()
                key = self._ready.popleft()
                call = self._queues[key].popleft()
                self._pending -= 1
                if self._ready:
                    # Progress: the keys left behind wait from now on.
                    self._ready_since = _monotonic()
            fn, args = call
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - a worker must survive anything
                logger.exception("Unhandled exception in %r (key %r)", fn, key)
            del fn, args

    def _watch(self) -> None:
        """Wake a worker when the ready queue is stuck behind blocked workers.

        ``submit`` only checks for a stuck queue when a submission arrives; this
        thread covers the case where none does. It polls every ``wake_delay``
        while a worker is awake (that is when keys can wait unattended: with no
        worker awake, ``submit`` wakes one itself), and parks once the pool has
        been idle for ``watch_park_after``; waking a worker un-parks it.
        """
        cond = self._watch_cond
        delay = self.wake_delay
        idle_since: float | None = None
        with self._lock:
            while not self._shutdown:
                now = _monotonic()
                timeout = delay
                if self._ready:
                    idle_since = None
                    waited = now - self._ready_since
                    if waited >= delay:
                        self._ready_since = now
                        self._wake()  # does nothing when every worker is busy
                    else:
                        timeout = delay - waited
                elif len(self._threads) > len(self._sleepers):
                    idle_since = None
                elif not self._threads:
                    break  # the pool is gone; the next thread starts a watcher
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= self.watch_park_after:
                    self._watch_parked = True
                    try:
                        cond.wait()
                    finally:
                        self._watch_parked = False
                    idle_since = None
                    continue
                cond.wait(timeout)
            self._watcher = None


class InlineDispatcher:
    """Runs every call at once, in the submitting thread.

    The in-process test client uses this so handlers run synchronously in the
    test's thread and their exceptions are visible there. Calls submitted while
    another call for the same key runs (a handler emitting to itself, for
    example) are queued and run right after it, preserving per-key order.
    Exceptions propagate to the submitter.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        running: dict[Hashable, collections.deque[_Call]] | None = getattr(
            self._local, "running", None
        )
        if running is None:
            running = self._local.running = {}
        queue = running.get(key)
        if queue is not None:
            queue.append((fn, args))
            return
        queue = running[key] = collections.deque([(fn, args)])
        try:
            while queue:
                f, a = queue.popleft()
                f(*a)
        finally:
            del running[key]

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to stop."""
