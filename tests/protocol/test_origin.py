"""The Origin policy shared by the Socket.IO endpoint and WebSocket routes."""

from __future__ import annotations

from typing import Any

import pytest

from flask_relay.protocol.origin import environ_origin_allowed, origin_allowed, same_origins


def check(origin: str | None, allowed: Any, **facts: Any) -> bool | None:
    facts.setdefault("scheme", "http")
    facts.setdefault("host", "app.example:5000")
    return origin_allowed(origin, allowed, **facts)


def test_no_origin_header_is_not_a_browser_and_passes() -> None:
    assert check(None, None) is None
    assert check(None, ["http://a.example"]) is None


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("http://app.example:5000", True),
        ("http://app.example:3000", False),  # another port is another origin
        ("https://app.example:5000", False),
        ("http://evil.example", False),
        ("null", False),
    ],
)
def test_same_origin_by_default(origin: str, ok: bool) -> None:
    assert check(origin, None) is ok


def test_no_host_refuses_under_the_default() -> None:
    assert check("http://app.example", None, host=None) is False


def test_proxy_headers_name_the_page() -> None:
    facts = {"host": "10.0.0.5:8000", "forwarded_proto": "https, http",
             "forwarded_host": "app.example, proxy"}
    assert check("https://app.example", None, **facts) is True
    assert check("http://10.0.0.5:8000", None, **facts) is True
    assert check("https://proxy", None, **facts) is False
    assert check("https://10.0.0.5:8000", None, forwarded_proto="https",
                 host="10.0.0.5:8000") is True


@pytest.mark.parametrize(
    ("allowed", "origin", "expected"),
    [
        ("*", "http://x.example", True),
        (["*"], "http://x.example", True),
        ("http://localhost:3000", "http://localhost:3000", True),
        ("http://localhost:3000", "http://localhost:3001", False),
        (["http://a.example", "http://b.example"], "http://b.example", True),
        (("http://a.example",), "http://c.example", False),
        ([], "http://c.example", None),  # checks off
        (lambda origin: origin.endswith(".example"), "http://c.example", True),
        (lambda origin, environ: environ["ok"], "http://c.example", False),
    ],
)
def test_policies(allowed: Any, origin: str, expected: bool | None) -> None:
    assert check(origin, allowed, environ=lambda: {"ok": False}) is expected


def test_the_environ_is_built_only_for_a_callable() -> None:
    built = []

    def environ() -> dict[str, Any]:
        built.append(1)
        return {}

    check("http://a.example", ["http://a.example"], environ=environ)
    assert built == []
    check("http://a.example", lambda o, e: True, environ=environ)
    assert built == [1]


def test_same_origins_and_the_wsgi_form() -> None:
    assert same_origins("http", None) == set()
    assert same_origins("https", "h:1") == {"https://h:1"}
    environ = {"wsgi.url_scheme": "http", "HTTP_HOST": "h:1", "HTTP_ORIGIN": "http://h:1"}
    assert environ_origin_allowed(environ, None) is True
    assert environ_origin_allowed({**environ, "HTTP_ORIGIN": "http://h:2"}, None) is False
    assert environ_origin_allowed({**environ, "HTTP_ORIGIN": "http://h:2"},
                                  lambda o, e: e["HTTP_HOST"] == "h:1") is True
    del environ["HTTP_ORIGIN"]
    assert environ_origin_allowed(environ, None) is None
