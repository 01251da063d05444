"""Smoke tests of the cgroup-v2 interface labkit relies on, against a real v2 kernel.

Run inside the learner's VM by ``python tests/guest/run.py``; never on the host.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path("/sys/fs/cgroup")
REQUIRED_CONTROLLERS = {"cpu", "memory", "pids", "io"}
MEMORY_MAX = 64 * 1024 * 1024
PIDS_MAX = 16


def _words(path: Path) -> set[str]:
    return set(path.read_text().split())


def _fs_type() -> str:
    """``stat -fc %T /sys/fs/cgroup``: cgroup2fs on a pure v2 system."""
    done = subprocess.run(["stat", "-fc", "%T", str(ROOT)], capture_output=True, text=True)
    return done.stdout.strip()


def _rmdir(cgroup: Path, timeout: float = 5.0) -> None:
    """rmdir a cgroup; the kernel may answer EBUSY for a moment after its last process exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cgroup.rmdir()
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def child_cgroup() -> Iterator[Path]:
    """/sys/fs/cgroup/labkit-smoke-<pid> with memory and pids enabled for it; removed after."""
    assert _fs_type() == "cgroup2fs", "refusing to create cgroups outside a cgroup-v2 hierarchy"
    subtree = ROOT / "cgroup.subtree_control"
    enabled_here = {"memory", "pids"} - _words(subtree)
    if enabled_here:
        # Controllers must be enabled in the parent's subtree_control for the child's files
        # (memory.max, pids.max) to exist.
        subtree.write_text(" ".join(f"+{c}" for c in sorted(enabled_here)))
    cgroup = ROOT / f"labkit-smoke-{os.getpid()}"
    cgroup.mkdir()
    try:
        yield cgroup
    finally:
        _rmdir(cgroup)
        if enabled_here:
            subtree.write_text(" ".join(f"-{c}" for c in sorted(enabled_here)))
    assert not cgroup.exists()


def test_cgroup_root_is_cgroup2() -> None:
    assert _fs_type() == "cgroup2fs"
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    assert [m[2] for m in mounts if m[1] == str(ROOT)] == ["cgroup2"]
    # Pure v2: no v1 hierarchy mounted anywhere.
    assert not [m for m in mounts if m[2] == "cgroup"]


def test_required_controllers_available() -> None:
    available = _words(ROOT / "cgroup.controllers")
    assert available >= REQUIRED_CONTROLLERS, f"missing: {REQUIRED_CONTROLLERS - available}"


def test_child_cgroup_limits(child_cgroup: Path) -> None:
    assert {"memory", "pids"} <= _words(child_cgroup / "cgroup.controllers")
    (child_cgroup / "memory.max").write_text(str(MEMORY_MAX))
    (child_cgroup / "pids.max").write_text(str(PIDS_MAX))
    assert (child_cgroup / "memory.max").read_text().strip() == str(MEMORY_MAX)
    assert (child_cgroup / "pids.max").read_text().strip() == str(PIDS_MAX)


def test_move_process_into_child_cgroup(child_cgroup: Path) -> None:
    (child_cgroup / "memory.max").write_text(str(MEMORY_MAX))
    (child_cgroup / "pids.max").write_text(str(PIDS_MAX))
    sleeper = subprocess.Popen(["sleep", "60"])  # not Python: that starts slowly under TCG
    try:
        (child_cgroup / "cgroup.procs").write_text(str(sleeper.pid))
        membership = Path(f"/proc/{sleeper.pid}/cgroup").read_text()
        assert membership == f"0::/{child_cgroup.name}\n"
        assert (child_cgroup / "cgroup.procs").read_text().split() == [str(sleeper.pid)]
        assert (child_cgroup / "pids.current").read_text().strip() == "1"
        assert "populated 1" in (child_cgroup / "cgroup.events").read_text()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (child_cgroup / "cgroup.procs").read_text() == ""
