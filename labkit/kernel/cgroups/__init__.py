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

Every cgroup labkit makes is ``labkit/<container id>`` in the hierarchy it needs, and goes
when its container does (``make``, ``join``, ``remove`` below); the cgroups step adds the
controllers' limits and statistics.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import time
from pathlib import Path
from typing import NamedTuple

from labkit.errors import LabkitError
from labkit.kernel.procfs import Mount, mountinfo
from labkit.kernel.stage import stage

ROOT = Path("/sys/fs/cgroup")


class Layout(NamedTuple):
    """What this host mounts, as found by ``detect``."""

    kind: str  # "unified" | "hybrid" | "legacy" | "none"
    v2_mount: str  # where the cgroup2 tree is mounted ("" if nowhere)
    v2_controllers: tuple[str, ...]  # cgroup.controllers of the v2 root
    v2_delegated: tuple[str, ...]  # cgroup.subtree_control of the v2 root
    v1_hierarchies: tuple[str, ...]  # the v1 trees, by directory name ("cpu,cpuacct", ...)
    v1_mounts: tuple[tuple[str, str], ...] = ()  # (super options "rw,devices", mount point)

    def v1_path(self, controller: str) -> Path | None:
        """Where the v1 hierarchy with ``controller`` is mounted (None if nowhere)."""
        for options, target in self.v1_mounts:
            if controller in options.split(","):
                return Path(target)
        return None

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
    v1_mounts = tuple((m.super_options, m.target) for m in mounts if m.fstype == "cgroup")
    v2_mount = str(ROOT) if str(ROOT) in v2 else (v2[0] if v2 else "")
    controllers = _words(f"{v2_mount}/cgroup.controllers") if v2_mount else ()
    delegated = _words(f"{v2_mount}/cgroup.subtree_control") if v2_mount else ()
    if v2 and not v1:
        kind = "unified"
    elif v1:
        kind = "hybrid" if v2 else "legacy"
    else:
        kind = "none"
    return Layout(kind, v2_mount, controllers, delegated, v1, v1_mounts)


@functools.cache
def detect() -> Layout:
    """This host's layout, read once per process: it does not change while we run."""
    return layout_of(mountinfo())


# -- where labkit may make cgroups -------------------------------------------------------------

#: On a systemd host, the subtree systemd delegates to labkit: the cgroup of this unit, which
#: vagrant/provision.sh installs with Delegate=yes (and which the daemon will become).
SYSTEMD_UNIT = "labkit.service"
SYSTEMD_ROOT = ROOT / "system.slice" / SYSTEMD_UNIT


def under_systemd() -> bool:
    """systemd runs this machine (it creates /run/systemd/system at boot)."""
    return Path("/run/systemd/system").is_dir()


def v2_root(layout: Layout) -> Path:
    """Where labkit makes its v2 cgroups.

    systemd owns the v2 tree and may move or remove cgroups it did not make, so on a systemd
    host labkit writes only below the cgroup systemd delegated to it (``Delegate=yes``),
    as a container manager must; without systemd, the tree's root is fine.
    """
    if not under_systemd():
        return Path(layout.v2_mount)
    if not (SYSTEMD_ROOT / "cgroup.subtree_control").exists():
        raise LabkitError(
            f"systemd has not delegated a cgroup subtree to labkit ({SYSTEMD_UNIT} is not running)",
            fix=f"start it: systemctl start {SYSTEMD_UNIT} (provisioning installs it)",
        )
    return SYSTEMD_ROOT


# -- labkit's own cgroups ------------------------------------------------------------------------

PARENT = "labkit"


def path_for(hierarchy: Path, container_id: str) -> Path:
    return hierarchy / PARENT / container_id


def hierarchies(layout: Layout) -> list[Path]:
    """Every tree labkit makes cgroups in: the v1 ones, and the v2 one (or the subtree
    systemd delegated in it)."""
    trees = [Path(target) for _, target in layout.v1_mounts]
    if layout.kind == "unified" and under_systemd():
        return trees + ([SYSTEMD_ROOT] if SYSTEMD_ROOT.is_dir() else [])
    return trees + ([Path(layout.v2_mount)] if layout.v2_mount else [])


def existing(container_id: str, layout: Layout) -> list[Path]:
    """The cgroups labkit made for a container, wherever they are."""
    return [p for p in (path_for(h, container_id) for h in hierarchies(layout)) if p.is_dir()]


def make(path: Path) -> Path:
    """Create a container's cgroup (and labkit's parent). A parent removed by another
    container's clean-up at that very moment is simply made again."""
    for _ in range(5):
        try:
            path.parent.mkdir(exist_ok=True)
            path.mkdir()
            return path
        except FileNotFoundError:
            continue
    raise OSError(errno.ENOENT, f"could not create {path}")


def join(path: Path, pid: int) -> None:
    """Move process ``pid`` (and so, from now on, its children) into the cgroup."""
    (path / "cgroup.procs").write_text(f"{pid}\n")


@stage("join the cgroup", fix="check the cgroup filesystem is writable: {doctor}")
def join_self(paths: list[str]) -> None:
    """Move this process into its container's cgroups, before it makes any namespace: its
    children (PID 1 among them) are born there, and a new cgroup namespace is rooted there."""
    for path in paths:
        join(Path(path), os.getpid())


def remove(path: Path, timeout: float = 2.0) -> bool:
    """rmdir a cgroup, waiting while it is busy (its last processes may still be exiting:
    the kernel lets go of a reaped process's cgroup a moment later); then labkit's parent
    if no other container uses it. False if it is still busy after ``timeout``."""
    deadline, pause = time.monotonic() + timeout, 0.0005
    while True:
        try:
            path.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    with contextlib.suppress(OSError):  # another container's cgroup is there, or it is gone
        path.parent.rmdir()
    return True
