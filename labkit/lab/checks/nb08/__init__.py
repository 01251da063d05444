"""Checkers for notebook 08 (the escape gallery): which defence stops which break-out, and a
``--cap-drop`` list that closes the host's disk to a container that must mount.

Both run real probes in real containers (``labkit.lab.escapes``), with a canary of their own
that they remove before they return, and judge the answer by what the probes did.
"""

from labkit.lab.checks.nb08 import cap_drop, which_defence

__all__ = ["cap_drop", "which_defence"]
