"""Giving a process its own root filesystem: chroot, and the mount-namespace way (pivot_root).

chroot only changes how one process resolves "/", so a root process can walk back out
(see ``chroot_escape``). pivot_root swaps the root *mount* of a mount namespace; once the
old root is unmounted there is nothing left to walk back to.

Everything here changes the calling process, so it runs in labkit's helper process,
never in a Jupyter kernel.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from labkit.kernel import syscalls
from labkit.kernel.syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC


@dataclass(frozen=True)
class Device:
    """A character device every container gets, with the numbers from devices.txt."""

    name: str
    major: int
    minor: int


#: The same six nodes runc, crun and bubblewrap create.
DEVICES = (
    Device("null", 1, 3),
    Device("zero", 1, 5),
    Device("full", 1, 7),
    Device("random", 1, 8),
    Device("urandom", 1, 9),
    Device("tty", 5, 0),
)

DEV_SYMLINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


def chroot_into(rootfs: str | os.PathLike[str]) -> None:
    """Make ``rootfs`` this process's "/" (and cwd), the way chroot(1) does."""
    os.chroot(rootfs)
    os.chdir("/")


def chroot_escape(max_depth: int = 64) -> None:
    """The classic escape from a chroot, for a process that is root inside one.

    chroot() into a subdirectory *without* changing into it leaves the cwd outside the
    new root; ".." from there is never stopped at the root, so climbing and chrooting to
    "." lands on the host's real root. Under pivot_root there is no host root left in
    the mount namespace, so the same steps end where they started.
    """
    hideout = "labkit-escape"
    os.makedirs(hideout, exist_ok=True)
    os.chroot(hideout)
    for _ in range(max_depth):
        os.chdir("..")
    os.chroot(".")
    os.chdir("/")


def make_mounts_private() -> None:
    """Stop mount events from flowing between this mount namespace and the host's.

    On systemd hosts "/" is shared: without this, mounts made for the container appear
    on the host, and pivot_root fails with EINVAL.
    """
    syscalls.mount(None, "/", None, MS_REC | syscalls.MS_PRIVATE)


def bind_onto_itself(path: str | os.PathLike[str]) -> None:
    """pivot_root needs new_root to be a mount point; a bind mount of a dir onto itself is one."""
    syscalls.mount(path, path, None, MS_BIND | MS_REC)


def _target(rootfs: Path, name: str) -> Path:
    """A mount point inside rootfs, refusing symlinks that could point the mount at the host."""
    target = rootfs / name
    if target.is_symlink():
        raise OSError(f"refusing to mount on {target}: it is a symlink")
    target.mkdir(parents=True, exist_ok=True)
    return target


def mount_proc(rootfs: Path) -> None:
    """A fresh procfs: in a new PID namespace it lists only the container's processes."""
    syscalls.mount("proc", _target(rootfs, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_sys(rootfs: Path) -> None:
    """A read-only sysfs: in a new network namespace /sys/class/net shows only its links."""
    syscalls.mount(
        "sysfs", _target(rootfs, "sys"), "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY
    )


def mount_dev(rootfs: Path, can_mknod: bool = True, mqueue: bool = True) -> None:
    """A fresh /dev: a tmpfs holding only the six safe devices, pts, shm and mqueue.

    In a user namespace mknod is not allowed (``can_mknod=False``), so the host's device
    files are bind-mounted instead, as runc does. /dev/mqueue shows the queues of the
    IPC namespace, so it is only mounted for a container with its own (``mqueue``).
    """
    dev = _target(rootfs, "dev")
    syscalls.mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for device in DEVICES:
        node = dev / device.name
        if can_mknod:
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(device.major, device.minor))
            os.chmod(node, 0o666)  # mknod is subject to the umask
        else:
            node.touch()
            syscalls.mount(f"/dev/{device.name}", node, None, MS_BIND)
    for name, points_to in DEV_SYMLINKS.items():
        os.symlink(points_to, dev / name)
    syscalls.mount(
        "devpts",
        _target(dev, "pts"),
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    syscalls.mount(
        "shm",
        _target(dev, "shm"),
        "tmpfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        "mode=1777,size=65536k",
    )
    if mqueue:
        syscalls.mount("mqueue", _target(dev, "mqueue"), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def pivot_into(rootfs: str | os.PathLike[str]) -> None:
    """Make ``rootfs`` the root mount of this mount namespace and drop the old root.

    ``pivot_root(".", ".")`` stacks the old root on top of the new one; unmounting "."
    then removes the old root, so no path leads back to the host's files.
    """
    os.chdir(rootfs)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
