"""The Engine.IO v4 server: sessions, long-polling, WebSocket, upgrade, heartbeat.

:class:`EngineIOServer` is a *mount* (see :mod:`flask_relay.server.request`):
the HTTP server hands it the requests under its path, on the event loop. All
session state lives on the loop thread and is touched only there; the send
methods (:meth:`~EngineIOServer.send`, :meth:`~EngineIOServer.send_many`,
:meth:`~EngineIOServer.send_prepared`, :meth:`~EngineIOServer.disconnect`) are
safe from any thread because they only queue a call to the loop through the
hub (one cheap deque append; see :class:`flask_relay.server.loop.Hub`). On
the loop itself, with nothing queued in the hub, a send to a WebSocket session
goes into its buffer at once (nothing queued earlier can be overtaken).

The *handler* (:class:`EngineHandler`) is called on the loop for every
connect, message and disconnect. It must not block: the Socket.IO layer and
the public :class:`flask_relay.engineio.EngineIO` hand the work to worker
threads.

Encode once, write many: :meth:`~EngineIOServer.prepare` builds, once, each
packet's long-polling form (``4text`` or ``b<base64>``) and one unmasked
WebSocket frame holding all the packets; :meth:`~EngineIOServer.send_prepared`
then appends the same bytes to every WebSocket recipient's output and the same
strings to every polling recipient's queue. Output to one socket is coalesced:
what a loop iteration brings leaves in one ``transport.write``.

Flow control (see ``docs/handlers.md``, "Back-pressure and slow consumers").
Each session's *output* (``loop_bytes``, loop only) is what the loop holds for
it: the polling queue, or the WebSocket frames not yet written plus the
transport's write buffer (not yet accepted by the kernel). Bytes handed to the
send methods and not yet taken by the loop are counted per sending thread
(a :class:`_Ledger`: the thread adds, the loop subtracts, no lock). The send
methods never block;
:meth:`~EngineIOServer.wait_for_room`, called by the emitting thread once it
holds no lock the loop needs, waits while a recipient's output is over
``max_send_buffer`` (until it drains to half) or the whole process's is over
``max_total_send_buffer``, at most ``slow_consumer_timeout`` plus a second per
call. The loop never waits:

* a session over its bound is watched; when its client accepts no byte for
  ``slow_consumer_timeout`` seconds it is closed as a *slow consumer*
  (reason ``"transport error"``, a WARNING naming the sid, the address and
  the bytes queued). A client that reads, however slowly, is not closed;
* output past four times ``max_send_buffer`` (a loop-side burst, or emitters
  whose waits timed out), or past the bound while the process is over twice
  ``max_total_send_buffer``, closes the client at once, so memory stays
  bounded whatever the clients do.

No packet is ever dropped silently.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import secrets
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any, cast

from ..protocol import websocket as wsproto
from ..protocol.closecode import CloseCode
from ..protocol.engineio import (
    Encoded,
    Packet,
    PacketType,
    decode_packet,
    decode_payload,
    encode_control,
    encode_message,
    join_payload,
)
from ..protocol.errors import ProtocolError
from ..protocol.jsonlib import JSONModule, default_json
from ..protocol.origin import origin_allowed
from ..server.request import HTTPRequest, Responder, UpgradeHandle, build_environ
from ..server.wschannel import WSChannel
from .interfaces import EngineHandler

__all__ = ["EngineHandler", "EngineIOServer", "Prepared", "SessionPhase"]

default_logger = logging.getLogger("flask_relay.engineio")

_OPEN = PacketType.OPEN
_CLOSE = PacketType.CLOSE
_PING = PacketType.PING
_PONG = PacketType.PONG
_MESSAGE = PacketType.MESSAGE
_UPGRADE = PacketType.UPGRADE
_NOOP = PacketType.NOOP

#: WebSocket close codes that end a session as "transport close" (else "transport error").
_CLEAN_CLOSE = frozenset(
    {CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.NO_STATUS, CloseCode.ABNORMAL}
)

#: The reference server's error codes (``Server.errors`` in npm ``engine.io``).
UNKNOWN_TRANSPORT = 0
UNKNOWN_SID = 1
BAD_HANDSHAKE_METHOD = 2
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_PROTOCOL_VERSION = 5

_ERROR_MESSAGES = {
    UNKNOWN_TRANSPORT: "Transport unknown",
    UNKNOWN_SID: "Session ID unknown",
    BAD_HANDSHAKE_METHOD: "Bad handshake method",
    BAD_REQUEST: "Bad request",
    FORBIDDEN: "Forbidden",
    UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}

_EIO3_MESSAGE = (
    "Unsupported protocol version: this server speaks Engine.IO v4 (Socket.IO v5), "
    "the client speaks Engine.IO v3 (a Socket.IO 2.x client). Upgrade the client to "
    "Socket.IO client v3 or later (v4 recommended)."
)

_TEXT_PLAIN = ("Content-Type", "text/plain; charset=UTF-8")

#: Seconds between the noops that release a polling client during an upgrade.
_UPGRADE_NOOP_INTERVAL = 0.1
#: Seconds to wait for a WebSocket peer's close frame after ours.
_WS_CLOSE_TIMEOUT = 5.0
#: A session's output past this many times ``max_send_buffer`` closes it at once.
_HARD_CAP_FACTOR = 4
#: A WebSocket's write buffer up to this size is not counted (a small backlog is
#: normal under load; tracking it would cost every broadcast delivery a call).
_UNTRACKED = 64 * 1024
#: The longest interval between two checks of a session over its bound.
_WATCH_TICK = 0.5


#: A polling response holding one noop (releases a client during an upgrade).
_NOOP_BODY = encode_control(PacketType.NOOP)[0].encode()


def _size(items: list[Encoded]) -> int:
    """What ``items`` count against a client's bound (their WebSocket payloads)."""
    return sum(len(payload) + 10 for _, payload in items)


class _Ledger:
    """Bytes one thread handed to the send methods (``sent``, written by that
    thread only) and the loop took (``taken``, written by the loop only): no
    lock on the send path, and ``sent - taken`` is what is still on its way."""

    __slots__ = ("sent", "taken")

    def __init__(self) -> None:
        self.sent = 0
        self.taken = 0


class Prepared:
    """Packets encoded once for any number of recipients (see :meth:`EngineIOServer.prepare`)."""

    __slots__ = ("frames", "items", "size")

    def __init__(self, items: list[Encoded], frames: bytes) -> None:
        self.items = items
        self.frames = frames
        self.size = len(frames)


_COOKIE_ATTRIBUTES = {
    "path": "Path",
    "domain": "Domain",
    "max_age": "Max-Age",
    "max-age": "Max-Age",
    "expires": "Expires",
    "secure": "Secure",
    "httponly": "HttpOnly",
    "samesite": "SameSite",
}


def _error_body(code: int, message: str | None = None) -> bytes:
    return default_json.dumps(
        {"code": code, "message": message or _ERROR_MESSAGES[code]}
    ).encode()


class _WSLink:
    """The engine's side of one WebSocket (the :class:`WSChannel`'s listener):
    the session it carries (or probes, during an upgrade); packets in, each
    handed to the session's packet handling or to the upgrade's. Output goes
    straight to :attr:`channel` (``channel.send``/``send_frames``)."""

    __slots__ = ("channel", "probe", "server", "session")

    def __init__(self, server: EngineIOServer, conn: wsproto.WebSocketConnection) -> None:
        self.server = server
        #: The session this socket carries (or probes, during an upgrade).
        self.session: _Session | None = None
        self.probe = False
        bound = server.max_send_buffer
        self.channel = WSChannel(
            conn,
            self,
            server.loop,
            close_timeout=_WS_CLOSE_TIMEOUT,
            # pause_writing() when the client is over its bound, resume_writing()
            # once half of it drained: when the emitters waiting for it may go on.
            write_limits=(bound, bound // 2),
            untracked=_UNTRACKED,
            live=server.channels,
        )

    # WSListener

    def message_received(self, data: str | bytes) -> None:
        session = self.session
        if self.channel.finished or session is None:
            return
        try:
            packet = decode_packet(data)
        except ProtocolError as exc:
            self.server._parse_error(session, exc, self)
            return
        if session.closed:
            return
        if self.probe:
            self.server._probe_packet(session, self, packet)
        elif session.ws is self:
            self.server._packet(session, packet, self)

    def pong_received(self, data: bytes) -> None:
        pass  # Engine.IO has its own heartbeat

    def connection_closed(self, code: int, reason: str) -> None:
        self.server._ws_closed(self, code)

    def pause_writing(self) -> None:
        session = self.session
        if session is not None and session.ws is self:
            self.server._watch(session)

    def resume_writing(self) -> None:
        session = self.session
        if session is not None and session.ws is self:
            self.server._measure(session)

    def data_written(self, channel: WSChannel, buffered: int, n: int) -> None:
        session = self.session
        if session is not None:
            self.server._written(self, session, buffered, n)


class SessionPhase(Enum):
    """Where an Engine.IO session is in its life (:attr:`_Session.phase`).

    ``POLLING`` -> (``UPGRADING`` -> ``WEBSOCKET`` | back to ``POLLING``) ->
    ``CLOSING`` -> ``CLOSED``; a session opened on a WebSocket starts in
    ``WEBSOCKET``. ``CLOSING`` is a closed polling session whose close packet
    still waits for the client's next GET.
    """

    POLLING = "polling"
    UPGRADING = "upgrading"
    WEBSOCKET = "websocket"
    CLOSING = "closing"
    CLOSED = "closed"


class _Session:
    """One Engine.IO session (loop thread only).

    Its phase (:attr:`phase`) is read from the fields that make it: ``closed``,
    ``queue``, ``probe`` and ``transport``, so it is always in step with them.
    """

    __slots__ = (
        "closed",
        "environ",
        "held",
        "held_request",
        "loop_bytes",
        "noop_timer",
        "ping_timer",
        "polled",
        "probe",
        "probed",
        "progress_mark",
        "progress_time",
        "queue",
        "queued_bytes",
        "sid",
        "transport",
        "upgrade_timer",
        "waiters",
        "watch_timer",
        "ws",
    )

    def __init__(self, sid: str, environ: dict[str, Any], transport: str) -> None:
        self.sid = sid
        self.environ = environ
        self.transport = transport
        self.closed = False
        self.queue: list[Encoded] = []
        self.queued_bytes = 0
        self.held: Responder | None = None
        self.held_request: HTTPRequest | None = None
        self.ws: _WSLink | None = None
        self.probe: _WSLink | None = None
        self.probed = False
        self.ping_timer: asyncio.TimerHandle | None = None
        self.upgrade_timer: asyncio.TimerHandle | None = None
        self.noop_timer: asyncio.TimerHandle | None = None
        # Flow control (see the module docstring). ``waiters`` changes under the
        # server's ``_flow`` lock; the rest on the loop only.
        self.waiters = 0
        self.loop_bytes = 0
        self.polled = 0  # bytes taken by GET requests, ever
        self.progress_mark = 0
        self.progress_time = 0.0
        self.watch_timer: asyncio.TimerHandle | None = None

    @property
    def phase(self) -> SessionPhase:
        if self.closed:
            return SessionPhase.CLOSING if self.queue else SessionPhase.CLOSED
        if self.probe is not None:
            return SessionPhase.UPGRADING
        if self.transport == "websocket":
            return SessionPhase.WEBSOCKET
        return SessionPhase.POLLING

    def __repr__(self) -> str:
        return f"<Session {self.sid} {self.phase.value}>"

    def remote(self) -> str:
        environ = self.environ
        return f"{environ.get('REMOTE_ADDR', '?')}:{environ.get('REMOTE_PORT', '?')}"


def _seconds_to_ms(value: float) -> int:
    return int(round(value * 1000))


class EngineIOServer:
    """An Engine.IO v4 endpoint, served on the loop as a mount.

    Options have Flask-SocketIO's names and defaults: ``ping_interval`` (25 s;
    a ``(interval, grace)`` tuple is accepted, the grace is ignored),
    ``ping_timeout`` (20 s), ``max_http_buffer_size`` (1,000,000 bytes: the
    largest POST body or WebSocket message; advertised as ``maxPayload``),
    ``allow_upgrades``, ``transports`` (``["polling", "websocket"]``),
    ``cookie`` (``None``; a name, or a dict with ``name``, ``path``,
    ``domain``, ``secure``, ``httponly``, ``samesite``, ``max_age``),
    ``cors_allowed_origins`` (``None``: the same origin only; ``"*"``: any; a
    string or a list (``["*"]``: any); a callable ``(origin[, environ]) -> bool``;
    ``[]``: no origin check and no CORS headers),
    ``cors_credentials``, ``http_compression`` and ``compression_threshold``
    (gzip/deflate of polling responses). ``upgrade_timeout`` (10 s) bounds an
    unfinished upgrade; ``websocket_compression`` enables permessage-deflate.

    Flow control (see the module docstring): ``max_send_buffer`` (16 MiB) is
    the output one client may have waiting before emitters wait for it;
    ``slow_consumer_timeout`` (10 s) how long a client over it may go without
    reading a byte before it is closed; ``max_total_send_buffer`` (256 MiB)
    the output of all clients together before emitters wait.
    """

    def __init__(
        self,
        handler: EngineHandler | None = None,
        *,
        ping_interval: float | Sequence[float] = 25,
        ping_timeout: float = 20,
        max_http_buffer_size: int = 1_000_000,
        allow_upgrades: bool = True,
        transports: Sequence[str] | None = None,
        cookie: str | bool | dict[str, Any] | None = None,
        cors_allowed_origins: str | Sequence[str] | Callable[..., bool] | None = None,
        cors_credentials: bool = True,
        http_compression: bool = True,
        compression_threshold: int = 1024,
        upgrade_timeout: float = 10,
        max_send_buffer: int = 16 * 1024 * 1024,
        slow_consumer_timeout: float = 10.0,
        max_total_send_buffer: int = 256 * 1024 * 1024,
        websocket_compression: bool = False,
        monitor_clients: bool = True,
        logger: logging.Logger | bool | None = None,
        json: JSONModule | None = None,
        **unknown: Any,
    ) -> None:
        self.handler = handler
        self.max_send_buffer = int(max_send_buffer)
        for name, value in (
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("max_http_buffer_size", max_http_buffer_size),
            ("allow_upgrades", allow_upgrades),
            ("transports", transports),
            ("cookie", cookie),
            ("cors_allowed_origins", cors_allowed_origins),
            ("cors_credentials", cors_credentials),
            ("http_compression", http_compression),
            ("compression_threshold", compression_threshold),
            ("monitor_clients", monitor_clients),
        ):
            self.set_option(name, value)
        self.upgrade_timeout = float(upgrade_timeout)
        if float(slow_consumer_timeout) <= 0:
            raise ValueError("slow_consumer_timeout must be > 0")
        self.slow_consumer_timeout = float(slow_consumer_timeout)
        self.max_total_send_buffer = max(int(max_total_send_buffer), self.max_send_buffer)
        self.websocket_compression = bool(websocket_compression)
        if isinstance(logger, logging.Logger):
            self.logger = logger
        else:
            self.logger = default_logger
            if logger is True:
                # Flask-SocketIO's engineio_logger=True: INFO and up, on stderr.
                if self.logger.level == logging.NOTSET or self.logger.level > logging.INFO:
                    self.logger.setLevel(logging.INFO)
                if not self.logger.hasHandlers():
                    self.logger.addHandler(logging.StreamHandler(sys.stderr))
        self.json = json or default_json
        if unknown:
            self.logger.warning("Engine.IO: ignoring options %s", ", ".join(sorted(unknown)))
        self.hub: Any = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._sessions: dict[str, _Session] = {}
        #: The open WebSocket channels (each adds and removes itself; a
        #: shutdown aborts those still open after a second).
        self.channels: set[WSChannel] = set()
        # Polling sessions closed by the server whose last packets (ending with
        # the close packet) wait for the client's next GET.
        self._closing: dict[str, _Session] = {}
        self._shutting_down = False
        # Flow control: the sessions' ``waiters``, ``_total_waiters`` and the
        # waiting emitters go with this condition; ``_loop_total`` (the sum of
        # the sessions' ``loop_bytes``) is written on the loop only; what each
        # thread sent and the loop has not taken yet is in its ``_Ledger``.
        self._flow = threading.Condition(threading.Lock())
        self._ledgers = threading.local()
        self._loop_total = 0
        self._total_waiters = 0
        self._watch_tick = min(_WATCH_TICK, self.slow_consumer_timeout / 4)
        # Messages logged at ERROR once, then at INFO (as the reference does).
        self._logged_once: set[str] = set()
        #: Set by :class:`flask_relay.server.forward.Forwarder`: sids start with
        #: the node id, and requests for other nodes' sids are forwarded.
        self.sid_prefix = ""
        self.forwarder: Any = None

    def set_option(self, name: str, value: Any) -> None:
        """Set one of the constructor's options (also while serving: sessions
        use the new value from their next use of it, e.g. the next ping)."""
        if name == "ping_interval":
            # python-engineio's (interval, grace) form: the grace period lengthens
            # the wait for the pong, so slow clients get the same leeway as there.
            grace = 0.0
            if isinstance(value, (tuple, list)):
                if len(value) > 1:
                    grace = float(value[1])
                value = value[0]
            self.ping_interval = float(cast(float, value))
            self.ping_grace = grace
        elif name == "ping_timeout":
            self.ping_timeout = float(value)
        elif name == "max_http_buffer_size":
            self.max_http_buffer_size = int(value)
            #: Largest request body accepted (the Mount protocol).
            self.max_body_size = self.max_http_buffer_size
            self.max_send_buffer = max(self.max_send_buffer, 2 * self.max_http_buffer_size)
        elif name == "transports":
            transports = [value] if isinstance(value, str) else value
            transports = list(transports) if transports else ["polling", "websocket"]
            for one in transports:
                if one not in ("polling", "websocket"):
                    raise ValueError(f"unknown transport {one!r}")
            self.transports = transports
        elif name == "cookie":
            if value is True:
                value = "io"
            elif value is False:
                value = None
            if isinstance(value, str):
                value = {"name": value}
            self.cookie = value
        elif name == "cors_allowed_origins":
            self.cors_allowed_origins = value
        elif name == "compression_threshold":
            self.compression_threshold = int(value)
        elif name == "allow_upgrades":
            self.allow_upgrades = bool(value)
        elif name == "cors_credentials":
            self.cors_credentials = bool(value)
        elif name == "http_compression":
            self.http_compression = bool(value)
        elif name == "monitor_clients":
            self.monitor_clients = bool(value)
        else:
            raise ValueError(f"unknown Engine.IO option {name!r}")

    # -- Mount ----------------------------------------------------------------------

    def attach(self, hub: Any) -> None:
        """Bind to the hub whose loop serves this endpoint."""
        old = self.hub
        if old is not None and old is not hub:
            if old.running:
                raise RuntimeError("this Engine.IO server is already attached to a running loop")
            # The previous server stopped: start afresh on the new loop.
            self._sessions.clear()
            self._closing.clear()
            self.channels.clear()
        self.hub = hub
        self.loop = hub.loop
        self._shutting_down = False

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def session_ids(self) -> list[str]:
        """The open sessions' ids (a snapshot; exact on the loop thread)."""
        return list(self._sessions)

    def session(self, sid: str) -> _Session | None:
        """The open session ``sid``'s record (read-only outside the loop;
        ``engine/views.py`` shows it as python-engineio's ``Socket``), or ``None``."""
        return self._sessions.get(sid)

    def transport(self, sid: str) -> str | None:
        """``"polling"`` or ``"websocket"`` for an open session, else ``None``."""
        session = self._sessions.get(sid)
        return session.transport if session is not None else None

    def handle_request(self, request: HTTPRequest, responder: Responder) -> None:
        """A polling request (or a CORS preflight), on the loop."""
        cors = self.cors_headers(request)
        if cors is None:
            responder.respond(*self._refuse_origin(request))
            return
        if request.method == "OPTIONS":
            headers = list(cors)
            headers.append(("Access-Control-Allow-Methods", "OPTIONS, GET, POST"))
            wanted = request.header("access-control-request-headers")
            if wanted:
                headers.append(("Access-Control-Allow-Headers", wanted))
            responder.respond(204, headers, b"")
            return
        args = request.args
        transport = args.get("transport")
        if transport not in self.transports:
            self._error(responder, 400, UNKNOWN_TRANSPORT, request, extra=cors)
            return
        eio = args.get("EIO")
        if eio != "4":
            message = _EIO3_MESSAGE if eio == "3" else None
            self._error(responder, 400, UNSUPPORTED_PROTOCOL_VERSION, request, message, cors)
            return
        sid = args.get("sid")
        if sid is None:
            if transport != "polling":
                # A WebSocket handshake without the Upgrade header.
                self._error(responder, 400, BAD_REQUEST, request, extra=cors)
                return
            if request.method != "GET":
                self._error(responder, 400, BAD_HANDSHAKE_METHOD, request, extra=cors)
                return
            self._handshake_polling(request, responder, cors)
            return
        session = self._sessions.get(sid)
        if session is None:
            closing = self._closing.pop(sid, None) if transport == "polling" else None
            if closing is not None and request.method == "GET":
                if closing.ping_timer is not None:
                    closing.ping_timer.cancel()
                    closing.ping_timer = None
                closing.held, closing.held_request = responder, request
                self._flush_poll(closing)
                closing.queue = []
                return
            if closing is not None:
                self._closing[sid] = closing
                responder.respond(200, [("Content-Type", "text/html"), *cors], b"ok")
                return
            forwarder = self.forwarder
            if forwarder is not None and forwarder.forward_request(
                sid,
                request,
                responder,
                lambda: self._error(responder, 400, UNKNOWN_SID, request, extra=cors),
            ):
                return  # owned by another worker or host (server/forward.py)
            self._error(responder, 400, UNKNOWN_SID, request, extra=cors)
            return
        if transport != "polling" or session.transport != "polling":
            self._error(responder, 400, BAD_REQUEST, request, extra=cors)
            return
        if request.method == "GET":
            self._poll(session, request, responder, cors)
        elif request.method == "POST":
            self._post(session, request, responder, cors)
        else:
            self._error(responder, 400, BAD_REQUEST, request, extra=cors)

    def handle_upgrade(self, request: HTTPRequest, handle: UpgradeHandle) -> None:
        """A WebSocket request: a new session, or the upgrade of a polling one."""

        def reject(status: int, code: int, message: str | None = None) -> None:
            self.logger.info(
                "Refused %s from %s: %s", request.target, _addr(request), message or code
            )
            handle.reject(
                status,
                [("Content-Type", "application/json")],
                _error_body(code, message),
            )

        if self._origin_allowed(request) is False:
            handle.reject(*self._refuse_origin(request))
            return
        args = request.args
        if (
            args.get("transport") != "websocket"
            or "websocket" not in self.transports
            or (request.header("upgrade") or "").lower() != "websocket"
        ):
            reject(400, UNKNOWN_TRANSPORT)
            return
        eio = args.get("EIO")
        if eio != "4":
            reject(400, UNSUPPORTED_PROTOCOL_VERSION, _EIO3_MESSAGE if eio == "3" else None)
            return
        sid = args.get("sid")
        session: _Session | None = None
        redundant = False
        if sid is not None:
            session = self._sessions.get(sid)
            if session is None:
                forwarder = self.forwarder
                if forwarder is not None and forwarder.forward_upgrade(
                    sid, request, handle, lambda: reject(400, UNKNOWN_SID)
                ):
                    return  # owned by another worker or host (server/forward.py)
                reject(400, UNKNOWN_SID)
                return
            if not self.allow_upgrades:
                reject(400, BAD_REQUEST)
                return
            # Already on a WebSocket, or an upgrade under way: as the reference
            # (npm engine.io), the handshake is accepted and the socket closed.
            redundant = session.phase is not SessionPhase.POLLING
        elif self._shutting_down:
            reject(503, BAD_REQUEST, "server shutting down")
            return
        extra: list[tuple[str, str]] = []
        new_sid = None
        if session is None:
            new_sid = self._new_sid()
            extra = self._cookie_headers(new_sid)
        result = wsproto.accept(
            request.method,
            request.target,
            request.headers,
            http_version=request.http_version,
            compression=self.websocket_compression,
            max_message_size=self.max_http_buffer_size,
            extra_headers=extra,
        )
        if isinstance(result, wsproto.Rejection):
            self.logger.info("Refused a WebSocket from %s: %s", _addr(request), result.message)
            handle.write_raw_and_close(result.serialize())
            return
        channel = _WSLink(self, result)
        if redundant:
            self.logger.info(
                "Closing a second WebSocket for %s from %s: %s",
                sid,
                _addr(request),
                "upgrade under way" if session and session.probe else "already on a WebSocket",
            )
            handle.switch(channel.channel)
            channel.channel.close(CloseCode.NORMAL)
            return
        if session is not None:
            channel.probe = True
            channel.session = session
            session.probe = channel
            session.upgrade_timer = self.loop.call_later(
                self.upgrade_timeout, self._upgrade_timed_out, session, channel
            )
            handle.switch(channel.channel)
            return
        assert new_sid is not None
        session = _Session(new_sid, self._environ(request), "websocket")
        handle.switch(channel.channel)
        if channel.channel.finished or channel.channel.transport is None:
            return
        session.ws = channel
        channel.session = session
        self._sessions[new_sid] = session
        channel.channel.send(encode_control(_OPEN, self._open_json(new_sid, []))[1])
        self._opened(session)

    async def shutdown(self) -> None:
        """Close every session ("server shutting down") so that clients reconnect.

        No Engine.IO close packet: python-socketio's client takes one as a
        deliberate disconnect and never reconnects. What every official client
        takes for a lost server (and reconnects) is sent instead: a WebSocket
        gets a 1001 close frame, a held long-poll what is queued or else a 503,
        and the next poll finds the session gone (or nobody listening).
        """
        self._shutting_down = True
        for session in list(self._sessions.values()):
            self._close(session, "server shutting down", notify=False, going_away=True)
        # Give the close frames a moment to be answered; whatever is left
        # (or everything, when the server's own shutdown deadline cancels us)
        # is aborted.
        try:
            deadline = self.loop.time() + 1.0
            while self.channels and self.loop.time() < deadline:
                await asyncio.sleep(0.02)
        finally:
            for channel in list(self.channels):
                channel.abort()

    # -- the send interface (any thread) ---------------------------------------------

    def send(self, sid: str, data: str | bytes) -> None:
        """Send one message to a session (never blocks; see :meth:`wait_for_room`)."""
        item = encode_message(data)
        self._send(sid, [item], len(item[1]) + 10)

    def send_many(self, sid: str, items: list[str | bytes]) -> None:
        """Send several messages that must stay together (a binary Socket.IO packet)."""
        encoded = [encode_message(d) for d in items]
        self._send(sid, encoded, _size(encoded))

    def prepare(self, items: list[str | bytes]) -> Prepared:
        """Encode the messages once, and build their WebSocket frames once."""
        encoded = [encode_message(d) for d in items]
        frames = b"".join(wsproto.build_frame(payload) for _, payload in encoded)
        return Prepared(encoded, frames)

    def send_prepared(self, sids: Iterable[str], prepared: Prepared) -> None:
        """Send prepared messages to many sessions: per recipient, one append.

        Each recipient is charged the whole size (its transport gets its own copy).
        """
        sids = list(sids)
        charge = prepared.size * len(sids)
        ledger = self._ledger()
        ledger.sent += charge
        self._call(self._deliver_prepared, sids, prepared, charge, ledger)

    def disconnect(self, sid: str, reason: str = "forced close") -> None:
        """Close a session from the server side; the handler hears ``reason``."""
        self._call(self._disconnect, sid, reason)

    def wait_for_room(self, sids: Iterable[str], timeout: float | None = None) -> bool:
        """Wait while one of ``sids`` (or the whole process) has too much output queued.

        Call it from the thread that just sent to ``sids``, holding no lock the
        loop takes. A client over ``max_send_buffer`` is waited for until half
        of that drained, or it is closed; the process over
        ``max_total_send_buffer`` until a quarter of that drained. ``timeout``
        (default ``slow_consumer_timeout`` plus a second: long enough for a
        client that reads nothing to be closed) bounds the whole call, however
        many recipients are slow. Returns at once on the loop thread (the loop
        never waits). Returns ``False`` when it timed out.
        """
        bound = self.max_send_buffer
        ledger = self._ledger()
        pending = ledger.sent - ledger.taken
        total = pending + self._loop_total
        if total <= bound and total <= self.max_total_send_buffer:
            return True  # nobody can be over their bound: the usual case, O(1)
        hub = self.hub
        if hub is None or not hub.running or hub.in_loop_thread():
            return True
        if timeout is None:
            timeout = self.slow_consumer_timeout + 2 * self._watch_tick
        deadline = time.monotonic() + timeout
        if pending > 0:
            # Let the loop take and write what this thread sent, so that each
            # recipient's own count includes it: hub calls run in order, and the
            # flushes they scheduled run before a call_soon made after them.
            taken = threading.Event()
            hub.call(self.loop.call_soon, taken.set)
            hub.release()  # when this thread holds the wakeup (Hub.hold)
            if not taken.wait(timeout):
                return False
        get = self._sessions.get
        if isinstance(sids, str):
            sids = (sids,)
        for sid in sids:
            session = get(sid)
            if (
                session is not None
                and session.loop_bytes > bound
                and not self._wait_session(session, deadline)
            ):
                return False
        if self._loop_total > self.max_total_send_buffer:
            return self._wait_total(deadline)
        return True

    def _wait_session(self, session: _Session, deadline: float) -> bool:
        low = self.max_send_buffer // 2
        flow = self._flow
        with flow:
            session.waiters += 1
            try:
                while not session.closed and session.loop_bytes > low:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    flow.wait(min(remaining, 1.0))
            finally:
                session.waiters -= 1
        return True

    def _wait_total(self, deadline: float) -> bool:
        low = self.max_total_send_buffer * 3 // 4
        flow = self._flow
        with flow:
            self._total_waiters += 1
            try:
                while self._loop_total > low:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    flow.wait(min(remaining, 1.0))
            finally:
                self._total_waiters -= 1
        return True

    def output_size(self, sid: str) -> int | None:
        """Bytes waiting for client ``sid`` (``None`` for an unknown sid); any thread."""
        session = self._sessions.get(sid)
        return None if session is None else session.loop_bytes

    def over_bound(self, sid: str) -> bool:
        """Whether client ``sid`` has more than ``max_send_buffer`` bytes waiting
        (a volatile emit skips it); any thread."""
        session = self._sessions.get(sid)
        return session is not None and session.loop_bytes > self.max_send_buffer

    @property
    def total_output_size(self) -> int:
        """Bytes waiting for all clients together (broadcasts counted per recipient)."""
        return self._loop_total

    def _send(self, sid: str, items: list[Encoded], size: int) -> None:
        hub = self.hub
        if hub is None:  # as _call(), without its frame on the hottest path
            self.logger.debug("Engine.IO server not attached: _deliver dropped")
            return
        if hub.idle_here():
            # Sent on the loop (an ``async def`` handler, its ack) with nothing
            # queued before it: into the WebSocket's buffer now rather than
            # through Hub.call (~7% of an async ack's CPU). Only a WebSocket's:
            # channel.send only buffers and schedules the flush (coalesced as
            # before), so nothing runs re-entrantly; a polling session's
            # delivery may flush a poll or close a slow consumer, so it stays
            # deferred. The loop never waits for room, so no ledger either.
            session = self._sessions.get(sid)
            if session is not None and session.ws is not None and not session.closed:
                self._enqueue(session, items, None)  # the WebSocket branch: buffered
                return
        try:
            ledger: _Ledger = self._ledgers.ledger
        except AttributeError:
            ledger = self._ledger()
        ledger.sent += size
        hub.call(self._deliver, sid, items, size, ledger)

    def _ledger(self) -> _Ledger:
        """This thread's ledger of bytes sent and not yet taken by the loop."""
        try:
            ledger: _Ledger = self._ledgers.ledger
        except AttributeError:
            ledger = self._ledgers.ledger = _Ledger()
        return ledger

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        hub = self.hub
        if hub is None:
            self.logger.debug("Engine.IO server not attached: %s dropped", fn.__name__)
            return
        hub.call(fn, *args)

    # -- delivery (loop) -------------------------------------------------------------

    def _deliver(self, sid: str, items: list[Encoded], size: int, ledger: _Ledger) -> None:
        ledger.taken += size
        session = self._sessions.get(sid)
        if session is not None and not session.closed:
            self._enqueue(session, items, None)
        elif self._total_waiters:
            self._notify(None)

    def _deliver_prepared(
        self, sids: list[str], prepared: Prepared, charge: int, ledger: _Ledger
    ) -> None:
        ledger.taken += charge
        sessions = self._sessions
        items = prepared.items
        frames = prepared.frames
        for sid in sids:
            session = sessions.get(sid)
            if session is not None and not session.closed:
                self._enqueue(session, items, frames)
        if self._total_waiters:
            self._notify(None)

    def _enqueue(self, session: _Session, items: list[Encoded], frames: bytes | None) -> None:
        ws = session.ws
        if ws is not None:
            # Measured (and checked) when the channel flushes, later in this
            # loop iteration.
            if frames is not None:
                ws.channel.send_frames(frames)
            else:
                for _, payload in items:
                    ws.channel.send(payload)
            return
        session.queue.extend(items)
        session.queued_bytes += sum(len(segment) for segment, _ in items)
        self._measure(session)
        if session.closed:
            return
        if session.held is not None and not session.probed:
            self._flush_poll(session)

    # -- flow control (loop) ---------------------------------------------------------

    def _measure(self, session: _Session) -> None:
        """Update the output the loop holds for ``session``; act on its bounds."""
        if session.closed:
            return
        ws = session.ws
        size = ws.channel.buffered() if ws is not None else session.queued_bytes
        old = self._set_output(session, size)
        self._act(session, size, old)

    def _set_output(self, session: _Session, size: int) -> int:
        """Set ``session``'s output to ``size`` bytes; return the old figure.

        While it is not zero its WebSocket reports every write (``tracked``).
        """
        old = session.loop_bytes
        session.loop_bytes = size
        self._loop_total += size - old
        ws = session.ws
        if ws is not None:
            ws.channel.tracked = size != 0
        return old

    def _written(self, channel: _WSLink, session: _Session, size: int, n: int) -> None:
        """After a write of ``n`` bytes on ``channel``: ``size`` bytes wait in its
        transport. Only called while a backlog is tracked (see ``_UNTRACKED``),
        which covers every write while the session is watched."""
        channel.channel.written += n
        if channel.probe or session.closed:
            return
        if size <= _UNTRACKED:
            size = 0
        old = self._set_output(session, size)
        if size > self.max_send_buffer or (
            size < old and (session.waiters or self._total_waiters)
        ):
            self._act(session, size, old)

    def _act(self, session: _Session, size: int, old: int) -> None:
        """``session``'s output went from ``old`` to ``size`` bytes: enforce the bounds."""
        bound = self.max_send_buffer
        if size > bound:
            if size > _HARD_CAP_FACTOR * bound:
                self._slow_consumer(
                    session, size, f"over {_HARD_CAP_FACTOR} x max_send_buffer={bound}"
                )
                return
            if self._loop_total > 2 * self.max_total_send_buffer:
                self._slow_consumer(
                    session,
                    size,
                    "over max_send_buffer while all clients' output is over 2 x "
                    f"max_total_send_buffer={self.max_total_send_buffer}",
                )
                return
            self._watch(session)
        elif size < old and (session.waiters or self._total_waiters):
            self._notify(session)

    def _notify(self, session: _Session | None) -> None:
        """Wake the emitters waiting for ``session`` (or for the total) if they may go on."""
        wake = False
        if session is not None and session.waiters and (
            session.closed or session.loop_bytes <= self.max_send_buffer // 2
        ):
            wake = True
        if self._total_waiters and (
            self._loop_total <= self.max_total_send_buffer * 3 // 4
        ):
            wake = True
        if wake:
            with self._flow:
                self._flow.notify_all()

    def _progress(self, session: _Session) -> int:
        ws = session.ws
        return ws.channel.accepted() if ws is not None else session.polled

    def _watch(self, session: _Session) -> None:
        """Check ``session`` every tick while it is over its bound."""
        if session.watch_timer is not None or session.closed:
            return
        session.progress_mark = self._progress(session)
        session.progress_time = self.loop.time()
        session.watch_timer = self.loop.call_later(self._watch_tick, self._watch_check, session)

    def _watch_check(self, session: _Session) -> None:
        session.watch_timer = None
        if session.closed:
            return
        ws = session.ws
        size = ws.channel.buffered() if ws is not None else session.queued_bytes
        self._set_output(session, size)
        total = size
        self._notify(session)
        if total <= self.max_send_buffer:
            return
        mark = self._progress(session)
        now = self.loop.time()
        if mark != session.progress_mark:
            session.progress_mark = mark
            session.progress_time = now
        elif now - session.progress_time >= self.slow_consumer_timeout:
            self._slow_consumer(
                session,
                total,
                f"no byte read for {now - session.progress_time:.1f} s "
                f"(slow_consumer_timeout={self.slow_consumer_timeout:g})",
            )
            return
        session.watch_timer = self.loop.call_later(self._watch_tick, self._watch_check, session)

    def _slow_consumer(self, session: _Session, size: int, why: str) -> None:
        self.logger.warning(
            "Closing %s from %s: slow consumer: %d bytes queued, %s",
            session.sid,
            session.remote(),
            size,
            why,
        )
        self._overflow(session)

    def _release(self, session: _Session) -> None:
        """A closed session's output no longer counts; its waiters go on."""
        if session.watch_timer is not None:
            session.watch_timer.cancel()
            session.watch_timer = None
        self._set_output(session, 0)
        self._notify(session)

    def _overflow(self, session: _Session) -> None:
        session.queue.clear()
        session.queued_bytes = 0
        ws = session.ws
        if ws is not None:
            session.ws = None
            ws.session = None
            self._close(session, "transport error", notify=False)
            ws.channel.abort()
        else:
            self._close(session, "transport error", notify=True)

    def _disconnect(self, sid: str, reason: str) -> None:
        session = self._sessions.get(sid)
        if session is not None:
            self._close(session, reason, notify=True)

    # -- polling (loop) -----------------------------------------------------------------

    def _handshake_polling(
        self, request: HTTPRequest, responder: Responder, cors: list[tuple[str, str]]
    ) -> None:
        if self._shutting_down:
            self._error(responder, 503, BAD_REQUEST, request, "server shutting down", cors)
            return
        sid = self._new_sid()
        session = _Session(sid, self._environ(request), "polling")
        upgrades = ["websocket"] if self.allow_upgrades and "websocket" in self.transports else []
        body = encode_control(_OPEN, self._open_json(sid, upgrades))[0]
        headers = [_TEXT_PLAIN, *cors, *self._cookie_headers(sid)]
        self._sessions[sid] = session
        responder.respond(200, headers, body.encode())
        self._opened(session)

    def _poll(
        self,
        session: _Session,
        request: HTTPRequest,
        responder: Responder,
        cors: list[tuple[str, str]],
    ) -> None:
        if session.held is not None:
            self.logger.info("Closing %s: overlapping GET requests", session.sid)
            self._error(responder, 400, BAD_REQUEST, request, "overlapping GET requests", cors)
            self._close(session, "transport error", notify=True)
            return
        session.held = responder
        session.held_request = request
        responder.on_abort = lambda: self._poll_aborted(session, responder)
        if session.probed:
            # Upgrading: release the client at once so it can finish on the WebSocket.
            self._send_noop(session)
        elif session.queue:
            self._flush_poll(session)

    def _poll_aborted(self, session: _Session, responder: Responder) -> None:
        if session.held is not responder:
            return
        session.held = None
        session.held_request = None
        if session.phase in (SessionPhase.POLLING, SessionPhase.UPGRADING):
            self.logger.info("Closing %s: the client abandoned its GET", session.sid)
            self._close(session, "transport error", notify=False)

    def _flush_poll(self, session: _Session) -> None:
        responder = session.held
        request = session.held_request
        if responder is None or request is None or not session.queue:
            return
        body = join_payload([segment for segment, _ in session.queue]).encode()
        session.queue = []
        session.queued_bytes = 0
        session.polled += len(body)
        session.held = None
        session.held_request = None
        self._respond(request, responder, 200, [_TEXT_PLAIN], body)
        if not session.closed:
            self._measure(session)

    def _send_noop(self, session: _Session) -> None:
        responder = session.held
        request = session.held_request
        if responder is None or request is None:
            return
        session.held = None
        session.held_request = None
        self._respond(request, responder, 200, [_TEXT_PLAIN], _NOOP_BODY)

    def _post(
        self,
        session: _Session,
        request: HTTPRequest,
        responder: Responder,
        cors: list[tuple[str, str]],
    ) -> None:
        if request.body_too_large:
            self.logger.info(
                "Closing %s: POST body over max_http_buffer_size=%d",
                session.sid,
                self.max_http_buffer_size,
            )
            responder.respond(
                413, [("Content-Type", "application/json"), *cors],
                default_json.dumps(
                    {"code": BAD_REQUEST, "message": "Payload too large"}
                ).encode(),
            )
            self._close(session, "transport error", notify=True)
            return
        try:
            packets = decode_payload(request.body)
        except ProtocolError as exc:
            self.logger.info("Closing %s: bad POST body: %s", session.sid, exc.reason)
            self._error(responder, 400, BAD_REQUEST, request, f"Bad request: {exc.reason}", cors)
            self._close(session, "parse error", notify=True, linger=False)
            return
        responder.respond(200, [("Content-Type", "text/html"), *cors], b"ok")
        for packet in packets:
            if session.closed:
                break
            self._packet(session, packet, None)

    # -- WebSocket (loop) ----------------------------------------------------------------

    def _probe_packet(self, session: _Session, channel: _WSLink, packet: Packet) -> None:
        ptype = packet.type
        if ptype == _PING and packet.data == "probe" and not session.probed:
            channel.channel.send(encode_control(_PONG, "probe")[1])
            session.probed = True
            self._send_noop(session)
            self._arm_noop(session)
        elif ptype == _UPGRADE and session.probed:
            self._finish_upgrade(session, channel)
        elif ptype == _NOOP:
            pass
        else:
            self.logger.info("Dropping the upgrade of %s: unexpected %s", session.sid, ptype.name)
            self._cancel_upgrade(session, channel)

    def _arm_noop(self, session: _Session) -> None:
        def tick() -> None:
            session.noop_timer = None
            if session.phase is not SessionPhase.UPGRADING:
                return
            self._send_noop(session)
            self._arm_noop(session)

        session.noop_timer = self.loop.call_later(_UPGRADE_NOOP_INTERVAL, tick)

    def _finish_upgrade(self, session: _Session, channel: _WSLink) -> None:
        self._clear_upgrade(session)
        channel.probe = False
        session.transport = "websocket"
        session.ws = channel
        channel.channel.tracked = session.loop_bytes != 0
        self._send_noop(session)
        queue, session.queue = session.queue, []
        session.queued_bytes = 0
        for _, payload in queue:
            channel.channel.send(payload)
        self.logger.debug("%s upgraded to websocket", session.sid)

    def _clear_upgrade(self, session: _Session) -> None:
        session.probe = None
        session.probed = False
        for name in ("upgrade_timer", "noop_timer"):
            timer = getattr(session, name)
            if timer is not None:
                timer.cancel()
                setattr(session, name, None)

    def _cancel_upgrade(self, session: _Session, channel: _WSLink) -> None:
        if session.probe is channel:
            self._clear_upgrade(session)
            if session.queue and session.held is not None:
                self._flush_poll(session)
        channel.session = None
        channel.channel.close(CloseCode.NORMAL)

    def _upgrade_timed_out(self, session: _Session, channel: _WSLink) -> None:
        session.upgrade_timer = None
        if session.probe is channel:
            self.logger.info("Upgrade of %s timed out", session.sid)
            self._cancel_upgrade(session, channel)

    def _ws_closed(self, channel: _WSLink, code: int) -> None:
        session = channel.session
        channel.session = None
        if session is None:
            return
        if session.probe is channel:
            self._clear_upgrade(session)
            if session.queue and session.held is not None:
                self._flush_poll(session)
        elif session.ws is channel and not session.closed:
            session.ws = None
            reason = "transport close" if code in _CLEAN_CLOSE else "transport error"
            self._close(session, reason, notify=False)

    # -- packets and heartbeat (loop) -------------------------------------------------------

    def _packet(self, session: _Session, packet: Packet, channel: _WSLink | None) -> None:
        ptype = packet.type
        if ptype == _MESSAGE:
            data = packet.data if packet.data is not None else ""
            handler = self.handler
            if handler is not None:
                try:
                    handler.on_message(session.sid, data)
                except Exception:
                    self.logger.exception("Error in the message handler for %s", session.sid)
        elif ptype == _PONG:
            self._schedule_ping(session)
        elif ptype == _CLOSE:
            self._close(session, "transport close", notify=False, client=True)
        elif ptype == _NOOP:
            pass
        elif ptype == _PING and channel is not None and packet.data == "probe":
            # A probe on the socket already in use: harmless, answer it.
            channel.channel.send(encode_control(_PONG, "probe")[1])
        else:
            self.logger.info("Closing %s: unexpected %s packet", session.sid, ptype.name)
            self._close(session, "parse error", notify=True, linger=False)

    def _parse_error(self, session: _Session, exc: ProtocolError, channel: _WSLink) -> None:
        self.logger.info("Closing %s: %s", session.sid, exc.reason)
        if channel.probe:
            self._cancel_upgrade(session, channel)
            return
        self._close(session, "parse error", notify=True)

    def _opened(self, session: _Session) -> None:
        self._schedule_ping(session)
        handler = self.handler
        if handler is not None:
            try:
                handler.on_connect(session.sid, session.environ)
            except Exception:
                self.logger.exception("Error in the connect handler for %s", session.sid)

    def _schedule_ping(self, session: _Session) -> None:
        if session.ping_timer is not None:
            session.ping_timer.cancel()
        if session.closed:
            session.ping_timer = None
            return
        session.ping_timer = self.loop.call_later(self.ping_interval, self._ping, session)

    def _ping(self, session: _Session) -> None:
        if session.closed:
            return
        self._enqueue(session, [encode_control(_PING)], None)
        if session.closed:
            return
        if self.monitor_clients:
            session.ping_timer = self.loop.call_later(
                self.ping_timeout + self.ping_grace, self._ping_timed_out, session
            )
        else:
            # Nobody times the pong: keep pinging so the client's own check passes.
            session.ping_timer = self.loop.call_later(self.ping_interval, self._ping, session)

    def _ping_timed_out(self, session: _Session) -> None:
        session.ping_timer = None
        if not session.closed:
            self.logger.info("Closing %s: ping timeout", session.sid)
            self._close(session, "ping timeout", notify=True, linger=False)

    # -- closing (loop) ---------------------------------------------------------------------

    def _close(
        self,
        session: _Session,
        reason: str,
        *,
        notify: bool,
        client: bool = False,
        going_away: bool = False,
        linger: bool = True,
    ) -> None:
        """End a session once; ``notify`` sends the client a close packet first.

        A polling client without a GET held gets the close packet in its next
        GET: the session lingers as a tombstone for that (a deliberate close,
        such as ``disconnect()``, must reach the client). ``linger=False`` (a
        parse error, a ping timeout: the client is broken or gone) removes it
        at once, as the reference servers do: the next GET gets 400.
        ``going_away`` (server shutdown) ends it the way a restart looks to a
        client, so that it reconnects: see :meth:`shutdown`.
        """
        if session.closed:
            return
        if going_away:
            self._close_going_away(session, reason)
            return
        probe = self._detach(session)
        if probe is not None:
            probe.session = None
            probe.channel.close(CloseCode.NORMAL)
        ws = session.ws
        if ws is not None:
            session.ws = None
            ws.session = None
            if notify and ws.channel.conn.open:
                ws.channel.send(encode_control(_CLOSE)[1])
            ws.channel.close(CloseCode.NORMAL)
        elif client:
            # The client closed: release its GET (if any) with a noop.
            self._send_noop(session)
        elif notify:
            # What was queued still goes out, then the close packet: in the held
            # GET, or in the next one (the session lingers as a tombstone).
            session.queue.append(encode_control(_CLOSE))
            if session.held is not None:
                self._flush_poll(session)
            elif linger:
                self._closing[session.sid] = session
                session.ping_timer = self.loop.call_later(
                    max(self.ping_timeout, 1.0), self._closing.pop, session.sid, None
                )
                self._disconnected(session, reason, keep_queue=True)
                return
        elif session.held is not None:
            self._send_noop(session)
        self._disconnected(session, reason)

    def _detach(self, session: _Session) -> _WSLink | None:
        """Mark ``session`` closed, forget it, stop its timers and its upgrade;
        returns the upgrade's probe (or ``None``) for the caller to close."""
        session.closed = True
        if self._sessions.get(session.sid) is session:
            del self._sessions[session.sid]
        if session.ping_timer is not None:
            session.ping_timer.cancel()
            session.ping_timer = None
        probe = session.probe
        self._clear_upgrade(session)
        return probe

    def _close_going_away(self, session: _Session, reason: str) -> None:
        probe = self._detach(session)
        if probe is not None:
            probe.session = None
            probe.channel.close(CloseCode.GOING_AWAY, "server shutting down")
        ws = session.ws
        if ws is not None:
            # What was sent is already in the socket's output, before the close frame.
            session.ws = None
            ws.session = None
            ws.channel.close(CloseCode.GOING_AWAY, "server shutting down")
        elif session.held is not None and session.held_request is not None:
            if session.queue:
                # Deliver what is queued; the next poll finds the session gone.
                self._flush_poll(session)
            else:
                request, responder = session.held_request, session.held
                session.held = session.held_request = None
                self._error(
                    responder,
                    503,
                    BAD_REQUEST,
                    request,
                    "server shutting down",
                    self.cors_headers(request) or [],
                )
        self._disconnected(session, reason)

    def _disconnected(self, session: _Session, reason: str, *, keep_queue: bool = False) -> None:
        if not keep_queue:
            session.queue = []
            session.queued_bytes = 0
        self._release(session)
        self.logger.debug("%s closed: %s", session.sid, reason)
        handler = self.handler
        if handler is not None:
            try:
                handler.on_disconnect(session.sid, reason)
            except Exception:
                self.logger.exception("Error in the disconnect handler for %s", session.sid)

    # -- HTTP helpers -------------------------------------------------------------------------

    def _new_sid(self) -> str:
        while True:
            sid = self.sid_prefix + secrets.token_urlsafe(15)
            if sid not in self._sessions:
                return sid

    def _open_json(self, sid: str, upgrades: list[str]) -> str:
        return self.json.dumps(
            {
                "sid": sid,
                "upgrades": upgrades,
                "pingInterval": _seconds_to_ms(self.ping_interval),
                "pingTimeout": _seconds_to_ms(self.ping_timeout),
                "maxPayload": self.max_http_buffer_size,
            }
        )

    def _environ(self, request: HTTPRequest) -> dict[str, Any]:
        environ = build_environ(request)
        environ["wsgi.input"] = io.BytesIO(b"")
        environ["wsgi.errors"] = sys.stderr
        return environ

    def _origin_allowed(self, request: HTTPRequest) -> bool | None:
        """``None`` without an Origin header (or checks off), else whether it is allowed."""
        return origin_allowed(
            request.header("origin"),
            self.cors_allowed_origins,
            scheme=request.scheme,
            host=request.header("host"),
            forwarded_proto=request.header("x-forwarded-proto"),
            forwarded_host=request.header("x-forwarded-host"),
            environ=lambda: self._environ(request),
        )

    def _refuse_origin(self, request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer to a refused ``Origin``: python-engineio's, to the byte.

        400, ``text/plain``, the JSON string ``"<origin> is not an accepted
        origin."``; logged at ERROR the first time, at INFO after that (the
        reference's ``_log_error_once``), with the setting that would allow it.
        """
        origin = request.header("origin") or ""
        message = f"{origin} is not an accepted origin."
        if "bad-origin" not in self._logged_once:
            self._logged_once.add("bad-origin")
            self.logger.error(
                "%s (further occurrences of this error will be logged with level INFO; "
                "allow it with cors_allowed_origins=[%r])",
                message,
                origin,
            )
        else:
            self.logger.info("%s (%s %s from %s)", message, request.method,
                             request.target, _addr(request))
        return 400, [("Content-Type", "text/plain")], default_json.dumps(message).encode()

    def cors_headers(self, request: HTTPRequest) -> list[tuple[str, str]] | None:
        """CORS response headers for ``request``, or ``None`` when its origin is
        refused (also for the client files served in front of this endpoint:
        ``server/clientfiles.py``)."""
        verdict = self._origin_allowed(request)
        if verdict is False:
            return None
        if verdict is None:
            return []
        origin = request.header("origin")
        assert origin is not None
        headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.cors_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def _cookie_headers(self, sid: str) -> list[tuple[str, str]]:
        cookie = self.cookie
        if not cookie:
            return []
        # Keys in any case, as the reference writes them ("SameSite", "Secure") or
        # ours ("samesite", "max_age"); values may be callables (the reference's form);
        # True writes a flag, False/None leaves the attribute out.
        attrs: dict[str, Any] = {"Path": "/", "HttpOnly": True, "SameSite": "Lax"}
        for key, value in cookie.items():
            if key == "name":
                continue
            attrs[_COOKIE_ATTRIBUTES.get(key.lower(), key)] = value() if callable(value) else value
        parts = [f"{cookie.get('name', 'io')}={sid}"]
        for attr, value in attrs.items():
            if value is True:
                parts.append(attr)
            elif value is not None and value is not False:
                parts.append(f"{attr}={int(value) if attr == 'Max-Age' else value}")
        return [("Set-Cookie", "; ".join(parts))]

    def _respond(
        self,
        request: HTTPRequest,
        responder: Responder,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        """Answer a polling request, with CORS headers and compression if asked."""
        cors = self.cors_headers(request) or []
        headers = [*headers, *cors]
        if self.http_compression and len(body) >= self.compression_threshold:
            accepted = [
                part.split(";")[0].strip().lower()
                for part in (request.header("accept-encoding") or "").split(",")
            ]
            if "gzip" in accepted:
                body = gzip.compress(body, compresslevel=6)
                headers.append(("Content-Encoding", "gzip"))
            elif "deflate" in accepted:
                body = zlib.compress(body)
                headers.append(("Content-Encoding", "deflate"))
        responder.respond(status, headers, body)

    def _error(
        self,
        responder: Responder,
        status: int,
        code: int,
        request: HTTPRequest,
        message: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.logger.info(
            "%d for %s %s from %s: %s",
            status,
            request.method,
            request.target,
            _addr(request),
            message or _ERROR_MESSAGES[code],
        )
        responder.respond(
            status, [("Content-Type", "application/json"), *extra], _error_body(code, message)
        )


def _addr(request: HTTPRequest) -> str:
    client = request.client
    return f"{client[0]}:{client[1]}" if client else "unknown client"
