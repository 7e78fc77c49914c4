"""Plain WebSocket routes for Flask, compatible with Flask-Sock.

::

    from flask_relay import Sock

    sock = Sock(app)

    @sock.route("/echo/<room>")
    def echo(ws, room):
        while True:
            ws.send(ws.receive())

How a route runs
----------------
A route is an ordinary Flask view registered with ``websocket=True``, so URL
variables, blueprints, ``before_request``/``after_request`` hooks and view
decorators (``login_required``, ...) apply exactly as they do to HTTP views.

The *door* that received the upgrade request (the package's own server, the
WSGI middleware for foreign servers, or the in-process test client) runs the
whole Flask dispatch for it in a **thread of its own**, never in the Socket.IO
handler pool, so a thousand blocking routes cannot starve Socket.IO handlers.
It puts an :class:`Upgrader` in ``environ["flask_relay.websocket"]``. The network
I/O of the connection stays on the event loop: the ``ws`` object a route sees
only hands messages to and from the loop.

The handshake is completed *lazily*, when the route first uses ``ws`` (any
method or attribute) or returns. So a view decorator below ``@sock.route`` that
refuses the request (``login_required`` returning a redirect, ``abort(403)``)
refuses the *upgrade* with a real HTTP response, instead of accepting the socket
and closing it at once as Flask-Sock does. Call :meth:`WebSocket.accept` to
complete the handshake early in a route that blocks before touching ``ws``.

An ``async def`` route runs on the event loop with an :class:`AsyncWebSocket`
(``await ws.receive()``): the view (hooks, decorators) still runs in a thread,
which is released as soon as the route's coroutine is scheduled, so thousands of
idle async routes cost no thread. Such a coroutine must not block.

Origin check
------------
Unlike Flask-Sock, a route refuses a browser page on another origin (HTTP 403
and a warning naming the setting that would allow it): browsers send cookies
with every WebSocket handshake, so accepting any origin lets another site act
as the user. The policy is Socket.IO's (:mod:`flask_relay.protocol.origin`):
``Sock(app, allowed_origins=...)``, else ``app.config["SOCK_ALLOWED_ORIGINS"]``,
else the same origin only; clients that send no ``Origin`` pass.

Options (``app.config["SOCK_SERVER_OPTIONS"]``)
-----------------------------------------------
``ping_interval`` (default ``None``: no pings)
    Seconds between server pings. When no pong (or any other frame) arrived
    since the previous ping, the connection is closed with 1008
    ``"Ping/Pong timeout"``, like simple-websocket does.
``max_message_size`` (default 16 MiB)
    Largest message accepted; a bigger one closes the connection with 1009.
    ``None`` lifts the limit (Flask-Sock's default; not recommended).
``subprotocols`` (default none)
    Subprotocols the server supports; the first one the client offers that is in
    this list is chosen (``ws.subprotocol``).
``compression`` (default ``False``)
    Negotiate permessage-deflate. Off by default: it costs memory per connection
    and CPU per message, and most WebSocket traffic is small.
``max_queued_messages`` (default 64)
    Received messages buffered for a route that is not calling ``receive()``;
    past it, the loop stops reading that socket (TCP back-pressure) until the
    route catches up.
``slow_consumer_timeout`` (default 10)
    ``ws.send`` waits while more than 1 MiB is on its way to the client. A
    client that accepts no byte for this many seconds while output waits for
    it is a *slow consumer*: the connection is closed with 1008
    ``"slow consumer"`` (the TCP connection at once: the close frame could not
    get past the unread data) and the route's ``send`` raises
    :class:`ConnectionClosed`.

Flask-Sock's ``receive_bytes``, ``thread_class``, ``event_class`` and
``selector_class`` are accepted and ignored: the loop does the reading.
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, request

from .engine.websocket import (
    SEND_HIGH_WATER,
    AsyncWebSocket,
    GroupSource,
    NotUpgraded,
    RouteOutcome,
    WebSocket,
    coerce_message,
    run_blocking_route,
    start_async_route,
)
from .groups import groups_for
from .protocol.closecode import CloseCode, check_close_code
from .protocol.origin import OriginPolicy, environ_origin_allowed
from .pubsub import from_url
from .server.foreign import install
from .server.wscontract import (
    DEFAULT_MAX_MESSAGE_SIZE,
    UPGRADER_KEY,
    Channel,
    ChannelListener,
    ConnectionClosed,
    Data,
    HandshakeRejected,
    Upgrader,
    WebSocketError,
    WebSocketOptions,
    requested_subprotocols,
)
from .ws_testing import WebSocketTestClient

if TYPE_CHECKING:
    from flask.blueprints import BlueprintSetupState
    from werkzeug.wrappers import Response as BaseResponse

__all__ = [
    "UPGRADER_KEY",
    "AsyncWebSocket",
    "Channel",
    "ChannelListener",
    "ConnectionClosed",
    "Sock",
    "Upgrader",
    "WebSocket",
    "WebSocketError",
    "WebSocketOptions",
]

# Defined in the layers below (server/wscontract.py, engine/websocket.py,
# protocol/closecode.py) and re-exported: ``from flask_relay.sock import ...``
# keeps working for every name that used to be defined here.
_REEXPORTED = (
    DEFAULT_MAX_MESSAGE_SIZE,
    SEND_HIGH_WATER,
    Data,
    HandshakeRejected,
    check_close_code,
    requested_subprotocols,
)

logger = logging.getLogger("flask_relay.sock")

#: Close codes by their former names here (one home now: ``CloseCode``).
CLOSE_NORMAL = CloseCode.NORMAL
CLOSE_NO_STATUS = CloseCode.NO_STATUS
CLOSE_ABNORMAL = CloseCode.ABNORMAL
CLOSE_POLICY_VIOLATION = CloseCode.POLICY_VIOLATION
CLOSE_INTERNAL_ERROR = CloseCode.INTERNAL_ERROR

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------
# Running a route as a Flask view
# --------------------------------------------------------------------------


class _UpgradedResponse(Response):
    """What a route's view returns once the connection was upgraded.

    Doors ignore the WSGI response of an accepted upgrade; this one exists so
    that ``after_request`` hooks receive a response object as usual.
    """


def _upgrader_for(environ: dict[str, Any]) -> Upgrader:
    upgrader: Upgrader | None = environ.get(UPGRADER_KEY)
    if upgrader is None:
        raise RuntimeError(
            "A WebSocket route was reached without a Flask-Relay server: run the app "
            "with flask_relay's server (socketio.run, the gunicorn worker class) or "
            "under a WSGI server through Sock(app) / flask_relay.server.foreign, "
            "which installs the middleware that takes over the socket."
        )
    return upgrader


def _log_route_error(exc_info: Any) -> None:
    try:
        current_app.log_exception(exc_info)
    except Exception:  # pragma: no cover - no app context
        logger.error("Exception in WebSocket route", exc_info=exc_info)


def _run_blocking_route(
    f: Callable[..., Any], options: WebSocketOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> BaseResponse:
    environ = request.environ
    ws = WebSocket(environ, _upgrader_for(environ), options, _groups_source())
    outcome = run_blocking_route(ws, lambda ws: f(ws, *args, **kwargs), _log_route_error)
    return _response_for(outcome)


def _run_async_route(
    f: Callable[..., Any], options: WebSocketOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> BaseResponse:
    environ = request.environ
    ws = AsyncWebSocket(environ, _upgrader_for(environ), options, _groups_source())
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    outcome = start_async_route(ws, f(ws, *args, **kwargs), app.log_exception)
    return _response_for(outcome)


def _groups_source() -> GroupSource:
    """Where the route's ``ws.join_room`` finds the app's rooms (flask_relay.groups)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return functools.partial(groups_for, app)


def _response_for(outcome: RouteOutcome) -> BaseResponse:
    if isinstance(outcome, HandshakeRejected):
        return Response(outcome.body, status=outcome.status, headers=outcome.headers)
    if isinstance(outcome, NotUpgraded):
        # A view decorator refused before the route touched ws: answer in HTTP.
        return current_app.make_response(outcome.result)
    return _UpgradedResponse()


# --------------------------------------------------------------------------
# The Origin check
# --------------------------------------------------------------------------


class _Unset:
    """The type of :data:`UNSET`: an option not given (the app config decides)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()

#: The app config key holding the allowed origins of WebSocket routes.
ORIGINS_CONFIG_KEY = "SOCK_ALLOWED_ORIGINS"


def origin_policy(app: Flask, given: OriginPolicy | _Unset) -> OriginPolicy:
    """The policy for ``app``: the extension's argument, else the app config."""
    if not isinstance(given, _Unset):
        return given
    policy: OriginPolicy = app.config.get(ORIGINS_CONFIG_KEY)
    return policy


def check_origin(
    environ: Mapping[str, Any], policy: OriginPolicy, owner: str, app_config: bool = True
) -> BaseResponse | None:
    """``None`` when the request's ``Origin`` may open a WebSocket, else the
    403 response; a refusal is logged with the setting that would allow it
    (``owner`` names the extension: ``Sock``, ``Sockets``...; ``app_config``:
    whether the app config key applies too)."""
    if environ_origin_allowed(environ, policy) is not False:
        return None
    origin = str(environ.get("HTTP_ORIGIN"))
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    if policy is None:
        why = "it is not this server's origin"
        wanted: list[str] = [origin]
    elif callable(policy):
        why = "the allowed_origins callable refused it"
        wanted = [origin]
    else:
        why = "it is not in allowed_origins"
        wanted = [policy] if isinstance(policy, str) else [*policy]
        wanted.append(origin)
    fix = f"{owner}(app, allowed_origins={wanted!r})"
    if app_config:
        fix += f" or app.config[{ORIGINS_CONFIG_KEY!r}] = {wanted!r}"
    logger.warning(
        "Refused WebSocket %s from Origin %s (%s). To allow it: %s", path, origin, why, fix
    )
    return Response(
        f"Origin {origin} is not allowed to open this WebSocket\n",
        status=403,
        content_type="text/plain; charset=utf-8",
    )


def websocket_view(
    f: Callable[..., Any], policy: Callable[[Flask], OriginPolicy], owner: str
) -> Callable[..., BaseResponse]:
    """The Flask view that runs ``f(ws, **url_variables)`` as a WebSocket route:
    the Origin check, then a blocking or an ``async def`` route."""
    is_async = inspect.iscoroutinefunction(inspect.unwrap(f))
    runner = _run_async_route if is_async else _run_blocking_route

    @functools.wraps(f)
    def websocket_route(*args: Any, **kw: Any) -> BaseResponse:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        refusal = check_origin(request.environ, policy(app), owner)
        if refusal is not None:
            return refusal
        return runner(f, _options_for(app), args, kw)

    return websocket_route


#: Blueprints that install the middleware when registered (no attribute on them).
_installing: weakref.WeakSet[Blueprint] = weakref.WeakSet()


def install_when_registered(bp: Blueprint) -> None:
    """Install the foreign-server middleware on every app ``bp`` is registered
    on (a blueprint of WebSocket routes whose app never met the extension)."""
    if bp in _installing or bp._got_registered_once:
        return
    _installing.add(bp)

    def on_register(state: BlueprintSetupState) -> None:
        install(state.app)

    bp.record_once(on_register)


# --------------------------------------------------------------------------
# The Flask extension
# --------------------------------------------------------------------------


class Sock:
    """Add WebSocket routes to a Flask application (Flask-Sock's ``Sock``).

    Set up the way Flask-Sock is:

    * ``Sock(app)``: routes go on the app;
    * ``sock = Sock()``, routes, then ``sock.init_app(app)``: the routes wait on
      a private blueprint (:attr:`bp`) registered on every app ``init_app``
      gets; routes declared after ``init_app`` go on that app (:attr:`app`);
    * ``Sock(blueprint)`` or ``init_app(blueprint)``: routes go on the
      blueprint, under its prefix once the app registers it;
    * ``@sock.route(path, bp=blueprint)``: that route goes on the blueprint.

    ``init_app`` (or the registration of such a blueprint) also wraps the
    app's ``wsgi_app`` in the middleware that lets foreign WSGI servers
    (``flask run``, ``app.run()``, gunicorn sync/gthread) serve the routes.

    ``allowed_origins`` is the Origin policy of the routes (unlike Flask-Sock,
    which accepts any): default same origin only, ``"*"`` any, an origin or a
    list of origins, a callable ``(origin[, environ]) -> bool``; clients that
    send no ``Origin`` (not browsers) always pass. Left out, the app config
    key ``SOCK_ALLOWED_ORIGINS`` decides (same values).

    Groups (beyond Flask-Sock): a route calls ``ws.join_room(name)`` /
    ``ws.leave_room(name)`` (a closed connection leaves its rooms), and
    :meth:`send` ``(data, to=name)`` reaches every member. Across processes
    the sends travel on ``message_queue`` (a ``redis://`` URL, on
    ``channel``), or else on the app's ``SocketIO(message_queue=...)`` queue
    (see :mod:`flask_relay.groups`).
    """

    def __init__(
        self,
        app: Flask | Blueprint | None = None,
        *,
        allowed_origins: OriginPolicy | _Unset = UNSET,
        message_queue: str | None = None,
        channel: str = "flask-socketio",
    ) -> None:
        self.app: Flask | Blueprint | None = None
        self.bp: Blueprint | None = None
        self.allowed_origins = allowed_origins
        self.message_queue = message_queue
        self.channel = channel
        if app is not None:
            self.app = app
            self.init_app(app)

    def init_app(self, app: Flask | Blueprint) -> None:
        """Register the extension (and the routes declared before) with ``app``
        (a Flask app, or a blueprint the app registers later)."""
        if self.bp is not None and not (
            isinstance(app, Flask) and any(bp is self.bp for bp in app.blueprints.values())
        ):
            options: dict[str, Any] = {}
            if isinstance(app, Flask) and self.bp.name in app.blueprints:
                # Another Sock() had routes waiting too (Flask-Sock raises ValueError).
                options["name"] = f"{self.bp.name}_{len(app.blueprints)}"
            app.register_blueprint(self.bp, **options)
        if isinstance(app, Blueprint):
            install_when_registered(app)
        else:
            app.extensions["sock"] = self
            install(app)
            if self.message_queue is not None:
                groups_for(app).use_queue(from_url(self.message_queue, channel=self.channel))
        self.app = app

    def send(self, data: Any, to: Hashable, skip: Any = None) -> int:
        """Send ``data`` (``bytes``-like as binary, anything else ``str()``-ed as
        text) to every connection in the group ``to`` (``ws.join_room``), on
        this process and, through the message queue, on the others; ``skip``:
        a ``ws`` left out. Never waits. Returns how many members were reached
        on this process."""
        app = self.app if isinstance(self.app, Flask) else None
        if app is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        return groups_for(app).send(coerce_message(data), to, skip)

    def _policy(self, app: Flask) -> OriginPolicy:
        return origin_policy(app, self.allowed_origins)

    def route(self, path: str, bp: Blueprint | None = None, **kwargs: Any) -> Callable[[F], F]:
        """Register ``f(ws, **url_variables)`` as the WebSocket route ``path``
        (on ``bp`` when given). Keyword arguments go to ``Flask.route``."""

        def decorator(f: F) -> F:
            view = websocket_view(f, self._policy, type(self).__name__)
            kwargs["websocket"] = True
            target: Flask | Blueprint
            if bp is not None:
                target = bp
            elif self.app is not None:
                target = self.app
            else:
                if self.bp is None:
                    self.bp = Blueprint("__flask_sock", __name__)
                target = self.bp
            target.route(path, **kwargs)(view)
            if isinstance(target, Blueprint) and target is not self.bp:
                install_when_registered(target)
            return view  # type: ignore[return-value]

        return decorator

    def test_client(
        self, app: Flask | None = None, flask_test_client: Any = None, timeout: float = 5.0
    ) -> WebSocketTestClient:
        """An in-process client for this extension's routes
        (:class:`flask_relay.ws_testing.WebSocketTestClient`)."""
        target = app or self.app
        if not isinstance(target, Flask):
            raise RuntimeError(
                "test_client() needs the Flask app (Sock was given none, or a blueprint): "
                "sock.test_client(app)"
            )
        return WebSocketTestClient(target, flask_test_client, timeout=timeout)


def _options_for(app: Flask) -> WebSocketOptions:
    return WebSocketOptions.from_config(app.config.get("SOCK_SERVER_OPTIONS"))
