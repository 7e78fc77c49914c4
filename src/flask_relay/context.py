"""Context-aware functions for use inside Socket.IO handlers (Flask-SocketIO's).

Inside a handler they default to the client being served: ``emit("x", data)``
answers the sender only, ``join_room("r")`` puts the sender in room ``r``, in
the handler's namespace. ``broadcast=True``, ``to=``/``room=``,
``namespace=`` and ``sid=`` widen or redirect them. Outside handlers (HTTP
views, background threads) use the methods of :class:`flask_relay.SocketIO`
instead, which have no sender to default to.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import flask

if TYPE_CHECKING:
    from .extension import SocketIO

__all__ = [
    "call",
    "close_room",
    "disconnect",
    "emit",
    "join_room",
    "leave_room",
    "rooms",
    "send",
]


def _socketio() -> SocketIO:
    sio: SocketIO = flask.current_app.extensions["socketio"]
    return sio


def _request_attr(name: str) -> Any:
    try:
        return getattr(flask.request, name)
    except AttributeError:
        raise RuntimeError(
            f"no Socket.IO client here (request.{name} is not set): this function "
            "must be called from a Socket.IO handler, or be given the target explicitly"
        ) from None


def emit(
    event: str,
    *args: Any,
    namespace: str | None = None,
    to: Any = None,
    room: Any = None,
    broadcast: bool = False,
    include_self: bool = True,
    skip_sid: Any = None,
    callback: Callable[..., Any] | None = None,
    ignore_queue: bool = False,
    volatile: bool = False,
) -> None:
    """Emit ``event`` from a handler: to the sender unless told otherwise.

    ``broadcast=True`` sends to every client of the namespace, ``to``/``room``
    to a room or a sid; ``include_self=False`` leaves the sender out;
    ``callback`` receives the acknowledgement (once per client).
    ``volatile=True`` skips clients over their output bound (and never waits).
    """
    if namespace is None:
        namespace = _request_attr("namespace")
    target = to if to is not None else room
    if target is None and not broadcast:
        target = _request_attr("sid")
    _socketio().emit(
        event,
        *args,
        namespace=namespace,
        to=target,
        include_self=include_self,
        skip_sid=skip_sid,
        callback=callback,
        ignore_queue=ignore_queue,
        volatile=volatile,
    )


def send(
    message: Any,
    json: bool = False,
    namespace: str | None = None,
    to: Any = None,
    room: Any = None,
    broadcast: bool = False,
    include_self: bool = True,
    skip_sid: Any = None,
    callback: Callable[..., Any] | None = None,
    ignore_queue: bool = False,
) -> None:
    """Send a ``message`` (``json=True``: ``json``) event; defaults as :func:`emit`."""
    emit(
        "json" if json else "message",
        message,
        namespace=namespace,
        to=to,
        room=room,
        broadcast=broadcast,
        include_self=include_self,
        skip_sid=skip_sid,
        callback=callback,
        ignore_queue=ignore_queue,
    )


def call(
    event: str,
    *args: Any,
    namespace: str | None = None,
    to: Any = None,
    room: Any = None,
    timeout: float | None = 60,
    ignore_queue: bool = False,
) -> Any:
    """Emit to one client (the sender by default) and return its acknowledgement.

    Raises :class:`TimeoutError` after ``timeout`` seconds.
    """
    if namespace is None:
        namespace = _request_attr("namespace")
    target = to if to is not None else room
    if target is None:
        target = _request_attr("sid")
    return _socketio().call(
        event, *args, namespace=namespace, to=target, timeout=timeout, ignore_queue=ignore_queue
    )


def join_room(room: Hashable, sid: str | None = None, namespace: str | None = None) -> None:
    """Put the sender (or ``sid``) in ``room``."""
    _socketio().server.enter_room(
        sid or _request_attr("sid"), room, namespace or _request_attr("namespace")
    )


def leave_room(room: Hashable, sid: str | None = None, namespace: str | None = None) -> None:
    """Take the sender (or ``sid``) out of ``room``."""
    _socketio().server.leave_room(
        sid or _request_attr("sid"), room, namespace or _request_attr("namespace")
    )


def close_room(room: Hashable, namespace: str | None = None) -> None:
    """Take every client out of ``room``."""
    _socketio().close_room(room, namespace or _request_attr("namespace"))


def rooms(sid: str | None = None, namespace: str | None = None) -> list[Hashable]:
    """The rooms of the sender (or ``sid``), its own room first."""
    return _socketio().server.rooms(
        sid or _request_attr("sid"), namespace or _request_attr("namespace")
    )


def disconnect(sid: str | None = None, namespace: str | None = None, silent: bool = False) -> None:
    """Disconnect the sender (or ``sid``) from the namespace.

    Its disconnect handler runs after the current handler returns, with
    reason ``"server disconnect"``. ``silent`` is accepted and ignored (it is
    deprecated in Flask-SocketIO too).
    """
    _socketio().server.disconnect(
        sid or _request_attr("sid"), namespace or _request_attr("namespace")
    )
