"""RFC 6455 conformance: the Autobahn|Testsuite quick set against an echo route.

The quick set (every group but 9.* performance and 12.*/13.* compression) runs
against the own server and against ``flask run``; ``scripts/autobahn-full``
runs the full set, compression included. The suite is Python 2.7 code: the
test is skipped, saying so, only when no CPython 2.7 exists on the machine
(the run-autobahn.sh tool builds its virtualenv on first use).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "routes"))
from wshelpers import free_port  # noqa: E402


def _run_autobahn() -> Path:
    """The workplace's run-autobahn.sh: $RUN_AUTOBAHN, ../shared beside the checkout,
    or /work/shared (where a clone made elsewhere, e.g. by CI in /tmp, still finds it)."""
    if "RUN_AUTOBAHN" in os.environ:
        return Path(os.environ["RUN_AUTOBAHN"])
    candidates = [ROOT.parent / "shared", Path("/work/shared")]
    for shared in candidates:
        script = shared / "tools" / "run-autobahn.sh"
        if script.is_file():
            return script
    return candidates[0] / "tools" / "run-autobahn.sh"


RUN_AUTOBAHN = _run_autobahn()
ECHO_APP = ROOT / "tests" / "routes" / "autobahn_echo.py"
BIN = Path(sys.executable).parent


def _python27() -> str | None:
    """The interpreter run-autobahn.sh would find (same search order)."""
    candidates = [os.environ.get("AUTOBAHN_PYTHON2", "")]
    candidates += [shutil.which("python2.7") or "", shutil.which("python2") or ""]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(root, "versions", "2.7*", "bin", "python2.7")))
    for candidate in candidates:
        if not candidate:
            continue
        try:
            check = subprocess.run(
                [candidate, "-c", "import sys; sys.exit(sys.version_info[:2] != (2, 7))"],
                capture_output=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if check.returncode == 0:
            return candidate
    return None


@pytest.fixture(params=["own", "flask-run"])
def echo_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    if request.param == "own":
        cmd = [sys.executable, str(ECHO_APP), str(port)]
    else:
        cmd = [str(BIN / "flask"), "--app", str(ECHO_APP), "run", "--port", str(port)]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            except urllib.error.HTTPError:
                break  # answering (404 for /)
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/echo"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_autobahn_quick_set(echo_server: str, tmp_path: Path) -> None:
    if _python27() is None:
        pytest.skip(
            "Autobahn|Testsuite needs CPython 2.7 and none was found (AUTOBAHN_PYTHON2, "
            "python2.7 on PATH, $PYENV_ROOT/versions/2.7*)"
        )
    assert RUN_AUTOBAHN.is_file(), f"{RUN_AUTOBAHN} is missing (set RUN_AUTOBAHN)"
    proc = subprocess.run(
        ["bash", str(RUN_AUTOBAHN), "--quick", "--agent", "flask-relay",
         "--outdir", str(tmp_path / "report"), "--timeout", "300", echo_server],
        capture_output=True,
        text=True,
        timeout=390,
    )
    summary = proc.stdout.strip()
    assert proc.returncode == 0, summary + proc.stderr[-2000:]
    last = summary.splitlines()[-1]
    passed, failed = (int(part.split()[0]) for part in last.split(",")[:2])
    assert failed == 0 and passed >= 240, summary
    assert "closing-handshake remark" not in summary, summary
