"""The mount table as the kernel shows it in /proc/PID/mountinfo, and deleting a tree safely.

One line of mountinfo (``man 5 proc``)::

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    id pa dev  root  point opts  optional... - fstype source super-options

The optional fields (``shared:N``, ``master:N``, ``unbindable``...) end at the lone ``-``,
and paths escape space, tab, newline and backslash as octal (``\\040``...).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import LabkitError
from labkit.kernel.syscalls import umount_detach


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo."""

    mount_id: int
    target: str  # the mount point, unescaped
    tags: tuple[str, ...]  # optional fields: "shared:1", "master:2", "unbindable"...
    fstype: str
    source: str
    super_options: str

    @property
    def propagation(self) -> str:
        """Spelled as findmnt does: "shared" or "private", then ",slave" / ",unbindable"."""
        kinds = {t.split(":")[0] for t in self.tags}
        words = ["shared" if "shared" in kinds else "private"]
        words += [w for w, t in (("slave", "master"), ("unbindable", "unbindable")) if t in kinds]
        return ",".join(words)


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every well-formed line of a mountinfo text, in the kernel's order (a line that cannot
    be parsed is skipped)."""
    rows = []
    for line in text.splitlines():
        f = line.split()
        if "-" not in f[6:]:
            continue
        sep = f.index("-", 6)
        if len(f) < sep + 3:
            continue
        rows.append(
            Mount(
                mount_id=int(f[0]),
                target=unescape(f[4]),
                tags=tuple(f[6:sep]),
                fstype=f[sep + 1],
                source=unescape(f[sep + 2]),
                super_options=f[sep + 3] if len(f) > sep + 3 else "",
            )
        )
    return rows


def read_mountinfo(pid: int | str = "self") -> list[Mount]:
    """The mount table of ``pid``'s mount namespace ([] if it cannot be read)."""
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text(errors="surrogateescape")
    except OSError:
        return []
    return parse_mountinfo(text)


def mount_rows_under(*roots: str | os.PathLike[str]) -> list[Mount]:
    """Our mounts at or below any of ``roots``: deepest first, and for mounts stacked on one
    point newest first, so detaching them in order never leaves a parent busy with a child."""
    real = [os.path.realpath(r) for r in roots]
    found = [
        m
        for m in read_mountinfo()
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
            fix=f"unmount it (grep {path} /proc/self/mountinfo), then run: labkit reset",
        )
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
