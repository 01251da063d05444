"""Bind mounts into a container's root: files from the host shown at a path inside.

Docker gives every container on a network three files it did not take from the image:
``/etc/hosts`` (its own name and address, and on a user network its peers'),
``/etc/resolv.conf`` (the host's name servers) and ``/etc/hostname``. It writes them beside
the container's record and bind-mounts each one over the image's file, so

* the image is never changed (the bind covers the file; nothing is copied up), and
* the runtime can rewrite them while the container runs (a peer joins the network): a bind
  mount shows the same inode, so the new text appears inside at once. That is also why they
  are rewritten in place and never replaced by a rename, which would make a new inode the
  container cannot see.

The danger is the target. This runs before pivot_root, so the paths are still resolved from
the host's root: an image whose ``/etc`` is a symlink to ``/etc`` would put the bind on the
*host's* file. So each target's directory is resolved first and must stay inside the root,
and a target that is itself a symlink is left alone (the image points it elsewhere on
purpose: ``resolv.conf -> /run/systemd/resolve/...`` is common).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from labkit.kernel import syscalls
from labkit.kernel.stage import stage
from labkit.kernel.syscalls import MS_BIND

FIX_BINDS = "the image's /etc must be a directory of the image (not a symlink out of it)"

#: The bind mounts of the source files, made (detached: ``open_tree``) while the helper is
#: still the host's root. In a user namespace the container's root may not even search the
#: directories the files are in (a STATE_DIR under a 0700 home); and a plain descriptor
#: would not do: mount(2) refuses to bind from a mount of another mount namespace (EINVAL).
#: A detached mount belongs to none, so ``move_mount`` can attach it in the new one.
_detached: dict[str, int] = {}


@stage("hold the /etc files", fix="the container's directory must be readable by root")
def open_sources(files: dict[str, str]) -> None:
    """Before any namespace: a detached bind mount of each source file, for ``bind_files``."""
    for target, source in files.items():
        _detached[target] = syscalls.open_tree_clone(source)


def inside(rootfs: Path, target: str) -> Path | None:
    """The path ``target`` (absolute, as the container names it) has under ``rootfs``, or
    None when it would not be a regular file inside the root (a symlink, or missing)."""
    root = rootfs.resolve()
    path = root / target.lstrip("/")
    parent = path.parent.resolve()  # follows symlinks on the way, as mount(2) would
    if parent != root and root not in parent.parents:
        raise OSError(
            errno.EXDEV, f"refusing to bind {target}: {path.parent} leads out of the root"
        )
    path = parent / path.name
    if path.is_symlink() or not path.is_file():
        return None
    return path


@stage("bind /etc files", fix=FIX_BINDS)
def bind_files(rootfs: Path, files: dict[str, str]) -> None:
    """Bind each ``files[target]`` (a file on the host) over ``target`` inside ``rootfs``."""
    for target, source in sorted(files.items()):
        path = inside(Path(rootfs), target)
        if path is None:
            continue
        held = _detached.pop(target, None)
        if held is None:
            syscalls.mount(os.fspath(source), os.fspath(path), None, MS_BIND)
        else:
            syscalls.move_mount(held, path)
            os.close(held)
