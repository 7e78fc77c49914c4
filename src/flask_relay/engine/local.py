"""An in-process Engine.IO stand-in: no network, no event loop, no threads.

The Socket.IO test client (:mod:`flask_relay.test_client`) talks to the real
:class:`~flask_relay.engine.sio.SocketIOServer` through this engine. It
implements the same send interface as the network Engine.IO server, so the
Socket.IO layer cannot tell the difference; what differs is delivery:

* client -> server: :meth:`LocalSession.send` calls the server's
  ``on_message`` directly, in the caller's thread;
* server -> client: every ``send``/``send_many``/``send_prepared`` calls the
  session's ``receive`` callback directly, in the sending thread.

With an :class:`~flask_relay.engine.dispatch.InlineDispatcher` on the server's
binding, a test's ``emit`` runs the handler, and anything it sends back
(events, the acknowledgement) has arrived before ``emit`` returns.
Everything goes through the real Socket.IO encoder and decoder.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .interfaces import EngineHandler

__all__ = ["LocalEngine", "LocalSession"]


class LocalSession:
    """The client end of one in-process Engine.IO connection."""

    def __init__(
        self,
        engine: LocalEngine,
        sid: str,
        receive: Callable[[str | bytes], None],
        closed: Callable[[str], None] | None,
    ) -> None:
        self.engine = engine
        self.sid = sid
        self.receive = receive
        self.on_closed = closed
        self.closed = False

    def send(self, data: str | bytes) -> None:
        """Send one Engine.IO ``message`` to the server (runs its handling now)."""
        if self.closed:
            raise RuntimeError("session closed")
        handler = self.engine.handler
        assert handler is not None
        handler.on_message(self.sid, data)

    def close(self, reason: str = "transport close") -> None:
        """Close the connection from the client side."""
        self.engine.close_session(self.sid, reason)


class LocalEngine:
    """Engine.IO sessions living in the test's own thread."""

    def __init__(self, handler: EngineHandler | None = None) -> None:
        self.handler = handler
        self._sessions: dict[str, LocalSession] = {}
        self._lock = threading.Lock()

    def open(
        self,
        environ: dict[str, Any],
        receive: Callable[[str | bytes], None],
        closed: Callable[[str], None] | None = None,
    ) -> LocalSession:
        """Open a session; ``receive`` gets every message the server sends."""
        assert self.handler is not None, "attach the engine to a server first"
        session = LocalSession(self, secrets.token_urlsafe(15), receive, closed)
        with self._lock:
            self._sessions[session.sid] = session
        self.handler.on_connect(session.sid, environ)
        return session

    def close_session(self, sid: str, reason: str) -> None:
        """End session ``sid`` (either side): the handler's ``on_disconnect``, then
        the client's ``closed`` callback."""
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is None or session.closed:
            return
        session.closed = True
        if self.handler is not None:
            self.handler.on_disconnect(sid, reason)
        if session.on_closed is not None:
            session.on_closed(reason)

    # -- the Engine.IO server's send interface ------------------------------------

    def send(self, sid: str, data: str | bytes) -> None:
        session = self._sessions.get(sid)
        if session is not None and not session.closed:
            session.receive(data)

    def send_many(self, sid: str, items: list[str | bytes]) -> None:
        session = self._sessions.get(sid)
        if session is not None and not session.closed:
            for item in items:
                session.receive(item)

    def prepare(self, items: list[str | bytes]) -> list[str | bytes]:
        return list(items)

    def send_prepared(self, sids: Iterable[str], prepared: list[str | bytes]) -> None:
        for sid in sids:
            self.send_many(sid, prepared)

    def disconnect(self, sid: str, reason: str = "forced close") -> None:
        self.close_session(sid, reason)

    def session_ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)
