"""cgroups: which layout this host has, found once; the cgroups step adds its drivers here.

A host mounts cgroups in one of three layouts, and a runtime must know which before it
touches a single file:

* **unified** (cgroup v2 only): one tree at /sys/fs/cgroup, type ``cgroup2``. What a current
  distribution with systemd boots (the learner's VM).
* **hybrid**: the v1 controllers each in their own tree under /sys/fs/cgroup/<controller>,
  plus a v2 tree (often /sys/fs/cgroup/unified) that only tracks processes: no controllers.
* **legacy** (cgroup v1 only): only the per-controller trees.

On v2 what a runtime can use is not what ``cgroup.controllers`` lists but what the parent
passes down in ``cgroup.subtree_control`` (delegation), so both are read.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

from labkit.kernel.procfs import Mount, mountinfo

ROOT = Path("/sys/fs/cgroup")


class Layout(NamedTuple):
    """What this host mounts, as found by ``detect``."""

    kind: str  # "unified" | "hybrid" | "legacy" | "none"
    v2_mount: str  # where the cgroup2 tree is mounted ("" if nowhere)
    v2_controllers: tuple[str, ...]  # cgroup.controllers of the v2 root
    v2_delegated: tuple[str, ...]  # cgroup.subtree_control of the v2 root
    v1_hierarchies: tuple[str, ...]  # the v1 trees, by directory name ("cpu,cpuacct", ...)

    def describe(self) -> str:
        """One line for doctor and notebooks: "hybrid: v1 cpu,memory,...; v2 at ..."."""
        parts = [self.kind]
        if self.v2_mount:
            parts.append(
                f"v2 at {self.v2_mount}, controllers: {' '.join(self.v2_controllers) or '(none)'}"
                f", delegated: {' '.join(self.v2_delegated) or '(none)'}"
            )
        if self.v1_hierarchies:
            parts.append(f"v1: {' '.join(self.v1_hierarchies)}")
        return "; ".join(parts)


def _words(path: str) -> tuple[str, ...]:
    try:
        return tuple(Path(path).read_text().split())
    except OSError:
        return ()


def layout_of(mounts: list[Mount]) -> Layout:
    """Work out the layout from a mount table."""
    v2 = [m.target for m in mounts if m.fstype == "cgroup2"]
    v1 = tuple(sorted(os.path.basename(m.target) for m in mounts if m.fstype == "cgroup"))
    v2_mount = str(ROOT) if str(ROOT) in v2 else (v2[0] if v2 else "")
    controllers = _words(f"{v2_mount}/cgroup.controllers") if v2_mount else ()
    delegated = _words(f"{v2_mount}/cgroup.subtree_control") if v2_mount else ()
    if v2 and not v1:
        kind = "unified"
    elif v1:
        kind = "hybrid" if v2 else "legacy"
    else:
        kind = "none"
    return Layout(kind, v2_mount, controllers, delegated, v1)


@functools.cache
def detect() -> Layout:
    """This host's layout, read once per process: it does not change while we run."""
    return layout_of(mountinfo())
