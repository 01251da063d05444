"""Notebook helpers for putting the host, a labkit container and a Docker container side by side.

Everything here only *reads* what the kernel already shows about other processes (their
/proc/PID files, mount tables and namespace links) or asks the Docker CLI, so it is safe
to call from the Jupyter kernel: nothing changes the kernel process's own namespaces or root.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit import docker
from labkit.kernel import procfs
from labkit.kernel.namespaces import KINDS

#: The time namespace is not one of the seven kinds labkit makes, but newer runtimes may
#: create one, so the comparison table shows it when the kernel has it.
EXTRA_KINDS = ("time",)

#: Colours of the namespace grid: the reference column, "same as reference", "new".
COLOURS = {"reference": "#d9d9d9", "shared": "#9ecae1", "new": "#fdae6b", "missing": "#ffffff"}


def table_kinds() -> list[str]:
    """The namespace kinds worth a row: labkit's seven, plus any extra this kernel has."""
    extra = [k for k in EXTRA_KINDS if Path(f"/proc/self/ns/{k}").exists()]
    return [*KINDS, *extra]


def namespace_table(
    pids: Mapping[str, int | str], kinds: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per namespace kind: ``{"kind": k, <column>: inode, ...}``.

    The first column of ``pids`` (usually ``{"host": "self", ...}``) is the reference every
    other column is compared with: equal inode numbers mean the very same namespace, which
    is the only thing ``lsns`` and ``docker inspect`` could tell us about it too.
    """
    rows = []
    for kind in kinds or table_kinds():
        row: dict[str, Any] = {"kind": kind}
        for column, pid in pids.items():
            row[column] = procfs.ns_inode(pid, kind)
        rows.append(row)
    return rows


def _columns(table: Sequence[Mapping[str, Any]]) -> list[str]:
    return [c for c in table[0] if c != "kind"] if table else []


def new_kinds(table: Sequence[Mapping[str, Any]], column: str) -> set[str]:
    """The kinds for which ``column`` has its own namespace (not the reference column's)."""
    reference = _columns(table)[0]
    return {
        row["kind"] for row in table if row[column] is not None and row[column] != row[reference]
    }


def format_table(table: Sequence[Mapping[str, Any]]) -> str:
    """The table as aligned text: inode numbers, with ``*`` marking a namespace of its own."""
    columns = _columns(table)
    reference = columns[0]
    header = f"{'kind':<7}" + "".join(
        f"{c + (' inode' if c == reference else ''):>15}" for c in columns
    )
    lines = [header, "-" * len(header)]
    for row in table:
        cells = []
        for column in columns:
            value = row[column]
            mark = "*" if column != reference and value not in (None, row[reference]) else " "
            cells.append(f"{'-' if value is None else value:>14}{mark}")
        lines.append(f"{row['kind']:<7}" + "".join(cells))
    lines.append(f"* = a namespace of its own (its inode differs from {reference}'s)")
    return "\n".join(lines)


def plot_namespace_grid(table: Sequence[Mapping[str, Any]], title: str = "") -> Any:
    """Draw the table as a coloured grid and return the matplotlib Figure.

    Colour carries the lesson (grey: the reference, blue: shared with it, orange: new), the
    inode numbers in the cells are the evidence the colour is computed from.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    columns = _columns(table)
    reference = columns[0]
    fig, ax = plt.subplots(figsize=(2.6 * len(columns) + 1.2, 0.55 * len(table) + 1.6))
    for y, row in enumerate(table):
        for x, column in enumerate(columns):
            value = row[column]
            if value is None:
                state = "missing"
            elif column == reference:
                state = "reference"
            else:
                state = "shared" if value == row[reference] else "new"
            ax.add_patch(
                Rectangle((x, y), 1, 1, facecolor=COLOURS[state], edgecolor="white", linewidth=2)
            )
            label = "-" if value is None else str(value)
            if state in ("new", "shared"):
                label += "\n" + ("new" if state == "new" else f"= {reference}")
            ax.text(
                x + 0.5, y + 0.5, label, ha="center", va="center", fontsize=9, family="monospace"
            )
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(table), 0)
    ax.set_xticks([x + 0.5 for x in range(len(columns))], columns, fontsize=11)
    ax.xaxis.tick_top()
    ax.set_yticks([y + 0.5 for y in range(len(table))], [r["kind"] for r in table], fontsize=11)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.legend(
        handles=[
            Patch(facecolor=COLOURS["reference"], label=f"{reference} (reference)"),
            Patch(facecolor=COLOURS["shared"], label=f"shared with {reference}"),
            Patch(facecolor=COLOURS["new"], label="a new namespace"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=3,
        frameon=False,
    )
    if title:
        ax.set_title(title, pad=28)
    fig.tight_layout()
    return fig


def docker_container_pid(name: str) -> int:
    """The host PID of a running Docker container's first process (see labkit.docker)."""
    return docker.container_pid(name)


def docker_cgroupns_mode(name: str) -> str:
    """Docker's cgroup namespace mode, "host" or "private" (see labkit.docker)."""
    return docker.cgroupns_mode(name)


def wait_until(check: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    """Poll ``check`` until it is true: a container's command runs a moment after its PID exists."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


#: A process's argv as the kernel shows it (empty once it has exited).
cmdline = procfs.cmdline


def proc_status(pid: int | str, field: str) -> list[str]:
    """One line of /proc/PID/status, split: e.g. ``NSpid`` or ``Uid``."""
    status = procfs.status(pid)
    if field not in status:
        raise KeyError(f"/proc/{pid}/status has no {field}")
    return status[field].split()


def mounts(text: str) -> list[tuple[str, str, str]]:
    """(source, mount point, fstype) for each line of a /proc/.../mounts text."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            rows.append((procfs.unescape(fields[0]), procfs.unescape(fields[1]), fields[2]))
    return rows


def propagation(mountinfo: str, target: str = "/") -> str:
    """The propagation of the mount at ``target`` from a mountinfo text, spelled as findmnt does.

    mountinfo's optional fields carry it: ``shared:N`` (mount events flow both ways within
    peer group N), ``master:N`` (a slave: events only flow in), ``unbindable``; no tag at
    all means private. The last mount on ``target`` is the one on top, so it wins.
    """
    on_target = [m for m in procfs.parse_mountinfo(mountinfo) if m.target == target]
    if not on_target:
        raise ValueError(f"no mount at {target}")
    return on_target[-1].propagation


#: ``{hierarchy: path}`` from a /proc/PID/cgroup text; the v2 hierarchy is called "0".
cgroup_paths = procfs.parse_cgroups


def posix_queue_exists(name: str) -> bool:
    """Does the *caller's* IPC namespace have the POSIX message queue ``name``?

    mq_open(O_RDONLY) only looks the name up: it creates nothing and changes no namespace,
    so the kernel process may ask this about the host's IPC namespace.
    """
    librt = ctypes.CDLL(ctypes.util.find_library("rt") or "librt.so.1", use_errno=True)
    mqd = librt.mq_open(os.fsencode("/" + name.lstrip("/")), os.O_RDONLY)
    if mqd == -1:
        err = ctypes.get_errno()
        if err == 2:  # ENOENT
            return False
        raise OSError(err, f"mq_open /{name}: {os.strerror(err)}")
    librt.mq_close(mqd)
    return True
