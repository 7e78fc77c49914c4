"""The Origin policy shared by the Socket.IO endpoint and plain WebSocket routes.

A browser sends ``Origin`` with every WebSocket handshake and every
cross-origin request, and sends the user's cookies along whatever the page.
A server that accepts any origin lets a page on another site act as the
logged-in user (cross-site WebSocket hijacking). So both the Engine.IO
endpoint (``cors_allowed_origins``) and :class:`flask_relay.Sock`
(``allowed_origins``) decide with this one function, and default to the same
rule as python-socketio: the page must be on the server's own origin.

The function is pure: the caller passes the request's facts (scheme, ``Host``
and the proxy headers) and, for a callable policy, a way to build the WSGI
environ only when it is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ["OriginPolicy", "environ_origin_allowed", "origin_allowed", "same_origins"]

#: What a policy may be: ``None`` (same origin only), ``"*"`` (any), one
#: origin, a collection of origins (``[]``: no check at all; ``"*"`` in it:
#: any), or a callable ``(origin[, environ]) -> bool``.
OriginPolicy = str | Collection[str] | Callable[..., bool] | None


def same_origins(
    scheme: str,
    host: str | None,
    forwarded_proto: str | None = None,
    forwarded_host: str | None = None,
) -> set[str]:
    """The origins a page served by this request's server has.

    ``scheme://Host``, and behind a proxy (``X-Forwarded-Proto`` or
    ``X-Forwarded-Host``) the proxy's scheme and host, first value of each.
    """
    if host is None:
        return set()
    candidates = {f"{scheme}://{host}"}
    if forwarded_proto or forwarded_host:
        proxy_scheme = (forwarded_proto or scheme).split(",")[0].strip()
        proxy_host = (forwarded_host or host).split(",")[0].strip()
        candidates.add(f"{proxy_scheme}://{proxy_host}")
    return candidates


def origin_allowed(
    origin: str | None,
    allowed: OriginPolicy,
    *,
    scheme: str,
    host: str | None,
    forwarded_proto: str | None = None,
    forwarded_host: str | None = None,
    environ: Callable[[], Mapping[str, Any]] | None = None,
) -> bool | None:
    """Whether ``origin`` may connect under the policy ``allowed``.

    ``None`` when there is nothing to decide: the client sent no ``Origin``
    (not a browser, so no cookies ride along against its will) or the policy
    is an empty collection (checks off). ``environ`` builds the WSGI environ
    for the callable form ``allowed(origin, environ)``; a callable that takes
    one argument is called as ``allowed(origin)``.
    """
    if origin is None:
        return None
    if isinstance(allowed, Collection) and not isinstance(allowed, str) and len(allowed) == 0:
        return None
    if allowed == "*":
        return True
    if allowed is None:
        return origin in same_origins(scheme, host, forwarded_proto, forwarded_host)
    if isinstance(allowed, str):
        return origin == allowed
    if callable(allowed):
        try:
            return bool(allowed(origin, environ() if environ is not None else {}))
        except TypeError:
            return bool(allowed(origin))
    return "*" in allowed or origin in allowed


def environ_origin_allowed(environ: Mapping[str, Any], allowed: OriginPolicy) -> bool | None:
    """:func:`origin_allowed` for a WSGI request (its ``HTTP_*`` keys)."""
    return origin_allowed(
        environ.get("HTTP_ORIGIN"),
        allowed,
        scheme=str(environ.get("wsgi.url_scheme", "http")),
        host=environ.get("HTTP_HOST"),
        forwarded_proto=environ.get("HTTP_X_FORWARDED_PROTO"),
        forwarded_host=environ.get("HTTP_X_FORWARDED_HOST"),
        environ=lambda: environ,
    )
