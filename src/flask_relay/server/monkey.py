"""Refuse to serve from a process that eventlet or gevent monkey-patched.

Apps written for Flask-SocketIO often keep ``eventlet.monkey_patch()`` (or
gevent's ``monkey.patch_all()``) at the top. Flask-Relay needs the standard
library as it is: its event loop runs in a real thread on real selectors, and
handlers run in a pool of real threads. Patched, the server starts and even
answers the Engine.IO handshake, but no client ever connects and nothing says
why. So every door that starts serving (``socketio.run``, ``EngineIO.run``,
the gunicorn worker, the loop itself) asks :func:`monkey_patch_problem` first
and stops with a message that says to remove the patch. ``init_app`` only logs
the message (:func:`warn_monkey_patch`): the in-process test client needs no
loop and works in a patched process, so an app's own tests keep running; the
foreign-server middleware (``flask run``, gunicorn sync/gthread) answers the
requests that need the loop with a 500 carrying the same message.

The check is exact and cheap: it asks the patching library's own registry
(``eventlet.patcher.is_monkey_patched``, ``gevent.monkey.is_module_patched``),
and only when that library is already imported (``sys.modules``): a process
that never imported eventlet or gevent pays two dictionary lookups and imports
nothing.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["monkey_patch_problem", "refuse_monkey_patch", "warn_monkey_patch"]

logger = logging.getLogger("flask_relay.server")

#: Patched modules that break the loop or the worker threads, as each library names them.
_EVENTLET_MODULES = ("socket", "select", "thread")
_GEVENT_MODULES = ("socket", "select", "selectors", "threading", "_thread")


def _patched() -> tuple[str, list[str]] | None:
    """(the patching library, the modules it patched), or ``None`` for an unpatched process."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None:
        eventlet = [m for m in _EVENTLET_MODULES if patcher.is_monkey_patched(m)]
        if eventlet:
            return "eventlet", eventlet
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        gevent = [m for m in _GEVENT_MODULES if monkey.is_module_patched(m)]
        if gevent:
            return "gevent", gevent
    return None


_CALLS = {"eventlet": "eventlet.monkey_patch()", "gevent": "gevent.monkey.patch_all()"}


def monkey_patch_problem() -> str | None:
    """A one-line explanation when this process is monkey-patched, else ``None``."""
    found = _patched()
    if found is None:
        return None
    library, modules = found
    call = _CALLS[library]
    return (
        f"this process is monkey-patched by {call} ({', '.join(modules)} patched): "
        "Flask-Relay runs its own event loop and real threads, so no client could "
        f"connect. Remove the {call} call (and any async_mode='{library}' or "
        f"gunicorn -k {library}): Flask-Relay does not need it."
    )


def refuse_monkey_patch() -> None:
    """Raise :class:`RuntimeError` (with the explanation) in a monkey-patched process."""
    problem = monkey_patch_problem()
    if problem is not None:
        raise RuntimeError(problem)


_warned = False


def warn_monkey_patch() -> str | None:
    """Log the explanation at ERROR (once per process) when monkey-patched.

    Returns it (or ``None``), for callers that also refuse something.
    """
    global _warned
    problem = monkey_patch_problem()
    if problem is not None and not _warned:
        _warned = True
        logger.error(
            "%s (the in-process test client still works; a server will not start)", problem
        )
    return problem
