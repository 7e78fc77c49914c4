"""The package's imports: no module-level cycle, and no deferred import hiding one.

A cycle between two modules can be hidden by moving one of its imports into a
function (it then runs after both modules are loaded). That keeps the program
working but hides a dependency that points the wrong way, so issue 11 removed
them all. These tests keep it that way:

* every import of a ``flask_relay`` module made inside a function must be in
  :data:`DEFERRED`, with the reason it is deferred (an optional third-party
  package, for instance); a new one fails here until it is moved to module
  level or listed with a reason that is not a cycle;
* the graph of module-level imports between the package's modules has no cycle;
* every module imports on its own, first, in a fresh interpreter: a cycle that
  only works in a lucky import order fails there.

``if TYPE_CHECKING:`` imports are not run, so they are left out (import-linter's
layer contracts in pyproject.toml count them); imports of third-party packages
inside functions (redis, kombu, nats, zmq, uvloop, werkzeug.debug...) are lazy on
purpose, the packages being optional, and are left out too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "flask_relay"

#: (importing module, imported module) -> why the import is inside a function.
DEFERRED: dict[tuple[str, str], str] = {
    ("flask_relay.protocol.codecs", "flask_relay.protocol.msgpack"): (
        "protocol/msgpack.py imports the optional msgpack package: serializer='msgpack' "
        "without it must raise RuntimeError with the install hint, the default must work"
    ),
    ("flask_relay.sockets", "flask_relay.gunicorn"): (
        "flask_relay.gunicorn imports the optional gunicorn package; it is loaded only "
        "for `gunicorn -k flask_relay.sockets.worker` (module __getattr__)"
    ),
    **{
        ("flask_relay.pubsub", f"flask_relay.pubsub.{backend}"): (
            "from_url() loads the backend of the URL in use: `python -m "
            "flask_relay.pubsub.zmq` (the ZeroMQ broker) would get runpy's RuntimeWarning "
            "if the package imported its backend modules (tests/queues/"
            "test_queue_backends.py checks it does not). No cycle: the backends import "
            "pubsub/base.py, not the package (the graph test counts these edges too)"
        )
        for backend in ("streams", "redis", "amqp", "nats", "zmq")
    },
}


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES = _modules()


def _path(module: str) -> Path:
    base = SRC.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The flask_relay modules ``node`` (in ``module``) loads, by absolute name."""
    if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module if _path(module).name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        # ``from . import msgpack`` loads a submodule; ``from .base import X`` a name.
        submodules = [f"{base}.{alias.name}" for alias in node.names]
        found = [name for name in submodules if name in MODULES]
        if len(found) < len(submodules):
            found.append(base)
    return [name for name in found if name == "flask_relay" or name.startswith("flask_relay.")]


def _imports(module: str) -> tuple[set[str], list[tuple[str, int]]]:
    """``module``'s module-level package imports, and its deferred ones (name, line)."""
    tree = ast.parse(_path(module).read_text(encoding="utf-8"))
    top: set[str] = set()
    deferred: list[tuple[str, int]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, child):
                    if in_function:
                        deferred.append((target, child.lineno))
                    else:
                        top.add(target)
            inner = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            walk(child, inner)

    walk(tree, False)
    return top, deferred


def test_the_walk_sees_function_level_and_type_checking_imports() -> None:
    # The known deferral is found and a TYPE_CHECKING import is not: the checks
    # below would pass vacuously if the walk saw nothing.
    top, deferred = _imports("flask_relay.protocol.codecs")
    assert "flask_relay.protocol.msgpack" in {name for name, _ in deferred}
    assert "flask_relay.protocol.socketio" in top
    top, deferred = _imports("flask_relay.engine.sio")
    assert "flask_relay.engine.admin" in top  # module level since issue 11
    top, _ = _imports("flask_relay.engine.observers")
    assert "flask_relay.engine.sio" not in top  # under TYPE_CHECKING only


def test_every_deferred_package_import_is_listed_with_its_reason() -> None:
    found = {}
    for module in MODULES:
        for target, line in _imports(module)[1]:
            found[(module, target)] = f"{_path(module).relative_to(SRC)}:{line}"
    unlisted = {pair: where for pair, where in found.items() if pair not in DEFERRED}
    assert not unlisted, (
        "imports of flask_relay modules inside functions; move them to module level, "
        "or, if the deferral is not hiding an import cycle, list them in DEFERRED with "
        f"the reason: {unlisted}"
    )
    stale = set(DEFERRED) - set(found)
    assert not stale, f"DEFERRED lists imports that are gone: {sorted(stale)}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_cycle_finder() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_level_import_cycle() -> None:
    # An edge for every package module a module-level import loads, including the
    # packages on the way (``from .server.http import Server`` runs server/__init__.py
    # too), except the importer's own parents: Python runs those first, whatever the
    # order, so a module importing names of its own package is not a cycle of order.
    # The deferred imports of DEFERRED count as edges too: they must not close a
    # cycle either.
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        top, deferred = _imports(module)
        parents = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)}
        edges = graph.setdefault(module, set())
        for target in top | {name for name, _ in deferred}:
            parts = target.split(".")
            for n in range(2, len(parts) + 1):
                name = ".".join(parts[:n])
                if name != module and name not in parents and name in MODULES:
                    edges.add(name)
    cycle = _cycle(graph)
    assert cycle is None, f"module-level import cycle: {' -> '.join(cycle)}"


# Run in a fresh interpreter: for each module, forget every flask_relay module, put
# an empty stand-in for the top package (so that its __init__.py, which imports
# nearly everything, does not load the rest first), and import the module.
_IMPORT_EACH = """
import importlib, json, sys, types
src, modules = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, src)
results = {}
for module in modules:
    for name in [n for n in sys.modules if n == "flask_relay" or n.startswith("flask_relay.")]:
        del sys.modules[name]
    if module != "flask_relay":
        stand_in = types.ModuleType("flask_relay")
        stand_in.__path__ = [src + "/flask_relay"]
        sys.modules["flask_relay"] = stand_in
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        own = exc.name and (exc.name == "flask_relay" or exc.name.startswith("flask_relay."))
        results[module] = ("error" if own else "missing") + f": {exc!r}"
    except Exception as exc:
        results[module] = f"error: {exc!r}"
    else:
        results[module] = "ok"
print(json.dumps(results))
"""


def test_every_module_imports_first_on_its_own() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, str(SRC), json.dumps(MODULES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=SRC.parent,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(results) == set(MODULES)
    failed = {m: r for m, r in results.items() if r.startswith("error")}
    assert not failed, f"modules that do not import on their own: {failed}"
    missing = {m: r for m, r in results.items() if r.startswith("missing")}
    if missing:  # an optional third-party package is not installed here
        pytest.skip(f"not checked, optional packages missing: {missing}")


def test_a_cycle_fails_the_import_check(tmp_path: Path) -> None:
    # The stand-in mechanism does catch a cycle: two modules of a throwaway package
    # that import each other's names at module level.
    pkg = tmp_path / "flask_relay"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("from .a import A\nB = 2\n")
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, str(tmp_path), json.dumps(["flask_relay.a"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])["flask_relay.a"]
    assert result.startswith("error") and "partially initialized" in result
