"""Containers leave nothing behind; what a killed supervisor leaves, ``labkit reset`` removes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
from conftest import proc_status, wait_until
from leakcheck import leftovers, snapshot

from labkit.kernel.procfs import start_time

pytestmark = pytest.mark.usefixtures("needs_root", "network_up")


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
    """A control for the leak check: a live container *is* reported, and then it is not."""
    before = snapshot()
    with lab.background("sleep", "1000") as bg:
        new = leftovers(before, settle=0)
        assert any(f"pid={bg.pid} " in line and line.startswith("pidns: ") for line in new)
        assert any(line.startswith(f"process: {bg.proc.pid} ") for line in new)
        assert len([line for line in new if line.startswith("labkit: record ")]) == 1
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
        (("-w", "/labkit-no-such-dir"), ("true",), 0),  # made in its own layer, as Docker does
        (("-u", "labkit-no-such-user"), ("true",), 125),
        (("--ns", "uts,bogus"), ("true",), 125),
        (("--cap-add", "SYS_ADMIN"), ("sh", "-c", "mount -t tmpfs x /tmp && exit 5"), 5),
        (("--privileged",), ("true",), 0),
        (("--ns", "all", "--privileged"), ("true",), 0),
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
def private_state(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A STATE_DIR of its own, so reset cannot touch what teammates have running."""
    return tmp_path / "state", {"LABKIT_STATE_DIR": str(tmp_path / "state")}


@pytest.mark.parametrize("ns", ["uts,pid,mnt,ipc,net,cgroup", "all"])
def test_reset_kills_what_a_killed_supervisor_left(
    lab, busybox_rootfs: Path, private_state, ns: str
) -> None:
    state, env = private_state
    victim = started = None
    try:
        with lab.background(
            "sleep", "1000", opts=("--ns", ns), env=env, rootfs=busybox_rootfs
        ) as bg:
            victim = bg.pid
            started = start_time(victim)
            (record_path,) = (state / "containers").glob("*/record.json")
            record = json.loads(record_path.read_text())
            assert record["process"][:2] == [victim, started]
            assert record["config"]["argv"] == ["sleep", "1000"]
            assert record["supervisor"][0] == bg.proc.pid
            name = record["name"]

            bg.proc.send_signal(signal.SIGKILL)
            assert bg.proc.wait(timeout=20) == -signal.SIGKILL
            # The container outlives its supervisor, and so does its record.
            assert proc_status(victim).get("Name") == "sleep"
            assert record_path.exists()

            dry = lab.cli("reset", "--dry-run", env=env)
            assert dry.returncode == 0, dry.stderr
            assert f"would remove container    {name}" in dry.stdout
            assert f"pid {victim} running: sleep 1000" in dry.stdout
            assert proc_status(victim).get("Name") == "sleep"

            done = lab.cli("reset", env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"removing container    {name}" in done.stdout
            assert wait_until(lambda: _gone(victim))
            assert not record_path.parent.exists()

            again = lab.cli("reset", env=env)
            assert again.returncode == 0
            assert "nothing to reset" in again.stdout
    finally:
        if victim and start_time(victim) == started and not _gone(victim):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)


def test_reset_drops_a_stale_record(lab, private_state) -> None:
    state, env = private_state
    directory = state / "containers" / ("d" * 64)
    directory.mkdir(parents=True)
    stale = {"id": "d" * 64, "name": "deadbeef", "config": {"argv": ["x"]}, "supervisor": None,
             "status": "running", "process": [2**22 + 1, 1, "boot"]}  # fmt: skip
    (directory / "record.json").write_text(json.dumps(stale))
    done = lab.cli("reset", env=env)
    assert done.returncode == 0, done.stderr
    assert "removing container    deadbeef  (running, no process" in done.stdout
    assert not directory.exists()
