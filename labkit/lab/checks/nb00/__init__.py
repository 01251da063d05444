"""Checkers for notebook 00 (why containers): how big an image is, how long a start takes, and a
process that sees an image as its ``/`` while it runs on the host's kernel.

Each checker runs the learner's answer in a fresh child process on real files, real programs
and the real kernel, then compares what happened with what the lesson needs.
"""

from labkit.lab.checks.nb00 import by_hand, image_size, start_seconds

__all__ = ["by_hand", "image_size", "start_seconds"]
