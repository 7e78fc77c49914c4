"""Class-based namespaces, as in Flask-SocketIO.

Subclass :class:`Namespace`, write ``on_<event>`` methods and register an
instance with :meth:`flask_relay.SocketIO.on_namespace`::

    class Chat(Namespace):
        def on_connect(self, auth):
            ...
        def on_message(self, data):
            self.emit("echo", data)         # to everyone in /chat
            return "got it"                  # the acknowledgement

    socketio.on_namespace(Chat("/chat"))

The methods run exactly like decorator handlers (app and request context,
``request.sid``, return value as the acknowledgement). A decorator handler for
the same namespace and event wins over the method. Override :meth:`error` to
handle the exceptions of this namespace's handlers yourself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

from .engine.sio import NOT_HANDLED

if TYPE_CHECKING:
    from .extension import SocketIO

__all__ = ["Namespace"]


class Namespace:
    """A namespace whose events go to ``on_<event>`` methods.

    :param namespace: the namespace served, ``"/"`` when omitted; ``"*"``
        serves every namespace that has no handlers of its own.
    """

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace or "/"
        #: The :class:`~flask_relay.SocketIO` this namespace is registered with.
        self.socketio: SocketIO | None = None

    def _set_socketio(self, socketio: SocketIO) -> None:
        self.socketio = socketio

    @property
    def _sio(self) -> SocketIO:
        if self.socketio is None:
            raise RuntimeError("register the namespace first: socketio.on_namespace(ns)")
        return self.socketio

    def trigger_event(self, event: str, sid: str, *args: Any) -> Any:
        """Run the ``on_<event>`` method for ``event`` of client ``sid``.

        Override it to dispatch events your own way (a single method for every
        event, for instance). ``args`` are those python-socketio gives:
        ``(environ, auth)`` for ``connect``, ``(reason,)`` for ``disconnect``,
        the event's arguments otherwise.
        """
        handler = getattr(self, "on_" + (event or ""), None)
        if handler is None or not callable(handler):
            return NOT_HANDLED
        error_handler: Callable[[BaseException], Any] | None = None
        if type(self).error is not Namespace.error:
            error_handler = self.error
        return self._sio._handle_event(
            handler, event, self.namespace, sid, *args, error_handler=error_handler
        )

    def error(self, exc: BaseException) -> Any:
        """Handle an exception raised by one of this namespace's handlers.

        Not called unless overridden; its return value becomes the
        acknowledgement, like a handler's. The base version re-raises, so the
        exception goes to :meth:`SocketIO.on_error` handlers instead.
        """
        raise exc

    # -- the Flask-SocketIO Namespace methods ---------------------------------

    def emit(
        self,
        event: str,
        data: Any = None,
        room: Any = None,
        include_self: bool = True,
        namespace: str | None = None,
        callback: Callable[..., Any] | None = None,
        to: Any = None,
        skip_sid: Any = None,
    ) -> None:
        """Emit ``event`` (``data``: one argument, a tuple for several).

        Without ``room``/``to`` it goes to everyone in the namespace.
        """
        args = () if data is None else (data,)
        self._sio.emit(
            event,
            *args,
            to=to if to is not None else room,
            include_self=include_self,
            skip_sid=skip_sid,
            namespace=namespace or self.namespace,
            callback=callback,
        )

    def send(
        self,
        data: Any,
        room: Any = None,
        include_self: bool = True,
        namespace: str | None = None,
        callback: Callable[..., Any] | None = None,
        to: Any = None,
    ) -> None:
        """Send a ``message`` event."""
        self._sio.send(
            data,
            to=to if to is not None else room,
            include_self=include_self,
            namespace=namespace or self.namespace,
            callback=callback,
        )

    def call(
        self,
        event: str,
        data: Any = None,
        to: Any = None,
        sid: Any = None,
        namespace: str | None = None,
        timeout: float | None = 60,
        ignore_queue: bool = False,
    ) -> Any:
        """Emit to one client and wait for its acknowledgement (see :meth:`SocketIO.call`)."""
        args = () if data is None else (data,)
        return self._sio.call(
            event,
            *args,
            to=to if to is not None else sid,
            namespace=namespace or self.namespace,
            timeout=timeout,
        )

    def enter_room(self, sid: str, room: Hashable, namespace: str | None = None) -> None:
        """Put client ``sid`` in ``room``."""
        self._sio.server.enter_room(sid, room, namespace or self.namespace)

    def leave_room(self, sid: str, room: Hashable, namespace: str | None = None) -> None:
        """Take client ``sid`` out of ``room``."""
        self._sio.server.leave_room(sid, room, namespace or self.namespace)

    def rooms(self, sid: str, namespace: str | None = None) -> list[Hashable]:
        """The rooms client ``sid`` is in (its own room first)."""
        return self._sio.server.rooms(sid, namespace or self.namespace)

    def close_room(self, room: Hashable, namespace: str | None = None) -> None:
        """Take everyone out of ``room``."""
        self._sio.close_room(room, namespace=namespace or self.namespace)

    def disconnect(self, sid: str, namespace: str | None = None) -> None:
        """Disconnect client ``sid`` from this namespace."""
        self._sio.server.disconnect(sid, namespace or self.namespace)

    def get_session(self, sid: str, namespace: str | None = None) -> dict[str, Any]:
        """The per-connection user dict (python-socketio's session, not Flask's)."""
        return self._sio.server.get_session(sid, namespace or self.namespace)

    def save_session(self, sid: str, session: dict[str, Any], namespace: str | None = None) -> None:
        """Replace the per-connection user dict."""
        self._sio.server.save_session(sid, session, namespace or self.namespace)

    @contextlib.contextmanager
    def session(self, sid: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """``with self.session(sid) as s:`` reads the user dict and saves it after."""
        with self._sio.server.session(sid, namespace or self.namespace) as data:
            yield data
