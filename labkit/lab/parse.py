"""Reading the raw output a notebook shows (``ps``, ``ip link``, ``ls -l /proc/PID/ns``,
mountinfo) into the values a lesson's claim checks.

A notebook cell shows the learner exactly what a terminal would (``lab.terminal``), and states
its claims with ``lab.expect``; the parsing in between lives here, so that cells stay readable
and the rules for each format are written once. Every function takes the text as printed and
returns plain values; none of them runs anything.
"""

from __future__ import annotations

import re

from labkit.kernel import procfs
from labkit.kernel.procfs import Mount

_NS_LINK = re.compile(r"(\w+) -> '?(\w+):\[(\d+)\]'?")
_IP_LINK = re.compile(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:\s+<([^>]*)>", re.M)


def ps_pids(text: str) -> list[int]:
    """The PIDs of a ``ps`` listing: the first column of every row that starts with a number
    (the header and anything else are skipped), in the order printed."""
    pids = []
    for line in text.splitlines():
        first = line.split(maxsplit=1)[:1]
        if first and first[0].isdigit():
            pids.append(int(first[0]))
    return pids


def ip_links(text: str) -> dict[str, list[str]]:
    """``{interface: flags}`` from ``ip link`` output (``1: lo: <LOOPBACK,UP,...> ...``)."""
    return {name: flags.split(",") if flags else [] for name, flags in _IP_LINK.findall(text)}


def ns_links(text: str) -> dict[str, int]:
    """``{kind: inode}`` from ``ls -l /proc/PID/ns`` (or ``readlink``) output. The links
    ``pid_for_children`` and ``time_for_children`` are kept under their own names."""
    return {name: int(inode) for name, _kind, inode in _NS_LINK.findall(text)}


def mountinfo(text: str) -> list[Mount]:
    """Every line of a ``/proc/PID/mountinfo`` text: mount point, root, options, propagation."""
    return procfs.parse_mountinfo(text)


def mount_at(text: str, target: str = "/") -> Mount:
    """The mount on top at ``target`` in a mountinfo text (its root, options, propagation)."""
    on_target = [m for m in procfs.parse_mountinfo(text) if m.target == target]
    if not on_target:
        raise ValueError(f"no mount at {target}")
    return on_target[-1]


def mount_targets(mounts: str) -> list[str]:
    """The mount points of a ``/proc/PID/mounts`` (or ``mount``-style) text, in order."""
    targets = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            targets.append(procfs.unescape(fields[1]))
    return targets
