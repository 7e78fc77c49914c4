"""The Socket.IO browser client, served by the Socket.IO endpoint itself.

The Node server answers ``/socket.io/socket.io.js`` (and ``.min.js``,
``.esm.min.js``, ``.msgpack.min.js`` and their ``.map`` files) with the
client of the same release, so a page needs no CDN and no copy step
(``serveClient``, on by default). :class:`ClientFilesMount` does the same
in front of an Engine.IO endpoint: it is itself a mount
(:mod:`flask_relay.server.request`), so every door that serves the endpoint
(the own server, the gunicorn worker, the foreign-server middleware behind
``flask run`` and gunicorn sync/gthread) serves the files too, with no change
to the doors. Every other request under the path goes to the endpoint.

The files are the npm package ``socket.io-client``'s ``dist/`` build,
copied into ``flask_relay/static/`` at build time by ``scripts/copy-client``
(``make client``) and shipped in the wheel; each is read at its first
request and kept in memory with its gzip form, so later answers cost no disk
read or compression on the loop. As Node does: ``Cache-Control: public, max-age=0`` and an
``ETag`` (the client version, plus a digest of the file), and 304 when the
request's ``If-None-Match`` names it; gzip when the request accepts it; the
endpoint's CORS headers (``cors_allowed_origins``) for an allowed origin.
``GET`` and ``HEAD`` are answered here (other methods reach the endpoint,
which answers 400).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from .request import HTTPRequest, Mount, Responder

__all__ = [
    "CLIENT_FILES",
    "STATIC_DIR",
    "ClientFile",
    "ClientFiles",
    "ClientFilesMount",
    "load_client_files",
]

logger = logging.getLogger("flask_relay.server")

#: The file names served under the endpoint's path (the Node server's list).
CLIENT_FILES = frozenset(
    f"socket.io{variant}.js{suffix}"
    for variant in ("", ".min", ".esm.min", ".msgpack.min")
    for suffix in ("", ".map")
)

#: Where the build step puts them (``scripts/copy-client``).
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CACHE_CONTROL = "public, max-age=0"


class ClientFile:
    """One served file: its bytes, its validators, and its gzip form (made at
    the first request that accepts gzip, then kept)."""

    __slots__ = ("_gzipped", "body", "content_type", "etag", "name")

    def __init__(self, name: str, body: bytes, version: str) -> None:
        self.name = name
        self.body = body
        self.etag = f'"{version}-{hashlib.sha256(body).hexdigest()[:12]}"'
        kind = "json" if name.endswith(".map") else "javascript"
        self.content_type = f"application/{kind}; charset=utf-8"
        self._gzipped: bytes | None = None

    @property
    def gzipped(self) -> bytes:
        # A few milliseconds once per file and process (a source map: ~10 ms).
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self._gzipped

    def matches(self, if_none_match: str) -> bool:
        """Whether an ``If-None-Match`` value names this file (weak comparison)."""
        for tag in if_none_match.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/") == self.etag:
                return True
        return False


class ClientFiles:
    """The client files of one directory, each read at its first request and
    kept for the process (a page loads one of them; the maps only when the
    browser's developer tools ask)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self.version = (directory / "VERSION").read_text().strip()
        except OSError:
            self.version = "unknown"
        self._lock = threading.Lock()
        self._files: dict[str, ClientFile | None] = {}

    def get(self, name: str) -> ClientFile | None:
        """The file ``name`` (one of :data:`CLIENT_FILES`), or ``None`` when
        this copy of the package was built without it."""
        try:
            return self._files[name]
        except KeyError:
            pass
        with self._lock:
            if name not in self._files:
                try:
                    body = (self.directory / name).read_bytes()
                except OSError:
                    self._files[name] = None
                else:
                    self._files[name] = ClientFile(name, body, self.version)
            return self._files[name]


_cache: dict[Path, ClientFiles] = {}
_cache_lock = threading.Lock()


def load_client_files(directory: Path = STATIC_DIR) -> ClientFiles:
    """The client files of ``directory``, one :class:`ClientFiles` per process.

    Missing files (the build step was not run) get a 404 that says how to
    produce them.
    """
    with _cache_lock:
        found = _cache.get(directory)
        if found is None:
            found = _cache[directory] = ClientFiles(directory)
        return found


def _accepts_gzip(request: HTTPRequest) -> bool:
    value = request.header("accept-encoding")
    if not value:
        return False
    for item in value.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            quality = params.strip().lower()
            return quality.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


_OWN_FIELDS = frozenset({"inner", "prefix", "files", "directory", "_warned"})


class ClientFilesMount:
    """A mount that answers the client files under ``prefix`` and hands every
    other request to ``inner`` (the Engine.IO endpoint)."""

    def __init__(self, inner: Mount, prefix: str, directory: Path = STATIC_DIR) -> None:
        self.inner = inner
        self.prefix = "/" + prefix.strip("/")
        self.files = load_client_files(directory)
        self.directory = directory
        self._warned = False

    # -- the Mount protocol: everything but the client files goes to the endpoint --

    @property
    def max_body_size(self) -> int:
        return self.inner.max_body_size

    def attach(self, hub: Any) -> None:
        self.inner.attach(hub)

    def handle_request(self, request: HTTPRequest, responder: Responder) -> None:
        if request.method in ("GET", "HEAD"):  # the doors drop a HEAD answer's body
            head, _, name = request.path.rpartition("/")
            if head == self.prefix and name in CLIENT_FILES:
                self._serve(name, request, responder)
                return
        self.inner.handle_request(request, responder)

    def handle_upgrade(self, request: HTTPRequest, handle: Any) -> None:
        self.inner.handle_upgrade(request, handle)

    async def shutdown(self) -> None:
        await self.inner.shutdown()

    def __getattr__(self, name: str) -> Any:
        # Anything else a door or a view reads belongs to the endpoint.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # ... and so does anything set on it (the forwarder sets the endpoint's
        # sid_prefix and forwarder), except this wrapper's own fields.
        if name in _OWN_FIELDS:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def __repr__(self) -> str:
        return f"<ClientFilesMount {self.prefix} + {self.inner!r}>"

    # -- the files -----------------------------------------------------------------

    def _cors(self, request: HTTPRequest) -> list[tuple[str, str]]:
        """The endpoint's CORS headers for an allowed cross-origin request (a
        module script from another origin needs them, as Node's ``cors``
        option gives), and ``Vary``. A refused origin still gets the file,
        without them: a classic ``<script>`` needs none, and the browser keeps
        a module from another origin out by itself."""
        vary = ["Accept-Encoding"]
        headers: list[tuple[str, str]] = []
        decide = getattr(self.inner, "cors_headers", None)
        if decide is not None and request.header("origin") is not None:
            for key, value in decide(request) or ():
                if key.lower() == "vary":
                    vary.append(value)
                else:
                    headers.append((key, value))
        headers.append(("Vary", ", ".join(vary)))
        return headers

    def _serve(self, name: str, request: HTTPRequest, responder: Responder) -> None:
        found = self.files.get(name)
        if found is None:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "The Socket.IO client files are missing from %s: this copy of "
                    "flask_relay was built without them (run `make client`, or "
                    "scripts/copy-client, before building); answering 404",
                    self.directory,
                )
            responder.respond(
                404,
                [("Content-Type", "text/plain; charset=utf-8")],
                f"{name} is not installed with this copy of Flask-Relay "
                "(build step: make client)\n".encode(),
            )
            return
        headers = [("Cache-Control", CACHE_CONTROL), ("ETag", found.etag)]
        headers.extend(self._cors(request))
        if_none_match = request.header("if-none-match")
        if if_none_match and found.matches(if_none_match):
            responder.respond(304, headers, b"")
            return
        headers.append(("Content-Type", found.content_type))
        if _accepts_gzip(request):
            headers.append(("Content-Encoding", "gzip"))
            responder.respond(200, headers, found.gzipped)
        else:
            responder.respond(200, headers, found.body)
