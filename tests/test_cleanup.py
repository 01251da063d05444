"""Containers leave nothing behind; what a killed supervisor leaves, ``labkit reset`` removes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import (
    container_records,
    leftovers,
    proc_status,
    session_processes,
    snapshot,
    wait_until,
)

from labkit.runtime import state

pytestmark = pytest.mark.usefixtures("needs_root")


def _tree(root: Path) -> set[str]:
    """Every path in a rootfs (without following symlinks), to prove a run changed nothing."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _gone(pid: int) -> bool:
    return proc_status(pid).get("State", "Z").startswith("Z")


def test_the_leak_detector_sees_a_running_container(lab) -> None:
    """A control for the session check in conftest: a live container *is* reported."""
    before = snapshot()
    with lab.background("sleep", "1000") as bg:
        now = snapshot()
        new_processes = now["process"] - before["process"]
        assert any(p.startswith(f"{bg.pid} sleep 1000") for p in new_processes)
        assert any(p.startswith(f"{bg.proc.pid} ") and "labkit.cli" in p for p in new_processes)
        assert len(now["container record"] - before["container record"]) == 1
    assert leftovers(before, settle=5) == []


def test_a_mix_of_runs_leaves_nothing(lab, busybox_rootfs: Path, rootfs_copy: Path) -> None:
    tree = _tree(busybox_rootfs)
    before = snapshot()
    runs = [
        ((), ("true",), 0),
        (("--ns", "all"), ("true",), 0),
        (("--ns", "none", "--isolation", "chroot"), ("true",), 0),
        (("--isolation", "chroot", "--try-escape"), ("true",), 0),
        (("--try-escape",), ("true",), 0),
        ((), ("labkit-no-such-command",), 127),
        ((), ("/etc/passwd",), 126),
        (("-w", "/labkit-no-such-dir"), ("true",), 125),
        (("--ns", "uts,bogus"), ("true",), 125),
        ((), ("sh", "-c", "mount -t tmpfs x /tmp && exit 5"), 5),
    ]
    for opts, command, code in runs:
        done = lab.run(*command, opts=opts)
        assert done.returncode == code, (opts, command, done.stderr)
    (rootfs_copy / "proc").rmdir()
    (rootfs_copy / "proc").symlink_to("/proc")
    assert lab.run("true", opts=("--rootfs", str(rootfs_copy))).returncode == 125
    assert leftovers(before, settle=5) == []
    assert _tree(busybox_rootfs) == tree


@pytest.fixture
def private_dirs(tmp_path: Path):
    """Own RUN_DIR and STATE_DIR, so reset cannot touch what teammates have running."""
    run_dir = Path(f"/run/labkit/test-cleanup-{os.getpid()}")
    env = {"LABKIT_RUN_DIR": str(run_dir), "LABKIT_STATE_DIR": str(tmp_path / "state")}
    yield run_dir, env
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.parametrize("ns", ["uts,pid,mnt,ipc,net,cgroup", "all"])
def test_reset_kills_what_a_killed_supervisor_left(
    lab, busybox_rootfs: Path, private_dirs, ns: str
) -> None:
    run_dir, env = private_dirs
    victim = None
    try:
        with lab.background(
            "sleep", "1000", opts=("--ns", ns), env=env, rootfs=busybox_rootfs
        ) as bg:
            victim = bg.pid
            start_time = state.process_start_time(victim)
            (record_path,) = (run_dir / "containers").glob("*.json")
            record = json.loads(record_path.read_text())
            assert record["pid"] == victim and record["start_time"] == start_time
            assert record["argv"] == ["sleep", "1000"]

            bg.proc.send_signal(signal.SIGKILL)
            assert bg.proc.wait(timeout=20) == -signal.SIGKILL
            # The container outlives its supervisor, and so does its record.
            assert proc_status(victim).get("Name") == "sleep"
            assert record_path.exists()

            dry = lab.cli("reset", "--dry-run", env=env)
            assert dry.returncode == 0, dry.stderr
            assert f"would remove container    {record_path.stem}" in dry.stdout
            assert f"pid {victim} running: sleep 1000" in dry.stdout
            assert proc_status(victim).get("Name") == "sleep"

            done = lab.cli("reset", env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"removing container    {record_path.stem}" in done.stdout
            assert wait_until(lambda: _gone(victim))
            assert not record_path.exists()

            again = lab.cli("reset", env=env)
            assert again.returncode == 0
            assert "nothing to reset" in again.stdout
    finally:
        if victim and state.process_start_time(victim) == start_time and not _gone(victim):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)


def test_reset_drops_a_stale_record(lab, private_dirs) -> None:
    run_dir, env = private_dirs
    records = run_dir / "containers"
    records.mkdir(parents=True)
    (records / "deadbeef0000.json").write_text(
        json.dumps(
            {"id": "deadbeef0000", "pid": 2**22 + 1, "start_time": 1, "argv": ["x"], "rootfs": "/r"}
        )
    )
    done = lab.cli("reset", env=env)
    assert done.returncode == 0, done.stderr
    assert "stale record" in done.stdout
    assert not (records / "deadbeef0000.json").exists()


def test_shared_state_is_as_we_found_it() -> None:
    """Runs last in this module: our runs neither added records nor left processes."""
    assert all(not name.startswith("deadbeef") for name in container_records())
    assert not [p for p in session_processes() if "sleep 1000" in p]
