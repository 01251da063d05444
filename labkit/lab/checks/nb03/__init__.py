"""Checkers for notebook 03 (cgroups): a limit written by hand into a cgroup's files, and the CPU
a cgroup used, computed from the kernel's counters.

The by-hand checker runs the learner's cell as root in a fresh child next to a cgroup it made
ready for them, and judges by what the kernel recorded in that cgroup (its limit, who was in
it, how many forks it refused). The CPU checker runs the learner's function on readings of
the counters chosen so that each usual mistake gives a number of its own.
"""

from labkit.lab.checks.nb03 import cpus_used, pids_by_hand

__all__ = ["cpus_used", "pids_by_hand"]
