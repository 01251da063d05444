"""Base images, built for real (as root) into a private state dir.

``labkit.paths`` reads LABKIT_STATE_DIR at import time, and ``labkit.images.store`` looks its
directories up on ``paths`` at call time, so patching the module attributes isolates a test
from the shared /var/lib/labkit that teammates and notebooks use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from labkit import docker, paths
from labkit.errors import LabkitError
from labkit.images import busybox, debian, store
from labkit.kernel import mounts, syscalls

REAL_IMAGES_DIR = paths.IMAGES_DIR


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private STATE_DIR/IMAGES_DIR for one test."""
    monkeypatch.setattr(paths, "STATE_DIR", tmp_path / "state")
    monkeypatch.setattr(paths, "IMAGES_DIR", tmp_path / "state" / "images")
    yield paths.IMAGES_DIR
    for mnt in mounts.mounts_under(tmp_path):
        syscalls.umount_detach(mnt)


def _meta(images: Path, name: str) -> dict:
    return json.loads((images / name / "image.json").read_text())


def test_busybox_build_gives_a_working_rootfs(state: Path) -> None:
    t0 = time.monotonic()
    rootfs = store.build("busybox")
    elapsed = time.monotonic() - t0
    assert rootfs == state / "busybox" / "rootfs"
    assert elapsed < 30, f"busybox build took {elapsed:.1f}s"
    out = subprocess.run(
        ["chroot", str(rootfs), "/bin/sh", "-c", "echo hi"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hi\n"
    # applets are symlinks to the one static binary, at the paths busybox lists
    assert os.readlink(rootfs / "bin" / "sh") == "/bin/busybox"
    assert (rootfs / "usr" / "bin" / "env").is_symlink()
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    for d in ("proc", "sys", "dev", "etc", "root", "var", "run", "sbin", "usr/sbin"):
        assert (rootfs / d).is_dir(), d
    assert "root:x:0:0" in (rootfs / "etc" / "passwd").read_text()
    assert ":65534:" in (rootfs / "etc" / "group").read_text()
    assert "labkit busybox" in (rootfs / "etc" / "os-release").read_text()
    # id resolves uid 0 through the image's own /etc/passwd (applets live in usr/bin too)
    who = subprocess.run(
        ["chroot", str(rootfs), "/usr/bin/id", "-un"], capture_output=True, text=True
    )
    assert who.stdout.strip() == "root"
    meta = _meta(state, "busybox")
    assert meta["name"] == "busybox"
    assert meta["files"] > 200 and 500_000 < meta["size_bytes"] < 10_000_000
    assert "busybox" in meta["source"]
    listed = {i["name"]: i for i in store.list_images()}
    assert listed["busybox"]["rootfs"] == str(rootfs)
    assert listed["busybox"]["created"] == meta["created"]


def test_build_is_idempotent_and_force_rebuilds(state: Path) -> None:
    store.build("busybox")
    first = (state / "busybox" / "image.json").read_text()
    inode = (state / "busybox" / "rootfs").stat().st_ino
    store.build("busybox")
    assert (state / "busybox" / "image.json").read_text() == first
    assert (state / "busybox" / "rootfs").stat().st_ino == inode
    store.build("busybox", force=True)
    assert _meta(state, "busybox")["created"] != json.loads(first)["created"]
    assert not list(state.glob(".tmp-*"))


def test_interrupted_build_is_never_taken_for_an_image(state: Path) -> None:
    # a crash mid-build leaves a temp dir; a crash before rename leaves no image.json
    junk = state / f".tmp-busybox-{os.getpid()}" / "rootfs"
    junk.mkdir(parents=True)
    (junk / "half-written").write_text("x")
    half = state / "busybox" / "rootfs"
    half.mkdir(parents=True)
    with pytest.raises(LabkitError):
        store.image_rootfs("busybox")
    assert store.list_images() == []
    rootfs = store.build("busybox")
    assert not list(state.glob(".tmp-*")), "stale temp dir was not cleaned"
    assert (rootfs / "bin" / "busybox").is_file()
    assert store.image_rootfs("busybox") == rootfs


def test_failed_build_leaves_no_state(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(busybox, "BUSYBOX_BINARY", "/nonexistent/busybox")
    with pytest.raises(LabkitError) as err:
        store.build("busybox")
    assert "apt-get install busybox-static" in str(err.value)
    # a dynamically linked binary would not run inside the image: refused too
    monkeypatch.setattr(busybox, "BUSYBOX_BINARY", shutil.which("ls"))
    with pytest.raises(LabkitError, match="dynamically linked"):
        store.build("busybox")
    assert not (state / "busybox").exists()
    assert not list(state.glob(".tmp-*"))


def test_image_rootfs_error_says_how_to_build(state: Path) -> None:
    with pytest.raises(LabkitError) as err:
        store.image_rootfs("debian")
    assert err.value.problem == "image 'debian' is not built"
    assert err.value.render({"images_build": "labkit images build"}).endswith(
        "(fix: build it: labkit images build debian)"
    )


def test_unknown_image_names_the_known_ones(state: Path) -> None:
    for call in (store.build, store.image_rootfs, store.image_meta, docker.import_image):
        with pytest.raises(LabkitError) as err:
            call("alpine")
        assert "alpine" in str(err.value)
        assert "busybox" in str(err.value) and "debian" in str(err.value)


def test_remove_tree_detaches_mounts_first(tmp_path: Path) -> None:
    """rmtree into a mounted filesystem would delete what is mounted; remove_tree must not."""
    victim = tmp_path / "victim"
    (victim / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "lk-test", str(victim / "mnt")], check=True)
    (victim / "mnt" / "file").write_text("x")
    mounts.remove_tree(victim)
    assert not victim.exists()
    assert not mounts.mounts_under(tmp_path)


def test_stale_builds_skips_a_build_in_progress(state: Path) -> None:
    import fcntl

    state.mkdir(parents=True)
    dead, busy = state / ".tmp-busybox-1", state / ".tmp-debian-2"
    dead.mkdir()
    busy.mkdir()
    with open(state / ".lock-debian", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert store.stale_builds() == [dead]
    assert store.stale_builds() == [dead, busy]


def test_host_mirror_is_a_debian_url() -> None:
    mirror = debian.host_debian_mirror()
    assert mirror.startswith(("http://", "https://")) and not mirror.endswith("/")
    assert "security" not in mirror


def test_debian_image_if_built_works() -> None:
    """The debian build takes about a minute, so tests only check the shared cached one."""
    d = REAL_IMAGES_DIR / "debian"
    if not (d / "image.json").is_file():
        pytest.fail("debian image not built: run labkit images build debian")
    rootfs = d / "rootfs"
    assert subprocess.run(["chroot", str(rootfs), "/bin/true"]).returncode == 0
    assert (rootfs / "usr" / "bin" / "perl").exists(), "perl-base missing: not a minbase system"
    assert not list((rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"))
    lists = rootfs / "var" / "lib" / "apt" / "lists"
    assert not [p for p in lists.iterdir() if p.is_file() and p.name != "lock"]
    assert (rootfs / "etc" / "hostname").read_text() == "labkit\n"
    meta = json.loads((d / "image.json").read_text())
    assert meta["name"] == "debian" and "debootstrap" in meta["source"]
