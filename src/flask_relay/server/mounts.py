"""One registry of an application's mounts, read by every door.

An app may carry several endpoints served natively on the loop: the Engine.IO
endpoint of a :class:`flask_relay.SocketIO` (``/socket.io``) and a standalone
:class:`flask_relay.engineio.EngineIO` (``/engine.io``), beside WebSocket routes
(which are Flask routes, served through the WSGI app by every door). Each
extension registers its endpoint here when it is attached to the app; each door
(``socketio.run``, ``eio.run``, the gunicorn worker, and the foreign-server
middleware behind ``flask run`` and gunicorn sync/gthread) builds its mounts
from this registry, so whatever is registered is served whichever door runs.

The registry lives in ``app.extensions`` (duck-typed: no Flask import here).
An entry is a *factory*: the door calls it when it builds its server, and it
returns the :class:`~flask_relay.server.request.Mount` to serve (a Socket.IO
extension builds a fresh Engine.IO server bound to its rooms; a standalone
``EngineIO`` returns its one engine).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .request import Mount

__all__ = ["REGISTRY_KEY", "MountRegistry", "build_mounts", "registry"]

logger = logging.getLogger("flask_relay.server")

#: The key of the registry in ``app.extensions``.
REGISTRY_KEY = "flask_relay.mounts"

MountFactory = Callable[[], Mount]


def normalize_prefix(prefix: str) -> str:
    """``"socket.io"``, ``"/socket.io/"`` -> ``"/socket.io"``."""
    return "/" + prefix.strip("/")


class MountRegistry:
    """Path prefix -> the factory of the mount served there (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._factories: dict[str, MountFactory] = {}

    def register(self, prefix: str, factory: MountFactory) -> None:
        """Serve ``factory()`` under ``prefix``; replaces an earlier entry for it."""
        prefix = normalize_prefix(prefix)
        with self._lock:
            old = self._factories.get(prefix)
            if old is not None and old != factory:
                logger.warning("The endpoint at %s was registered again: the last one wins", prefix)
            self._factories[prefix] = factory

    def unregister(self, prefix: str, factory: MountFactory | None = None) -> None:
        """Forget ``prefix`` (only if its factory is ``factory``, when given)."""
        prefix = normalize_prefix(prefix)
        with self._lock:
            if factory is None or self._factories.get(prefix) == factory:
                self._factories.pop(prefix, None)

    def prefixes(self) -> list[str]:
        with self._lock:
            return list(self._factories)

    def factories(self) -> dict[str, MountFactory]:
        with self._lock:
            return dict(self._factories)

    def __repr__(self) -> str:
        return f"<MountRegistry {self.prefixes()}>"


def registry(app: Any, *, create: bool = True) -> MountRegistry | None:
    """The registry of ``app`` (created on first use), or ``None`` when the
    object has no ``extensions`` dict (a plain WSGI callable)."""
    extensions = getattr(app, "extensions", None)
    if not isinstance(extensions, dict):
        return None
    found = extensions.get(REGISTRY_KEY)
    if isinstance(found, MountRegistry):
        return found
    if not create:
        return None
    return extensions.setdefault(REGISTRY_KEY, MountRegistry())  # type: ignore[no-any-return]


def build_mounts(app: Any, own: dict[str, MountFactory] | None = None) -> dict[str, Mount]:
    """The mounts a door serves for ``app``: every registered one, built now.

    ``own`` are the calling door's own endpoints (``socketio.run`` serves its
    extension's endpoint even on an app it was not attached to); for a prefix
    both have, ``own`` wins, and each endpoint is built once.
    """
    found = registry(app, create=False)
    factories = found.factories() if found is not None else {}
    for prefix, factory in (own or {}).items():
        factories[normalize_prefix(prefix)] = factory
    return {prefix: factory() for prefix, factory in factories.items()}
