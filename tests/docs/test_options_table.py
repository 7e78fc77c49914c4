"""docs/options.md promises every option and limit in one table: each name the
code accepts must have a row there (a new option without docs fails here)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from flask_relay.extension import DEFAULT_OPTIONS, ENGINEIO_EXTRA_OPTIONS
from flask_relay.server.http import HTTPLimits
from flask_relay.sock import WebSocketOptions

ROOT = Path(__file__).resolve().parents[2]
RUN_OPTIONS = ("host", "port", "debug", "use_reloader", "reloader_options", "extra_files",
               "log_output", "certfile", "keyfile", "ssl", "wsgi_threads", "limits",
               "backlog", "shutdown_timeout", "reuse_port", "allow_unsafe_werkzeug")  # fmt: skip


def table_names() -> set[str]:
    """The backquoted names in the first cell of every table row."""
    names: set[str] = set()
    for line in (ROOT / "docs" / "options.md").read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            first = line.split("|")[1]
            names.update(re.findall(r"`([a-z_]+)`", first))
    return names


def test_every_option_and_limit_has_a_row() -> None:
    documented = table_names()
    wanted = {
        "SocketIO option": set(DEFAULT_OPTIONS) | set(ENGINEIO_EXTRA_OPTIONS) | {"resource"},
        "run() argument": set(RUN_OPTIONS),
        "HTTPLimits field": {f.name for f in dataclasses.fields(HTTPLimits)},
        "SOCK_SERVER_OPTIONS key": {
            f.name for f in dataclasses.fields(WebSocketOptions) if not f.name.startswith("_")
        },
    }
    missing = {kind: sorted(names - documented) for kind, names in wanted.items()}
    assert not any(missing.values()), f"docs/options.md lacks rows for {missing}"


def test_run_arguments_listed_are_the_ones_run_accepts() -> None:
    # run() names the server arguments it passes on; a new one needs a row above.
    source = (ROOT / "src" / "flask_relay" / "extension.py").read_text()
    block = source[source.index("server_kwargs = {}") :]
    block = block[: block.index("):")]
    passed = set(re.findall(r'"([a-z_]+)"', block))
    assert passed <= set(RUN_OPTIONS), passed - set(RUN_OPTIONS)
