"""cgroup v2: one tree, one directory per container, every controller in it.

On v2 a controller is available in a cgroup only if its parent lists it in
``cgroup.subtree_control`` (delegation), and a cgroup with processes in it cannot hand
controllers down ("no internal processes"). So labkit's parent ``labkit/`` holds no process
itself, enables the controllers for its children, and each container gets
``labkit/<id>/`` with its limits in the files Docker's runtime writes:

    memory.max  memory.swap.max  memory.low  cpu.max  cpu.weight  pids.max  cpuset.cpus  io.max

Pausing writes ``cgroup.freeze``; ``cgroup.kill`` kills everything in the cgroup at once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from labkit.kernel import cgroups
from labkit.kernel.cgroups.limits import CPU_PERIOD, Limits, cpu_weight
from labkit.kernel.cgroups.stats import Stats, read_int, read_keyed

CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")


def enable_controllers(parent: Path) -> None:
    """Hand the controllers the parent has down to its children (those it lacks are skipped:
    a limit that needs one of them fails with a clear error when it is written)."""
    available = set((parent / "cgroup.controllers").read_text().split())
    enabled = set((parent / "cgroup.subtree_control").read_text().split())
    wanted = [c for c in CONTROLLERS if c in available and c not in enabled]
    if wanted:
        (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))


def create(root: Path, container_id: str, limits: Limits) -> Path:
    """``root/labkit/<id>`` with the limits written; the container joins it itself."""
    enable_controllers(root)
    path = cgroups.make(cgroups.path_for(root, container_id))
    enable_controllers(path.parent)
    apply(path, limits)
    return path


def apply(path: Path, limits: Limits) -> None:
    writes: list[tuple[str, str]] = []
    if limits.memory is not None:
        writes.append(("memory.max", str(limits.memory)))
        swap = limits.swap_limit
        writes.append(("memory.swap.max", "max" if swap == -1 else str(swap - limits.memory)))
    if limits.memory_reservation is not None:
        writes.append(("memory.low", str(limits.memory_reservation)))
    if limits.cpus is not None:
        writes.append(("cpu.max", f"{round(limits.cpus * CPU_PERIOD)} {CPU_PERIOD}"))
    if limits.cpu_shares is not None:
        writes.append(("cpu.weight", str(cpu_weight(limits.cpu_shares))))
    if limits.pids is not None:
        writes.append(("pids.max", str(limits.pids)))
    if limits.cpuset is not None:
        writes.append(("cpuset.cpus", limits.cpuset))
    for throttle in limits.read_bps:
        writes.append(("io.max", f"{throttle.major}:{throttle.minor} rbps={throttle.bps}"))
    for throttle in limits.write_bps:
        writes.append(("io.max", f"{throttle.major}:{throttle.minor} wbps={throttle.bps}"))
    for name, value in writes:
        write(path, name, value)


def write(path: Path, name: str, value: str) -> None:
    """Write one control file, saying which one the kernel refused."""
    try:
        (path / name).write_text(value)
    except OSError as exc:
        raise OSError(exc.errno, f"{path / name} refused {value!r}: {exc.strerror}") from exc


def stats(path: Path) -> Stats:
    memory = read_keyed(path / "memory.stat")
    cpu = read_keyed(path / "cpu.stat")
    io_read = io_write = 0
    with contextlib.suppress(OSError):
        for line in (path / "io.stat").read_text().splitlines():
            fields = dict(f.split("=") for f in line.split()[1:] if "=" in f)
            io_read += int(fields.get("rbytes", 0))
            io_write += int(fields.get("wbytes", 0))
    limit = read_int(path / "memory.max", -1)
    pids_limit = read_int(path / "pids.max", -1)
    return Stats(
        memory_bytes=read_int(path / "memory.current"),
        memory_peak_bytes=read_int(path / "memory.peak"),
        memory_limit_bytes=None if limit < 0 else limit,
        memory_stat=memory,
        oom_kills=read_keyed(path / "memory.events").get("oom_kill", 0),
        cpu_usage_us=cpu.get("usage_usec", 0),
        cpu_user_us=cpu.get("user_usec", 0),
        cpu_system_us=cpu.get("system_usec", 0),
        cpu_periods=cpu.get("nr_periods", 0),
        cpu_throttled_periods=cpu.get("nr_throttled", 0),
        cpu_throttled_us=cpu.get("throttled_usec", 0),
        pids=read_int(path / "pids.current"),
        pids_limit=None if pids_limit < 0 else pids_limit,
        pids_refused=read_keyed(path / "pids.events").get("max", 0),
        io_read_bytes=io_read,
        io_write_bytes=io_write,
    )


def freeze(path: Path, frozen: bool) -> None:
    """Stop (or let go on) every process in the cgroup; they do not notice."""
    (path / "cgroup.freeze").write_text("1" if frozen else "0")


def is_frozen(path: Path) -> bool:
    return read_keyed(path / "cgroup.events").get("frozen", 0) == 1


def kill(path: Path) -> None:
    """SIGKILL every process in the cgroup, in one write (Linux 5.14+)."""
    (path / "cgroup.kill").write_text("1")
