"""Scratch network namespaces that go away even if the notebook's kernel is killed.

Notebooks 05 and 06 build small worlds of network namespaces (``labkit-nb05-*``,
``labkit-nb06-*``). Each world gets a *guard*: a tiny process holding the read end of a pipe
whose write end only this process has. When this process lets go (``release``) or dies (a
kernel restart, a SIGKILL), the guard reads end of file, kills what still runs in the
namespaces and deletes them (and the world's scratch directory). Only ``labkit-`` names are
ever touched.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

_GUARD = (
    "import os, shutil, subprocess, sys\n"
    "while os.read(int(sys.argv[1]), 4096): pass\n"
    "for name in sys.argv[3:]:\n"
    "    if name.startswith('labkit-') and os.path.exists('/run/netns/' + name):\n"
    "        pids = subprocess.run(['ip', 'netns', 'pids', name], capture_output=True,\n"
    "                              text=True).stdout.split()\n"
    "        for pid in pids:\n"
    "            try: os.kill(int(pid), 9)\n"
    "            except OSError: pass\n"
    "        subprocess.run(['ip', 'netns', 'del', name], stderr=subprocess.DEVNULL)\n"
    "if os.path.basename(sys.argv[2]).startswith('labkit-'):\n"
    "    shutil.rmtree(sys.argv[2], ignore_errors=True)\n"
)

_guards: dict[str, tuple[subprocess.Popen, int, list[str], str]] = {}  # names, directory


def guard(key: str, names: list[str], directory: str = "") -> None:
    """Start a process that removes ``names`` (and ``directory``) once this process is gone."""
    read, write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARD, str(read), directory or "-", *names],
            pass_fds=(read,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,  # a Ctrl-C is not meant for it
        )  # fmt: skip
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    _guards[key] = (proc, write, names, directory)


def delete(names: list[str], directory: str = "") -> list[str]:
    """Kill every process in the namespaces ``names``, then delete them (and ``directory``)."""
    gone = []
    for name in names:
        if Path("/run/netns", name).exists():
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            gone.append(name)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
    return gone


def release(key: str) -> list[str]:
    """Delete what ``key`` guards, and let its guard go; the namespaces deleted."""
    entry = _guards.pop(key, None)
    if entry is None:
        return []
    proc, write, names, directory = entry
    gone = delete(names, directory)
    os.close(write)  # the guard finds nothing left, and exits
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    return gone


def release_all(prefix: str) -> list[str]:
    """Release every guard whose key starts with ``prefix``."""
    gone = []
    for key in [k for k in _guards if k.startswith(prefix)]:
        gone += release(key)
    return gone


def existing(prefix: str) -> list[str]:
    """The network namespaces whose names start with ``prefix-``."""
    run_netns = Path("/run/netns")
    if not run_netns.is_dir():
        return []
    return sorted(p.name for p in run_netns.iterdir() if p.name.startswith(prefix + "-"))


def others_checks(prefix: str) -> list[str]:
    """Namespaces of another process's check world (``prefix-x<pid>-*``): never ours to touch."""
    mine = f"{prefix}-x{os.getpid()}-"
    return [n for n in existing(prefix) if n.startswith(prefix + "-x") and not n.startswith(mine)]


@atexit.register
def _remove_made() -> None:
    for key in list(_guards):
        release(key)
