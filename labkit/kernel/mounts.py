"""Mounts below a path, and deleting a tree without walking into a mount.

The mount table itself comes from /proc/PID/mountinfo (read and parsed in
``labkit.kernel.procfs``). Two things labkit often needs from it live here: which mounts sit
at or below a directory (in an order in which they can be detached), and how to delete a
directory that might still have a mount inside it: ``shutil.rmtree`` would happily descend
into a bind mount of host files and delete them.
"""

from __future__ import annotations

import os
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
