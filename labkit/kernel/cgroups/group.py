"""One container's cgroups, whatever the host's layout: create, limit, account, pause, kill.

This is the one interface the runtime uses; behind it, ``v1`` (a directory per controller
hierarchy) or ``v2`` (one directory), chosen by the layout ``cgroups.detect`` found once.
The container's process joins the directories itself, first thing, before it makes any
namespace (``cgroups.join_self``): so everything it ever allocates is charged here, and a new
cgroup namespace is rooted here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from labkit.errors import LabkitError
from labkit.kernel import cgroups
from labkit.kernel.cgroups import devices, v1, v2
from labkit.kernel.cgroups.limits import Limits
from labkit.kernel.cgroups.stats import Stats


class ContainerCgroups:
    """The cgroups labkit makes for container ``container_id``."""

    def __init__(self, container_id: str, layout: cgroups.Layout | None = None) -> None:
        self.id = container_id
        self.layout = layout or cgroups.detect()
        self.unified = self.layout.kind == "unified"
        if not self.unified and self.layout.kind not in ("hybrid", "legacy"):
            raise LabkitError(
                "this host mounts no cgroups", fix="mount cgroup2 on /sys/fs/cgroup: {doctor}"
            )

    @property
    def v2_path(self) -> Path:
        return cgroups.path_for(cgroups.v2_root(self.layout), self.id)

    def create(self, limits: Limits, device_rules: Iterable[devices.Rule] | None) -> list[Path]:
        """Make them, write the limits and device rules; return the directories to join."""
        if self.unified:
            path = v2.create(cgroups.v2_root(self.layout), self.id, limits)
            if device_rules is not None:
                devices.apply_v2(path, device_rules)
            return [path]
        made = v1.create(self.layout, self.id, limits)
        hierarchy = self.layout.v1_path("devices")
        if device_rules is not None and hierarchy is not None:
            path = cgroups.make(cgroups.path_for(hierarchy, self.id))
            devices.apply_v1(path, device_rules)
            made.append(path)
        return made

    def paths(self) -> list[Path]:
        return cgroups.existing(self.id, self.layout)

    def stats(self) -> Stats:
        return v2.stats(self.v2_path) if self.unified else v1.stats(self.layout, self.id)

    def freeze(self, frozen: bool) -> None:
        if self.unified:
            v2.freeze(self.v2_path, frozen)
        else:
            v1.freeze(self.layout, self.id, frozen)

    def is_frozen(self) -> bool:
        return v2.is_frozen(self.v2_path) if self.unified else v1.is_frozen(self.layout, self.id)

    def processes(self) -> list[int]:
        """The processes still in the container's cgroups (each is in all of them)."""
        for path in self.paths():
            with contextlib.suppress(OSError):
                return [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        return []

    def kill(self) -> None:
        """SIGKILL every process in the container's cgroup (all of them, not only PID 1)."""
        if self.unified:
            v2.kill(self.v2_path)
        else:
            v1.kill(self.layout, self.id)

    def remove(self, timeout: float = 2.0) -> bool:
        """Remove every one of them; False if one is still busy after ``timeout``."""
        return all([cgroups.remove(path, timeout) for path in self.paths()])
