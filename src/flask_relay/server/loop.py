"""The hub: one asyncio event loop that owns every connection's I/O.

Everything that touches a socket runs on this loop; user code runs in worker
threads and reaches the loop through :meth:`Hub.call`. That call is on the hot
path of every emit, so it is cheap: it appends to a deque and wakes the loop
only when the deque was empty. A handler that emits to a thousand clients, or a
burst of emits from many threads, costs one ``call_soon_threadsafe`` (one write
to the loop's self-pipe) per loop iteration rather than one per emit.

A thread that sends a batch of things at once (the message queue's listener,
applying every message one read brought) can :meth:`Hub.hold` the wakeup:
its calls inside the block wake the loop once, at the end, so the loop runs
them in one turn and each connection gets one write for the batch instead of
one per message.

The loop runs either in the calling thread (:meth:`Hub.run`, for
``serve_forever``) or in a daemon thread (:meth:`Hub.start`, for tests and for
foreign WSGI servers that own the main thread). uvloop is used when installed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from .monkey import refuse_monkey_patch

__all__ = ["Hub", "new_event_loop"]

logger = logging.getLogger("flask_relay.server")

T = TypeVar("T")


def new_event_loop(use_uvloop: bool | None = None) -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when installed (or asked for), else asyncio's.

    ``use_uvloop=None`` means "when available"; ``True`` requires it;
    ``False`` forces the standard loop.
    """
    if use_uvloop is not False:
        try:
            import uvloop
        except ImportError:
            if use_uvloop:
                raise
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


class Hub:
    """An event loop plus a cheap, batched way to run code on it from any thread.

    Create it, then either :meth:`start` it (a background thread) or
    :meth:`run` it (blocks the caller). :meth:`call` may be used before the
    loop runs; the calls wait in the deque and run once it does.
    """

    def __init__(self, *, use_uvloop: bool | None = None) -> None:
        self.loop = new_event_loop(use_uvloop)
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque()
        )
        # True while a _drain is scheduled and has not started. Read and written
        # without a lock: a stale True only means another thread's call rides on
        # the drain already scheduled (it appended before reading the flag, so
        # the drain will see it); a stale False costs one extra, harmless wakeup.
        self._wakeup_pending = False
        # Per thread: depth of hold() blocks, and whether a wakeup is owed.
        self._held = threading.local()
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        #: Number of times another thread had to wake the loop (for tests and stats).
        self.wakeups = 0

    # -- running -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread_id is not None and not self._stopped.is_set()

    def in_loop_thread(self) -> bool:
        """True when the caller runs on the loop's thread."""
        return threading.get_ident() == self._thread_id

    def start(self, name: str = "flask-relay-loop") -> None:
        """Run the loop in a daemon thread; returns once it is running."""
        if self._thread is not None or self._thread_id is not None:
            raise RuntimeError("the hub is already running")
        refuse_monkey_patch()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def run(self, main: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run the loop in this thread until :meth:`stop`; ``main`` runs first as a task.

        Raises :class:`RuntimeError` in a process monkey-patched by eventlet or
        gevent (see :mod:`flask_relay.server.monkey`), as :meth:`start` does.
        """
        refuse_monkey_patch()
        self._run(main)

    def _run(self, main: Coroutine[Any, Any, Any] | None = None) -> None:
        if self._thread_id is not None:
            raise RuntimeError("the hub is already running")
        self._thread_id = threading.get_ident()
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            if main is not None:
                loop.create_task(main)
            loop.call_soon(self._started.set)
            if self._calls:
                loop.call_soon(self._drain)
            loop.run_forever()
        finally:
            try:
                self._cancel_remaining()
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self._stopped.set()
                self._started.set()

    def _cancel_remaining(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the loop (from any thread) and wait for the thread that ran it.

        Callers wanting a graceful shutdown do it before this (see
        :class:`~flask_relay.server.http.Server`).
        """
        if self._thread_id is None or self._stopped.is_set():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            pass
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        elif not self.in_loop_thread():
            self._stopped.wait(timeout)

    # -- calling into the loop -------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon; cheap and safe from any thread.

        On the loop thread itself the call is still deferred (never re-entrant),
        but without any wakeup. Calls run in the order they were made.
        Exceptions are logged.
        """
        self._calls.append((fn, args))
        if not self._wakeup_pending:
            held = self._held
            if getattr(held, "depth", 0):
                held.owed = True  # woken at the end of hold()
                return
            self._wake()

    def idle_here(self) -> bool:
        """True on the loop thread while no call waits in the queue.

        Then doing something now, instead of through :meth:`call`, keeps the
        order :meth:`call` promises: every call made before (by any thread,
        held or not) has run already. A caller that may run re-entrantly (inside
        a call being run) must still only do what is safe there.
        """
        return not self._calls and threading.get_ident() == self._thread_id

    def _wake(self) -> None:
        if self._wakeup_pending:
            return
        self._wakeup_pending = True
        if self.in_loop_thread():
            self.loop.call_soon(self._drain)
            return
        self.wakeups += 1
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            # The loop is closed: nothing will run these any more.
            self._calls.clear()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Calls (:meth:`call`) this thread makes inside the block wake the loop once, at its end.

        What they send then reaches the loop in one turn, so each connection
        gets one write for the whole batch. Order is kept (one deque); another
        thread's call may wake the loop meanwhile, which only makes the batch
        smaller. Waiting for the loop inside the block (:meth:`run_sync`, a
        back-pressure wait) first releases what is held (:meth:`release`).
        """
        held = self._held
        held.depth = getattr(held, "depth", 0) + 1
        try:
            yield
        finally:
            held.depth -= 1
            if not held.depth:
                self.release()

    def release(self) -> None:
        """Wake the loop now for the calls this thread holds (see :meth:`hold`)."""
        held = self._held
        if getattr(held, "owed", False):
            held.owed = False
            self._wake()

    def _drain(self) -> None:
        self._wakeup_pending = False
        calls = self._calls
        popleft = calls.popleft
        # Only what is queued now: calls made by these calls run next iteration,
        # so one busy producer cannot starve the loop's I/O.
        for _ in range(len(calls)):
            fn, args = popleft()
            try:
                fn(*args)
            except Exception:
                logger.exception("Error in %r called on the loop", fn)
        if calls and not self._wakeup_pending:
            self._wakeup_pending = True
            self.loop.call_soon(self._drain)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run a coroutine on the loop from another thread; returns a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run_sync(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn()`` on the loop and wait for its result (never from the loop thread)."""
        if self.in_loop_thread():
            return fn()
        future: Future[T] = Future()

        def runner() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.call(runner)
        self.release()
        return future.result(timeout)
