"""The own server's thread pool for WSGI views: daemon threads.

The server runs Flask views (everything that is not a mount or a WebSocket
route) in a bounded pool of threads. ``concurrent.futures.ThreadPoolExecutor``
would do, except that the interpreter joins its threads at exit: a view that
never returns (a Server-Sent Events generator blocked in a Redis
``pubsub.listen()``, an app's own long poll) kept the process alive for ever
after SIGTERM, with "Server stopped" already logged, until a supervisor's
SIGKILL. Werkzeug's threaded server uses daemon threads for that reason, and so
do Flask-Relay's handler threads and WebSocket route threads. Here too: a stop
gives requests in progress ``shutdown_timeout`` seconds (``Server.shutdown``),
then the process exits and takes the stuck threads with it.

The pool reuses an idle thread before it starts a new one, and starts at most
``max_workers`` (work waits in a queue beyond that), as ThreadPoolExecutor does.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["DaemonThreadPool"]

T = TypeVar("T")

_Work = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """A bounded thread pool whose threads never hold the process at exit."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "flask-relay-pool") -> None:
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self.max_workers = max_workers
        self._prefix = thread_name_prefix
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        # Released once per finished work item: a thread that is (or will be) idle.
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _run(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                self._work.put(None)  # wake the next thread: they all stop
                return
            future, fn, args, kwargs = work
            del work
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # the future carries it, as in the stdlib pool
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; the threads stop once the queue is done (``wait``: join them)."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        work = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if work is not None:
                        work[0].cancel()
            self._work.put(None)
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()
