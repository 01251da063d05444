"""The learner's VM, booted and used for real: tests/guest/run.py.

CI's host is Debian 12 without systemd, on hybrid cgroups; learners get Debian 13 under
systemd on pure cgroup v2 with Docker 26. So this boots that machine (built from packages and
cached, see tests/guest/image.py) under qemu and walks the learner's path in it: provisioning
as Vagrant runs it, JupyterLab as a unit, the notebooks through JupyterLab's own API, a real
browser, the tests that differ there (tests/in_vm among them), labkit doctor, and leak checks
in the guest and here. Slow (minutes, more on a cold cache): marked ``vm``, deselect with
``-m "not vm"``. Inside the learner's VM itself (pure cgroup v2 already) no second machine is
booted: tests/in_vm runs right here.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
IN_VM = TESTS / "in_vm"


def _count_in_vm_tests() -> int:
    """Every test function in tests/in_vm/, so a file that silently collects nothing fails."""
    return sum(
        isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        for path in IN_VM.glob("test_*.py")
        for node in ast.parse(path.read_text()).body
    )


def _cgroup_fs() -> str:
    return subprocess.run(
        ["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.vm
def test_the_learners_vm(capsys: pytest.CaptureFixture) -> None:
    if _cgroup_fs() == "cgroup2fs":
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-v"]
            + [str(IN_VM)],
            cwd=TESTS.parent,
            env={**os.environ, "LABKIT_IN_VM": "1"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{_count_in_vm_tests()} passed" in done.stdout, done.stdout
        return
    beside = os.environ.get("LABKIT_GUEST_RUN_DIR")
    if beside:
        rc = _follow_run_beside(Path(beside), capsys)
        assert rc == 0, "the learner's VM failed a check: see the FAILED lines above"
        return
    # The run streams its progress (boot, provisioning, notebooks, the guest's tests) to the
    # terminal: minutes of silence would hide where a slow or stuck run is.
    with capsys.disabled():
        done = subprocess.run(
            [sys.executable, str(TESTS / "guest" / "run.py")], timeout=5400, check=False
        )
    assert done.returncode == 0, "the learner's VM failed a check: see the FAILED lines above"


def _follow_run_beside(run_dir: Path, capsys: pytest.CaptureFixture) -> int:
    """Wait for the VM run tests/run.sh started beside the host's tests; show its log.

    The log is copied to the terminal as it grows, like the run's own output when it is
    started here; the exit status comes from the ``rc`` file the run's shell writes."""
    log, rc_file = run_dir / "log", run_dir / "rc"
    deadline = time.monotonic() + 5400
    shown = 0
    with capsys.disabled():
        print(f"\n(the learner's VM has been running beside the host's tests; log {log})")
        while True:
            done = rc_file.exists() and rc_file.read_text().strip() != ""
            text = log.read_text(errors="replace") if log.exists() else ""
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
            if done:
                break
            if time.monotonic() > deadline:
                return -1
            time.sleep(2)
    (run_dir / "reported").write_text("yes\n")
    return int(rc_file.read_text())
