"""``labkit reset`` removes exactly what labkit made, against real processes and mounts.

The test points ``paths.RUN_DIR`` at /run/labkit/test-reset-<pid> and ``paths.STATE_DIR`` at
a temp dir, so it never touches what teammates or notebooks have running in the shared dirs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import paths, reset
from labkit.kernel import mounts, syscalls
from labkit.kernel.procfs import ProcessRef, boot_id, start_time
from labkit.runtime.records import Record


def _mounted(path: Path) -> bool:
    return str(path) in mounts.mounts_under(path)


def _mount_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "labkit-test", str(path)], check=True)


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = Path("/run/labkit") / f"test-reset-{os.getpid()}"
    run.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "state"
    monkeypatch.setattr(paths, "RUN_DIR", run)
    monkeypatch.setattr(paths, "STATE_DIR", state)
    monkeypatch.setattr(paths, "IMAGES_DIR", state / "images")
    procs: list[subprocess.Popen] = []
    yield {"run": run, "state": state, "tmp": tmp_path, "procs": procs}
    for p in procs:
        p.kill()
        p.wait()
    for root in (run, tmp_path):
        for mnt in mounts.mounts_under(root):
            syscalls.umount_detach(mnt)
    mounts.remove_tree(run)


def _record(state: Path, name: str, pid: int, started: int, argv: list[str]) -> Path:
    """A record as the supervisor writes it, for a container whose PID 1 is ``pid``."""
    directory = state / "containers" / name
    directory.mkdir(parents=True, exist_ok=True)
    record = Record(name, name, {"argv": argv}, None, status="running")
    record.process = ProcessRef(pid, started, boot_id())
    record.save()
    return directory


def test_reset_removes_exactly_what_labkit_made(dirs: dict) -> None:
    run, state, tmp, procs = dirs["run"], dirs["state"], dirs["tmp"], dirs["procs"]
    # (a) a live container process, recorded with its start time
    victim = subprocess.Popen(["sleep", "60"])
    bystander = subprocess.Popen(["sleep", "60"])
    procs += [victim, bystander]
    live = _record(state, "live", victim.pid, start_time(victim.pid), ["sleep", "60"])
    # a stale record: its process exited long ago
    gone = _record(state, "gone", 999_999_999, 12345, ["true"])
    # pid reuse: a record naming the bystander's pid with another start time must not kill it
    reused = _record(state, "reused", bystander.pid, start_time(bystander.pid) + 1, [])
    # a container directory whose record cannot be read (a crash while it was first written)
    (state / "containers" / "broken").mkdir()
    os.utime(state / "containers" / "broken", (time.time() - 60, time.time() - 60))
    # ... and one being created right now by another labkit: not touched
    (state / "containers" / "being-made").mkdir()
    # (b) mounts inside labkit dirs, nested, plus one outside that must survive
    inner = run / "c1" / "rootfs"
    _mount_tmpfs(inner)
    _mount_tmpfs(inner / "proc")
    _mount_tmpfs(state / "images" / "mnt-under-state")
    outside = tmp / "not-labkit"
    _mount_tmpfs(outside)
    # (c) an interrupted image build; and a finished image, which is data and must stay
    (state / "images" / ".tmp-busybox-424242" / "rootfs").mkdir(parents=True)
    (state / "images" / "busybox" / "rootfs").mkdir(parents=True)
    # (d) a file under RUN_DIR that belongs to another labkit process (JupyterLab's pid file,
    #     the VM harness's results) stays
    (run / "jupyter.pid").write_text("1\n")

    kinds = {(i.kind, i.name) for i in reset.plan()}
    assert {("container", "live"), ("container", "gone"), ("container", "reused")} <= kinds
    assert ("record", "broken") in kinds
    assert not any(name.startswith("being-ma") for _, name in kinds)
    assert ("mount", str(inner / "proc")) in kinds
    assert ("mount", str(outside)) not in kinds
    assert ("image-tmp", ".tmp-busybox-424242") in kinds
    assert not any(k == "image" for k, _ in kinds)
    planned = [i.name for i in reset.plan() if i.kind == "mount"]
    assert planned.index(str(inner / "proc")) < planned.index(str(inner)), "deepest first"

    assert reset.main(dry_run=True) == 0
    assert victim.poll() is None and _mounted(inner) and live.exists()

    assert reset.main() == 0
    assert victim.wait(timeout=5) == -9
    assert bystander.poll() is None, "an unrecorded / reused-pid process was killed"
    for rec in (live, gone, reused, state / "containers" / "broken"):
        assert not rec.exists()
    assert (state / "containers" / "being-made").is_dir(), "a record being written was removed"
    assert not mounts.mounts_under(run) and not mounts.mounts_under(state)
    assert _mounted(outside), "a mount outside labkit's dirs was touched"
    assert not (state / "images" / ".tmp-busybox-424242").exists()
    assert (state / "images" / "busybox" / "rootfs").is_dir(), "images are data: kept"
    assert (run / "jupyter.pid").exists(), "a file reset does not own was removed"
    assert reset.plan() == []


def test_images_only_go_with_the_images_flag(dirs: dict) -> None:
    images = dirs["state"] / "images"
    (images / "busybox" / "rootfs").mkdir(parents=True)
    (images / "busybox" / "image.json").write_text("{}")
    assert not [i for i in reset.plan() if i.kind == "image"]
    planned = [i for i in reset.plan(images=True) if i.kind == "image"]
    assert [i.name for i in planned] == ["busybox"]
    # docker images labkit/* are global and shared with teammates: only removed via the CLI
    assert reset.apply(planned) == []
    assert not (images / "busybox").exists()


def test_module_entry_point_dry_run(dirs: dict) -> None:
    env = dict(os.environ, LABKIT_RUN_DIR=str(dirs["run"]), LABKIT_STATE_DIR=str(dirs["state"]))
    gone = _record(dirs["state"], "gone", 999_999_999, 1, [])
    res = subprocess.run(
        [sys.executable, "-m", "labkit.reset", "--dry-run"],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "would remove container" in res.stdout and "gone" in res.stdout
    assert gone.exists()
