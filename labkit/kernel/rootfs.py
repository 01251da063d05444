"""Giving a process its own root filesystem: chroot, and the mount-namespace way (pivot_root).

chroot only changes how one process resolves "/", so a root process can walk back out
(see ``chroot_escape``). pivot_root swaps the root *mount* of a mount namespace; once the
old root is unmounted there is nothing left to walk back to.

The image a container runs on is shared by every container of that image, so the container
must not change it: the root is an overlay (``labkit.kernel.overlay``) of the image's
read-only layers and a writable layer of the container's own, as Docker's overlay2 does; a
directory of your own is bind-mounted as it is. A read-only root (Docker's flag of that
name) is a read-only remount (``make_readonly``), with fresh tmpfs mounts where programs
expect to write (/tmp, /run). labkit never creates anything inside an image: the
directories it mounts over are there, or made in a layer of the container's own.

Everything here changes the calling process, so it runs in labkit's helper process,
never in a Jupyter kernel.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

from labkit.kernel import syscalls
from labkit.kernel.stage import stage
from labkit.kernel.syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC


class Device(NamedTuple):
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

#: Directories of the image that get a mount of their own in a mount namespace.
MOUNT_POINTS = ("proc", "sys", "dev")
#: Writable scratch space on a read-only root, where the directory exists in the image.
SCRATCH = {"tmp": "mode=1777", "run": "mode=755"}

FIX_MOUNTS = "check the root filesystem has proc, sys and dev directories; then {doctor}"


def missing_mount_points(rootfs: str | os.PathLike[str]) -> list[str]:
    """The MOUNT_POINTS that are not plain directories in ``rootfs`` (a symlink could point
    a mount at the host's files, so it does not count)."""
    root = Path(rootfs)
    return [n for n in MOUNT_POINTS if (root / n).is_symlink() or not (root / n).is_dir()]


@stage("chroot", fix="check the root filesystem is a directory on a local filesystem")
def chroot_into(rootfs: str | os.PathLike[str]) -> None:
    """Make ``rootfs`` this process's "/" (and cwd), the way chroot(1) does."""
    os.chroot(rootfs)
    os.chdir("/")


@stage("escape", fix="the escape needs a writable /tmp inside the container")
def chroot_escape(hideout: str = "tmp/labkit-escape", max_depth: int = 64) -> None:
    """The classic escape from a chroot, for a process that is root inside one.

    chroot() into a subdirectory *without* changing into it leaves the cwd outside the
    new root; ".." from there is never stopped at the root, so climbing and chrooting to
    "." lands on the host's real root. Under pivot_root there is no host root left in
    the mount namespace, so the same steps end where they started.
    """
    os.makedirs(hideout, exist_ok=True)
    os.chroot(hideout)
    for _ in range(max_depth):
        os.chdir("..")
    os.chroot(".")
    os.chdir("/")


@stage("private mounts", fix=FIX_MOUNTS)
def make_mounts_private() -> None:
    """Stop mount events from flowing between this mount namespace and the host's.

    On systemd hosts "/" is shared: without this, mounts made for the container appear
    on the host, and pivot_root fails with EINVAL.
    """
    syscalls.mount(None, "/", None, MS_REC | syscalls.MS_PRIVATE)


@stage("bind the root", fix=FIX_MOUNTS)
def bind_onto_itself(path: str | os.PathLike[str]) -> None:
    """pivot_root needs new_root to be a mount point; a bind mount of a dir onto itself is one."""
    syscalls.mount(path, path, None, MS_BIND | MS_REC)


def _target(rootfs: Path, name: str, create: bool = False) -> Path:
    """A mount point inside rootfs, refusing symlinks that could point the mount at the host.

    Only labkit's own tmpfs (/dev) gets directories created in it (``create``).
    """
    target = rootfs / name
    if target.is_symlink():
        raise OSError(f"refusing to mount on {target}: it is a symlink")
    if create:
        target.mkdir(exist_ok=True)
    return target


@stage("mount /proc", fix=FIX_MOUNTS)
def mount_proc(rootfs: Path, bind_if_denied: bool = False) -> None:
    """A fresh procfs: in a new PID namespace it lists only the container's processes.

    Only the user namespace that owns the PID namespace may mount a fresh one. A container
    with a user namespace of its own but the host's PID namespace may not (EPERM), so with
    ``bind_if_denied`` it gets a recursive bind of the host's /proc instead, as runc does.
    """
    try:
        syscalls.mount("proc", _target(rootfs, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except PermissionError:
        if not bind_if_denied:
            raise
        syscalls.mount("/proc", rootfs / "proc", None, MS_BIND | MS_REC)


@stage("mount /sys", fix=FIX_MOUNTS)
def mount_sys(rootfs: Path, bind_if_denied: bool = False, read_only: bool = True) -> None:
    """A read-only sysfs: in a new network namespace /sys/class/net shows only its links.
    (Same ownership rule as /proc, with the network namespace.) Writable only if
    privileged, as under Docker."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if read_only else 0)
    try:
        syscalls.mount("sysfs", _target(rootfs, "sys"), "sysfs", flags)
    except PermissionError:
        if not bind_if_denied:
            raise
        syscalls.mount("/sys", rootfs / "sys", None, MS_BIND | MS_REC)


@stage("mount /dev", fix=FIX_MOUNTS)
def mount_dev(
    rootfs: Path, can_mknod: bool = True, mqueue: bool = True, host_devices: bool = False
) -> None:
    """A fresh /dev: a tmpfs holding only the six safe devices, pts, shm and mqueue.

    In a user namespace mknod is not allowed (``can_mknod=False``), so the host's device
    files are bind-mounted instead, as runc does. /dev/mqueue shows the queues of the
    IPC namespace, so it is only mounted for a container with its own (``mqueue``).
    A privileged container also gets a node for every device of the host (``host_devices``).
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
    if host_devices and can_mknod:
        _copy_host_devices(dev)
    pts_options = "newinstance,ptmxmode=0666,mode=0620"
    syscalls.mount(
        "devpts", _target(dev, "pts", True), "devpts", MS_NOSUID | MS_NOEXEC, pts_options
    )
    shm_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    syscalls.mount("shm", _target(dev, "shm", True), "tmpfs", shm_flags, "mode=1777,size=65536k")
    if mqueue:
        mq_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        syscalls.mount("mqueue", _target(dev, "mqueue", True), "mqueue", mq_flags)


def _copy_host_devices(dev: Path) -> None:
    """mknod every character and block device of the host's /dev that is not there yet
    (what Docker does for --privileged), skipping the per-container pts/shm/mqueue."""
    for top, dirs, files in os.walk("/dev"):
        dirs[:] = [d for d in dirs if not (top == "/dev" and d in ("pts", "shm", "mqueue"))]
        for name in files:
            st = os.lstat(os.path.join(top, name))
            if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                continue
            target = dev / os.path.relpath(os.path.join(top, name), "/dev")
            if os.path.lexists(target):  # one of ours already (or our symlink, like ptmx)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(target, st.st_mode, st.st_rdev)


@stage("mount scratch space", fix=FIX_MOUNTS)
def mount_scratch(rootfs: Path) -> None:
    """A tmpfs on each SCRATCH directory the image has: writable, and gone with the container."""
    for name, options in SCRATCH.items():
        target = rootfs / name
        if target.is_dir() and not target.is_symlink():
            syscalls.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)


#: statvfs flags that are locked on a mount seen from a user namespace: a remount must keep
#: them or the kernel says EPERM. Their MS_* counterparts (MS_RELATIME is a different bit).
_KEEP_FLAGS = {
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: 1024,  # MS_NOATIME
    os.ST_NODIRATIME: 2048,  # MS_NODIRATIME
    os.ST_RELATIME: 1 << 21,  # MS_RELATIME
}


@stage("read-only root", fix=FIX_MOUNTS)
def make_readonly(path: str | os.PathLike[str]) -> None:
    """Remount the mount at ``path`` read-only (Docker's ``--read-only``).

    A bind remount changes only this one mount (not its filesystem, not the mounts below
    it), and keeps the flags the mount already has.
    """
    current = os.statvfs(path).f_flag
    keep = sum(ms for st, ms in _KEEP_FLAGS.items() if current & st)
    syscalls.mount(None, path, None, syscalls.MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


@stage("pivot_root", fix="the root filesystem must be a directory on a local filesystem")
def pivot_into(rootfs: str | os.PathLike[str]) -> None:
    """Make ``rootfs`` the root mount of this mount namespace and drop the old root.

    ``pivot_root(".", ".")`` stacks the old root on top of the new one; unmounting "."
    then removes the old root, so no path leads back to the host's files.
    """
    os.chdir(rootfs)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")


@stage("move the root onto /", fix="the root filesystem must be a directory on a local filesystem")
def move_onto_root(rootfs: str | os.PathLike[str]) -> None:
    """chroot without the way back, when pivot_root cannot be used (runc's ``--no-pivot``):
    move the root's mount onto "/" of this mount namespace, then chroot into it. The host's
    root is still underneath, but ".." from the top of a mount stacked on "/" comes back
    down into that mount, so ``chroot_escape`` ends where it started."""
    os.chdir(rootfs)
    syscalls.mount(".", "/", None, syscalls.MS_MOVE)
    os.chroot(".")
    os.chdir("/")
