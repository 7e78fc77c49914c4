"""The HTTP/1.1 connection protocol of the package's own server, on the loop.

:class:`HTTPConnection` is the ``asyncio.Protocol`` of one client connection:
``httptools`` (llhttp) parses it; requests under a *mount* prefix (the
Engine.IO endpoint, for instance) are handled natively on the loop, WebSocket
upgrades on a mount are handed to it with the raw connection, and every other
request goes to the WSGI application through :mod:`.wsgi`. Each connection
answers its requests one at a time, in order, so pipelined requests are safe; a
connection with too many pipelined requests waiting stops being read until it
catches up.

Limits (see :class:`HTTPLimits`; every one has a default and each breach gets a
clear HTTP error and a closed connection, never an exception on the loop):
request-target length (414), header size and count (431), body size (413),
time to receive the headers, and inactivity while reading a body or waiting
for the next keep-alive request (the connection is closed, with a 408 when a
request had begun).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httptools

from .request import (
    HTTPRequest,
    Mount,
    client_address,
    response_bytes,
    text_response,
)
from .wsgi import _Body, _WSGIResponse
from .wsroute import serve_route_upgrade

if TYPE_CHECKING:
    from .serve import Server

__all__ = ["HTTPConnection", "HTTPLimits", "serialize_response"]

logger = logging.getLogger("flask_relay.server")
#: One INFO line per answered WSGI request, like Werkzeug's request log (seen
#: with ``socketio.run(log_output=True)``, which sets ``flask_relay.server`` to INFO).
access_logger = logging.getLogger("flask_relay.server.access")


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



class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: A complete response with ``Content-Length`` (see :func:`~.request.response_bytes`).
serialize_response = response_bytes


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
            data = text_response(500, "Internal Server Error", head_only=self.head_only)
            self.keep_alive = False
        self.conn.finish_mount(self, data)


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
            conn.close()

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
        conn.detach()
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
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
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
        self.server.connections.add(self)
        self._set_timer(self.limits.keep_alive_timeout, self._on_idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_timer()
        self.server.connections.discard(self)
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
        parser = self.parser
        if self.closing or self.detached or parser is None:
            return
        try:
            parser.feed_data(data)
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
                    client_address(self.client),
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
        logger.info("Bad HTTP request from %s: %s", client_address(self.client), error.message)
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
            self.close()
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
        assert parser is not None  # a parser callback
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
        parser = self.parser
        assert parser is not None  # a parser callback
        request.upgrade = bool(parser.should_upgrade())
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
                text_response(
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

    def finish_mount(self, responder: _MountResponder, data: bytes) -> None:
        """A mount's answer (``data``, a whole response) to the current request."""
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
            self.close()
            return
        self._next()

    def _write_error(self, status: int, message: str) -> None:
        self.queue.clear()
        self.busy = True
        if self.transport is not None and not self.lost:
            self.transport.write(text_response(status, message))
        self.close()

    # -- WSGI responses (the bridge's seam: called on the loop by wsgi.py) -----------------

    def wsgi_write(self, data: bytes) -> None:
        """Write part of a WSGI response; wake the worker waiting for room."""
        if not self.lost and self.transport is not None:
            self.transport.write(data)
        with self.flow:
            self.server_pending_bytes -= len(data)
            self.flow.notify_all()

    def wsgi_done(self, response: _WSGIResponse, keep_alive: bool) -> None:
        """The WSGI response is complete: go on with the next request, or close."""
        if self.current is not response:
            return
        self.current = None
        self.busy = False
        if self.lost:
            return
        if not keep_alive or self.closing:
            self.close()
            return
        self._next()

    def wsgi_abort(self) -> None:
        """The application failed mid-response: drop the connection."""
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
            self.close()

    def _on_header_timeout(self) -> None:
        self.timer = None
        if self._in_request and self._request is None:
            logger.info("Closing %s: headers not received in time", client_address(self.client))
            if not self.busy:
                self._write_error(408, "Request headers not received in time")
            else:
                self.abort()

    def _on_body_timeout(self) -> None:
        self.timer = None
        if self._in_request and self._request is not None:
            logger.info("Closing %s: request body stalled", client_address(self.client))
            if not self.busy:
                self._write_error(408, "Request body not received in time")
            else:
                self.abort()

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

    def close(self) -> None:
        """Close after the pending writes."""
        self.closing = True
        self._cancel_timer()
        if self.transport is not None and not self.lost:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now."""
        self.closing = True
        self._cancel_timer()
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def detach(self) -> None:
        """A mount took the transport over: forget it here."""
        self.detached = True
        self._cancel_timer()
        self.server.connections.discard(self)
        # The parser holds this object's callbacks (a reference cycle): without
        # it, this object is freed at once instead of by the garbage collector.
        self.parser = None

    def shutdown(self) -> None:
        """Server stopping: close now if idle, else after the current answer."""
        self.closing = True
        if not self.busy:
            self.close()



def _parser_message(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text
