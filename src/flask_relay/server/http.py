"""The package's own HTTP/1.1 server, on the hub's event loop.

One port serves everything: requests under a *mount* prefix (the Engine.IO
endpoint, for instance) are handled natively on the loop, WebSocket upgrades on
a mount are handed to it with the raw connection, and every other request goes
to the WSGI application (a Flask app) in a bounded thread pool, so ordinary
routes and static files work beside the real-time endpoint.

Parsing is ``httptools`` (llhttp). Each connection answers its requests one at
a time, in order, so pipelined requests are safe; a connection with too many
pipelined requests waiting stops being read until it catches up.

Limits (see :class:`HTTPLimits`; every one has a default and each breach gets a
clear HTTP error and a closed connection, never an exception on the loop):
request-target length (414), header size and count (431), body size (413),
time to receive the headers, and inactivity while reading a body or waiting
for the next keep-alive request (the connection is closed, with a 408 when a
request had begun).

The WSGI bridge buffers the request body (in memory, or in a temporary file
past ``spool_size``) before calling the application, because the application
runs in a worker thread that must not read the socket. The response streams
back with backpressure: the worker thread blocks while the socket's write
buffer is above ``write_buffer_high``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import socket
import ssl as ssl_module
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, cast

import httptools

from ..protocol.errors import FlaskRelayError
from .loop import Hub
from .request import (
    HTTPRequest,
    Mount,
    bodyless_status,
    build_environ,
    response_bytes,
    response_head,
)
from .wsroute import serve_route_upgrade, shutdown_routes

__all__ = ["HTTPLimits", "ListenError", "Server", "WSGIApp", "listen_or_exit"]

logger = logging.getLogger("flask_relay.server")
#: One INFO line per answered WSGI request, like Werkzeug's request log (seen
#: with ``socketio.run(log_output=True)``, which sets ``flask_relay.server`` to INFO).
access_logger = logging.getLogger("flask_relay.server.access")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class HTTPLimits:
    """Bounds on what one HTTP connection may cost the server."""

    max_target_size: int = 8 * 1024
    """Request-target (path and query) bytes; past it 414."""
    max_header_size: int = 64 * 1024
    """Total bytes of header names and values; past it 431."""
    max_headers: int = 100
    """Number of header lines; past it 431."""
    max_body_size: int = 100 * 1024 * 1024
    """Body bytes of a request to the WSGI app; past it 413 (mounts set their own)."""
    spool_size: int = 1024 * 1024
    """A WSGI request body past this many bytes is buffered in a temporary file."""
    header_timeout: float = 10.0
    """Seconds from a request's first byte to the end of its headers."""
    body_timeout: float = 60.0
    """Seconds without any body bytes while a body is being received."""
    keep_alive_timeout: float = 75.0
    """Seconds an idle keep-alive connection is kept open."""
    max_pipelined: int = 16
    """Complete requests waiting behind the one being answered before reading pauses."""
    write_buffer_high: int = 256 * 1024
    """Bytes buffered for a socket before a streaming WSGI response waits."""


class ListenError(FlaskRelayError, OSError):
    """The server cannot listen on its address (in use, not ours, unknown host).

    ``str()`` is a one-line reason: ``cannot listen on 127.0.0.1:5000: address
    already in use``.
    """

    def __init__(self, host: str, port: int, reason: str) -> None:
        where = f"[{host}]" if ":" in host else (host or "*")
        super().__init__(f"cannot listen on {where}:{port}: {reason}")
        self.host = host
        self.port = port


def listen_or_exit(server: Server) -> None:
    """Bind ``server``'s address, or exit with status 1 and a one-line reason.

    For the ``run()`` entry points: a process that cannot serve must not look
    like it does (a supervisor restarts it, a developer sees why at once).
    """
    try:
        server.bind()
    except ListenError as exc:
        logger.debug("Cannot listen", exc_info=True)
        print(f"flask-relay: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _bind_sockets(host: str, port: int, *, backlog: int, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets for every address of ``host``, as ``loop.create_server``
    would make them, but here, so that failures are known before serving."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(host, port, str(exc.strerror or exc).lower()) from None
    listeners: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # Like asyncio: "::" does not also take the IPv4 port.
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(backlog)
            listener.setblocking(False)
    except OSError as exc:
        for listener in listeners:
            listener.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(host, port, reason) from None
    return listeners


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _simple_response(
    status: int,
    message: str,
    *,
    close: bool = True,
    headers: Iterable[tuple[str, str]] = (),
    head_only: bool = False,
    http10: bool = False,
) -> bytes:
    """A plain-text answer written by the server itself (errors, 404 without an app)."""
    return response_bytes(
        status,
        [*headers, ("Content-Type", "text/plain; charset=utf-8")],
        (message + "\n").encode(),
        keep_alive=not close,
        head_only=head_only,
        http10=http10,
    )


#: A complete response with ``Content-Length`` (see :func:`~.request.response_bytes`).
serialize_response = response_bytes


class _Body:
    """A request body being received: in memory, then spooled to a file."""

    __slots__ = ("chunks", "file", "size", "spool_size")

    def __init__(self, spool_size: int) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.spool_size = spool_size
        self.file: IO[bytes] | None = None

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
            return
        self.chunks.append(data)
        if self.size > self.spool_size:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the request body
            for chunk in self.chunks:
                self.file.write(chunk)
            self.chunks = []

    def getvalue(self) -> bytes:
        if self.file is not None:
            self.file.seek(0)
            return self.file.read()
        return b"".join(self.chunks)

    def stream(self) -> IO[bytes]:
        if self.file is not None:
            self.file.seek(0)
            return self.file
        return io.BytesIO(b"".join(self.chunks))

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.chunks = []


class _Pending:
    """A parsed request waiting its turn on the connection."""

    __slots__ = ("body", "error", "extra", "mount", "request")

    def __init__(
        self,
        request: HTTPRequest | None,
        mount: Mount | None,
        body: _Body | None,
        error: _HTTPError | None = None,
    ) -> None:
        self.request = request
        self.mount = mount
        self.body = body
        self.error = error
        self.extra = b""


class _MountResponder:
    """Answers one mount request on its connection (loop thread only)."""

    __slots__ = ("conn", "done", "head_only", "http10", "keep_alive", "on_abort")

    def __init__(self, conn: HTTPConnection, keep_alive: bool, request: HTTPRequest) -> None:
        self.conn = conn
        self.keep_alive = keep_alive
        self.head_only = request.method == "HEAD"
        self.http10 = request.http_version == "1.0"
        self.done = False
        self.on_abort: Callable[[], None] | None = None

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self.done:
            return
        self.done = True
        try:
            data = serialize_response(
                status,
                headers,
                body,
                keep_alive=self.keep_alive,
                head_only=self.head_only,
                http10=self.http10,
            )
        except ValueError:
            logger.exception("A mount answered with an invalid response")
            data = _simple_response(500, "Internal Server Error", head_only=self.head_only)
            self.keep_alive = False
        self.conn._finish_mount(self, data)


class _Upgrade:
    """An upgrade request's connection, given to the mount."""

    __slots__ = ("conn", "extra", "used")

    def __init__(self, conn: HTTPConnection, extra: bytes) -> None:
        self.conn = conn
        self.extra = extra
        self.used = False

    def reject(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.write_raw_and_close(serialize_response(status, headers, body, keep_alive=False))

    def write_raw_and_close(self, data: bytes) -> None:
        if self.used:
            return
        self.used = True
        conn = self.conn
        if conn.transport is not None and not conn.lost:
            conn.transport.write(data)
            conn._close()

    def switch(self, protocol: asyncio.BaseProtocol) -> None:
        if self.used:
            raise RuntimeError("the upgrade was already answered")
        self.used = True
        conn = self.conn
        transport = conn.transport
        if transport is None or conn.lost:
            # The client left before the mount answered; tell the new protocol.
            protocol.connection_lost(None)
            return
        conn._detach()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.extra and isinstance(protocol, asyncio.Protocol):
            protocol.data_received(self.extra)
        try:
            transport.resume_reading()
        except Exception:  # already reading, or closing
            pass


class HTTPConnection(asyncio.Protocol):
    """One client connection speaking HTTP/1.1 (until a mount takes it over)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.hub.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] = ("127.0.0.1", 0)
        self.scheme = "http"
        self.lost = False
        self.detached = False
        self.closing = False
        self.queue: deque[_Pending] = deque()
        self.busy = False
        self.current: _MountResponder | _WSGIResponse | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.reading_paused = False
        # Flow control for streaming WSGI responses (shared with a worker thread).
        self.flow = threading.Condition(threading.Lock())
        self.write_paused = False
        self.server_pending_bytes = 0
        # The request being parsed.
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._request: HTTPRequest | None = None
        self._mount: Mount | None = None
        self._body: _Body | None = None
        self._body_limit = 0
        self._too_large = False
        self._error: _HTTPError | None = None
        self._in_request = False

    # -- asyncio callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client = (str(peer[0]), int(peer[1]))
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple):
            self.local = (str(sock[0]), int(sock[1]))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        transport.set_write_buffer_limits(high=self.limits.write_buffer_high)
        self.server._connections.add(self)
        self._set_timer(self.limits.keep_alive_timeout, self._on_idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_timer()
        self.server._connections.discard(self)
        with self.flow:
            self.flow.notify_all()
        current = self.current
        if isinstance(current, _MountResponder) and not current.done:
            current.done = True
            if current.on_abort is not None:
                try:
                    current.on_abort()
                except Exception:
                    logger.exception("Error in a mount's abort callback")
        for pending in self.queue:
            if pending.body is not None:
                pending.body.discard()
        self.queue.clear()
        if self._body is not None:
            self._body.discard()
            self._body = None

    def pause_writing(self) -> None:
        with self.flow:
            self.write_paused = True

    def resume_writing(self) -> None:
        with self.flow:
            self.write_paused = False
            self.flow.notify_all()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.detached:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0]) if exc.args else len(data)
            if self.queue and self.queue[-1].request is not None:
                self.queue[-1].extra = data[offset:]
            # Nothing after an upgrade request is HTTP: stop reading until the
            # mount (or the WSGI fallback) has dealt with it.
            self._pause_reading()
        except httptools.HttpParserError as exc:
            self._pause_reading()
            if self._too_large and self._request is not None:
                # A body over the limit: the request goes through (flagged, no
                # body) so its mount can answer 413 and close its session.
                request = self._request
                request.body_too_large = True
                request.keep_alive = False
                logger.info(
                    "Request body over %d bytes from %s for %r: 413",
                    self._body_limit,
                    _addr(self.client),
                    request,
                )
                self.queue.append(_Pending(request, self._mount, None))
                self._request = None
                self._in_request = False
                if self._body is not None:
                    self._body.discard()
                    self._body = None
            else:
                self._refuse(
                    self._error
                    or _HTTPError(400, f"Malformed HTTP request: {_parser_message(exc)}")
                )
            self._error = None
            self._cancel_timer()
        else:
            if self._request_line_without_version(data):
                self._pause_reading()
                self._refuse(_HTTPError(400, "Request line without an HTTP version"))
                self._cancel_timer()
        self._next()

    def _refuse(self, error: _HTTPError) -> None:
        """Queue the answer to a request that cannot be parsed (the last one read)."""
        logger.info("Bad HTTP request from %s: %s", _addr(self.client), error.message)
        self.queue.append(_Pending(None, None, None, error))

    def _request_line_without_version(self, data: bytes) -> bool:
        """An HTTP/0.9-style request line (``GET /``), the client waiting for an answer.

        llhttp accepts it and waits for header lines, so the client would get
        nothing until the header timeout. Seen when the line ends the data
        just received; otherwise ``on_headers_complete`` refuses it by its
        version.
        """
        url = self._url
        return (
            self._in_request
            and self._request is None
            and not self._headers
            and bool(url)
            and (data.endswith(b" " + url + b"\r\n") or data.endswith(b" " + url + b"\n"))
        )

    def eof_received(self) -> bool | None:
        current = self.current
        if isinstance(current, _MountResponder) and not current.done:
            # A client that goes away during a held mount request (a long-poll)
            # has abandoned it, as Node's server sees it: abort the request.
            return None
        # A half-closed client may still wait for the answer to its last request.
        if not self.busy and not self.queue:
            self._close()
        return True if (self.busy or self.queue) else None

    # -- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_request = True
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._too_large = False
        self._set_timer(self.limits.header_timeout, self._on_header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_target_size:
            self._error = _HTTPError(
                414, f"Request target longer than {self.limits.max_target_size} bytes"
            )
            raise _HTTPError(414, "")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if (
            self._header_bytes > self.limits.max_header_size
            or len(self._headers) >= self.limits.max_headers
        ):
            self._error = _HTTPError(
                431,
                f"Request headers larger than {self.limits.max_header_size} bytes "
                f"or more than {self.limits.max_headers} lines",
            )
            raise _HTTPError(431, "")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version not in ("1.0", "1.1"):
            # llhttp parses "GET /" (HTTP/0.9) and any "HTTP/x.y"; we speak 1.0 and 1.1.
            if version == "0.9":
                self._error = _HTTPError(400, "Request line without an HTTP version")
            else:
                self._error = _HTTPError(505, f"HTTP/{version} is not supported")
            raise _HTTPError(self._error.status, "")
        hosts = sum(1 for name, _ in self._headers if name.lower() == "host")
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            # RFC 9112 3.2: a server MUST answer 400 to both.
            self._error = _HTTPError(
                400, "More than one Host header" if hosts else "HTTP/1.1 request without Host"
            )
            raise _HTTPError(400, "")
        url = self._url.decode("latin-1")
        if url.startswith("/") or url == "*":
            path, _, query = url.partition("?")
        else:
            # Absolute form (a proxy request): keep only path and query.
            try:
                parsed = httptools.parse_url(self._url)
            except httptools.HttpParserInvalidURLError:
                self._error = _HTTPError(400, "Invalid request target")
                raise _HTTPError(400, "")
            path = (parsed.path or b"/").decode("latin-1")
            query = (parsed.query or b"").decode("latin-1")
        request = HTTPRequest(
            parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            http_version=version,
            keep_alive=bool(parser.should_keep_alive()),
            client=self.client,
            server=self.local,
            scheme=self.scheme,
        )
        self._request = request
        self._mount = mount = self.server.find_mount(path)
        self._body_limit = (
            mount.max_body_size if mount is not None else self.limits.max_body_size
        )
        length = request.header("content-length")
        if length is not None and length.isdigit() and int(length) > self._body_limit:
            self._too_large = True
            raise _HTTPError(413, "")
        self._body = _Body(self.limits.spool_size)
        self._set_timer(self.limits.body_timeout, self._on_body_timeout)
        if (
            not self._too_large
            and not self.busy
            and not self.queue
            and (request.header("expect") or "").lower() == "100-continue"
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        # Past the limit parsing stops (llhttp cannot skip a body, and reading
        # one we refuse wastes bandwidth); the connection closes after the 413.
        body_buf = self._body
        assert body_buf is not None
        if body_buf.size + len(body) > self._body_limit:
            self._too_large = True
            body_buf.discard()
            raise _HTTPError(413, "")
        body_buf.add(body)
        self._set_timer(self.limits.body_timeout, self._on_body_timeout)

    def on_message_complete(self) -> None:
        self._in_request = False
        request = self._request
        assert request is not None
        request.upgrade = bool(self.parser.should_upgrade())
        self._request = None
        self.queue.append(_Pending(request, self._mount, self._body))
        self._body = None
        self._mount = None
        self._cancel_timer()
        if len(self.queue) > self.limits.max_pipelined:
            self._pause_reading()

    # -- answering -------------------------------------------------------------------

    def _next(self) -> None:
        """Start answering the next queued request if none is in progress."""
        while not self.busy and not self.lost and not self.detached:
            if not self.queue:
                if self.reading_paused and not self.closing:
                    self._resume_reading()
                if not self._in_request:
                    self._set_timer(self.limits.keep_alive_timeout, self._on_idle_timeout)
                return
            pending = self.queue.popleft()
            if pending.error is not None:
                self._write_error(pending.error.status, pending.error.message)
                return
            request = pending.request
            assert request is not None
            self.busy = True
            try:
                self._dispatch(pending, request)
            except Exception:
                logger.exception("Error while handling %r", request)
                if self.busy and not self.lost:
                    self._write_error(500, "Internal server error")
                return

    def _dispatch(self, pending: _Pending, request: HTTPRequest) -> None:
        mount = pending.mount
        if request.body_too_large:
            if mount is not None:
                responder = _MountResponder(self, False, request)
                self.current = responder
                mount.handle_request(request, responder)
                if not responder.done:
                    responder.respond(413, [], b"Payload too large")
            else:
                self._write_error(413, f"Request body larger than {self._body_limit} bytes")
            return
        if request.upgrade and mount is not None:
            self._cancel_timer()
            self.current = None
            handle = _Upgrade(self, pending.extra)
            mount.handle_upgrade(request, handle)
            return
        app = self.server.wsgi_app
        if (
            request.upgrade
            and app is not None
            and (request.header("upgrade") or "").lower() == "websocket"
        ):
            # A WebSocket route (flask_relay.Sock): the app decides in a thread
            # of its own, and either takes the connection or answers in HTTP.
            self._cancel_timer()
            self.current = None
            route = _WSGIResponse(self, request, pending.body or _Body(0))
            handle = _Upgrade(self, pending.extra)
            serve_route_upgrade(app, route.environ(), handle, self.server.hub)
            return
        if request.upgrade:
            # Not ours: the WSGI app answers, and the connection closes after.
            request.keep_alive = False
        if mount is not None:
            assert pending.body is not None
            request.body = pending.body.getvalue()
            responder = _MountResponder(self, request.keep_alive and not self.closing, request)
            self.current = responder
            mount.handle_request(request, responder)
            return
        if app is None:
            self._write_response(
                _simple_response(
                    404,
                    "Not Found",
                    close=not request.keep_alive or self.closing,
                    head_only=request.method == "HEAD",
                    http10=request.http_version == "1.0",
                ),
                request.keep_alive,
            )
            return
        body = pending.body or _Body(0)
        response = _WSGIResponse(self, request, body)
        self.current = response
        self.server.executor.submit(response.run, app)

    def _finish_mount(self, responder: _MountResponder, data: bytes) -> None:
        if self.current is not responder or self.lost:
            return
        self.current = None
        self._write_response(data, responder.keep_alive)

    def _write_response(self, data: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or self.lost:
            return
        transport.write(data)
        self.busy = False
        self.current = None
        if not keep_alive or self.closing:
            self._close()
            return
        self._next()

    def _write_error(self, status: int, message: str) -> None:
        self.queue.clear()
        self.busy = True
        if self.transport is not None and not self.lost:
            self.transport.write(_simple_response(status, message))
        self._close()

    # -- WSGI responses (called on the loop by _WSGIResponse) -----------------------------

    def _wsgi_write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)
        with self.flow:
            self.server_pending_bytes -= len(data)
            self.flow.notify_all()

    def _wsgi_done(self, response: _WSGIResponse, keep_alive: bool) -> None:
        if self.current is not response:
            return
        self.current = None
        self.busy = False
        if self.lost:
            return
        if not keep_alive or self.closing:
            self._close()
            return
        self._next()

    def _wsgi_abort(self) -> None:
        self.current = None
        if self.transport is not None and not self.lost:
            self.transport.abort()

    # -- timers and closing ------------------------------------------------------------------

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_idle_timeout(self) -> None:
        self.timer = None
        if not self.busy and not self.queue and not self._in_request:
            self._close()

    def _on_header_timeout(self) -> None:
        self.timer = None
        if self._in_request and self._request is None:
            logger.info("Closing %s: headers not received in time", _addr(self.client))
            if not self.busy:
                self._write_error(408, "Request headers not received in time")
            else:
                self._abort()

    def _on_body_timeout(self) -> None:
        self.timer = None
        if self._in_request and self._request is not None:
            logger.info("Closing %s: request body stalled", _addr(self.client))
            if not self.busy:
                self._write_error(408, "Request body not received in time")
            else:
                self._abort()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.lost:
            self.reading_paused = True
            try:
                self.transport.pause_reading()
            except Exception:
                pass

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.lost:
            self.reading_paused = False
            try:
                self.transport.resume_reading()
            except Exception:
                pass

    def _close(self) -> None:
        self.closing = True
        self._cancel_timer()
        if self.transport is not None and not self.lost:
            self.transport.close()

    def _abort(self) -> None:
        self.closing = True
        self._cancel_timer()
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def _detach(self) -> None:
        """A mount took the transport over: forget it here."""
        self.detached = True
        self._cancel_timer()
        self.server._connections.discard(self)

    def shutdown(self) -> None:
        """Server stopping: close now if idle, else after the current answer."""
        self.closing = True
        if not self.busy:
            self._close()


class _WSGIResponse:
    """Runs the WSGI app for one request in a worker thread and streams the answer."""

    def __init__(self, conn: HTTPConnection, request: HTTPRequest, body: _Body) -> None:
        self.conn = conn
        self.hub = conn.server.hub
        self.request = request
        self.body = body
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.chunked = False
        self.close_after = not request.keep_alive
        self.head = request.method == "HEAD"
        self.bodyless = False
        self.overflowed = False
        self.length: int | None = None
        self.sent = 0

    def environ(self) -> dict[str, Any]:
        server = self.conn.server
        environ = build_environ(self.request, server_name=server.server_name)
        environ["wsgi.input"] = self.body.stream()
        environ["wsgi.errors"] = sys.stderr
        if "CONTENT_LENGTH" not in environ and self.body.size:
            # A chunked body was fully read: tell the app its size.
            environ["CONTENT_LENGTH"] = str(self.body.size)
        environ["flask_relay.server"] = server
        return environ

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        self.status = status
        self.headers = list(headers)
        return self.write

    def _head(self, empty: bool = False) -> bytes:
        """The response head; ``empty`` when the app returned no body at all.

        The app's ``Content-Length`` (the last valid one) frames the body;
        without one an HTTP/1.1 response is chunked and an HTTP/1.0 one ends
        with the connection. ``Connection: close`` from the app is honoured.
        """
        assert self.status is not None
        status_code = int(self.status[:3]) if self.status[:3].isdigit() else 0
        self.bodyless = bodyless_status(status_code)
        for name, value in self.headers:
            lower = name.lower()
            if lower == "content-length":
                value = value.strip()
                if value.isdigit():
                    self.length = int(value)
            elif lower == "connection" and "close" in (
                token.strip().lower() for token in value.split(",")
            ):
                self.close_after = True
        if self.length is None and not self.bodyless and not self.head:
            if empty:
                self.length = 0
            elif self.request.http_version == "1.1":
                self.chunked = True
            else:
                self.close_after = True
        if self.conn.closing:
            self.close_after = True
        if self.close_after:
            connection: str | None = "close"
        elif self.request.http_version == "1.0":
            connection = "keep-alive"
        else:
            connection = None
        return response_head(
            self.status,
            self.headers,
            length=self.length,
            chunked=self.chunked,
            connection=connection,
        )

    def write(self, data: bytes) -> None:
        if self.status is None:
            raise AssertionError("write() before start_response()")
        out = b""
        if not self.headers_sent:
            out = self._head()
            self.headers_sent = True
        if data and not self.head and not self.bodyless:
            if self.length is not None:
                room = self.length - self.sent
                if len(data) > room:
                    if not self.overflowed:
                        self.overflowed = True
                        logger.error(
                            "%r: the app sent more than the %d bytes announced in "
                            "Content-Length; the rest is dropped",
                            self.request,
                            self.length,
                        )
                    data = data[:room]
            self.sent += len(data)
            if self.chunked and data:
                out += b"%x\r\n" % len(data) + data + b"\r\n"
            else:
                out += data
        if out:
            self._send(out)

    def _send(self, data: bytes) -> None:
        conn = self.conn
        high = conn.limits.write_buffer_high
        with conn.flow:
            while (conn.write_paused or conn.server_pending_bytes > high) and not conn.lost:
                conn.flow.wait(1.0)
            if conn.lost:
                raise ConnectionResetError("client disconnected")
            conn.server_pending_bytes += len(data)
        self.hub.call(conn._wsgi_write, data)

    def run(self, app: WSGIApp) -> None:
        conn = self.conn
        try:
            environ = self.environ()
            result = app(environ, self.start_response)
            try:
                for chunk in result:
                    if chunk:
                        self.write(chunk)
                if not self.headers_sent:
                    head = self._head(empty=True)
                    self.headers_sent = True
                    self._send(head)
                elif self.chunked:
                    self._send(b"0\r\n\r\n")
                if (
                    self.length is not None
                    and self.sent < self.length
                    and not self.head
                    and not self.bodyless
                ):
                    logger.error(
                        "%r: the app sent %d of %d bytes announced in Content-Length",
                        self.request,
                        self.sent,
                        self.length,
                    )
                    self.close_after = True
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except ConnectionResetError:
            logger.info("%r: client went away during the response", self.request)
            self.hub.call(conn._wsgi_abort)
            return
        except Exception:
            logger.exception("Error in the WSGI app for %r", self.request)
            if self.headers_sent:
                self.hub.call(conn._wsgi_abort)
                return
            try:
                self._send(_simple_response(500, "Internal Server Error", head_only=self.head))
            except ConnectionResetError:
                pass
            self.close_after = True
        finally:
            self.body.discard()
        if access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                '%s - "%s %s HTTP/%s" %s',
                _addr(self.request.client),
                self.request.method,
                self.request.target,
                self.request.http_version,
                (self.status or "500")[:3],
            )
        self.hub.call(conn._wsgi_done, self, not self.close_after)


def _parser_message(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text


def _addr(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown client"


def _normalize_prefix(prefix: str) -> str:
    prefix = "/" + prefix.strip("/")
    return prefix


class Server:
    """The HTTP/1.1 server: WSGI app plus natively served mounts, on one port.

    ``mounts`` maps a path prefix (``"/socket.io"``) to a :class:`Mount`;
    a request whose path is the prefix or starts with ``prefix + "/"`` goes
    to the mount, every other request to ``wsgi_app`` (404 without one).

    ``ssl`` is an :class:`ssl.SSLContext`, or give ``certfile``/``keyfile``.
    ``port=0`` picks a free port (read :attr:`port` after :meth:`start`).

    Run it with :meth:`serve_forever` (blocks, stops on SIGINT/SIGTERM), or
    :meth:`start` and :meth:`stop` (a background loop thread). Stopping is
    graceful: the listener closes, each mount closes its sessions ("server
    shutting down"; clients see a restart and reconnect), requests in
    progress get up to ``shutdown_timeout`` seconds, then every connection
    closes.
    """

    def __init__(
        self,
        wsgi_app: WSGIApp | None = None,
        mounts: Mapping[str, Mount] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 5000,
        ssl: ssl_module.SSLContext | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        wsgi_threads: int = 16,
        limits: HTTPLimits | None = None,
        hub: Hub | None = None,
        backlog: int = 2048,
        shutdown_timeout: float = 10.0,
        server_name: str | None = None,
        reuse_port: bool = False,
        sockets: Iterable[socket.socket] | None = None,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.host = host
        self._port = port
        if ssl is None and certfile is not None:
            ssl = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
            ssl.load_cert_chain(certfile, keyfile)
        self.ssl = ssl
        self.limits = limits or HTTPLimits()
        self.hub = hub or Hub()
        self.backlog = backlog
        self.shutdown_timeout = shutdown_timeout
        self.server_name = server_name
        self.reuse_port = reuse_port
        #: Listening sockets to serve instead of binding host:port (gunicorn's).
        self.sockets = list(sockets) if sockets is not None else None
        self.wsgi_threads = wsgi_threads
        self.executor = ThreadPoolExecutor(
            max_workers=wsgi_threads, thread_name_prefix="flask-relay-wsgi"
        )
        self._mounts: list[tuple[str, Mount]] = []
        for prefix, mount in (mounts or {}).items():
            self.add_mount(prefix, mount)
        self._connections: set[HTTPConnection] = set()
        self._servers: list[asyncio.Server] = []
        self._stopping = False
        self._stopped = asyncio.Event  # type: ignore[assignment]
        self._owns_hub = hub is None
        self._started = False
        self._bound: list[socket.socket] = []
        self._main_error: BaseException | None = None

    # -- configuration -------------------------------------------------------------

    def add_mount(self, prefix: str, mount: Mount) -> None:
        """Serve ``mount`` under ``prefix`` (before the server starts)."""
        self._mounts.append((_normalize_prefix(prefix), mount))
        # Longest prefix first so "/a/b" wins over "/a".
        self._mounts.sort(key=lambda item: len(item[0]), reverse=True)

    def find_mount(self, path: str) -> Mount | None:
        for prefix, mount in self._mounts:
            if path == prefix or path.startswith(prefix + "/") or prefix == "/":
                return mount
        return None

    @property
    def port(self) -> int:
        """The bound port (the real one when ``port=0`` was asked)."""
        for server in self._servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{self.host}:{self.port}"

    # -- running -------------------------------------------------------------------

    def bind(self) -> None:
        """Create the listening sockets now, in the caller's thread.

        Raises :class:`ListenError` (address in use, not available, unknown
        host) before anything is served, so a caller can report it and exit.
        :meth:`start` and :meth:`serve_forever` call it when it was not called.
        Does nothing when serving inherited ``sockets``.
        """
        if self.sockets is not None or self._bound:
            return
        self._bound = _bind_sockets(
            self.host, self._port, backlog=self.backlog, reuse_port=self.reuse_port
        )

    async def _listen(self) -> None:
        for _, mount in self._mounts:
            mount.attach(self.hub)
        loop = asyncio.get_running_loop()
        if self._bound:
            for listener in self._bound:
                self._servers.append(
                    await loop.create_server(
                        lambda: HTTPConnection(self), sock=listener, ssl=self.ssl,
                        backlog=self.backlog,
                    )
                )
            logger.info("Serving on %s", self.url)
            return
        if self.sockets is not None:
            for listener in self.sockets:
                self._servers.append(
                    await loop.create_server(
                        lambda: HTTPConnection(self), sock=listener, ssl=self.ssl,
                        backlog=self.backlog,
                    )
                )
            logger.info("Serving on %d inherited socket(s)", len(self.sockets))
            return
        server = await loop.create_server(
            lambda: HTTPConnection(self),
            self.host,
            self._port,
            ssl=self.ssl,
            backlog=self.backlog,
            reuse_port=self.reuse_port or None,
        )
        self._servers.append(server)
        logger.info("Serving on %s", self.url)

    def start(self) -> None:
        """Listen and serve from a background loop thread; returns when listening."""
        if self._started:
            raise RuntimeError("the server was already started")
        self.bind()
        self._started = True
        if not self.hub.running:
            self.hub.start()
        self.hub.submit(self._listen()).result()

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop from another thread (see the class docstring)."""
        if not self._started or self._stopping:
            return
        timeout = self.shutdown_timeout + 5 if timeout is None else timeout
        if self.hub.in_loop_thread():
            raise RuntimeError("stop() must not be called on the loop thread")
        try:
            self.hub.submit(self.shutdown()).result(timeout)
        except Exception:
            logger.exception("Error during shutdown")
        if self._owns_hub:
            self.hub.stop()

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (or :meth:`stop` from another thread)."""
        if self._started:
            raise RuntimeError("the server was already started")
        self.bind()
        self._started = True
        self.hub.run(self._main())
        if self._main_error is not None:
            error, self._main_error = self._main_error, None
            raise error

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        self._done_event = done

        shutting_down: list[asyncio.Task[None]] = []

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            if shutting_down:
                # A second signal (Ctrl-C reaches a whole process group, a supervisor
                # may follow up with SIGTERM) must not cut the first shutdown short.
                logger.info("Received %s, already shutting down", name)
                return
            logger.info("Received %s, shutting down", name)
            shutting_down.append(loop.create_task(self._shutdown_and_exit()))

        installed: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
                try:
                    loop.add_signal_handler(signum, on_signal, signum)
                    installed.append(signum)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        try:
            try:
                await self._listen()
            except Exception as exc:
                # serve_forever() raises it once the loop has stopped.
                self._main_error = exc
                loop.stop()
                return
            await done.wait()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    async def _shutdown_and_exit(self) -> None:
        try:
            await self.shutdown()
        finally:
            self.hub.loop.stop()

    async def shutdown(self) -> None:
        """Stop accepting, close mounts' sessions, finish requests, close connections."""
        if self._stopping:
            return
        self._stopping = True
        for server in self._servers:
            server.close()
        for prefix, mount in self._mounts:
            try:
                await asyncio.wait_for(mount.shutdown(), self.shutdown_timeout)
            except Exception:
                logger.exception("Error while shutting down the mount at %s", prefix)
        await shutdown_routes(self.shutdown_timeout)
        for conn in list(self._connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        while any(c.busy for c in self._connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self._connections):
            conn._abort()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self.executor.shutdown(wait=False)
        logger.info("Server stopped")
