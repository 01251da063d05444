"""Scratch copies of a base image, for lessons and checks that let root write into its ``/``.

chroot alone cannot keep a root process from writing into its root directory (the chroot
escape makes a directory there), and an image is shared by every container made from it. So
a notebook that runs chroot-only containers, and a checker that runs a learner's chroot code,
each work on a copy of their own: ``labkit run --rootfs COPY`` uses such a directory in place.

* ``image_copy("busybox", prefix="labkit-nb01-")``: a copy that lasts as long as the calling
  process (a notebook's kernel). It is removed when that process exits, however it exits: a
  kernel that is killed runs no exit handlers, so a small guard process
  (``labkit.lab._scratch_guard``) removes it then. Asking again for the same prefix replaces
  the earlier copy (re-running a notebook's Setup gives a fresh one, not one more).
* ``with temporary_copy("busybox") as rootfs:``: a copy for one check, removed after it.

A copy is ``<temp dir>/labkit-...XXXX/rootfs``: the name carries "labkit", like everything labkit
makes on the host. Device nodes and FIFOs are made again in the copy, never read (a plain copy
of a ``/dev/zero`` node would never end). Nothing deletes a copy while anything is mounted below
it (``shutil.rmtree`` would walk into a mounted /proc and delete host files).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from labkit.images.store import image_rootfs
from labkit.kernel.mounts import copy_tree, mounts_under

_GUARD = Path(__file__).with_name("_scratch_guard.py")


class _Copy:
    """One copy made by this process: its prefix, and its guard (if it has one)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.guard: subprocess.Popen | None = None
        self.pipe: int | None = None  # the write end of the guard's pipe; closing it lets go


_made: dict[Path, _Copy] = {}  # the copies this process made and has not removed yet


def _copy(image: str, prefix: str) -> Path:
    if not prefix.startswith("labkit"):
        raise ValueError(f"a copy's name must carry 'labkit' (prefix {prefix!r})")
    source = image_rootfs(image)  # LabkitError with the fix if the image is not built
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        copy_tree(source, parent / "rootfs")  # device nodes made again, never read
    except BaseException:
        shutil.rmtree(parent, ignore_errors=True)
        raise
    copy = parent / "rootfs"
    _made[copy] = _Copy(prefix)
    return copy


def image_copy(image: str = "busybox", prefix: str = "labkit-copy-") -> Path:
    """A private copy of ``image``'s root filesystem, removed when this process is gone.

    An earlier copy with the same ``prefix`` made by this process is removed first (if nothing
    is mounted in it).
    """
    for earlier in [c for c, made in _made.items() if made.prefix == prefix and made.guard]:
        remove(earlier)
    copy = _copy(image, prefix)
    read, write = os.pipe()  # neither end is inherited by anything else we start
    try:
        guard = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_GUARD), str(read), str(copy.parent)],
            pass_fds=(read,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the notebook is not meant for it
        )
    except BaseException:
        os.close(write)
        remove(copy)
        raise
    finally:
        os.close(read)
    _made[copy].guard, _made[copy].pipe = guard, write
    atexit.register(_remove_at_exit, copy)
    return copy


def _remove_at_exit(copy: Path) -> None:
    if copy in _made:  # not removed already
        remove(copy)


@contextlib.contextmanager
def temporary_copy(image: str = "busybox", prefix: str = "labkit-check-") -> Iterator[Path]:
    """A private copy of ``image``'s root filesystem for the ``with`` block, removed after it."""
    copy = _copy(image, prefix)
    try:
        yield copy
    finally:
        remove(copy)


def remove(copy: str | Path) -> bool:
    """Delete a copy made by this module (with its temporary parent directory).

    Returns False, deleting nothing, while something is still mounted below it; ``True`` once
    it is gone. A path this module did not make is refused with ``ValueError``.
    """
    copy = Path(copy)
    made = _made.get(copy)
    if made is None:
        raise ValueError(f"{copy} is not a copy made by labkit.lab.scratch")
    parent = copy.parent
    if parent.exists() and mounts_under(parent):
        return False
    if made.pipe is not None and made.guard is not None:
        os.close(made.pipe)  # the guard sees end of file and removes the copy itself
        made.pipe = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            made.guard.wait(timeout=10)
    if parent.exists():
        shutil.rmtree(parent)
    del _made[copy]
    return True
