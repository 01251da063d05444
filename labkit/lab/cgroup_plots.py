"""Pictures for the cgroups notebook (03): a container's kernel counters over time, against its
limit.

Each function takes the readings ``Box.sample`` took (``(seconds, Stats)`` pairs, straight from
the cgroup files) and returns a matplotlib Figure; the cell shows it with ``plt.show()``. The
limit is drawn as a line and the kernel's own events are marked where its counters moved, so
the picture is evidence, not an illustration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labkit.lab.cgroup_demo import Reading

LIMIT = "#d62728"
USE = "#3182bd"
EVENT = "#e6550d"
MiB = 2**20


def memory(readings: Sequence[Reading], limit: int, title: str = "") -> Any:
    """Memory in use against the limit; the reading where the OOM kill count went up, marked."""
    import matplotlib.pyplot as plt

    t = [r[0] for r in readings]
    used = [r[1].memory_bytes / MiB for r in readings]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(t, used, color=USE, marker=".", label="memory in use (the cgroup's usage file)")
    ax.axhline(limit / MiB, color=LIMIT, linestyle="--", label=f"limit: {limit / MiB:g} MiB")
    kills = [
        i for i in range(1, len(readings)) if readings[i][1].oom_kills > readings[0][1].oom_kills
    ]
    if kills:
        at = readings[kills[0]][0]
        ax.axvline(at, color=EVENT, linestyle=":")
        ax.annotate(
            "OOM kill\n(oom_kill 0 → 1)",
            xy=(at, limit / MiB),
            xytext=(-80, -50),
            textcoords="offset points",
            color=EVENT,
            arrowprops={"arrowstyle": "->", "color": EVENT},
        )
    ax.set_ylim(0, limit / MiB * 1.25)
    ax.set_xlabel("seconds since the program started")
    ax.set_ylabel("MiB")
    ax.legend(loc="upper left")
    ax.set_title(title or "A program that keeps allocating, under a memory limit")
    fig.tight_layout()
    return fig


def cpu_intervals(
    readings: Sequence[Reading], cpus_used: Callable[[dict, dict], float]
) -> list[dict[str, float]]:
    """Per interval between two readings: its end time, the CPUs used over its quota periods
    (by ``cpus_used``, on the kernel's counters), the periods and the throttled periods."""
    rows = []
    for (_, a), (t1, b) in zip(readings, readings[1:], strict=False):
        rows.append(
            {
                "t": t1,
                "cpus": cpus_used(a.as_dict(), b.as_dict()),
                "periods": b.cpu_periods - a.cpu_periods,
                "throttled": b.cpu_throttled_periods - a.cpu_throttled_periods,
            }
        )
    return rows


def cpu(rows: Sequence[dict[str, float]], quota: float, title: str = "") -> Any:
    """CPUs used per interval against the quota; below, the periods and the throttled ones."""
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    width = 0.8 * min((b - a for a, b in zip(t, t[1:], strict=False)), default=0.5)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    top.bar(
        t, [r["cpus"] for r in rows], width=width, color=USE, label="CPUs used (cpu time / periods)"
    )
    top.axhline(quota, color=LIMIT, linestyle="--", label=f"quota: --cpus {quota:g}")
    top.set_ylim(0, max(quota * 1.6, max((r["cpus"] for r in rows), default=0) * 1.2))
    top.set_ylabel("CPUs")
    top.legend(loc="upper left")
    top.set_title(title or "Busy loops under a CPU quota, from the kernel's counters")
    bottom.bar(t, [r["periods"] for r in rows], width=width, color="#bdbdbd", label="periods")
    bottom.bar(t, [r["throttled"] for r in rows], width=width * 0.6, color=EVENT,
               label="throttled periods (nr_throttled)")  # fmt: skip
    bottom.set_ylabel("periods")
    bottom.set_xlabel("seconds since the loops started")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    return fig


def pids(readings: Sequence[Reading], limit: int, title: str = "") -> Any:
    """Processes in the cgroup against pids.max; on the right, the forks the kernel refused."""
    import matplotlib.pyplot as plt

    t = [r[0] for r in readings]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(t, [r[1].pids for r in readings], color=USE, marker=".", label="pids.current")
    ax.axhline(limit, color=LIMIT, linestyle="--", label=f"pids.max: {limit}")
    ax.set_ylim(0, limit * 1.5)
    ax.set_xlabel("seconds since the fork bomb started")
    ax.set_ylabel("processes")
    right = ax.twinx()
    right.plot(t, [r[1].pids_refused for r in readings], color=EVENT, label="refused forks")
    right.set_ylabel("forks refused (pids.events max)", color=EVENT)
    right.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    ax.set_title(title or "A fork bomb under a pids limit")
    fig.tight_layout()
    return fig
