"""Namespaces: what each kind hides, how a process gets new ones, how to see and join them.

A process gets new namespaces with one unshare(2) call, with two twists this module handles:

* a new **PID namespace** only applies to the caller's *children*: the first child forked
  afterwards is PID 1 there (``fork_pid1``);
* a new **user namespace** starts with no uid or gid mapped, and only a process outside it
  (with CAP_SETUID there) may write the child's ``uid_map``/``gid_map`` (``unshare_user``).

A process's namespaces are the files under /proc/PID/ns. Two processes share a namespace
exactly when those files have the same inode number, which is all ``lsns`` looks at, and
all ``list_namespaces`` looks at too.

The functions that change the calling process run in labkit's single-threaded helper
process, never in a Jupyter kernel (a multithreaded process cannot unshare a user namespace
and moves only one thread for the other kinds).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from labkit.errors import LabkitError
from labkit.kernel import procfs, syscalls
from labkit.kernel.stage import stage


class Kind(NamedTuple):
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

#: Container root maps to this host uid/gid range when a user namespace is asked for.
#: 100000 is where /etc/subuid ranges start on Debian and Ubuntu.
USERNS_HOST_BASE = 100000
USERNS_SIZE = 65536


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
                fix="give {ns} a comma-separated list of " + ",".join(KINDS) + ", or none",
            )
        kinds.add(name)
    return frozenset(kinds)


def clone_flags(kinds: Iterable[str]) -> int:
    """The OR of the clone flags for ``kinds``: the argument unshare(2) takes."""
    flags = 0
    for name in kinds:
        flags |= KINDS[name].flag
    return flags


# -- creating them (in the helper process) ------------------------------------------------------


@stage("unshare", fix="check that this kernel has these namespace kinds: {doctor}")
def unshare(kinds: Iterable[str]) -> None:
    """New namespaces of every kind in ``kinds`` for the caller, in one unshare(2) call."""
    flags = clone_flags(kinds)
    if flags:
        syscalls.unshare(flags)


@stage("fork PID 1", fix="the host may be out of processes: check `ulimit -u` and pids.max")
def fork_pid1(announce: Callable[[int], None]) -> None:
    """Fork the process that will be PID 1 of the new PID namespace; return in it.

    The parent stays in the old PID namespace: it calls ``announce`` with the child's PID as
    the *host* sees it, and exits.
    """
    child = os.fork()
    if child:
        announce(child)
        os._exit(0)


@stage(
    "user namespace",
    fix="check that user namespaces are enabled (user.max_user_namespaces > 0): {doctor}",
)
def unshare_user(host_base: int, size: int) -> None:
    """A new user namespace in which uid/gid 0..size-1 are host_base.. on the host.

    Fork: the child unshares CLONE_NEWUSER and waits; the parent, still outside, writes the
    child's uid_map and gid_map (as runc's nsexec does) and exits. Returns in the child, as
    root of the new namespace.
    """
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        os.close(mapped_w)
        syscalls.unshare(syscalls.CLONE_NEWUSER)
        os.write(ready_w, b"1")
        os.close(ready_w)
        if os.read(mapped_r, 1) != b"1":  # the parent failed and says why; go quietly
            os._exit(125)
        os.close(mapped_r)
        os.setgid(0)
        os.setuid(0)
        return
    os.close(ready_w)
    os.close(mapped_r)
    if os.read(ready_r, 1) != b"1":  # the child could not unshare: it reported why
        os._exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
    try:
        mapping = f"0 {host_base} {size}\n"
        Path(f"/proc/{child}/uid_map").write_text(mapping)
        Path(f"/proc/{child}/gid_map").write_text(mapping)
    except OSError:
        os.close(mapped_w)  # the child sees end of file and exits quietly
        os.waitpid(child, 0)
        raise
    os.write(mapped_w, b"1")
    os._exit(0)  # the child is on its own now (a subreaper above us adopts it)


@stage("sethostname", fix="give {hostname} a name the kernel accepts (at most 64 bytes)")
def set_hostname(name: str) -> None:
    """The hostname of this UTS namespace: the host's own is a different one, untouched."""
    syscalls.sethostname(name)


# -- seeing them -------------------------------------------------------------------------------


def inode(pid: int | str, kind: str) -> int:
    """The inode number that identifies the ``kind`` namespace of process ``pid``."""
    number = procfs.ns_inode(pid, kind)
    if number is None:
        raise FileNotFoundError(errno.ENOENT, f"no /proc/{pid}/ns/{kind}: no such process")
    return number


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


class Entry(NamedTuple):
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
    for pid in procfs.pids():
        for kind in wanted:
            ino = procfs.ns_inode(pid, kind)
            if ino is not None:  # None: exited, or a kernel thread without this namespace
                seen.setdefault((kind, ino), []).append(pid)
    rows = []
    for (kind, ino), members in seen.items():
        first = min(members)
        command = " ".join(procfs.cmdline(first)) or f"[{procfs.comm(first)}]"
        rows.append(Entry(ino, kind, len(members), first, command))
    return sorted(rows, key=lambda e: (e.kind, e.inode))


# -- joining them ------------------------------------------------------------------------------


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
