"""A pool of worker threads with one queue per key, and a rule for order.

The event loop never runs user code: it decodes a packet and hands the handler
call to a :class:`Dispatcher`, keyed by connection. What real apps need from the
scheduling decided its rule (measured with public Flask-SocketIO apps, not
guessed; see ``docs/handlers.md``):

* a handler may wait for a later event of its own client (a game loop that runs
  until the same client sends ``stop``), so a strict per-client queue is wrong;
* a client's disconnect handler must run promptly, whatever its other handlers
  are doing;
* quick handlers of one client should still run in arrival order, because apps
  quietly rely on it (a ``join`` followed by a ``message``).

**The rule.** Calls with the same key start in submission order. A call waits
until the previous call of its key has *finished*, or has been running for
``order_window`` seconds (default none: strictly one at a time), whichever comes
first. So while handlers take less than the window, a key's calls run one at a
time, in order; a handler that blocks longer lets the key's later calls run
beside it. A call submitted with :meth:`Dispatcher.submit_barrier` (the
Socket.IO connect handler) is never overtaken: later calls wait for it to finish.

How it works: every key with pending work has a FIFO of calls. A key is either
*idle* (no pending calls, forgotten), *ready* (waiting in the round-robin queue of
keys) or *held* (a worker runs its latest call, started less than
``order_window`` ago). A worker takes the next ready key, runs **one** call, and
puts the key back at the end of the ready queue if it still has work, so a client
flooding the server cannot starve the others. A watcher thread *releases* a key
whose call has run past the window: the key goes back to the ready queue while
that call goes on, unaccounted for by the key.

Waking a thread is what a call costs most on the loop (a context switch and a
GIL hand-back per ``notify``), so :meth:`Dispatcher.submit` wakes a worker only
when **no worker is awake**, or when the ready queue has made no progress for
``wake_delay`` (2 ms): one awake worker drains the ready queue by itself, and a
handler that blocks still gets other clients served by another worker shortly
after. Since that second check in ``submit`` needs another submission to fire, the
watcher re-checks the ready queue every ``wake_delay`` while any worker is awake,
so a key that became ready while every awake worker is blocked in a handler is
picked up even if nothing else arrives. The watcher runs no user code and parks
(costing nothing) once the pool has been idle for a while.

**The pool grows and shrinks.** Threads are started lazily, when ready work has
waited ``wake_delay`` and no idle worker is there to take it, up to
``max_workers``; a thread exits after ``idle_timeout`` seconds without work, so an
idle server holds no threads at all (the watcher exits with the last worker).
Handlers that block (a slow API, a lock, ``time.sleep``, ``call()`` waiting for an
acknowledgement) therefore cost a thread each but never stop other clients being
served, until ``max_workers`` threads are all busy. From then on new work waits in
the queues below and one WARNING says so (again only after the pool has had a
free thread since).

Limits (every queue is bounded, see ``DESIGN.md`` principle 5):

``max_workers`` (default 32 here; the Socket.IO and Engine.IO servers use
    ``DEFAULT_MAX_WORKERS``, 2,000)
    Threads running calls at once.
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

from ..protocol.errors import FlaskRelayError

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "ORDER_WINDOW",
    "DispatchQueueFull",
    "Dispatcher",
    "DispatcherClosed",
    "InlineDispatcher",
]

logger = logging.getLogger("flask_relay.dispatch")

_monotonic = time.monotonic

#: Seconds a client's handler may run before the client's later events may run
#: beside it (``async_handlers=True``): below it, one client's handlers run one at
#: a time in arrival order; past it, a handler waiting for the client's own later
#: event (a game loop waiting for ``stop``) cannot stall that client.
ORDER_WINDOW = 0.25
#: The default cap on handler threads. The pool holds a thread per handler that
#: is running, so it grows only while handlers block; idle threads exit.
DEFAULT_MAX_WORKERS = 2000

# (function, arguments, barrier, elsewhere): an ``elsewhere`` call is started by
# ``function(token, *arguments)`` and runs outside the pool (on the event loop);
# its key stays held until :meth:`Dispatcher.release` gets that token.
_Call = tuple[Callable[..., Any], tuple[Any, ...], bool, bool]


class DispatchQueueFull(FlaskRelayError, RuntimeError):
    """A submission went past ``max_pending_per_key`` or ``max_pending``.

    Nothing was queued. The caller decides what to drop (the Socket.IO server
    closes the offending connection).
    """


class DispatcherClosed(FlaskRelayError, RuntimeError):
    """A submission after :meth:`Dispatcher.shutdown`: nothing was queued.

    A distinct type so callers can tell it from a :class:`RuntimeError` raised
    by user code that an :class:`InlineDispatcher` runs in the submitter.
    """


class Dispatcher:
    """Run calls in worker threads, in order per key, concurrently across keys.

    ``submit`` is safe from any thread (the event loop, workers, user threads).
    See the module docstring for the ordering rule that ``order_window`` sets.
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
        order_window: float | None = None,
        max_pending_per_key: int = 1000,
        max_pending: int = 100_000,
        idle_timeout: float = 30.0,
        thread_name_prefix: str = "flask-relay-worker",
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_pending_per_key < 1 or max_pending < 1:
            raise ValueError("queue limits must be at least 1")
        if order_window is not None and order_window < 0:
            raise ValueError("order_window must be None or at least 0")
        self.max_workers = max_workers
        self.order_window = order_window
        self.max_pending_per_key = max_pending_per_key
        self.max_pending = max_pending
        self.idle_timeout = idle_timeout
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        # key -> FIFO of pending calls; present while the key is ready or held.
        self._queues: dict[Hashable, collections.deque[_Call]] = {}
        # Keys with pending calls that no worker holds, in round-robin order.
        self._ready: collections.deque[Hashable] = collections.deque()
        # Held keys -> (start time, holder token, barrier). Insertion order is
        # start order, so the watcher finds the calls past the window first.
        self._held: dict[Hashable, tuple[float, object, bool]] = {}
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
        self._saturated = False  # the cap WARNING was logged; re-armed below the cap
        self._watcher: threading.Thread | None = None
        self._watch_cond = threading.Condition(self._lock)
        self._watch_parked = False

    # -- public API ------------------------------------------------------------

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` behind the earlier calls with the same ``key``.

        Raises :class:`DispatchQueueFull` when a limit is reached and
        :class:`DispatcherClosed` after :meth:`shutdown`.
        """
        self._submit(key, (fn, args, False, False))

    def submit_barrier(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`submit`, but later calls of ``key`` wait until it finished.

        ``order_window`` does not apply to it: use it for calls whose outcome
        the key's later calls depend on (the Socket.IO connect handler).
        """
        self._submit(key, (fn, args, True, False))

    # -- calls run elsewhere (``async def`` handlers on the event loop) ---------------

    def hold(self, key: Hashable) -> object | None:
        """Take an idle ``key`` for a call that runs outside the pool, now.

        Returns a token to give :meth:`release` when that call finished, or
        ``None`` when ``key`` has calls queued or running (then use
        :meth:`submit_elsewhere`, so the call keeps its place). While held, the
        key's later calls wait as behind any running call (``order_window``
        applies). Raises :class:`DispatcherClosed` after :meth:`shutdown`.
        """
        with self._lock:
            if self._shutdown:
                raise DispatcherClosed("cannot submit after shutdown")
            if key in self._queues:
                return None
            self._queues[key] = collections.deque()
            token = object()
            self._held[key] = (_monotonic(), token, False)
            return token

    def submit_elsewhere(self, key: Hashable, start: Callable[..., Any], *args: Any) -> None:
        """Queue a call that runs outside the pool, behind ``key``'s earlier calls.

        When its turn comes the key is held for it and ``start(token, *args)``
        is called, by a worker thread or by :meth:`release` (in the thread that
        releases): ``start`` must only hand the call over (to the event loop)
        and not run it; whatever runs it calls :meth:`release` with ``token``.
        """
        self._submit(key, (start, args, False, True))

    def release(self, key: Hashable, token: object) -> None:
        """The call holding ``key`` with ``token`` (see :meth:`hold`) finished.

        The key's next call starts: at once (``start`` called here) if it runs
        elsewhere too, so a run of such calls needs no worker thread.
        """
        with self._lock:
            held = self._held.get(key)
            if held is None or held[1] is not token:
                return  # released by the watcher: the call ran past the window
            del self._held[key]
            queue = self._queues[key]
            if not queue or not queue[0][3]:
                self._requeue(key)
                if self._ready and len(self._threads) == len(self._sleepers):
                    self._ready_since = _monotonic()
                    self._wake()
                return
            start, args, barrier, _elsewhere = queue.popleft()
            self._pending -= 1
            token = object()
            self._held[key] = (_monotonic(), token, barrier)
        self._start_elsewhere(key, token, start, args)

    def _start_elsewhere(
        self, key: Hashable, token: object, start: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        try:
            start(token, *args)
        except BaseException:  # noqa: BLE001 - the key must not stay held
            logger.exception("Unhandled exception starting %r (key %r)", start, key)
            self.release(key, token)

    def _submit(self, key: Hashable, call: _Call) -> None:
        with self._lock:
            if self._shutdown:
                raise DispatcherClosed("cannot submit after shutdown")
            if self._pending >= self.max_pending:
                raise DispatchQueueFull(
                    f"{self._pending} calls already pending (max_pending={self.max_pending})"
                )
            queue = self._queues.get(key)
            if queue is not None:
                # The key is ready or held: a worker will get to this call.
                if len(queue) >= self.max_pending_per_key:
                    raise DispatchQueueFull(
                        f"{len(queue)} calls already pending for {key!r} "
                        f"(max_pending_per_key={self.max_pending_per_key})"
                    )
                queue.append(call)
                self._pending += 1
                if self.order_window is not None and key in self._held:
                    # Waiting behind a running call: the watcher must be there
                    # to let it through once that call is past the window (a
                    # call run elsewhere holds no worker that would start one).
                    self._ensure_watcher()
                return
            self._queues[key] = collections.deque([call])
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

    # -- workers (every method below is called with the lock held) -------------

    def _wake(self) -> None:
        # One more worker awake, if the pool allows.
        if self._sleepers:
            self._sleepers.pop().release()
        elif len(self._threads) < self.max_workers:
            self._start_thread()
        else:
            self._warn_saturated()
            return
        self._kick_watcher()

    def _warn_saturated(self) -> None:
        if not self._saturated and self._ready:
            self._saturated = True
            logger.warning(
                "all %d worker threads are busy in handlers that block (waiting on I/O, "
                "a lock, sleep or call()): %d calls wait for a free thread; raise "
                "max_workers or make those handlers return sooner",
                self.max_workers,
                self._pending,
            )

    def _kick_watcher(self) -> None:
        # Whenever a worker becomes awake: a parked watcher resumes polling.
        # Costs nothing while it polls (under load).
        if self._watch_parked:
            self._watch_cond.notify()

    def _start_thread(self) -> None:
        self._counter += 1
        thread = threading.Thread(
            target=self._work, name=f"{self._prefix}-{self._counter}", daemon=True
        )
        self._threads.add(thread)
        thread.start()
        self._ensure_watcher()

    def _ensure_watcher(self) -> None:
        self._kick_watcher()
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name=f"{self._prefix}-watcher", daemon=True
            )
            self._watcher.start()

    def _requeue(self, key: Hashable) -> None:
        # The key is no longer held: back to the ready queue, or forgotten.
        if self._queues[key]:
            if not self._ready:
                self._ready_since = _monotonic()
            self._ready.append(key)
        else:
            del self._queues[key]

    def _finished(self, key: Hashable, token: object) -> None:
        held = self._held.get(key)
        if held is not None and held[1] is token:
            del self._held[key]
            self._requeue(key)
        # else the watcher released the key while the call ran past the window

    def _release_overdue(self, now: float) -> None:
        # Keys whose call has run past the window go back to the ready queue.
        window = self.order_window
        if window is None or not self._held:
            return
        overdue = []
        for key, (start, _token, barrier) in self._held.items():
            if now - start < window:
                break
            if not barrier:
                overdue.append(key)
        for key in overdue:
            del self._held[key]
            self._requeue(key)

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
                    self._finished(key, wake)
                    call = None
                while not self._ready:
                    if self._shutdown:
                        self._threads.discard(me)
                        return
                    self._sleepers.append(wake)
                    self._saturated = False  # a free thread: warn again next time
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
                now = _monotonic()
                # The wake lock doubles as this worker's token: unique, and the
                # worker finishes a call before it takes another. A call run
                # elsewhere gets its own: it outlives this turn of the worker.
                token: object = object() if call[3] else wake
                self._held[key] = (now, token, call[2])
                if self._ready:
                    # Progress: the keys left behind wait from now on.
                    self._ready_since = now
            fn, args, _barrier, elsewhere = call
            if elsewhere:
                call = None  # finished by release(), not by this worker
                self._start_elsewhere(key, token, fn, args)
                del fn, args
                continue
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - a worker must survive anything
                logger.exception("Unhandled exception in %r (key %r)", fn, key)
            del fn, args

    def _watch(self) -> None:
        """Release overdue keys, and wake a worker when the ready queue is stuck.

        ``submit`` only checks for a stuck queue when a submission arrives; this
        thread covers the case where none does. It polls every ``wake_delay``
        while a worker is awake (that is when keys can wait unattended: with no
        worker awake, ``submit`` wakes one itself, and no call can be overdue),
        and parks once the pool has been idle for ``watch_park_after``; waking a
        worker un-parks it.
        """
        cond = self._watch_cond
        delay = self.wake_delay
        idle_since: float | None = None
        with self._lock:
            while not self._shutdown:
                now = _monotonic()
                timeout = delay
                self._release_overdue(now)
                if self._ready:
                    idle_since = None
                    waited = now - self._ready_since
                    if waited >= delay:
                        self._ready_since = now
                        self._wake()  # does nothing when every worker is busy
                    else:
                        timeout = delay - waited
                elif len(self._threads) > len(self._sleepers) or self._pending:
                    # Workers awake, or calls waiting behind held keys (perhaps
                    # held by calls run elsewhere, past the window soon).
                    idle_since = None
                elif not self._threads and not self._held:
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
            queue.append((fn, args, False, False))
            return
        queue = running[key] = collections.deque([(fn, args, False, False)])
        try:
            while queue:
                f, a, _barrier, _elsewhere = queue.popleft()
                f(*a)
        finally:
            del running[key]

    submit_barrier = submit

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to stop."""
