"""The own server's thread pool for WSGI views: daemon threads.

The server runs Flask views (everything that is not a mount or a WebSocket
route) in a bounded pool of threads. ``concurrent.futures.ThreadPoolExecutor``
would do, except that the interpreter joins its threads at exit: a view that
never returns (a Server-Sent Events generator blocked in a Redis
``pubsub.listen()``, an app's own long poll) kept the process alive for ever
after SIGTERM, with "Server stopped" already logged, until a supervisor's
SIGKILL. Werkzeug's threaded server uses daemon threads too, and so
do Flask-Relay's handler threads and WebSocket route threads. Here too: a stop
gives requests in progress ``shutdown_timeout`` seconds (``Server.shutdown``),
then the process exits and takes the stuck threads with it.

The pool gives work to an idle thread before it starts a new one, and starts
at most ``max_workers`` (work waits in a queue beyond that), as
ThreadPoolExecutor does; it counts the threads waiting for work under its lock.
Unlike it, the pool says when work is kept waiting: ``on_saturated(waiting)`` is
called once every thread is busy and some work has waited ``report_after``
seconds (1 s: a burst of quick requests is not reported), and again only after
a thread was idle with nothing queued. The server logs it: views that never
return (event streams) otherwise make every other page hang without a word.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["DaemonThreadPool"]

T = TypeVar("T")

#: (future, fn, args, kwargs, monotonic time queued)
_Work = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any], float]


class DaemonThreadPool(Executor):
    """A bounded thread pool whose threads never hold the process at exit."""

    def __init__(
        self,
        max_workers: int,
        thread_name_prefix: str = "flask-relay-pool",
        on_saturated: Callable[[int], None] | None = None,
        report_after: float = 1.0,
    ) -> None:
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self.max_workers = max_workers
        self._prefix = thread_name_prefix
        self._on_saturated = on_saturated
        self._cond = threading.Condition()
        self._queue: deque[_Work] = deque()
        self._idle = 0  # threads waiting in _run for work
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._report_after = report_after
        self._saturated = False  # on_saturated was called; re-armed by an idle thread
        self._timer: threading.Timer | None = None

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._queue.append((future, fn, args, kwargs, time.monotonic()))
            if len(self._queue) <= self._idle:
                self._cond.notify()
            elif len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            elif self._on_saturated is not None and not self._saturated:
                self._check_later(self._report_after)
        return future

    def _check_later(self, delay: float) -> None:
        # Called with the lock held.
        if self._timer is None:
            self._timer = threading.Timer(delay, self._check_saturated)
            self._timer.daemon = True
            self._timer.start()

    def _check_saturated(self) -> None:
        waiting = 0
        with self._cond:
            self._timer = None
            if self._saturated or self._closed or not self._queue:
                return
            waited = time.monotonic() - self._queue[0][4]
            if waited < self._report_after:
                self._check_later(self._report_after - waited)
                return
            self._saturated = True
            waiting = len(self._queue)
        if self._on_saturated is not None:
            self._on_saturated(waiting)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._saturated = False  # idle with nothing queued: report again next time
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._queue:
                    return  # shut down, and the queue is done
                future, fn, args, kwargs, _ = self._queue.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # the future carries it, as in the stdlib pool
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; the threads stop once the queue is done (``wait``: join them)."""
        with self._cond:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._cond.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()
