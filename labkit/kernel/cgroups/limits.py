"""Resource limits with Docker's flags, meaning and units, checked before anything exists.

``--memory 64m`` means the same to labkit as to Docker: 64 MiB, at least 6 MiB, and, unless
``--memory-swap`` says otherwise, as much swap again (Docker's default: memory + swap is twice
the memory). ``--cpus 0.5`` is a quota of 50 ms of CPU time every 100 ms period.
``--cpu-shares`` is a relative weight (1024 is normal); cgroup v2 calls it ``cpu.weight``, on a
1..10000 scale: labkit converts with runc 1.1's linear formula, the one Docker 20.10-26 use,
so the numbers match Docker's on the same machine (runc 1.2 and crun moved to a curve that
maps 1024 to 100 exactly; labkit keeps the one the side-by-side compares against).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import LabkitError

MIN_MEMORY = 6 * 1024 * 1024  # Docker's "Minimum memory limit allowed is 6MB"
CPU_PERIOD = 100_000  # microseconds, the kernel's and Docker's default
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.I)


def parse_bytes(text: str, setting: str) -> int:
    """Docker's RAMInBytes: "64m", "1.5g", "512k", "1024" (bytes), powers of 1024."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise LabkitError(
            f"invalid size {text!r} for the {setting.replace('_', ' ')} setting",
            fix=f"give {{{setting}}} a number with an optional unit b, k, m or g, e.g. 64m",
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def online_cpus() -> set[int]:
    """The CPUs the kernel runs on now (/sys/devices/system/cpu/online: "0-3,6")."""
    try:
        return parse_cpuset(Path("/sys/devices/system/cpu/online").read_text().strip())
    except OSError:
        return set(range(os.cpu_count() or 1))


def parse_cpuset(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise LabkitError(
                f"invalid CPU list {text!r}", fix="write CPU numbers and ranges, e.g. 0-1,3"
            )
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def cpu_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144) as v2 cpu.weight (1..10000), runc 1.1's formula."""
    return 1 + ((shares - 2) * 9999) // 262142


@dataclass(frozen=True)
class Throttle:
    """A read or write rate limit on one block device, in bytes per second."""

    major: int
    minor: int
    bps: int

    @classmethod
    def parse(cls, text: str, what: str) -> Throttle:
        path, sep, rate = text.rpartition(":")
        if not sep:
            raise LabkitError(
                f"invalid {what} {text!r}", fix="write DEVICE:RATE, e.g. /dev/vda:1mb"
            )
        try:
            st = os.stat(path)
        except OSError as exc:
            raise LabkitError(
                f"{what}: {path}: {exc.strerror}", fix="name a block device of this host"
            ) from exc
        if (st.st_mode & 0o170000) != 0o060000:
            raise LabkitError(
                f"{what}: {path} is not a block device", fix="name one, e.g. /dev/vda"
            )
        return cls(os.major(st.st_rdev), os.minor(st.st_rdev), parse_bytes(rate, "device_rate"))


@dataclass(frozen=True)
class Limits:
    """What a container may use; None means "no limit" (the kernel's default)."""

    memory: int | None = None  # bytes
    memory_swap: int | None = None  # memory + swap, bytes; -1 unlimited (as Docker)
    memory_reservation: int | None = None  # a soft limit, bytes
    cpus: float | None = None
    cpu_shares: int | None = None
    pids: int | None = None
    cpuset: str | None = None
    read_bps: tuple[Throttle, ...] = field(default_factory=tuple)
    write_bps: tuple[Throttle, ...] = field(default_factory=tuple)

    @property
    def any(self) -> bool:
        return any(v not in (None, ()) for v in self.__dict__.values())

    @property
    def swap_limit(self) -> int | None:
        """memory + swap as the kernel takes it: Docker's default is twice the memory."""
        if self.memory is None:
            return None
        if self.memory_swap is None:
            return 2 * self.memory
        return self.memory_swap


def parse(
    memory: str | None = None,
    memory_swap: str | None = None,
    memory_reservation: str | None = None,
    cpus: str | None = None,
    cpu_shares: str | None = None,
    pids_limit: str | None = None,
    cpuset_cpus: str | None = None,
    device_read_bps: tuple[str, ...] = (),
    device_write_bps: tuple[str, ...] = (),
) -> Limits:
    """Docker's flags as Limits, or one LabkitError naming the flag's setting and the fix."""
    mem = parse_bytes(memory, "memory") if memory else None
    if mem is not None and mem < MIN_MEMORY:
        raise LabkitError(f"memory limit {memory!r} is below 6 MiB", fix="give {memory} 6m or more")
    swap = None
    if memory_swap:
        if memory_swap.strip() == "-1":
            swap = -1
        else:
            swap = parse_bytes(memory_swap, "memory_swap")
            if mem is None or swap < mem:
                raise LabkitError(
                    f"memory+swap limit {memory_swap!r} must be at least the memory limit",
                    fix="set {memory} too, and {memory_swap} to at least as much (or -1)",
                )
    reservation = (
        parse_bytes(memory_reservation, "memory_reservation") if memory_reservation else None
    )
    if reservation is not None and mem is not None and reservation > mem:
        raise LabkitError(
            "the memory reservation is above the memory limit",
            fix="give {memory_reservation} a value at most {memory}",
        )
    cpu = None
    if cpus:
        try:
            cpu = float(cpus)
        except ValueError:
            cpu = -1.0
        if not 0.01 <= cpu <= len(online_cpus()):
            raise LabkitError(
                f"a CPU limit of {cpus} is not possible on this host's {len(online_cpus())} CPUs",
                fix=f"give {{cpus}} a number from 0.01 to {len(online_cpus())}",
            )
    shares = None
    if cpu_shares:
        if not cpu_shares.isdigit() or not 2 <= int(cpu_shares) <= 262144:
            raise LabkitError(
                f"invalid CPU shares {cpu_shares!r}",
                fix="give {cpu_shares} 2 to 262144 (1024 is normal)",
            )
        shares = int(cpu_shares)
    pids = None
    if pids_limit:
        if not re.fullmatch(r"-?\d+", pids_limit.strip()):
            raise LabkitError(
                f"invalid pids limit {pids_limit!r}", fix="give {pids_limit} a whole number"
            )
        pids = int(pids_limit) if int(pids_limit) > 0 else None  # 0 and -1: unlimited, as Docker
    if cpuset_cpus:
        wanted, online = parse_cpuset(cpuset_cpus), online_cpus()
        if not wanted or not wanted <= online:
            raise LabkitError(
                f"CPUs {cpuset_cpus!r} are not all online here (online: {sorted(online)})",
                fix="give {cpuset_cpus} CPUs this host has",
            )
    return Limits(
        memory=mem,
        memory_swap=swap,
        memory_reservation=reservation,
        cpus=cpu,
        cpu_shares=shares,
        pids=pids,
        cpuset=cpuset_cpus,
        read_bps=tuple(Throttle.parse(t, "device read rate") for t in device_read_bps),
        write_bps=tuple(Throttle.parse(t, "device write rate") for t in device_write_bps),
    )
