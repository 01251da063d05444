"""Checkers for notebook 02b (mounts and pivot_root): a mount the host never sees, and
pivot_root into an image, both by hand.

Each checker runs the learner's cell as root in a fresh child, in a scratch mount namespace
whose ``/`` is shared as systemd makes it, and then reads what the kernel shows: mount tables,
propagation, the process's root and where the chroot escape ends.
"""

from labkit.lab.checks.nb02b import pivot_root, private_mount

__all__ = ["pivot_root", "private_mount"]
