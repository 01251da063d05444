"""The cgroup files a runtime writes for Docker's resource flags, on either cgroup version, and
what they mean: for the cgroups notebook (03), to put labkit's files beside Docker's and v1's
beside v2's.

The file names and units come from labkit's own cgroup drivers (``labkit.kernel.cgroups.v1``
and ``v2``), asked on a scratch directory, never from a table typed in a second time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.kernel import cgroups
from labkit.kernel.cgroups import limits, v1, v2
from labkit.lab.cgroup_demo import cgroup_dirs


@dataclass(frozen=True)
class Write:
    """One control file a runtime writes for a limit: which controller's, which file, what."""

    controller: str
    file: str
    value: str


def parse_flags(flags: Sequence[str]) -> limits.Limits:
    """Docker's resource flags (``["--memory", "64m", ...]``) as labkit's ``run`` reads them."""
    from labkit.cli import RESOURCE_FLAGS, build_parser

    args = build_parser().parse_args(["run", *flags, "--", "true"])
    given = {k: getattr(args, k) for k in RESOURCE_FLAGS if getattr(args, k)}
    return limits.parse(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def driver_writes(flags: Sequence[str], v2_files: bool | None = None) -> list[Write]:
    """What labkit's cgroup driver writes for ``flags``, on v2 (``v2_files``) or v1; by default
    on this host's version.

    Asked of the driver itself, not of a table typed in again: its ``apply`` runs against a
    scratch directory standing in for the cgroup filesystem, and the files it wrote there are
    the answer. So both versions can be shown on any host, and they are what labkit does.
    """
    layout = cgroups.detect()
    if v2_files is None:
        v2_files = layout.kind == "unified"
    wanted = parse_flags(flags)
    with tempfile.TemporaryDirectory(prefix="labkit-nb03-") as tmp:
        root = Path(tmp)
        if v2_files:
            v2.apply(root, wanted)
            return [
                Write(f.name.split(".")[0], f.name, f.read_text()) for f in sorted(root.iterdir())
            ]
        mounts = tuple((f"rw,{c}", str(root / c)) for c in v1.CONTROLLERS)
        scratch = cgroups.Layout("legacy", "", (), (), v1.CONTROLLERS, mounts)
        for c in v1.CONTROLLERS:
            cgroups.path_for(root / c, "x").mkdir(parents=True)
        memory = layout.v1_path("memory")
        if memory is None or (memory / "memory.memsw.limit_in_bytes").exists():
            # the driver limits memory+swap only where the kernel accounts swap: so does this
            cgroups.path_for(root / "memory", "x").joinpath("memory.memsw.limit_in_bytes").touch()
        v1.apply(scratch, "x", wanted)
        return [
            Write(c, f.name, f.read_text())
            for c in v1.CONTROLLERS
            for f in sorted(cgroups.path_for(root / c, "x").iterdir())
            if f.read_text()
        ]


def read_files(writes: Sequence[Write], pid: int) -> dict[str, str]:
    """The files of ``writes`` as the kernel shows them for process ``pid``'s cgroups."""
    dirs = cgroup_dirs(pid)
    return {w.file: (dirs[w.controller] / w.file).read_text().strip() for w in writes}


def meaning(file: str, value: str) -> str:
    """What a limit file's value means, in Docker's terms (64 MiB, 0.5 CPUs, 50 processes)."""
    if value in ("max", "-1") or value.startswith("max "):
        return "no limit"
    if file.startswith("memory."):
        what = {"memory.memsw.limit_in_bytes": " memory + swap", "memory.swap.max": " swap"}
        return f"{int(value) / 2**20:g} MiB{what.get(file, '')}"
    if file == "cpu.max":
        quota, period = value.split()
        return f"{int(quota) / int(period):g} CPUs: {_ms(quota)} of CPU time every {_ms(period)}"
    if file == "cpu.cfs_quota_us":
        return f"{_ms(value)} of CPU time per period"
    if file == "cpu.cfs_period_us":
        return f"a period of {_ms(value)}"
    if file == "pids.max":
        return f"{value} processes"
    return value


def version_table(groups: Sequence[Sequence[str]]) -> str:
    """Each group of flags, and the files labkit's driver writes for it on v1 and on v2."""
    rows = [("flags", "cgroup v1", "cgroup v2")]
    for flags in groups:
        one, two = driver_writes(flags, v2_files=False), driver_writes(flags, v2_files=True)
        for i in range(max(len(one), len(two))):
            left = f"{one[i].file} = {one[i].value}" if i < len(one) else ""
            right = f"{two[i].file} = {two[i].value}" if i < len(two) else ""
            rows.append((" ".join(flags) if i == 0 else "", left, right))
    width = [max(len(r[k]) for r in rows) + 2 for k in range(2)]
    return "\n".join(f"{a:<{width[0]}}{b:<{width[1]}}{c}".rstrip() for a, b, c in rows)


def _ms(microseconds: str) -> str:
    return f"{int(microseconds) / 1000:g} ms"


def side_by_side(writes: Sequence[Write], columns: dict[str, dict[str, str]]) -> str:
    """A table: each file labkit's driver writes, its value there, the value in each of
    ``columns`` (``{"Docker": read_files(...), ...}``) and what it means."""
    rows = [("file", "labkit's driver writes", *columns, "meaning")]
    for w in writes:
        seen = [col.get(w.file, "-") for col in columns.values()]
        rows.append((w.file, w.value, *seen, meaning(w.file, w.value)))
    width = [max(len(r[k]) for r in rows) + 2 for k in range(len(rows[0]) - 1)]
    return "\n".join(
        "".join(f"{c:<{n}}" for c, n in zip(r[:-1], width, strict=True)) + r[-1] for r in rows
    )
