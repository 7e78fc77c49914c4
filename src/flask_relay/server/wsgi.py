"""The WSGI bridge of the package's own HTTP server.

The request body is buffered (:class:`_Body`: in memory, or in a temporary
file past ``spool_size``) before the application is called, because the
application runs in a worker thread that must not read the socket. The
response (:class:`_WSGIResponse`) streams back with backpressure: the worker
thread blocks while the socket's write buffer is above ``write_buffer_high``.
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any

from .request import (
    HTTPRequest,
    bodyless_status,
    build_environ,
    client_address,
    response_head,
    text_response,
)

if TYPE_CHECKING:
    from .httpconn import HTTPConnection

__all__ = ["WSGIApp"]

logger = logging.getLogger("flask_relay.server")
#: One INFO line per answered WSGI request, like Werkzeug's request log (seen
#: with ``socketio.run(log_output=True)``, which sets ``flask_relay.server`` to INFO).
access_logger = logging.getLogger("flask_relay.server.access")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


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
        self.hub.call(conn.wsgi_write, data)

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
            self.hub.call(conn.wsgi_abort)
            return
        except Exception:
            logger.exception("Error in the WSGI app for %r", self.request)
            if self.headers_sent:
                self.hub.call(conn.wsgi_abort)
                return
            try:
                self._send(text_response(500, "Internal Server Error", head_only=self.head))
            except ConnectionResetError:
                pass
            self.close_after = True
        finally:
            self.body.discard()
        if access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                '%s - "%s %s HTTP/%s" %s',
                client_address(self.request.client),
                self.request.method,
                self.request.target,
                self.request.http_version,
                (self.status or "500")[:3],
            )
        self.hub.call(conn.wsgi_done, self, not self.close_after)

