"""Reading what the kernel says about processes in /proc: the one place labkit parses it.

Every question labkit asks about a process (is it still the same process? which namespaces,
cgroups and mounts does it see? what is its command line?) is answered by a file under
/proc/PID. Each reader here returns plain data, and an empty answer (None, [] or {}) when the
process is gone, because a process may exit between any two reads.

A PID alone does not name a process: PIDs are reused. A PID together with the process's start
time (field 22 of /proc/PID/stat, in clock ticks since boot) does, within one boot; the boot
id (/proc/sys/kernel/random/boot_id) tells one boot from the next. ``ProcessRef`` is that pair.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


def pids() -> Iterator[int]:
    """Every PID /proc lists right now (some may be gone by the time you look)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


# -- /proc/PID/stat ---------------------------------------------------------------------------


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [0] is the state (field 3),
    [19] the start time (field 22). None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int | str) -> int | None:
    """When the process started, in clock ticks since boot (None if it is gone)."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


def boot_id() -> str:
    """A random id the kernel picks at every boot: start times only compare within one."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


class ProcessRef(NamedTuple):
    """A process named so that a reused PID cannot be mistaken for it."""

    pid: int
    start_time: int
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        started = start_time(pid)
        return None if started is None else cls(pid, started, boot_id())

    def is_alive(self) -> bool:
        """Same boot, same PID, same start time, and not a zombie (exited, not yet reaped)."""
        if self.boot_id != boot_id():
            return False
        fields = stat_fields(self.pid)
        return fields is not None and fields[0] != "Z" and int(fields[19]) == self.start_time


# -- status, cmdline, comm ----------------------------------------------------------------------


def status(pid: int | str) -> dict[str, str]:
    """/proc/PID/status as a dict: ``{"NSpid": "4242\\t1", "Uid": ...}`` ({} if gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def cmdline(pid: int | str) -> list[str]:
    """A process's argv as the kernel shows it (empty for kernel threads and exited ones)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def comm(pid: int | str) -> str:
    """The kernel's short name of a process (what ``ps -o comm`` shows), "?" if gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# -- namespaces and cgroups -------------------------------------------------------------------


def ns_inode(pid: int | str, kind: str) -> int | None:
    """The inode number naming ``pid``'s namespace of ``kind`` (None if gone or no such kind).

    Two processes share a namespace exactly when these numbers are equal: that is all
    ``lsns`` looks at.
    """
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def cgroups(pid: int | str = "self") -> dict[str, str]:
    """``{hierarchy: path}`` from /proc/PID/cgroup; the v2 hierarchy is keyed "0"."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return {}
    return parse_cgroups(text)


def parse_cgroups(text: str) -> dict[str, str]:
    """Lines ``ID:CONTROLLERS:PATH``; v1 hierarchies are keyed by controllers ("cpu,cpuacct")."""
    paths = {}
    for line in text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        paths[controllers or number] = path
    return paths


# -- mountinfo --------------------------------------------------------------------------------
#
# One line of /proc/PID/mountinfo (``man 5 proc``)::
#
#     36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
#     id pa dev  root  point opts  optional... - fstype source super-options
#
# The optional fields (``shared:N``, ``master:N``, ``unbindable``...) end at the lone ``-``, and
# paths escape space, tab, newline and backslash as octal (``\040``...).


class Mount(NamedTuple):
    """One line of mountinfo."""

    mount_id: int
    target: str  # the mount point, unescaped
    tags: tuple[str, ...]  # optional fields: "shared:1", "master:2", "unbindable"...
    fstype: str
    source: str
    options: str  # per-mount options: "rw,nosuid,relatime"
    super_options: str
    root: str = "/"  # which directory of its filesystem is mounted here (a bind: not "/")

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
    """Every well-formed line of a mountinfo text, in the kernel's order."""
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
                options=f[5],
                super_options=f[sep + 3] if len(f) > sep + 3 else "",
                root=unescape(f[3]),
            )
        )
    return rows


def mountinfo(pid: int | str = "self") -> list[Mount]:
    """The mount table of ``pid``'s mount namespace ([] if it cannot be read)."""
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text(errors="surrogateescape")
    except OSError:
        return []
    return parse_mountinfo(text)
