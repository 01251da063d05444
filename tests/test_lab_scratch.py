"""labkit.lab.scratch: private copies of an image, removed however their maker ends (even
SIGKILL), and never while something is mounted inside."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PYTHON, REPO

from labkit.kernel import mounts
from labkit.lab import scratch

pytestmark = pytest.mark.usefixtures("needs_root")


def _gone(path: Path, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_temporary_copy_is_the_image_and_goes_after_the_block(busybox_rootfs: Path) -> None:
    with scratch.temporary_copy("busybox", prefix="labkit-test-") as copy:
        assert sorted(os.listdir(copy)) == sorted(os.listdir(busybox_rootfs))
        assert os.readlink(copy / "bin/sh") == os.readlink(busybox_rootfs / "bin/sh")
        assert copy.parent.name.startswith("labkit-test-")
        (copy / "tmp/written").write_text("the image itself is untouched")
    assert not copy.parent.exists()
    assert not (busybox_rootfs / "tmp/written").exists()


def test_only_labkit_names_and_only_its_own_copies() -> None:
    with pytest.raises(ValueError, match="labkit"):
        scratch.image_copy("busybox", prefix="nb01-")
    with pytest.raises(ValueError, match="not a copy"):
        scratch.remove("/tmp")


def test_a_copy_is_removed_when_its_maker_is_killed() -> None:
    script = (
        "import sys, time\n"
        "from labkit.lab import scratch\n"
        "print(scratch.image_copy('busybox', prefix='labkit-test-'), flush=True)\n"
        "time.sleep(60)\n"
    )
    maker = subprocess.Popen([PYTHON, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        copy = Path(maker.stdout.readline().strip())
        assert (copy / "bin/busybox").is_file()
    finally:
        maker.send_signal(signal.SIGKILL)  # no atexit, no finally: only the guard is left
        maker.wait()
        maker.stdout.close()
    assert _gone(copy.parent), f"{copy.parent} outlived the process that made it"


def test_asking_again_replaces_the_copy_and_remove_stops_the_guard() -> None:
    first = scratch.image_copy("busybox", prefix="labkit-test-again-")
    second = scratch.image_copy("busybox", prefix="labkit-test-again-")
    guard = scratch._made[second].guard
    assert not first.parent.exists() and second.exists()
    assert scratch.remove(second) and not second.parent.exists()
    assert guard is not None and guard.poll() == 0


def test_nothing_is_deleted_while_something_is_mounted_inside(tmp_path: Path) -> None:
    copy = scratch.image_copy("busybox", prefix="labkit-test-mounted-")
    target = copy / "tmp"
    subprocess.run(["mount", "-t", "tmpfs", "labkit-test-scratch", str(target)], check=True)
    try:
        (target / "file-in-the-mount").write_text("must survive")
        assert scratch.remove(copy) is False
        assert (target / "file-in-the-mount").exists()
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert scratch.remove(copy) is True
    assert not copy.parent.exists()
    assert "labkit-test-scratch" not in Path("/proc/self/mounts").read_text()


def test_the_guard_leaves_a_copy_with_a_mount_inside_alone(tmp_path: Path) -> None:
    target = tmp_path / "labkit-test-guarded"
    (target / "tmp").mkdir(parents=True)
    read, write = os.pipe()
    guard = subprocess.Popen(
        [sys.executable, "-I", "-S", str(scratch._GUARD), str(read), str(target)],
        pass_fds=(read,),
    )
    os.close(read)
    subprocess.run(["mount", "-t", "tmpfs", "labkit-test-guard", str(target / "tmp")], check=True)
    try:
        os.close(write)  # as if the maker died
        assert guard.wait(timeout=10) == 0
        assert target.exists(), "the guard deleted a directory with a mount inside"
    finally:
        subprocess.run(["umount", str(target / "tmp")], check=True)
    read, write = os.pipe()
    guard = subprocess.Popen(
        [sys.executable, "-I", "-S", str(scratch._GUARD), str(read), str(target)],
        pass_fds=(read,),
    )
    os.close(read)
    os.close(write)
    assert guard.wait(timeout=10) == 0 and not target.exists()


def test_device_nodes_and_fifos_are_made_again_not_read(tmp_path: Path) -> None:
    """copy_tree (which copies use): reading /dev/zero or /dev/full as a file never ends."""
    source = tmp_path / "source"
    (source / "dev").mkdir(parents=True)
    for name in ("null", "zero", "full"):
        st = os.stat(f"/dev/{name}")
        os.mknod(source / "dev" / name, st.st_mode, st.st_rdev)
    os.mkfifo(source / "fifo", 0o640)
    (source / "file").write_text("plain")
    mounts.copy_tree(source, tmp_path / "copy")
    for name in ("null", "zero", "full"):
        before, after = os.stat(f"/dev/{name}"), os.stat(tmp_path / "copy" / "dev" / name)
        assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    fifo = os.stat(tmp_path / "copy" / "fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640
    assert (tmp_path / "copy" / "file").read_text() == "plain"
