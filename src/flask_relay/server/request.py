"""What the HTTP server hands to a mount: a parsed request and a way to answer it.

These types are the seam between the HTTP/1.1 server (``server/httpconn.py``) and
the endpoints served natively on the loop (the Engine.IO server, WebSocket
routes). A foreign WSGI server's door can build the same objects, so an
endpoint is written once for every door.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote_to_bytes

__all__ = [
    "HTTPRequest",
    "Mount",
    "Responder",
    "UpgradeHandle",
    "build_environ",
    "client_address",
    "reason_phrase",
    "response_bytes",
    "response_head",
    "text_response",
]


class HTTPRequest:
    """One parsed HTTP request. Header names keep their case; look-ups ignore it.

    ``body`` is the whole body for mounts (they have small limits); WSGI
    requests get it as ``wsgi.input`` instead. ``body_too_large`` is set when the
    body went past the mount's limit: it was not read, the mount answers 413.
    """

    __slots__ = (
        "_query_args",
        "body",
        "body_too_large",
        "client",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "scheme",
        "server",
        "upgrade",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        *,
        http_version: str = "1.1",
        keep_alive: bool = True,
        body: bytes = b"",
        client: tuple[str, int] | None = None,
        server: tuple[str, int] = ("127.0.0.1", 80),
        scheme: str = "http",
        upgrade: bool = False,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.body = body
        self.body_too_large = False
        self.client = client
        self.server = server
        self.scheme = scheme
        self.upgrade = upgrade
        self._query_args: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        """The first value of a header, or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def args(self) -> dict[str, str]:
        """Query arguments (first value of each)."""
        if self._query_args is None:
            args: dict[str, str] = {}
            for key, value in parse_qsl(self.query, keep_blank_values=True):
                args.setdefault(key, value)
            self._query_args = args
        return self._query_args

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def __repr__(self) -> str:
        return f"<HTTPRequest {self.method} {self.target}>"


class Responder(Protocol):
    """Answers one request; used on the loop thread only.

    ``respond`` may be called later (a held long-poll), at most once.
    ``on_abort`` is called if the client goes away before the answer.
    """

    on_abort: Callable[[], None] | None

    @property
    def done(self) -> bool: ...

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...


class UpgradeHandle(Protocol):
    """A request that asked to switch protocols, and the connection under it."""

    def reject(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Answer with an HTTP error and close the connection."""

    def write_raw_and_close(self, data: bytes) -> None:
        """Write a prepared HTTP response and close the connection."""

    def switch(self, protocol: Any) -> None:
        """Give the connection to ``protocol`` (an ``asyncio.Protocol``).

        ``protocol.connection_made(transport)`` is called, then
        ``protocol.data_received`` with any bytes that followed the request.
        """


class Mount(Protocol):
    """An endpoint served natively on the loop under a path prefix."""

    #: Largest request body the mount accepts; past it the request comes with
    #: ``body_too_large`` set (and no body), and the connection is closed after
    #: the answer.
    max_body_size: int

    def attach(self, hub: Any) -> None:
        """Called once with the :class:`~flask_relay.server.loop.Hub` before serving."""

    def handle_request(self, request: HTTPRequest, responder: Responder) -> None:
        """A complete request (on the loop thread); must not block."""

    def handle_upgrade(self, request: HTTPRequest, handle: UpgradeHandle) -> None:
        """A request with ``Upgrade`` (on the loop thread); must not block."""

    async def shutdown(self) -> None:
        """Close every session with reason "server shutting down"."""


_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


# -- writing responses ------------------------------------------------------------------
#
# Every HTTP response that Flask-Relay writes itself (the own server's WSGI
# answers and errors, mounts' answers, refusals on a socket taken from a foreign
# server) has its head built here, so the framing rules live in one place:
# exactly one Content-Length or Transfer-Encoding (never both, never twice),
# none at all on 1xx/204 (RFC 9110 8.6), and only names and values a strict
# parser (llhttp, h11) accepts.

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*\Z")
_STATUS_LINE = re.compile(r"[1-9][0-9]{2}(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\Z")
#: Framing headers: the writer decides them, whatever the caller passed.
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive"))


def bodyless_status(status: int) -> bool:
    """1xx, 204 and 304 responses never have a body (RFC 9112 6.3)."""
    return status < 200 or status == 204 or status == 304


def response_head(
    status: int | str,
    headers: Iterable[tuple[str, str]],
    *,
    length: int | None = None,
    chunked: bool = False,
    connection: str | None = None,
) -> bytes:
    """The head of a response: status line, headers, blank line.

    ``status`` is a code or a WSGI status string (``"200 OK"``). The caller's
    ``Content-Length``, ``Transfer-Encoding``, ``Connection`` and ``Keep-Alive``
    headers are dropped; ``length`` (a ``Content-Length``), ``chunked`` and
    ``connection`` (``"close"``, ``"keep-alive"``) set the framing instead. A 1xx
    or 204 response gets no framing header at all. Raises :class:`ValueError`
    for a status or a header that would make the response unparsable (a CR or
    LF in a value, a name that is not a token).
    """
    if isinstance(status, int):
        code = status
        status_line = f"{status} {reason_phrase(status)}"
    else:
        if not _STATUS_LINE.match(status):
            raise ValueError(f"invalid HTTP status {status!r}")
        code = int(status[:3])
        # RFC 9112 4: the space after the code is required, the reason is not.
        status_line = status if len(status) > 3 else f"{status} {reason_phrase(code)}"
    parts = [f"HTTP/1.1 {status_line}\r\n"]
    for name, value in headers:
        if not _TOKEN.match(name):
            raise ValueError(f"invalid HTTP header name {name!r}")
        if name.lower() in _FRAMING:
            continue
        value = str(value)
        if not _FIELD_VALUE.match(value):
            raise ValueError(f"invalid value for the HTTP header {name}: {value!r}")
        parts.append(f"{name}: {value}\r\n")
    if code >= 200 and code != 204:
        if chunked:
            parts.append("Transfer-Encoding: chunked\r\n")
        elif length is not None:
            parts.append(f"Content-Length: {length}\r\n")
    if connection is not None:
        parts.append(f"Connection: {connection}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def response_bytes(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    head_only: bool = False,
    http10: bool = False,
) -> bytes:
    """A complete response framed by ``Content-Length`` (``Connection: close``
    unless ``keep_alive``; ``keep-alive`` when kept for an HTTP/1.0 client).
    ``head_only`` (a HEAD request) keeps the length and drops the body; so does
    a status that has none."""
    bodyless = bodyless_status(status)
    if not keep_alive:
        connection: str | None = "close"
    else:
        connection = "keep-alive" if http10 else None
    head = response_head(
        status, headers, length=None if bodyless else len(body), connection=connection
    )
    return head if head_only or bodyless else head + body


def build_environ(request: HTTPRequest, *, server_name: str | None = None) -> dict[str, Any]:
    """A PEP 3333 environ for ``request``, without ``wsgi.input``/``wsgi.errors``.

    ``PATH_INFO`` is percent-decoded and carried as latin-1 text as PEP 3333
    requires (so a UTF-8 path round-trips through ``.encode('latin-1')``).
    Repeated headers are joined with ``,`` (``Cookie`` with ``;``).
    """
    host, port = request.server
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(request.path).decode("latin-1"),
        "QUERY_STRING": request.query,
        "RAW_URI": request.target,
        "REQUEST_URI": request.target,
        "SERVER_NAME": server_name or host,
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": f"HTTP/{request.http_version}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    if request.client is not None:
        environ["REMOTE_ADDR"] = request.client[0]
        environ["REMOTE_PORT"] = str(request.client[1])
    else:
        environ["REMOTE_ADDR"] = ""
    if request.scheme == "https":
        environ["HTTPS"] = "on"
    for name, value in request.headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ[key] = value
            continue
        if "_" in name:
            # CGI cannot tell "X_Foo" from "X-Foo": drop the ambiguous form, as
            # most servers do, so a client cannot spoof a proxy header.
            continue
        key = "HTTP_" + key
        old = environ.get(key)
        if old is None:
            environ[key] = value
        else:
            environ[key] = f"{old}; {value}" if key == "HTTP_COOKIE" else f"{old},{value}"
    return environ


def text_response(
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


def client_address(client: tuple[str, int] | None) -> str:
    """``host:port`` of a client, for log lines."""
    return f"{client[0]}:{client[1]}" if client else "unknown client"

