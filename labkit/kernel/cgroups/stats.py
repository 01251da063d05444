"""What a container used, in one structure close to ``docker stats``, from either cgroup version.

Both versions count the same things under different file names and units (v1: nanoseconds
in cpuacct.usage, "Read 4096" lines in blkio; v2: microseconds in cpu.stat, "rbytes=4096" in
io.stat). The drivers read their own files; this is the common answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Stats:
    memory_bytes: int = 0  # now
    memory_peak_bytes: int = 0  # the most it ever used
    memory_limit_bytes: int | None = None  # None: no limit
    memory_stat: dict[str, int] = field(default_factory=dict)  # anon, file, ... as the kernel says
    oom_kills: int = 0  # processes the OOM killer killed in this cgroup
    cpu_usage_us: int = 0  # user + system, microseconds
    cpu_user_us: int = 0
    cpu_system_us: int = 0
    cpu_periods: int = 0  # quota periods that passed
    cpu_throttled_periods: int = 0  # ... in which the cgroup hit its quota and was stopped
    cpu_throttled_us: int = 0  # ... and for how long in all
    pids: int = 0
    pids_limit: int | None = None
    pids_refused: int = 0  # forks the pids limit refused (pids.events "max")
    io_read_bytes: int = 0
    io_write_bytes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line like `docker stats --no-stream`: memory against its limit, CPU, PIDs, I/O."""
        limit = "no limit" if self.memory_limit_bytes is None else _human(self.memory_limit_bytes)
        return (
            f"MEM {_human(self.memory_bytes)} / {limit} (peak {_human(self.memory_peak_bytes)}, "
            f"OOM kills {self.oom_kills})  CPU {self.cpu_usage_us / 1e6:.2f} s "
            f"(throttled {self.cpu_throttled_periods}/{self.cpu_periods} periods)  "
            f"PIDS {self.pids}  BLOCK I/O {_human(self.io_read_bytes)} / "
            f"{_human(self.io_write_bytes)}"
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return str(n)


def read_int(path: Path, default: int = 0) -> int:
    """A file holding one number ("max" means no limit: None is returned as default)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return default
    return int(text) if text.lstrip("-").isdigit() else default


def read_keyed(path: Path) -> dict[str, int]:
    """Lines of "key value" (memory.stat, cpu.stat, memory.events ...) as a dict."""
    out = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out
