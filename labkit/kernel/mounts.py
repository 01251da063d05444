"""Mounts below a path; deleting a tree without walking into a mount, and copying one.

The mount table itself comes from /proc/PID/mountinfo (read and parsed in
``labkit.kernel.procfs``). Two things labkit often needs from it live here: which mounts sit
at or below a directory (in an order in which they can be detached), and how to delete a
directory that might still have a mount inside it: ``shutil.rmtree`` would happily descend
into a bind mount of host files and delete them. Copying a root filesystem has the mirror
trap: ``shutil.copytree`` *reads* a device node as a file, and /dev/full never ends.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from labkit.errors import LabkitError
from labkit.kernel.procfs import Mount, mountinfo
from labkit.kernel.syscalls import umount_detach


def mount_rows_under(*roots: str | os.PathLike[str]) -> list[Mount]:
    """Our mounts at or below any of ``roots``: deepest first, and for mounts stacked on one
    point newest first, so detaching them in order never leaves a parent busy with a child."""
    real = [os.path.realpath(r) for r in roots]
    found = [
        m
        for m in mountinfo()
        if any(m.target == r or m.target.startswith(r.rstrip("/") + "/") for r in real)
    ]
    return sorted(found, key=lambda m: (m.target.count("/"), m.mount_id), reverse=True)


def mounts_under(root: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below ``root`` in our mount namespace, deepest first."""
    return [m.target for m in mount_rows_under(root)]


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete ``path`` safely: detach any mount below it first, so rmtree never walks into
    a mounted /proc or a bind mount of host files (debootstrap mounts /proc and /sys)."""
    import shutil

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    for mnt in mounts_under(path):
        umount_detach(mnt)
    if mounts_under(path):
        raise LabkitError(
            f"refusing to delete {path}: something is still mounted below it",
            fix=f"unmount it (grep {path} /proc/self/mountinfo), then run {{reset}}",
        )
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def copy_tree(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Copy a root filesystem: files with their metadata, symlinks as symlinks, device nodes
    and FIFOs made again with the same numbers and mode (never read), sockets left out."""
    import shutil

    shutil.copytree(source, target, symlinks=True, copy_function=_copy_entry)


def _copy_entry(source: str, target: str) -> str:
    import shutil

    st = os.lstat(source)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        os.mknod(target, st.st_mode, st.st_rdev)
        os.chmod(target, stat.S_IMODE(st.st_mode))  # mknod is subject to the umask
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(target, stat.S_IMODE(st.st_mode))
        os.chmod(target, stat.S_IMODE(st.st_mode))
    elif not stat.S_ISSOCK(st.st_mode):
        shutil.copy2(source, target, follow_symlinks=False)
    return target
