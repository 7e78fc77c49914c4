"""The pluggable JSON module used by the codecs, and the default one.

A *JSON module* is any object with ``dumps(obj) -> str`` and
``loads(s: str | bytes) -> Any``: the stdlib :mod:`json` module qualifies, and so
does ``flask.json`` (Flask-SocketIO users pass it as ``json=``). The codecs only
ever call those two functions.

:data:`default_json` is the fastest correct module available. It produces what
JavaScript's ``JSON.stringify`` produces for the same value (compact, non-ASCII
kept as is), because the other end of every connection is usually
``socket.io-parser``:

* With `orjson <https://pypi.org/project/orjson/>`_ installed (the
  ``flask-relay[orjson]`` extra), values orjson handles go through orjson.
  Whatever orjson refuses (integers beyond 64 bits, non-``str`` dict keys,
  strings holding lone surrogates, subclasses of ``str``/``int``/``dict``/
  ``list``, datetimes, dataclasses) is handed to the stdlib, so the set of
  values that can be sent, and their encoding, is the stdlib's. The only values
  orjson accepts that the stdlib refuses are :class:`enum.Enum` members and
  :class:`uuid.UUID` (encoded as their value / string).
* Otherwise the stdlib :mod:`json` is used with compact separators and
  ``ensure_ascii=False``.

Deliberate differences from plain ``json.dumps`` (both variants behave alike):

* ``nan``/``inf`` become ``null``, as in ``JSON.stringify``; ``json.dumps``
  would emit ``NaN``, which ``JSON.parse`` in the browser rejects, killing the
  connection.
* A lone surrogate in a string is written as a ``\\udXXX`` escape, as in
  ``JSON.stringify``; ``json.dumps(ensure_ascii=False)`` would keep the raw code
  point, which cannot be encoded to UTF-8 for the wire.

Decoding accepts exactly standard JSON (what ``JSON.parse`` accepts): the
stdlib's ``NaN``/``Infinity`` extensions are refused. When orjson refuses a
document, the stdlib gets a second look, because orjson rejects two things
``JSON.parse`` accepts: lone surrogate escapes (``"\\ud83d"``, produced by a
JavaScript client that cut an emoji in half) and nesting deeper than 1024.
Failures raise :class:`ValueError` (or :class:`RecursionError` for absurd
nesting: from about 1000 levels before Python 3.13, whose stdlib scanner no
longer uses the Python recursion limit); the codecs turn any failure into
:class:`ProtocolError`.

Why this default (``bench/bench_codec.py`` measures it and says whether it
still holds; figures from 2026-11-23, Python 3.13, operations per CPU second
for a small event ``["chat",{...}]``, dumps / loads): this module's orjson
variant 3.4M / 2.0M, bare orjson 3.4M / 2.1M (the fallbacks cost nothing on
ordinary data), msgspec with the same stdlib fallback 2.5M / 2.3M (also correct,
slower overall, not a dependency), this module's stdlib variant 0.39M / 0.55M.
ujson, python-rapidjson, simplejson and the bare stdlib defaults each get NaN
or lone surrogates wrong without raising, so no fallback can make them correct.

Differences with what ``JSON.stringify`` prints that do not change the value a
JavaScript peer decodes: Python floats keep their ``.0`` (``1.0`` vs ``1``) and
Python's exponent style (``1e+16``), ``-0.0`` stays ``-0.0``.
"""

from __future__ import annotations

import json as _stdlib_json
import math
import re
from typing import Any, Protocol

__all__ = ["JSONModule", "StdlibJSON", "OrjsonJSON", "default_json", "stdlib_json"]


class JSONModule(Protocol):
    """What the codecs need from a JSON implementation."""

    def dumps(self, obj: Any, /) -> str: ...

    def loads(self, s: str | bytes, /) -> Any: ...


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _fix_surrogates(text: str) -> str:
    """Escape lone surrogates the way ``JSON.stringify`` does.

    JSON text only holds non-ASCII characters inside strings, so replacing each
    surrogate code point by its ``\\u`` escape is exact.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape_surrogate, text)
    return text


def _finite(obj: Any) -> Any:
    """A copy of ``obj`` with non-finite floats replaced by ``None``.

    Only called after ``allow_nan=False`` refused the value, i.e. rarely.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


_encoder = _stdlib_json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
)
_encode = _encoder.encode
_decoder = _stdlib_json.JSONDecoder(parse_constant=_refuse_constant)
_decode = _decoder.decode


class StdlibJSON:
    """The stdlib :mod:`json`, configured to match ``JSON.stringify``/``JSON.parse``."""

    __slots__ = ()

    @staticmethod
    def dumps(obj: Any, /) -> str:
        try:
            text = _encode(obj)
        except ValueError as exc:
            # allow_nan=False refused a non-finite float: JSON.stringify writes null.
            if "Out of range float" not in str(exc):
                raise
            text = _encode(_finite(obj))
        return _fix_surrogates(text)

    @staticmethod
    def loads(s: str | bytes, /) -> Any:
        if not isinstance(s, str):
            s = bytes(s).decode("utf-8")
        return _decode(s)


stdlib_json: JSONModule = StdlibJSON()

try:  # pragma: no cover - depends on the environment
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]


if _orjson is not None:
    _orjson_dumps = _orjson.dumps
    _orjson_loads = _orjson.loads
    _ORJSON_DECODE_ERROR: type[Exception] = _orjson.JSONDecodeError
    # Hand everything orjson would encode differently from the stdlib (or that
    # the stdlib refuses) over to the stdlib: see the module docstring.
    _ORJSON_OPTS: int = (
        _orjson.OPT_PASSTHROUGH_DATETIME
        | _orjson.OPT_PASSTHROUGH_DATACLASS
        | _orjson.OPT_PASSTHROUGH_SUBCLASS
    )

    class OrjsonJSON:
        """orjson where it agrees with the stdlib, the stdlib elsewhere."""

        __slots__ = ()

        @staticmethod
        def dumps(obj: Any, /) -> str:
            try:
                return _orjson_dumps(obj, None, _ORJSON_OPTS).decode()  # type: ignore[no-any-return]
            except TypeError:
                return StdlibJSON.dumps(obj)

        @staticmethod
        def loads(s: str | bytes, /) -> Any:
            try:
                return _orjson_loads(s)
            except _ORJSON_DECODE_ERROR:
                # orjson is stricter than JSON.parse on lone surrogates and depth.
                return StdlibJSON.loads(s)

        @staticmethod
        def dumps_fast(obj: Any, /) -> str:
            """orjson alone: raises :class:`TypeError` for anything unusual.

            The Socket.IO encoder uses this to learn cheaply that a payload holds
            no ``bytes`` (orjson refuses them); any :class:`TypeError` sends it
            down the slow, exact path.
            """
            return _orjson_dumps(obj, None, _ORJSON_OPTS).decode()  # type: ignore[no-any-return]

    default_json: JSONModule = OrjsonJSON()
else:  # pragma: no cover
    OrjsonJSON = None  # type: ignore[assignment,misc]
    default_json = stdlib_json
