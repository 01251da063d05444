"""Namespaces: what each kind isolates, how to see which ones a process is in, how to join.

A process's namespaces are the files under /proc/PID/ns. Two processes share a namespace
exactly when those files have the same inode number, which is all ``lsns`` looks at, and
all this module looks at too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import LabkitError
from labkit.kernel import syscalls


@dataclass(frozen=True)
class Kind:
    """One namespace kind: its name in /proc/PID/ns, its clone flag, what it hides."""

    name: str
    flag: int
    isolates: str


#: The seven kinds this lab teaches, in the order the article introduces them.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("uts", syscalls.CLONE_NEWUTS, "hostname and NIS domain name"),
        Kind("pid", syscalls.CLONE_NEWPID, "process IDs: the first process becomes PID 1"),
        Kind("mnt", syscalls.CLONE_NEWNS, "the mount table"),
        Kind("ipc", syscalls.CLONE_NEWIPC, "System V IPC objects and POSIX message queues"),
        Kind("net", syscalls.CLONE_NEWNET, "network devices, addresses, routes, firewall"),
        Kind("user", syscalls.CLONE_NEWUSER, "user and group IDs (uid_map, gid_map)"),
        Kind("cgroup", syscalls.CLONE_NEWCGROUP, "the view of the cgroup tree"),
    )
}

_ALIASES = {"mount": "mnt", "network": "net", "ns": "mnt"}

#: What `labkit run` creates by default, as Docker does on a cgroup v2 host. (On a cgroup v1
#: host Docker shares the host's cgroup namespace; user namespaces only with userns-remap.)
DOCKER_DEFAULT = frozenset({"uts", "pid", "mnt", "ipc", "net", "cgroup"})


def parse_kinds(text: str) -> frozenset[str]:
    """Turn "uts,pid,mnt" (or "none", or "all") into a set of kind names, or say what is wrong."""
    text = text.strip().lower()
    if text in ("", "none"):
        return frozenset()
    if text == "all":
        return frozenset(KINDS)
    kinds = set()
    for word in text.split(","):
        name = _ALIASES.get(word.strip(), word.strip())
        if name not in KINDS:
            raise LabkitError(
                f"unknown namespace kind {word.strip()!r}",
                fix="use a comma-separated list of " + ",".join(KINDS) + ", or 'none'",
            )
        kinds.add(name)
    return frozenset(kinds)


def clone_flags(kinds: Iterable[str]) -> int:
    """The OR of the clone flags for ``kinds``: the argument unshare(2) takes."""
    flags = 0
    for name in kinds:
        flags |= KINDS[name].flag
    return flags


def inode(pid: int | str, kind: str) -> int:
    """The inode number that identifies the ``kind`` namespace of process ``pid``."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def of_process(pid: int | str = "self") -> dict[str, int]:
    """All seven namespace inodes of a process, keyed by kind."""
    return {kind: inode(pid, kind) for kind in KINDS}


def shared_with(pid: int | str, reference: int | str = "self") -> dict[str, bool]:
    """For each kind: is ``pid`` in the same namespace as ``reference`` (default: the caller)?

    The caller, not PID 1, is the host's reference: some hosts do not let even root read
    PID 1's namespace links.
    """
    mine, other = of_process(reference), of_process(pid)
    return {kind: mine[kind] == other[kind] for kind in KINDS}


@dataclass(frozen=True)
class Entry:
    """One row of the ``lsns`` table."""

    inode: int
    kind: str
    nprocs: int
    pid: int
    command: str


def list_namespaces(kinds: Iterable[str] | None = None) -> list[Entry]:
    """Every namespace on the host that has a process in it, like ``lsns``.

    ``pid`` is the lowest PID in the namespace, which is usually its first process.
    """
    wanted = list(kinds) if kinds is not None else list(KINDS)
    seen: dict[tuple[str, int], list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for kind in wanted:
            try:
                ino = os.stat(proc / "ns" / kind).st_ino
            except OSError:  # the process exited, or is a kernel thread without this ns
                continue
            seen.setdefault((kind, ino), []).append(int(proc.name))
    rows = []
    for (kind, ino), pids in seen.items():
        first = min(pids)
        rows.append(Entry(ino, kind, len(pids), first, _command(first)))
    return sorted(rows, key=lambda e: (e.kind, e.inode))


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or f"[{_comm(pid)}]"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def enter(pid: int, kinds: Iterable[str]) -> None:
    """Join the ``kinds`` namespaces of process ``pid`` (like ``nsenter``).

    All namespace files and the process's root are opened before the first setns,
    because after joining its mount namespace /proc/PID may no longer be reachable.
    A user namespace is joined first so the others are entered with its credentials.
    Joining a PID namespace only affects children, so callers fork afterwards.
    Only for a single-threaded process.
    """
    order = sorted(set(kinds), key=lambda k: (k != "user", k))
    fds: list[tuple[str, int]] = []
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for kind in order:
            fds.append((kind, os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)))
        for kind, fd in fds:
            syscalls.setns(fd, KINDS[kind].flag)
        if "mnt" in order:
            # Use the process's own root (it may have pivoted), as nsenter --root does.
            os.fchdir(root)
            os.chroot(".")
            os.chdir("/")
    finally:
        for _, fd in fds:
            os.close(fd)
        os.close(root)
