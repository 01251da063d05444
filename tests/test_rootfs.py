"""A container's filesystem view: /dev, /proc, /sys, private mounts, chroot vs pivot_root.

Most checks run a busybox container through the CLI and look from inside; the kernel-level
ones call labkit.kernel.rootfs in a child interpreter that first enters a new mount
namespace. Tests that change a rootfs use a private copy (``rootfs_copy``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from conftest import wait_until

from labkit.kernel import masks
from labkit.kernel.mounts import mounts_under
from labkit.kernel.rootfs import DEV_SYMLINKS, DEVICES

pytestmark = pytest.mark.usefixtures("needs_root")

DEV_DIRS = {"pts", "shm", "mqueue"}
EXPECTED_DEV = {d.name for d in DEVICES} | set(DEV_SYMLINKS) | DEV_DIRS

_STAT_DEV = 'for f in /dev/*; do stat -c "%n|%F|%a|%t|%T" "$f"; done'


def _stat_lines(text: str) -> dict[str, tuple[str, str, int, int]]:
    """busybox stat output -> {name: (type, mode, major, minor)}."""
    out = {}
    for line in text.splitlines():
        path, kind, mode, major, minor = line.split("|")
        out[path.removeprefix("/dev/")] = (kind, mode, int(major, 16), int(minor, 16))
    return out


def _busybox_os_release(rootfs: Path) -> str:
    return (rootfs / "etc" / "os-release").read_text()


@pytest.fixture
def canary(tmp_path: Path) -> tuple[Path, str]:
    """A host file with a random marker, outside every rootfs: what an escape proves it can
    read. Never a real host file, so nothing of the host's reaches a log."""
    marker = f"labkit-canary-{secrets.token_hex(8)}"
    path = tmp_path / "canary"
    path.write_text(marker + "\n")
    return path, marker


# -- /dev ----------------------------------------------------------------------------------------


def test_dev_has_exactly_the_safe_devices(lab) -> None:
    done = lab.sh(f"{_STAT_DEV}; for l in /dev/fd /dev/std* /dev/ptmx; do readlink $l; done")
    lines = done.stdout.splitlines()
    entries = _stat_lines("\n".join(lines[: len(EXPECTED_DEV)]))
    assert set(entries) == EXPECTED_DEV
    for device in DEVICES:
        assert entries[device.name] == ("character special file", "666", device.major, device.minor)
    for name in DEV_SYMLINKS:
        assert entries[name][0] == "symbolic link"
    for name in DEV_DIRS:
        assert entries[name][0] == "directory"
    assert entries["shm"][1] == "1777"
    assert lines[len(EXPECTED_DEV) :] == [
        DEV_SYMLINKS[n] for n in ("fd", "stderr", "stdin", "stdout", "ptmx")
    ]


def test_dev_devices_work(lab) -> None:
    done = lab.sh(
        "echo gone > /dev/null && head -c 4 /dev/zero | od -An -tx1 && "
        "head -c 16 /dev/urandom | wc -c && ! echo x 2>/dev/null > /dev/full && echo full-ok && "
        "grep -E ' /dev(/pts|/shm|/mqueue)? ' /proc/mounts | cut -d' ' -f2,3"
    )
    lines = done.stdout.split("\n")
    assert lines[0].split() == ["00", "00", "00", "00"]
    assert lines[1].strip() == "16"
    assert lines[2] == "full-ok"
    assert sorted(lines[3:-1]) == [
        "/dev tmpfs",
        "/dev/mqueue mqueue",
        "/dev/pts devpts",
        "/dev/shm tmpfs",
    ]


def test_no_mqueue_without_an_ipc_namespace(lab) -> None:
    done = lab.sh("ls -A /dev", opts=("--ns", "uts,pid,mnt,net"))
    assert set(done.stdout.split()) == EXPECTED_DEV - {"mqueue"}


def test_dev_in_a_user_namespace_binds_the_host_devices(lab) -> None:
    """mknod is not allowed in a user namespace, so the host's nodes are bind-mounted."""
    done = lab.sh(f"{_STAT_DEV}; grep -c ' /dev/null ' /proc/mounts", opts=("--ns", "all"))
    lines = done.stdout.splitlines()
    entries = _stat_lines("\n".join(lines[:-1]))
    assert set(entries) == EXPECTED_DEV
    for device in DEVICES:
        kind, mode, major, minor = entries[device.name]
        assert (kind, major, minor) == ("character special file", device.major, device.minor)
    assert lines[-1] == "1"  # /dev/null is a bind mount of the host's
    # the contents of /dev/zero prove it is the real device
    assert lab.sh("head -c 3 /dev/zero | od -An -tx1", opts=("--ns", "all")).stdout.split() == [
        "00",
        "00",
        "00",
    ]


def test_rootfs_dev_on_disk_stays_empty(lab, busybox_rootfs: Path) -> None:
    """The devices live in a tmpfs in the container's mount namespace, not in the image."""
    lab.sh("ls /dev/null")
    for name in ("dev", "proc", "sys"):
        assert list((busybox_rootfs / name).iterdir()) == [], name


# -- /proc and /sys ------------------------------------------------------------------------------


def test_proc_shows_only_the_container_processes(lab) -> None:
    done = lab.sh("echo /proc/[0-9]*; echo $$; read comm < /proc/1/comm; echo $comm")
    assert done.stdout.splitlines() == ["/proc/1", "1", "sh"]


def test_proc_without_a_pid_namespace_shows_the_host(lab) -> None:
    done = lab.sh("echo /proc/[0-9]*", opts=("--ns", "uts,mnt,ipc,net"))
    pids = {p.removeprefix("/proc/") for p in done.stdout.split()}
    assert "1" in pids and str(os.getpid()) in pids


def test_sys_class_net_shows_only_lo_in_a_net_namespace(lab) -> None:
    assert lab.sh("ls /sys/class/net", opts=("--network", "none")).stdout.split() == ["lo"]
    # on a network (the default), the one link labkit plugged in as well
    assert lab.sh("ls /sys/class/net").stdout.split() == ["eth0", "lo"]


def test_sys_class_net_without_a_net_namespace_is_the_host(lab) -> None:
    done = lab.sh("ls /sys/class/net", opts=("--ns", "uts,pid,mnt,ipc"))
    assert sorted(done.stdout.split()) == sorted(os.listdir("/sys/class/net"))


def test_sys_is_read_only(lab) -> None:
    done = lab.run("sh", "-c", "echo 1 > /sys/kernel/profiling")
    assert done.returncode != 0
    assert "Read-only file system" in done.stderr


def test_only_the_container_mounts_are_visible_after_pivot_root(lab) -> None:
    """The old root was unmounted: nothing of the host's mount table is left inside."""
    done = lab.sh("cut -d' ' -f5 /proc/self/mountinfo")
    # (no tmpfs on /tmp and /run: the root is writable, a layer of the container's own;
    # the network's three /etc files are bound in, as Docker binds them)
    ours = {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
            "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}  # fmt: skip
    hidden = set(masks.MASKED) | set(masks.READ_ONLY)  # where this kernel has them
    seen = set(done.stdout.split())
    assert ours <= seen, ours - seen
    cgroupfs = {p for p in seen if p == "/sys/fs/cgroup" or p.startswith("/sys/fs/cgroup/")}
    assert seen - ours - cgroupfs <= hidden | {p for p in seen if "thermal_throttle" in p}, (
        seen - ours
    )


# -- mount propagation ---------------------------------------------------------------------------


def test_mounts_inside_do_not_reach_the_host(lab) -> None:
    before = Path("/proc/self/mountinfo").read_text()
    script = "mount -t tmpfs labkit-inner /tmp && touch /tmp/ready && exec sleep 1000"
    # Mounting inside needs CAP_SYS_ADMIN, which a default container does not keep.
    with lab.background("sh", "-c", script, opts=("--cap-add", "SYS_ADMIN")) as bg:
        ready = Path(f"/proc/{bg.pid}/root/tmp/ready")
        assert wait_until(ready.exists), "the container never mounted its tmpfs"
        inside = Path(f"/proc/{bg.pid}/mountinfo").read_text()
        host = Path("/proc/self/mountinfo").read_text()
    assert "labkit-inner" in inside
    assert "labkit-inner" not in host
    assert "/var/lib/labkit/images" not in host.replace(before, "")


@pytest.fixture
def shared_dir(busybox_rootfs: Path):
    """A tmpfs under /run/labkit with *shared* propagation, holding a busybox rootfs copy.

    On this host "/" may be private; a shared parent mount makes the propagation test able
    to fail: without make_mounts_private, the container's mounts would show up here.
    """
    d = Path(f"/run/labkit/test-shared-{os.getpid()}")
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "labkit-test-shared", d], check=True)
    try:
        subprocess.run(["mount", "--make-shared", d], check=True)
        subprocess.run(["cp", "-a", f"{busybox_rootfs}/.", f"{d}/rootfs"], check=True)
        yield d
    finally:
        for target in sorted(_mounts_under(d), reverse=True):
            subprocess.run(["umount", "-l", target], check=False)
        d.rmdir()


def _mounts_under(d: Path) -> list[str]:
    return mounts_under(d)


def test_container_mounts_do_not_propagate_even_from_a_shared_mount(lab, shared_dir: Path) -> None:
    # Control: a plain `unshare -m` keeps the shared propagation, and its mount leaks out.
    probe = shared_dir / "probe"
    probe.mkdir()
    subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "unchanged",
            "mount",
            "-t",
            "tmpfs",
            "labkit-control",
            str(probe),
        ],
        check=True,
    )
    assert str(probe) in _mounts_under(shared_dir), "the control mount did not propagate"
    subprocess.run(["umount", str(probe)], check=True)

    rootfs = shared_dir / "rootfs"
    script = "mount -t tmpfs labkit-inner /tmp && touch /tmp/ready && exec sleep 1000"
    opts = ("--cap-add", "SYS_ADMIN")
    with lab.background("sh", "-c", script, rootfs=rootfs, opts=opts) as bg:
        assert wait_until(Path(f"/proc/{bg.pid}/root/tmp/ready").exists)
        assert _mounts_under(shared_dir) == [str(shared_dir)]


# -- chroot and its escape -----------------------------------------------------------------------


def test_chroot_escape_works_under_chroot(lab, busybox_rootfs: Path, canary) -> None:
    path, marker = canary
    done = lab.run(
        "cat",
        str(path),
        opts=("--ns", "none", "--isolation", "chroot", "--try-escape"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == marker + "\n"
    assert not (busybox_rootfs / "labkit-escape").exists()


def test_chroot_on_a_moved_root_holds_like_runcs_no_pivot(lab, busybox_rootfs: Path) -> None:
    """With a mount namespace, --isolation chroot moves the root's mount onto "/" first (as
    runc --no-pivot does): ".." from the top comes back down into it, so the escape stays."""
    done = lab.run("cat", "/etc/os-release", opts=("--isolation", "chroot", "--try-escape"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == _busybox_os_release(busybox_rootfs)
    assert not (busybox_rootfs / "labkit-escape").exists()


def test_chroot_escape_fails_under_pivot_root(lab, busybox_rootfs: Path) -> None:
    done = lab.run("cat", "/etc/os-release", opts=("--try-escape",))
    assert done.returncode == 0, done.stderr
    assert done.stdout == _busybox_os_release(busybox_rootfs)
    assert not (busybox_rootfs / "labkit-escape").exists()


def test_chroot_into_and_escape_at_kernel_level(lab, rootfs_copy: Path, canary) -> None:
    path, marker = canary
    out = lab.py(f"""
        from labkit.kernel import masks, rootfs
        rootfs.chroot_into({str(rootfs_copy)!r})
        inside = open("/etc/os-release").read()
        cwd = os.getcwd()
        seen_inside = os.path.exists({str(path)!r})
        rootfs.chroot_escape()
        emit(inside=inside, cwd=cwd, seen_inside=seen_inside, escaped=open({str(path)!r}).read())
    """)
    assert out["inside"] == _busybox_os_release(rootfs_copy)
    assert out["cwd"] == "/"
    assert out["seen_inside"] is False
    assert out["escaped"] == marker + "\n"
    assert (rootfs_copy / "tmp/labkit-escape").is_dir()  # made where a container may write


def test_pivot_into_at_kernel_level(lab, rootfs_copy: Path) -> None:
    out = lab.py(f"""
        from pathlib import Path
        from labkit.kernel import rootfs, syscalls
        syscalls.unshare(syscalls.CLONE_NEWNS)
        rootfs.make_mounts_private()
        rootfs.bind_onto_itself({str(rootfs_copy)!r})
        rootfs.pivot_into({str(rootfs_copy)!r})
        top = sorted(os.listdir("/"))
        rootfs.mount_proc(Path("/"))
        mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
        rootfs.chroot_escape()
        emit(top=top, mounts=mounts, after_escape=open("/etc/os-release").read())
    """)
    assert out["top"] == sorted(set(os.listdir(rootfs_copy)) - {"labkit-escape"})
    assert out["mounts"] == ["/", "/proc"]  # the host's mounts went with the old root
    assert out["after_escape"] == _busybox_os_release(rootfs_copy)


def test_mount_proc_sys_dev_at_kernel_level(lab, rootfs_copy: Path) -> None:
    out = lab.py(f"""
        from pathlib import Path
        from labkit.kernel import rootfs, syscalls
        syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWNET)
        rootfs.make_mounts_private()
        root = Path({str(rootfs_copy)!r})
        rootfs.mount_proc(root)
        rootfs.mount_sys(root)
        rootfs.mount_dev(root, can_mknod=False, mqueue=False)
        dev = {{p.name: (p.is_symlink(), p.is_char_device()) for p in (root / "dev").iterdir()}}
        emit(dev=dev, net=os.listdir(root / "sys/class/net"),
             proc_self=os.path.exists(root / "proc/self/status"))
    """)
    assert set(out["dev"]) == EXPECTED_DEV - {"mqueue"}
    for device in DEVICES:
        assert out["dev"][device.name] == [False, True]
    assert out["net"] == ["lo"]
    assert out["proc_self"] is True
    for name in ("dev", "proc", "sys"):  # all of it was in the child's mount namespace
        assert list((rootfs_copy / name).iterdir()) == []


# -- hostile rootfs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["proc", "sys", "dev"])
def test_a_symlinked_mount_point_in_the_rootfs_is_refused(lab, rootfs_copy: Path, tmp_path, name):
    """A rootfs whose /proc points elsewhere must not get a mount on the host's path."""
    decoy = tmp_path / f"decoy-{name}"
    decoy.mkdir()
    (rootfs_copy / name).rmdir()
    (rootfs_copy / name).symlink_to(decoy)
    done = lab.run("true", opts=("--rootfs", str(rootfs_copy)))
    assert done.returncode == 125
    assert "refusing to mount on" in done.stderr and "a symlink" in done.stderr
    assert done.stderr.startswith("labkit: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert list(decoy.iterdir()) == []
    assert not os.path.ismount(decoy)


def test_kernel_mount_proc_refuses_a_symlink(lab, rootfs_copy: Path, tmp_path) -> None:
    (rootfs_copy / "proc").rmdir()
    (rootfs_copy / "proc").symlink_to("/proc")
    out = lab.py(f"""
        from pathlib import Path
        from labkit.kernel import rootfs, syscalls
        syscalls.unshare(syscalls.CLONE_NEWNS)
        rootfs.make_mounts_private()
        emit(err=attempt(rootfs.mount_proc, Path({str(rootfs_copy)!r})))
    """)
    assert "refusing to mount on" in out["err"]["str"]
    assert "symlink" in out["err"]["str"]
