"""websockets internals that protocol/websocket.py relies on are still there.

protocol/websocket.py subclasses websockets' sans-I/O ``ServerProtocol`` and
touches a few undocumented parts of it (listed in its module docstring). A new
websockets release that renames one would break connections in subtle ways;
this test names the missing piece instead.
"""

from __future__ import annotations

import inspect

import pytest
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

from flask_relay.protocol import websocket as wsproto

#: Methods we override or call that are not part of the documented API.
METHODS = {
    Protocol: ["parse", "recv_frame"],
    ServerProtocol: ["parse", "process_origin", "select_subprotocol", "process_request"],
}

#: Instance attributes we read or write (set by ``Protocol.__init__``).
ATTRIBUTES = ["writes", "events", "parser_exc", "eof_sent", "current_size", "origin",
              "close_rcvd", "close_sent", "subprotocol", "extensions", "state"]


@pytest.mark.parametrize(
    ("cls", "name"), [(cls, name) for cls, names in METHODS.items() for name in names]
)
def test_method_still_exists(cls: type, name: str) -> None:
    member = getattr(cls, name, None)
    assert callable(member), (
        f"websockets.{cls.__module__.split('.', 1)[1]}.{cls.__name__}.{name} is gone: "
        "flask_relay/protocol/websocket.py overrides or calls it (see its docstring); "
        "adapt it to this websockets version or pin websockets below it"
    )


def test_parse_is_a_generator() -> None:
    # We yield from Protocol.parse() to skip ServerProtocol's request parsing.
    assert inspect.isgeneratorfunction(Protocol.parse), (
        "websockets' Protocol.parse is no longer a generator: "
        "flask_relay/protocol/websocket.py's _ServerProtocol.parse must change"
    )


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_attribute_still_exists(name: str) -> None:
    protocol = ServerProtocol()
    assert hasattr(protocol, name), (
        f"websockets' ServerProtocol instances no longer have {name!r}: "
        "flask_relay/protocol/websocket.py reads or writes it (see its docstring); "
        "adapt it to this websockets version or pin websockets below it"
    )


def test_apply_mask_is_still_there() -> None:
    # The fast path for small frames unmasks with it (the C version when built).
    from websockets.utils import apply_mask

    assert apply_mask(b"\x00\x01", b"\x01\x01\x01\x01") == b"\x01\x00"
    assert wsproto._apply_mask(b"\x00\x01", b"\x01\x01\x01\x01") == b"\x01\x00"


def test_docstring_lists_every_internal() -> None:
    doc = wsproto.__doc__ or ""
    for name in [n for names in METHODS.values() for n in names] + ATTRIBUTES:
        assert f"``{name}``" in doc or f".{name}``" in doc, f"{name} missing from the docstring"
