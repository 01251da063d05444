"""cgroup v1: a tree per controller, so a container has a directory in each of them.

v1 mounts every controller (or a few together) as a hierarchy of its own:
/sys/fs/cgroup/memory, /sys/fs/cgroup/cpu, /sys/fs/cgroup/pids ... A container is
``labkit/<id>`` in each, and its limits have v1's names and units:

    memory.limit_in_bytes  memory.memsw.limit_in_bytes  memory.soft_limit_in_bytes
    cpu.cfs_quota_us + cpu.cfs_period_us  cpu.shares  pids.max  cpuset.cpus
    blkio.throttle.read_bps_device  blkio.throttle.write_bps_device

A new cpuset cgroup starts with no CPUs and no memory nodes, so they are copied from the
parent before any process can join. Pausing uses the freezer hierarchy; v1 has no
cgroup.kill, so killing everything is: freeze, SIGKILL each process, thaw.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from labkit.kernel import cgroups
from labkit.kernel.cgroups.limits import CPU_PERIOD, Limits
from labkit.kernel.cgroups.stats import Stats, read_int, read_keyed
from labkit.kernel.cgroups.v2 import write

#: The hierarchies a container gets a cgroup in (devices is made by devices.prepare).
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "freezer")
#: v1 says "no limit" with the largest number it can hold.
UNLIMITED = 0x7FFFFFFFFFFFF000


def paths(layout: cgroups.Layout, container_id: str) -> dict[str, Path]:
    """The container's cgroup in each v1 hierarchy that this host mounts."""
    out = {}
    for controller in CONTROLLERS:
        hierarchy = layout.v1_path(controller)
        if hierarchy is not None:
            out[controller] = cgroups.path_for(hierarchy, container_id)
    return out


def create(layout: cgroups.Layout, container_id: str, limits: Limits) -> list[Path]:
    """Make the container's cgroups (one per hierarchy; two controllers sharing one mount
    share the directory) and write its limits; return the directories to join."""
    made: dict[Path, None] = {}
    for controller, path in paths(layout, container_id).items():
        if path not in made:
            cgroups.make(path)
            made[path] = None
        if controller == "cpuset":
            for name in ("cpuset.cpus", "cpuset.mems"):  # empty in a new cpuset: inherit
                for level in (path.parent, path):
                    if not (level / name).read_text().strip():
                        write(level, name, (level.parent / name).read_text().strip())
    apply(layout, container_id, limits)
    return list(made)


def apply(layout: cgroups.Layout, container_id: str, limits: Limits) -> None:
    where = paths(layout, container_id)
    if limits.memory is not None:
        write(where["memory"], "memory.limit_in_bytes", str(limits.memory))
        swap = limits.swap_limit
        memsw = where["memory"] / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # only when the kernel accounts swap (swapaccount=1)
            write(where["memory"], memsw.name, str(UNLIMITED if swap == -1 else swap))
    if limits.memory_reservation is not None:
        write(where["memory"], "memory.soft_limit_in_bytes", str(limits.memory_reservation))
    if limits.cpus is not None:
        write(where["cpu"], "cpu.cfs_period_us", str(CPU_PERIOD))
        write(where["cpu"], "cpu.cfs_quota_us", str(round(limits.cpus * CPU_PERIOD)))
    if limits.cpu_shares is not None:
        write(where["cpu"], "cpu.shares", str(limits.cpu_shares))
    if limits.pids is not None:
        write(where["pids"], "pids.max", str(limits.pids))
    if limits.cpuset is not None:
        write(where["cpuset"], "cpuset.cpus", limits.cpuset)
    for name, throttles in (("read", limits.read_bps), ("write", limits.write_bps)):
        for t in throttles:
            write(
                where["blkio"], f"blkio.throttle.{name}_bps_device", f"{t.major}:{t.minor} {t.bps}"
            )


def stats(layout: cgroups.Layout, container_id: str) -> Stats:
    where = paths(layout, container_id)
    memory, cpu = where.get("memory"), where.get("cpu")
    cpuacct = read_keyed(where["cpuacct"] / "cpuacct.stat") if "cpuacct" in where else {}
    ticks = os.sysconf("SC_CLK_TCK")
    throttling = read_keyed(cpu / "cpu.stat") if cpu else {}
    io = {"Read": 0, "Write": 0}
    with contextlib.suppress(OSError, KeyError):
        for line in (where["blkio"] / "blkio.throttle.io_service_bytes").read_text().splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in io:
                io[fields[1]] += int(fields[2])
    limit = read_int(memory / "memory.limit_in_bytes", UNLIMITED) if memory else UNLIMITED
    pids_max = (where["pids"] / "pids.max").read_text().strip() if "pids" in where else "max"
    return Stats(
        memory_bytes=read_int(memory / "memory.usage_in_bytes") if memory else 0,
        memory_peak_bytes=read_int(memory / "memory.max_usage_in_bytes") if memory else 0,
        memory_limit_bytes=None if limit >= UNLIMITED else limit,
        memory_stat=read_keyed(memory / "memory.stat") if memory else {},
        oom_kills=read_keyed(memory / "memory.oom_control").get("oom_kill", 0) if memory else 0,
        cpu_usage_us=read_int(where["cpuacct"] / "cpuacct.usage") // 1000
        if "cpuacct" in where
        else 0,
        cpu_user_us=cpuacct.get("user", 0) * 1_000_000 // ticks,
        cpu_system_us=cpuacct.get("system", 0) * 1_000_000 // ticks,
        cpu_periods=throttling.get("nr_periods", 0),
        cpu_throttled_periods=throttling.get("nr_throttled", 0),
        cpu_throttled_us=throttling.get("throttled_time", 0) // 1000,
        pids=read_int(where["pids"] / "pids.current") if "pids" in where else 0,
        pids_limit=None if pids_max == "max" else int(pids_max),
        pids_refused=read_keyed(where["pids"] / "pids.events").get("max", 0)
        if "pids" in where
        else 0,
        io_read_bytes=io["Read"],
        io_write_bytes=io["Write"],
    )


def freeze(layout: cgroups.Layout, container_id: str, frozen: bool) -> None:
    path = paths(layout, container_id)["freezer"]
    (path / "freezer.state").write_text("FROZEN" if frozen else "THAWED")


def is_frozen(layout: cgroups.Layout, container_id: str) -> bool:
    path = paths(layout, container_id)["freezer"]
    return (path / "freezer.state").read_text().strip() == "FROZEN"


def kill(layout: cgroups.Layout, container_id: str) -> None:
    """Freeze (so nothing forks meanwhile), SIGKILL each process, thaw (so they can die)."""
    path = paths(layout, container_id)["freezer"]
    freeze(layout, container_id, True)
    try:
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    finally:
        freeze(layout, container_id, False)
