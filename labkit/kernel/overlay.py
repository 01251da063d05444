"""overlayfs: a container's root made of the image's layers plus a writable layer of its own.

An overlay mount stacks directories: ``lowerdir`` (read-only, top first), ``upperdir`` (where
every change goes) and ``workdir`` (overlayfs's scratch space, on the upper's filesystem). A
name is looked up from the top down. The first write to a lower file copies it up into the
upper dir ("copy-up"), so the lower file never changes and every container of an image shares
it. Deleting a lower file leaves a *whiteout* in the upper dir: a character device 0/0 of the
same name. A directory deleted and made again is *opaque* (xattr ``trusted.overlay.opaque=y``):
nothing below it shows through from the lower layers.

The options reach the kernel as one string, and mount(2) copies at most one page of it (4096
bytes with the final NUL). With labkit's layer paths (STATE_DIR/layers/<64 hex>/diff) about
forty layers already do not fit. Docker gives every layer a short symlink (overlay2's ``l/``
dir) and passes paths relative to its home. labkit names each directory by an open file
descriptor instead: from inside /proc/self/fd, the directory is simply "7". The mount table
then shows ``lowerdir=7:8:9``, as Docker's shows ``l/ABC...``. The kernel stacks at most 500
lowers.

Everything here changes the calling process's mounts, so it runs in the helper process (in
the container's mount namespace), never in a Jupyter kernel.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from labkit.errors import LabkitError
from labkit.kernel import syscalls
from labkit.kernel.stage import stage

OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_LOWERS = 500  # OVL_MAX_STACK in fs/overlayfs
PAGE_LIMIT = os.sysconf("SC_PAGE_SIZE")  # mount data, the NUL included
INDEX_PARAM = Path("/sys/module/overlay/parameters/index")

Pathish = str | os.PathLike[str]


def options(lowers: Sequence[Pathish], upper: Pathish, work: Pathish) -> str:
    """The mount data, exactly as ``mount -t overlay overlay -o DATA target`` would take it."""
    names = [os.fspath(p) for p in (*lowers, upper, work)]
    for name in names:
        if any(c in name for c in ":,\\"):
            raise LabkitError(
                f"overlay cannot take the path {name!r}: ':' and ',' separate its options",
                fix="use directories whose paths have no ':', ',' or '\\'",
            )
    parts = [f"lowerdir={':'.join(names[:-2])}", f"upperdir={names[-2]}", f"workdir={names[-1]}"]
    if INDEX_PARAM.exists() and INDEX_PARAM.read_text().strip() == "Y":
        # index=on ties an upper dir to the exact inodes of its lowers; labkit never moves
        # an upper dir, and with index=off the same lowers mount under many uppers freely.
        parts.append("index=off")
    return ",".join(parts)


def fits(data: str) -> bool:
    """Whether mount(2) would receive all of ``data``: one page, with the trailing NUL."""
    return len(data.encode()) + 1 <= PAGE_LIMIT


@stage(
    "mount the overlay", fix="the work dir must be an empty directory on the upper dir's filesystem"
)
def mount(target: Pathish, lowers: Sequence[Pathish], upper: Pathish, work: Pathish) -> None:
    """Mount an overlay on ``target``: ``lowers`` top first, changes into ``upper``."""
    if not lowers:
        raise LabkitError("an overlay needs at least one lower directory", fix="pass the image")
    if len(lowers) > MAX_LOWERS:
        raise LabkitError(
            f"{len(lowers)} layers: the kernel stacks at most {MAX_LOWERS} lower directories",
            fix="squash the image into fewer layers",
        )
    data = options(lowers, upper, work)
    if fits(data):
        syscalls.mount("overlay", target, "overlay", 0, data)
        return
    target = os.path.abspath(target)  # before the chdir below
    with contextlib.ExitStack() as stack:
        fds = []
        for path in (*lowers, upper, work):
            fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            stack.callback(os.close, fds[-1])
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        stack.callback(os.close, cwd)
        short = options([str(fd) for fd in fds[:-2]], str(fds[-2]), str(fds[-1]))
        if not fits(short):
            raise LabkitError(
                f"{len(lowers)} layers do not fit in one page of mount options",
                fix="squash the image into fewer layers",
            )
        # "7" now names the directory fd 7 is open on. /proc/self, not /proc/<getpid()>: in a
        # new PID namespace getpid() is 1, and the host's /proc/1 is the host's init.
        os.chdir("/proc/self/fd")
        try:
            syscalls.mount("overlay", target, "overlay", 0, short)
        finally:
            os.fchdir(cwd)


def is_whiteout(path: Pathish) -> bool:
    """Whether ``path`` (in an upper or lower dir, not in the mounted overlay) is a whiteout."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Pathish) -> bool:
    """Whether the directory ``path`` hides everything below it in the lower layers."""
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def diff(upper: Pathish, lowers: Sequence[Pathish]) -> list[tuple[str, str]]:
    """What a container changed, as ``docker diff`` prints it: ``("A"|"C"|"D", "/path")``.

    The rules of Docker 20.10's diff: the image's view (the lowers) against the container's
    (the upper over the lowers). A name only in the container's view is added (A, and all
    below it); one only in the image's is deleted (D, for itself only); one in both is changed
    (C) if its type, mode, owner or device differ or, for a non-directory, its size or mtime
    (or its file capabilities); a directory with any change below it is changed too. Docker
    prints the top level in no fixed order; this is sorted parents first, names in order.
    (Docker 23 and later report an opaque directory as "D dir" and its new content as A.)
    """
    upper, found = Path(upper), []
    _compare(upper, [Path(p) for p in lowers], "", found)
    return sorted(found, key=lambda change: change[1].split("/"))


def _compare(upper: Path, lowers: list[Path], rel: str, found: list[tuple[str, str]]) -> None:
    """The changes below the directory ``rel``, which the container's view has."""
    names = sorted(os.listdir(upper / rel.lstrip("/")))
    for name in names:
        path = f"{rel}/{name}"
        new = os.lstat(upper / path.lstrip("/"))
        old = _lookup(lowers, path)
        if stat.S_ISCHR(new.st_mode) and new.st_rdev == 0:
            if old is not None:
                found.append(("D", path))
        elif old is None:
            found.append(("A", path))
            if stat.S_ISDIR(new.st_mode):
                _compare(upper, [], path, found)  # no lowers: everything below is new
        else:
            changed = _different(old[1], new) or _caps(old[0]) != _caps(upper / path[1:])
            mark = len(found)
            if stat.S_ISDIR(new.st_mode):
                _compare(upper, lowers, path, found)
            if changed or len(found) > mark:
                found.insert(mark, ("C", path))
    if rel and is_opaque(upper / rel[1:]):  # the image's children that no longer show
        gone = set(_lower_names(lowers, rel)) - set(names)
        found.extend(("D", f"{rel}/{name}") for name in sorted(gone))


def _lookup(lowers: list[Path], path: str) -> tuple[Path, os.stat_result] | None:
    """Find ``path`` in the image's view: the lowers top first, honouring their whiteouts,
    opaque directories and non-directories that hide what lies below them."""
    parts = path.strip("/").split("/")
    for layer in lowers:
        here, opaque = layer, False
        for i, part in enumerate(parts):
            here = here / part
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                if opaque:
                    return None
                break  # not in this layer: look in the next one down
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None
            if i == len(parts) - 1:
                return here, st
            if not stat.S_ISDIR(st.st_mode):
                return None
            opaque = opaque or is_opaque(here)
    return None


def _lower_names(lowers: list[Path], rel: str) -> list[str]:
    names: set[str] = set()
    for layer in lowers:
        found = _lookup([layer], rel)
        if found and stat.S_ISDIR(found[1].st_mode):
            names.update(os.listdir(found[0]))
    return [n for n in names if _lookup(lowers, f"{rel}/{n}") is not None]


def _different(old: os.stat_result, new: os.stat_result) -> bool:
    """Docker's statDifferent: directory sizes and mtimes are no measure of change."""
    if (old.st_mode, old.st_uid, old.st_gid, old.st_rdev) != (
        new.st_mode,
        new.st_uid,
        new.st_gid,
        new.st_rdev,
    ):
        return True
    if stat.S_ISDIR(old.st_mode):
        return False
    o_sec, o_ns = divmod(old.st_mtime_ns, 1_000_000_000)
    n_sec, n_ns = divmod(new.st_mtime_ns, 1_000_000_000)
    same_time = o_sec == n_sec and (o_ns == n_ns or 0 in (o_ns, n_ns))
    return not same_time or old.st_size != new.st_size


def _caps(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return None
