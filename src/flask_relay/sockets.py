"""Flask-Sockets and gevent-websocket compatibility, without gevent.

Apps written for Flask-Sockets change one import::

    from flask_relay import Sockets        # was: from flask_sockets import Sockets

    sockets = Sockets(app)

    @sockets.route("/echo")
    def echo_socket(ws):
        while not ws.closed:
            message = ws.receive()
            ws.send(message)

    sockets.register_blueprint(ws_blueprint, url_prefix="/")   # its route()s are WebSocket routes

Why it is built on :mod:`flask_relay.sock`
------------------------------------------
A Flask-Sockets route becomes a :class:`~flask_relay.Sock`-style route (a
Flask view with ``websocket=True``): the same doors serve it (the own server,
``flask run``, gunicorn's sync/gthread workers through the middleware, the
gunicorn worker class), the same event loop owns the connection, the same
Origin policy guards it. Only the ``ws`` object differs: :class:`GeventWebSocket`
gives the route gevent-websocket's interface over Sock's blocking ``WebSocket``:

* ``receive()`` returns ``str`` (text) or ``bytearray`` (binary), and ``None``
  when the connection closed (once; a later call raises :class:`WebSocketError`,
  as gevent-websocket does);
* ``closed`` becomes true when every message received before the close was
  returned (so ``while not ws.closed`` loops see all of them), or after
  ``close()``;
* ``send(message, binary=None)``, ``send_frame(message, opcode)``,
  ``close(code=1000, message=b"")``; sending on a closed socket raises
  :class:`WebSocketError` (an ``OSError``, like gevent-websocket's), which
  ends the route quietly, so the README loop above ends without a traceback;
* ``environ``, ``origin``, ``protocol``, ``version``, ``path``, ``logger``.

Differences from Flask-Sockets: the routes live in the app's URL map (their
endpoints are prefixed ``__flask_sockets.``), so app-wide ``before_request``
and ``after_request`` hooks run for them as for Sock routes; and a page on
another origin is refused unless ``allowed_origins`` (or the app config key
``SOCK_ALLOWED_ORIGINS``) allows it.

Raw WSGI apps
-------------
:class:`WebSocketWSGI` wraps a plain WSGI application that reads
``environ["wsgi.websocket"]`` (gevent-websocket's interface): serve the
wrapped app with ``flask_relay.server.http.Server``, ``gunicorn -k
flask_relay.gunicorn.Worker``, or any WSGI server that exposes its socket
(Werkzeug, gunicorn sync/gthread).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask

from .engine.websocket import WebSocket
from .protocol.closecode import CloseCode
from .protocol.errors import FlaskRelayError
from .server.foreign import ForeignMiddleware, install
from .server.request import reason_phrase
from .server.wscontract import (
    UPGRADER_KEY,
    ConnectionClosed,
    HandshakeRejected,
    WebSocketOptions,
)
from .sock import (
    UNSET,
    _Unset,
    check_origin,
    origin_policy,
    websocket_view,
)

if TYPE_CHECKING:
    from .protocol.origin import OriginPolicy

__all__ = ["GeventWebSocket", "Sockets", "WebSocketError", "WebSocketWSGI"]

logger = logging.getLogger("flask_relay.sockets")

MSG_ALREADY_CLOSED = "Connection is already closed"
MSG_SOCKET_DEAD = "Socket is dead"

#: Rule options a Flask-Sockets route may carry on to the app's URL map.
_RULE_OPTIONS = ("defaults", "subdomain", "strict_slashes", "host", "redirect_to")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WebSocketError(FlaskRelayError, OSError):
    """gevent-websocket's ``WebSocketError`` (a ``socket.error``): the socket is closed."""


class GeventWebSocket:
    """gevent-websocket's ``WebSocket`` interface over a Sock ``WebSocket``."""

    OPCODE_CONTINUATION = 0x00
    OPCODE_TEXT = 0x01
    OPCODE_BINARY = 0x02
    OPCODE_CLOSE = 0x08
    OPCODE_PING = 0x09
    OPCODE_PONG = 0x0A

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._done = False  # receive() returned None, close() was called or send failed
        self.environ: dict[str, Any] | None = ws.environ

    @property
    def closed(self) -> bool:
        """Whether the connection is closed and nothing received is left to read."""
        return self._done or self._ws.drained

    @property
    def origin(self) -> str | None:
        return self._ws.environ.get("HTTP_ORIGIN")

    @property
    def protocol(self) -> str | None:
        return self._ws.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")

    @property
    def version(self) -> str | None:
        return self._ws.environ.get("HTTP_SEC_WEBSOCKET_VERSION")

    @property
    def path(self) -> str | None:
        return self._ws.environ.get("PATH_INFO")

    @property
    def logger(self) -> logging.Logger:
        return logger

    def receive(self) -> str | bytearray | None:
        """The next message; ``None`` once the connection is closed."""
        if self._done:
            raise WebSocketError(MSG_ALREADY_CLOSED)
        try:
            data = self._ws.receive()
        except ConnectionClosed:
            self._done = True
            return None
        return bytearray(data) if isinstance(data, bytes) else data

    def send(self, message: Any, binary: bool | None = None) -> None:
        """Send ``message``: binary unless it is a ``str`` (or ``binary`` says)."""
        if binary is None:
            binary = not isinstance(message, str)
        self.send_frame(message, self.OPCODE_BINARY if binary else self.OPCODE_TEXT)

    def send_frame(self, message: Any, opcode: int) -> None:
        """Send one frame: text, binary, ping or close."""
        if self._done:
            raise WebSocketError(MSG_ALREADY_CLOSED)
        payload: str | bytes
        if opcode == self.OPCODE_TEXT:
            payload = message if isinstance(message, str) else str(message or "")
        elif opcode in (self.OPCODE_BINARY, self.OPCODE_PING):
            payload = message.encode() if isinstance(message, str) else bytes(message)
        elif opcode == self.OPCODE_CLOSE:
            self.close()
            return
        else:
            raise ValueError(f"send_frame: opcode {opcode:#x} is not supported")
        try:
            if opcode == self.OPCODE_PING:
                self._ws._send_ping(payload)  # type: ignore[arg-type]
            else:
                self._ws.send(payload)
        except ConnectionClosed:
            self._done = True
            raise WebSocketError(MSG_SOCKET_DEAD) from None

    def close(self, code: int = CloseCode.NORMAL, message: str | bytes = b"") -> None:
        """Start the closing handshake; does nothing when already closed."""
        if self._done:
            return
        self._done = True
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        try:
            self._ws.close(code, text or "")
        except ConnectionClosed:
            pass


def _gevent_route(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A Sock route that calls ``handler`` with a :class:`GeventWebSocket`."""

    @functools.wraps(handler)
    def route(ws: WebSocket, *args: Any, **kwargs: Any) -> Any:
        gws = GeventWebSocket(ws)
        try:
            return handler(gws, *args, **kwargs)
        except WebSocketError:
            if not gws.closed:
                raise
            return None  # the README loop sends once more after the close

    return route


class _SocketsApp:
    """What ``Blueprint.register`` sees as the app when ``Sockets`` registers a
    blueprint: URL rules become WebSocket routes; anything else goes to the
    first Flask app (blueprint hooks and ``record`` callbacks)."""

    def __init__(self, sockets: Sockets) -> None:
        self._sockets = sockets

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: Callable[..., Any] | None = None,
        **options: Any,
    ) -> None:
        assert view_func is not None
        self._sockets.add_url_rule(rule, endpoint, view_func, **options)

    def __getattr__(self, name: str) -> Any:
        if not self._sockets.apps:
            raise AttributeError(name)
        return getattr(self._sockets.apps[0], name)


class Sockets:
    """Flask-Sockets' ``Sockets``: ``Sockets(app)`` or ``Sockets()`` and
    ``init_app(app)``; ``route``, ``add_url_rule``, ``register_blueprint``.

    Routes and blueprints may come before or after ``init_app`` and serve
    every app given to it. ``allowed_origins``: see :class:`flask_relay.Sock`.
    """

    def __init__(
        self, app: Flask | None = None, *, allowed_origins: OriginPolicy | _Unset = UNSET
    ) -> None:
        #: Blueprints registered with :meth:`register_blueprint`, by name.
        self.blueprints: dict[str, Blueprint] = {}
        self._blueprint_order: list[Blueprint] = []
        self.apps: list[Flask] = []
        self.allowed_origins = allowed_origins
        self._rules: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []
        self._endpoints: dict[str, Callable[..., Any]] = {}
        self.app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Serve this extension's routes (and those added later) on ``app``."""
        install(app)
        self.apps.append(app)
        self.app = app
        for rule, endpoint, view, options in self._rules:
            app.add_url_rule(rule, endpoint, view, websocket=True, **options)

    def _policy(self, app: Flask) -> OriginPolicy:
        return origin_policy(app, self.allowed_origins)

    def route(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        """Register ``f(ws, **url_variables)`` as the WebSocket route ``rule``."""

        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            endpoint = options.pop("endpoint", None)
            self.add_url_rule(rule, endpoint, f, **options)
            return f

        return decorator

    def add_url_rule(
        self, rule: str, _: str | None = None, f: Callable[..., Any] | None = None, **options: Any
    ) -> None:
        """Register ``f`` as the WebSocket route ``rule`` (endpoint ``_``, or its name)."""
        if f is None:
            raise TypeError("add_url_rule() needs the route function")
        base = f"__flask_sockets.{_ or f.__name__}"
        endpoint, n = base, 1
        while endpoint in self._endpoints and self._endpoints[endpoint] is not f:
            n += 1
            endpoint = f"{base}_{n}"  # Flask-Sockets keys routes by function, not name
        self._endpoints[endpoint] = f
        kept = {k: v for k, v in options.items() if k in _RULE_OPTIONS}
        view = websocket_view(_gevent_route(f), self._policy, type(self).__name__)
        self._rules.append((rule, endpoint, view, kept))
        for app in self.apps:
            app.add_url_rule(rule, endpoint, view, websocket=True, **kept)

    def register_blueprint(self, blueprint: Blueprint, **options: Any) -> None:
        """Register a plain Flask ``Blueprint`` whose ``route`` decorators are
        WebSocket routes (``url_prefix`` and the other options as for Flask)."""
        first_registration = blueprint.name not in self.blueprints
        if not first_registration and self.blueprints[blueprint.name] is not blueprint:
            raise ValueError(
                f"A blueprint named {blueprint.name!r} is already registered with Sockets"
            )
        if first_registration:
            self.blueprints[blueprint.name] = blueprint
            self._blueprint_order.append(blueprint)
        state = blueprint.make_setup_state(
            _SocketsApp(self), options, first_registration  # type: ignore[arg-type]
        )
        for deferred in blueprint.deferred_functions:
            deferred(state)


# --------------------------------------------------------------------------
# environ["wsgi.websocket"] for plain WSGI applications
# --------------------------------------------------------------------------


class _Upgrading:
    """The inner WSGI app of :class:`WebSocketWSGI` (the doors call it with an upgrader)."""

    def __init__(
        self, app: WSGIApp, allowed_origins: OriginPolicy, options: WebSocketOptions
    ) -> None:
        self.app = app
        self.allowed_origins = allowed_origins
        self.options = options

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        upgrader = environ.get(UPGRADER_KEY)
        if upgrader is None:
            return self.app(environ, start_response)
        refusal = check_origin(environ, self.allowed_origins, "WebSocketWSGI", app_config=False)
        if refusal is not None:
            return refusal(environ, start_response)
        # As gevent-websocket: the handshake is done before the app runs, and
        # what the app passes to start_response goes nowhere.
        ws = WebSocket(environ, upgrader, self.options)
        try:
            ws.accept()
        except HandshakeRejected as exc:
            start_response(f"{exc.status} {reason_phrase(exc.status)}", exc.headers)
            return [exc.body]
        except ConnectionClosed:
            return []
        environ["wsgi.websocket"] = GeventWebSocket(ws)
        environ["wsgi.websocket_version"] = environ.get("HTTP_SEC_WEBSOCKET_VERSION")
        code = CloseCode.NORMAL
        try:
            _close_iterable(self.app(environ, _ignore_response))
        except WebSocketError:
            pass
        except Exception:
            logger.exception("Exception in WebSocket application")
            code = CloseCode.INTERNAL_ERROR
        try:
            ws.close(code)
        except ConnectionClosed:
            pass
        return []


def _ignore_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return lambda data: None


def _close_iterable(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class WebSocketWSGI:
    """WSGI middleware giving a plain WSGI app gevent-websocket's
    ``environ["wsgi.websocket"]`` for WebSocket upgrade requests.

    ::

        def app(environ, start_response):
            ws = environ.get("wsgi.websocket")
            if ws is None:
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"not a WebSocket"]
            while (message := ws.receive()) is not None:
                ws.send(message)
            return []

        application = WebSocketWSGI(app)   # serve this one

    As with gevent-websocket, the handshake is done before the app is
    called, and the app's ``start_response`` call goes nowhere; the
    connection is closed (1000) when the app returns. ``allowed_origins`` is
    the Origin policy (default: same origin; ``"*"`` any; see
    :class:`flask_relay.Sock`). ``options`` takes the keys of
    ``SOCK_SERVER_OPTIONS``.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        allowed_origins: OriginPolicy = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self._inner = _Upgrading(app, allowed_origins, WebSocketOptions.from_config(options))
        # Foreign servers: take the socket over; the own server offers an upgrader itself.
        self.wsgi_app = ForeignMiddleware(self._inner)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return self.wsgi_app(environ, start_response)


def __getattr__(name: str) -> Any:
    # ``gunicorn -k flask_relay.sockets.worker``, like ``flask_sockets.worker``.
    if name in ("worker", "Worker"):
        # Deferred on purpose: flask_relay.gunicorn imports the optional gunicorn package.
        from .gunicorn import Worker

        return Worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
