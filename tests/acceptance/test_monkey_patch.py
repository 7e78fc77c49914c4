"""Issue 10 item 4: a monkey-patched process stops at start-up with a clear reason.

``eventlet.monkey_patch()`` or gevent's ``monkey.patch_all()`` left at the top
of an app used to give a server that starts and answers the handshake, while
no client ever connects and nothing is logged. Every door now refuses at
start-up: ``socketio.run`` and ``EngineIO.run`` exit with status 1 and a
one-line reason, ``init_app`` (the foreign-server middleware: ``flask run``,
gunicorn sync/gthread) and the gunicorn worker raise ``RuntimeError`` with the
same message (gunicorn then stops: "Worker failed to boot"). A process that
only imports eventlet and gevent, without patching, serves as usual.

The apps (patched_app.py) run in subprocesses with the real eventlet and gevent
(both in the ``test`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import socketio as socketio_client
from acceptance_helpers import free_port, request, wait_until

HERE = Path(__file__).resolve().parent
APP = HERE / "patched_app.py"

CALLS = {"eventlet": "eventlet.monkey_patch()", "gevent": "gevent.monkey.patch_all()"}


@pytest.fixture(autouse=True, scope="module")
def _patch_libraries() -> None:
    missing = [lib for lib in CALLS if importlib.util.find_spec(lib) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: pip install -e '.[test]'")


def run(argv: list[str], port: int, **env: str) -> subprocess.CompletedProcess[str]:
    """Run to completion (it must stop by itself); fail if it is still serving."""
    proc = subprocess.Popen(
        argv,
        cwd=HERE,
        env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore", **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running (not refused): {out}\n{err}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def message(library: str) -> str:
    return f"this process is monkey-patched by {CALLS[library]} ("


def assert_refused_in_one_line(done: subprocess.CompletedProcess[str], library: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("Flask-Relay: " + message(library)), done.stderr
    assert f"Remove the {CALLS[library]} call" in lines[-1]
    assert "Traceback" not in done.stderr and "serving" not in done.stderr, done.stderr


@pytest.mark.parametrize("library", ["eventlet", "gevent"])
def test_patch_at_the_top_of_a_socketio_app(library: str) -> None:
    """The usual place: patched before ``SocketIO(app)``. ``init_app`` logs it at
    ERROR, then ``socketio.run`` refuses in one line."""
    port = free_port()
    done = run([sys.executable, str(APP), str(port)], port, PATCH=library, WHEN="top")
    assert_refused_in_one_line(done, library)
    logged = [line for line in done.stderr.splitlines() if "test client still works" in line]
    assert len(logged) == 1 and message(library) in logged[0], done.stderr


@pytest.mark.parametrize("library", ["eventlet", "gevent"])
def test_the_test_client_works_in_a_patched_process(library: str) -> None:
    """An app's own tests (``socketio.test_client``) need no loop: they run."""
    done = run([sys.executable, str(APP), "test-client"], 0, PATCH=library, WHEN="top")
    assert done.returncode == 0, done.stderr
    assert "echo: from the test client" in done.stdout, (done.stdout, done.stderr)


def test_patch_just_before_run_exits_with_one_line() -> None:
    port = free_port()
    done = run([sys.executable, str(APP), str(port)], port, PATCH="gevent", WHEN="late")
    assert_refused_in_one_line(done, "gevent")


def test_engineio_run_exits_with_one_line() -> None:
    # Patched after EngineIO(app): EngineIO.run's own check. (eventlet itself
    # fails when patching this late, so gevent.)
    port = free_port()
    done = run(
        [sys.executable, str(APP), str(port)], port, PATCH="gevent", WHEN="late", KIND="engineio"
    )
    assert_refused_in_one_line(done, "gevent")


def test_engineio_app_patched_at_the_top_exits_at_run() -> None:
    port = free_port()
    done = run(
        [sys.executable, str(APP), str(port)], port, PATCH="eventlet", WHEN="top", KIND="engineio"
    )
    assert_refused_in_one_line(done, "eventlet")


def test_flask_run_logs_it_and_answers_500() -> None:
    """The foreign-server door (``flask run``): the ERROR line at start-up, then a
    500 with the message for every request that needs the loop; views still work."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "patched_app", "run", "--port", str(port)],
        cwd=HERE,
        env=dict(os.environ, PYTHONWARNINGS="ignore", PATCH="eventlet", WHEN="top"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:

        def up() -> bool:
            assert proc.poll() is None
            try:
                return request(port, "GET", "/hello", timeout=1).status == 200
            except OSError:
                return False

        wait_until(up, timeout=20, what="flask run serving")
        answer = request(port, "GET", "/socket.io/?EIO=4&transport=polling", timeout=5)
        assert answer.status == 500
        assert answer.body.decode().startswith(message("eventlet")), answer.body
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert message("eventlet") in err, err


def test_gunicorn_worker_refuses_and_gunicorn_stops(tmp_path: Path) -> None:
    """A plain Flask app (no extension to refuse at import): the worker's own check,
    before it counts as booted, so the arbiter stops instead of restarting it."""
    port = free_port()
    done = run(
        [
            sys.executable, "-m", "gunicorn",
            "-k", "flask_relay.gunicorn.Worker",
            "-b", f"127.0.0.1:{port}",
            "--control-socket", str(tmp_path / "gunicorn.ctl"),
            "patched_app:app",
        ],
        port,
        PATCH="gevent",
        WHEN="top",
        KIND="plain",
    )
    assert done.returncode == 3, done.stderr  # gunicorn's "Worker failed to boot"
    assert message("gevent") in done.stderr, done.stderr
    assert "Worker failed to boot" in done.stderr


def test_imported_but_not_patched_serves() -> None:
    """No false alarm: eventlet and gevent imported, nothing patched."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(APP), str(port)],
        cwd=HERE,
        env=dict(os.environ, PYTHONWARNINGS="ignore", PATCH="import"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    client = socketio_client.Client(reconnection=False)
    try:

        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return request(port, "GET", "/hello", timeout=1).status == 200
            except OSError:
                return False

        wait_until(up, timeout=20, what="the app serving")
        client.connect(f"http://127.0.0.1:{port}", wait_timeout=5)
        assert client.call("echo", "still works", timeout=5) == "still works"
    finally:
        client.disconnect()
        proc.terminate()
        proc.wait(15)
