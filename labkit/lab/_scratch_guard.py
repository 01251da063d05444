"""Removes a scratch copy of an image (``labkit.lab.scratch``) once the process that made it is
gone, however it ended.

A notebook's kernel removes its copy when it exits normally (``atexit``), but a kernel that is
killed, or that dies with its parent, runs no exit handlers. So ``scratch.image_copy`` also starts
this guard, with the read end of a pipe whose write end only the kernel holds. When the kernel
is gone, or lets go of the copy, the read sees end of file and the guard deletes the directory,
unless something is still mounted below it (then it leaves it alone: deleting would walk into
the mount).

Run as ``python -I -S _scratch_guard.py FD DIRECTORY``: standard library only, so it starts fast
and needs nothing installed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys


def mounted_below(path: str) -> bool:
    """Is anything mounted at or below ``path`` (in this mount namespace)?"""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
            if target == path or target.startswith(path.rstrip("/") + "/"):
                return True
    return False


def main(argv: list[str]) -> None:
    fd, path = int(argv[1]), os.path.realpath(argv[2])
    while os.read(fd, 4096):  # nobody writes: this returns b"" once every writer is gone
        pass
    ours = os.path.basename(path).startswith("labkit")
    if ours and os.path.isdir(path) and not mounted_below(path):
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv)
