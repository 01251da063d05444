"""Evidence for comparing the host with a container: what a probe's answer says, which interface
stands for "the host's network", which processes live in a given root directory.

A notebook cell shows each probe's raw output (``lab.terminal``) and states a claim with
``lab.expect``. Parsing one output format is ``labkit.lab.parse``'s job; this module holds what
a comparison between runtimes needs on top of it. Nothing here changes anything: it reads text,
and ``main_interface`` and ``rooted_at`` read /proc and /sys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from labkit.kernel import procfs
from labkit.lab import parse

_OS_RELEASE = re.compile(r'^(PRETTY_NAME|NAME)=(?:"([^"\n]*)"|([^\n]*))', re.M)


def os_release_name(text: str) -> str:
    """The distribution's name in an os-release text: PRETTY_NAME, else NAME, else ""."""
    found = {key: quoted or bare for key, quoted, bare in _OS_RELEASE.findall(text)}
    return (found.get("PRETTY_NAME") or found.get("NAME") or "").strip()


def gist(output: str) -> str | list[str]:
    """What a probe's output says, in a form two runtimes' answers can be compared by.

    Tools differ in how they print the same facts: iproute2's ``ip link`` and busybox's list
    the same interfaces with different details. So ``ip link`` output becomes its interface
    names, sorted; any other output is compared as it is, stripped.
    """
    names = sorted(parse.ip_links(output))
    return names if names else output.strip()


def main_interface() -> str:
    """The name of the host's main network interface: the one its default route leaves by
    (``/proc/net/route``), else its first interface other than ``lo``, else ``lo``.

    A claim about "the host's network" can name this one: unlike the full list of links, it
    does not change while containers come and go on the same host.
    """
    try:
        rows = [line.split() for line in Path("/proc/net/route").read_text().splitlines()[1:]]
    except OSError:
        rows = []
    for row in rows:
        if len(row) > 1 and row[1] == "00000000":  # destination 0.0.0.0: the default route
            return row[0]
    names = [n for n in sorted(os.listdir("/sys/class/net")) if n != "lo"]
    return names[0] if names else "lo"


def rooted_at(path: str | os.PathLike[str]) -> list[int]:
    """PIDs of the processes whose root directory is ``path`` (as ``/proc/PID/root`` shows it).

    A process in the caller's mount namespace shows its root as a path of that namespace: a
    chrooted one shows the directory it was chrooted into. (One in a mount namespace of its
    own, after pivot_root, shows ``/``.)
    """
    wanted = os.path.realpath(path)
    found = []
    for pid in procfs.pids():
        try:
            if os.readlink(f"/proc/{pid}/root") == wanted:
                found.append(pid)
        except OSError:  # it exited meanwhile
            continue
    return sorted(found)
