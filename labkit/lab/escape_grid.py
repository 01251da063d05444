"""The escape gallery's picture (notebook 08): every probe against every set of defences, run
for real, as a grid of "went through" and "stopped" cells.

A column is a runtime and its flags (``COLUMNS``): everything off, one defence on at a time,
labkit's defaults, Docker's defaults and Docker with everything off, and labkit's
user-namespace mode with everything else off. ``run`` fills the grid (one fresh container per
cell), ``plot`` draws it with the kernel's answer in each cell, ``differences`` lists where
labkit's defaults and Docker's part ways.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from labkit.lab import escapes
from labkit.lab.escapes import ALL_OFF, USERNS, Attempt, Probe, flags


class Column(NamedTuple):
    runtime: str  # "labkit" or "docker"
    flags: tuple[str, ...]


#: Column title -> what runs in it.
COLUMNS: dict[str, Column] = {
    "all off": Column("labkit", ALL_OFF),
    "capabilities only": Column("labkit", flags("capabilities")),
    "seccomp only": Column("labkit", flags("seccomp")),
    "masks only": Column("labkit", flags("masks")),
    "devices only": Column("labkit", flags("devices")),
    "labkit defaults": Column("labkit", ()),
    "Docker all off": Column(runtime="docker", flags=ALL_OFF),
    "Docker defaults": Column(runtime="docker", flags=()),
    "all off + user ns": Column("labkit", (*ALL_OFF, *USERNS)),
}

Grid = dict[str, dict[str, Attempt]]  # probe key -> column title -> attempt

COLOURS = {"went through": "#de2d26", "stopped": "#31a354"}


def columns(docker: bool) -> dict[str, Column]:
    """The columns to run: the Docker ones only where Docker answers."""
    return {k: v for k, v in COLUMNS.items() if docker or v.runtime != "docker"}


def run(probes: Mapping[str, Probe], cols: Mapping[str, Column]) -> Grid:
    """Run every probe under every column, each in a fresh container; print one line per probe
    as it finishes (a grid of ~60 containers takes a little while)."""
    grid: Grid = {}
    for key, probe in probes.items():
        row = escapes.attempt_all([(probe, c.flags, c.runtime) for c in cols.values()])
        grid[key] = dict(zip(cols, row, strict=True))
        through = [t for t, a in grid[key].items() if a.escaped]
        print(f"{probe.title:<34} went through: {', '.join(through) or 'nowhere'}")
    return grid


def stopped_by_alone(grid: Grid, key: str) -> list[str]:
    """The defences that stop probe ``key`` on their own (its "<defence> only" columns)."""
    row = grid[key]
    return [d for d in escapes.DEFENCES if f"{d} only" in row and not row[f"{d} only"].escaped]


def differences(grid: Grid, a: str = "labkit defaults", b: str = "Docker defaults") -> list[str]:
    """The probes on which columns ``a`` and ``b`` disagree (went through in one only)."""
    return [
        k for k, row in grid.items() if a in row and b in row and row[a].escaped != row[b].escaped
    ]


def table(grid: Grid, probes: Mapping[str, Probe]) -> str:
    """The grid as text: a row per probe, ``X`` where it went through, ``.`` where stopped."""
    titles = list(next(iter(grid.values())))
    width = max(len(p.title) for p in probes.values())
    lines = [" " * width + "  " + "  ".join(f"{i + 1:>2}" for i in range(len(titles)))]
    for key, row in grid.items():
        marks = "  ".join(f"{'X' if row[t].escaped else '.':>2}" for t in titles)
        lines.append(f"{probes[key].title:<{width}}  {marks}")
    lines += [f"{i + 1:>2}: {t}" for i, t in enumerate(titles)]
    return "\n".join(lines)


def plot(grid: Grid, probes: Mapping[str, Probe], title: str = "") -> Any:
    """Draw the grid: a red cell went through, a green one was stopped, each with the kernel's
    answer (the errno of the refusal). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    titles = list(next(iter(grid.values())))
    keys = list(grid)
    fig, ax = plt.subplots(figsize=(1.25 * len(titles) + 3.2, 0.62 * len(keys) + 2.2))
    for y, key in enumerate(keys):
        for x, column in enumerate(titles):
            cell = grid[key][column]
            state = "went through" if cell.escaped else "stopped"
            ax.add_patch(
                Rectangle((x, y), 1, 1, facecolor=COLOURS[state], edgecolor="white", linewidth=2)
            )
            word = "through" if cell.escaped else (cell.said or f"exit {cell.returncode}")
            ax.text(x + 0.5, y + 0.5, word, ha="center", va="center", fontsize=8, color="white")
    for x in range(1, len(titles)):  # a wider gap between groups of columns
        if _group(titles[x]) != _group(titles[x - 1]):
            ax.axvline(x, color="white", linewidth=7)
    ax.set_xlim(0, len(titles))
    ax.set_ylim(len(keys), 0)
    ax.set_xticks([x + 0.5 for x in range(len(titles))], _wrap(titles), fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks([y + 0.5 for y in range(len(keys))], [probes[k].title for k in keys])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.legend(
        handles=[Patch(facecolor=c, label=s) for s, c in COLOURS.items()],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=2,
        frameon=False,
    )
    if title:
        ax.set_title(title, pad=40)
    fig.tight_layout()
    return fig


def _wrap(titles: Sequence[str]) -> list[str]:
    return [t.replace(" + ", "\n+ ") if " + " in t else t.replace(" ", "\n", 1) for t in titles]


def _group(title: str) -> str:
    """Columns drawn together: the one-defence-only ones, and the Docker ones."""
    return "only" if title.endswith(" only") else "docker" if title.startswith("Docker") else title
