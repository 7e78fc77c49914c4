"""An in-process test client for WebSocket routes (:class:`flask_relay.Sock`).

::

    client = sock.test_client(app)          # or WebSocketTestClient(app)
    with client.connect("/echo/room1?x=1") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"
    assert ws.close_code == 1000

No network is involved, but nothing is faked either: the route runs exactly as
under a server (its own thread, Flask's routing, hooks and decorators, the
event loop owning the connection), and the bytes between the two ends are real
WebSocket frames, produced and parsed by the same code a server uses on one end
and by ``websockets``' sans-I/O client on the other. So message size limits
(1009), UTF-8 checks (1007, see :meth:`TestWebSocket.send_raw_frame`), pings
and the closing handshake behave as they do on the wire.

A route that refuses the upgrade (a ``login_required``-style decorator,
``abort(403)``, no such route) makes :meth:`WebSocketTestClient.connect` raise
:class:`UpgradeRefused`, which carries the HTTP status, headers and body.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri
from werkzeug.test import EnvironBuilder

from .protocol.closecode import CloseCode
from .protocol.errors import FlaskRelayError
from .server.foreign import shared_hub
from .server.loop import Hub
from .server.wscontract import UPGRADER_KEY, ConnectionClosed
from .server.wsroute import RouteChannel, RouteOutcome, RouteUpgrader, dispatch_upgrade

__all__ = ["TestWebSocket", "UpgradeRefused", "WebSocketTestClient"]

#: Default seconds a test client call waits before ``TimeoutError``.
DEFAULT_TIMEOUT = 5.0


class UpgradeRefused(FlaskRelayError):
    """The application answered the upgrade request in HTTP instead of accepting it."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"WebSocket upgrade refused: {status}")
        self.status = status
        self.status_code = int(status.split(" ", 1)[0])
        self.headers = headers
        self.data = body

    def get_data(self, as_text: bool = False) -> bytes | str:
        """The response body (like a Flask test response)."""
        return self.data.decode("utf-8", "replace") if as_text else self.data


class _MemoryTransport(asyncio.Transport):
    """The server end of an in-memory connection; used on the loop thread only."""

    def __init__(
        self,
        channel: RouteChannel,
        loop: asyncio.AbstractEventLoop,
        wrote: Callable[[bytes], None],
        closed: Callable[[], None],
    ) -> None:
        super().__init__()
        self._channel = channel
        self._loop = loop
        self._wrote = wrote  # the client end's, called on the loop
        self._closed = closed
        self._closing = False
        self._paused = False
        self._pending: deque[bytes | None] = deque()  # None: end of stream

    # -- what RouteChannel uses ------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._wrote(bytes(data))

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._closed()
            self._loop.call_soon(self._channel.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        while self._pending and not self._paused and not self._closing:
            self._feed(self._pending.popleft())

    def is_reading(self) -> bool:
        return not self._paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    # -- what the client sends -------------------------------------------------

    def deliver(self, data: bytes | None) -> None:
        if self._closing:
            return
        if self._paused or self._pending:
            self._pending.append(data)
        else:
            self._feed(data)

    def _feed(self, data: bytes | None) -> None:
        channel = self._channel
        if data is None:
            if channel.eof_received() is not True:
                self.close()
        else:
            channel.data_received(data)


class _TestUpgrader(RouteUpgrader):
    def __init__(
        self, hub: Hub, environ: dict[str, Any], start: Callable[[RouteChannel], None]
    ) -> None:
        super().__init__(hub, environ)
        self._start = start

    def start(self, channel: RouteChannel) -> None:
        self._start(channel)


class TestWebSocket:
    """The client end of one in-process WebSocket connection.

    Methods are blocking and meant for the test's thread. ``receive`` and the
    closing handshake wait at most ``timeout`` seconds (the client's default,
    5), then raise ``TimeoutError``, so a broken route fails a test instead of
    hanging it.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, hub: Hub, protocol: ClientProtocol, timeout: float) -> None:
        self._hub = hub
        self._loop = hub.loop
        self._protocol = protocol
        self._timeout = timeout
        self._cond = threading.Condition()
        self._messages: deque[str | bytes] = deque()
        self._pongs: deque[bytes] = deque()
        self._tcp_closed = False
        self._channel: RouteChannel = None  # type: ignore[assignment]  # set by the upgrader
        self._transport: _MemoryTransport | None = None
        #: The close code the server sent (1006 if the connection ended without one).
        self.close_code: int | None = None
        #: The close reason the server sent.
        self.close_reason: str | None = None

    def handshake(self, app: Any, environ: dict[str, Any]) -> None:
        """Run the upgrade through ``app`` (the WSGI dispatch of ``environ``, as
        every door does) and wait for the 101; raises :class:`UpgradeRefused`
        when the application answers in HTTP. :meth:`WebSocketTestClient.connect` calls it."""
        upgrader = _TestUpgrader(self._hub, environ, self._connect)
        environ[UPGRADER_KEY] = upgrader
        outcome: RouteOutcome = dispatch_upgrade(app, environ, upgrader)
        if not outcome.ready.wait(self._timeout):
            raise TimeoutError("the route neither accepted nor refused the upgrade")
        if not outcome.accepted:
            raise UpgradeRefused(outcome.status, outcome.headers, outcome.body)
        self._wait_open(time.monotonic() + self._timeout)

    # -- loop side -------------------------------------------------------------

    def _connect(self, channel: RouteChannel) -> None:
        """The upgrader's ``start``: the route accepted; connect the channel to
        an in-memory transport whose other end is this object."""
        self._channel = channel
        transport = _MemoryTransport(channel, self._loop, self._server_wrote, self._server_closed)
        self._transport = transport
        self._hub.call(channel.connection_made, transport)

    def _wait_open(self, deadline: float) -> None:
        """Wait for the 101 response (or the end of the connection)."""
        with self._cond:
            while self._protocol.state is State.CONNECTING and not self._tcp_closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no 101 response from the route")
                self._cond.wait(remaining)
            if self._protocol.handshake_exc is not None:
                raise self._protocol.handshake_exc

    def _server_wrote(self, data: bytes) -> None:
        with self._cond:
            self._protocol.receive_data(data)
            self._collect()
            self._cond.notify_all()
        self._pump()

    def _server_closed(self) -> None:
        with self._cond:
            self._tcp_closed = True
            self._protocol.receive_eof()
            self._collect()
            if self.close_code is None:
                self.close_code, self.close_reason = CloseCode.ABNORMAL, ""
            self._cond.notify_all()

    def _collect(self) -> None:
        for event in self._protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._messages.append(bytes(event.data).decode())
                elif event.opcode is Opcode.BINARY:
                    self._messages.append(bytes(event.data))
                elif event.opcode is Opcode.PONG:
                    self._pongs.append(bytes(event.data))
        rcvd = self._protocol.close_rcvd
        if rcvd is not None and self.close_code is None:
            self.close_code, self.close_reason = int(rcvd.code), rcvd.reason

    def _pump(self) -> None:
        """Hand what the client protocol wrote to the server (from any thread)."""
        with self._cond:
            chunks = self._protocol.data_to_send()
        transport = self._transport
        if transport is None:
            return
        for chunk in chunks:
            self._hub.call(transport.deliver, chunk if chunk else None)

    # -- public API ------------------------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, or ``None``."""
        return self._protocol.subprotocol

    @property
    def connected(self) -> bool:
        """``True`` until a close frame was sent or received."""
        with self._cond:
            return self._protocol.state is State.OPEN and not self._tcp_closed

    def send(self, data: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        with self._cond:
            if self._protocol.state is not State.OPEN:
                raise ConnectionClosed(self.close_code or CloseCode.NO_STATUS, self.close_reason)
            if isinstance(data, str):
                self._protocol.send_text(data.encode())
            else:
                self._protocol.send_binary(bytes(data))
        self._pump()

    def send_raw_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        """Send any frame, even one a correct client never sends (invalid
        UTF-8 in a text frame, a fragment...), to test how a route is closed."""
        with self._cond:
            self._protocol.send_frame(Frame(Opcode(opcode), payload, fin=fin))
        self._pump()

    def ping(self, data: bytes = b"", timeout: float | None = None) -> bytes:
        """Send a ping and wait for the server's pong; returns its payload."""
        with self._cond:
            self._protocol.send_ping(data)
        self._pump()
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        with self._cond:
            while not self._pongs:
                if self._tcp_closed:
                    raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL, self.close_reason)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no pong from the server")
                self._cond.wait(remaining)
            return self._pongs.popleft()

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message from the route. Raises :class:`ConnectionClosed`
        once the server closed and every message was read, ``TimeoutError``
        after ``timeout`` seconds (default: the client's)."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        with self._cond:
            while not self._messages:
                if self.close_code is not None:
                    raise ConnectionClosed(self.close_code, self.close_reason)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no message from the WebSocket route")
                self._cond.wait(remaining)
            return self._messages.popleft()

    def close(
        self, code: int = CloseCode.NORMAL, reason: str = "", timeout: float | None = None
    ) -> None:
        """Run the closing handshake (no-op when it already ran) and wait for
        the server to close the connection."""
        with self._cond:
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(code, reason)
        self._pump()
        self.wait_closed(timeout)

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the server closed the connection (``TimeoutError`` after
        ``timeout`` seconds)."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        with self._cond:
            while not self._tcp_closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the server did not close the connection")
                self._cond.wait(remaining)

    def __enter__(self) -> TestWebSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._tcp_closed:
            try:
                self.close()
            except TimeoutError:
                if exc_type is None:
                    raise


class WebSocketTestClient:
    """Opens in-process WebSocket connections to an application's routes.

    ``flask_test_client`` (a ``app.test_client()``) lends its cookies, so a
    route behind a login sees the session of earlier HTTP requests.
    """

    __test__ = False

    def __init__(
        self,
        app: Any,
        flask_test_client: Any = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        hub: Hub | None = None,
    ) -> None:
        self.app = app
        self.flask_test_client = flask_test_client
        self.timeout = timeout
        self._hub = hub

    def connect(
        self,
        path: str = "/",
        *,
        query_string: str | Mapping[str, str] | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        subprotocols: Sequence[str] = (),
        max_size: int | None = None,
    ) -> TestWebSocket:
        """Open a connection to the route at ``path``; raises :class:`UpgradeRefused`
        when the application answers in HTTP (status, headers and body on it)."""
        hub = self._hub or shared_hub()
        protocol = ClientProtocol(
            parse_uri("ws://localhost/"),
            subprotocols=[Subprotocol(s) for s in subprotocols] or None,
            max_size=max_size,
        )
        request = protocol.connect()
        protocol.send_request(request)
        protocol.data_to_send()  # the request travels as the WSGI environ instead
        all_headers = list(request.headers.raw_items())
        if headers is not None:
            items = headers.items() if isinstance(headers, Mapping) else headers
            all_headers.extend((str(k), str(v)) for k, v in items)
        builder = EnvironBuilder(path=path, query_string=query_string, headers=all_headers)
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        if self.flask_test_client is not None:
            add_cookies = getattr(self.flask_test_client, "_add_cookies_to_wsgi", None)
            if add_cookies is not None:
                add_cookies(environ)
        ws = TestWebSocket(hub, protocol, self.timeout)
        ws.handshake(self.app, environ)
        return ws
