"""Checkers for notebook 04 (images and overlayfs): an overlay mounted by hand, judged by what
the kernel left in its lower and upper directories, and an image name split as Docker splits
it, checked against labkit's own parser.
"""

from labkit.lab.checks.nb04 import overlay_by_hand, split_reference

__all__ = ["overlay_by_hand", "split_reference"]
