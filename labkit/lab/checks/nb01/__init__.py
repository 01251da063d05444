"""Checkers for notebook 01 (chroot): running a command inside an image by hand, and the classic
chroot escape.

Each checker runs the learner's cell as root in a fresh child process, on a fresh copy of the
busybox image (``labkit.lab.scratch``), and judges it by what happened: what the command saw
as ``/`` and as its working directory, and which directory the process ended up with as its
root, read from the kernel with ``stat``.
"""

from labkit.lab.checks.nb01 import escape, run_chrooted

__all__ = ["escape", "run_chrooted"]
