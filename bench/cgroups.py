"""What a container's cgroups cost: labkit beside runc and crun, for the same limits, in one run.

    sudo /opt/labkit/venv/bin/python bench/cgroups.py [--runs N] [--warmup K] [--json OUT]
                     [--markdown OUT] [--rootfs DIR] [--python PY]

The limits are the ones the notebook and Docker's example use: ``--memory 64m`` (swap 64m in
all), ``--cpus 0.5``, ``--pids-limit 50``. Two measurements, in the same process and run:

1. **Whole runs** of ``true``, round-robin with bench/startup.py's machinery: each runtime
   with no limits and with the limits. Every runtime makes cgroups in both cases, so
   ``limits - plain`` is what *configuring* the limits adds. crun can also run with no
   cgroups at all (``--cgroup-manager=disabled``), so for crun ``plain - disabled`` is the
   whole lifecycle: create, join, remove. runc has no such switch.
2. **labkit's lifecycle in-process**, timed around ``ContainerCgroups``: create the
   container's cgroups and write the limits and device rules, move a process in, and (after
   it is killed and reaped) remove them, each part timed apart. This is the same work as (1)
   measures for crun, without the process start around it.

Everything is named ``labkit-bench-*`` (runc and crun put their cgroups under
``/labkit-bench/<id>``; labkit's in-process ones are ``labkit/labkit-bench-<n>``) and removed
at the end. Not a test: nothing asserts a timing. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import startup  # noqa: E402  (bench/startup.py: contenders, round-robin timing, fixtures)

from labkit.kernel.cgroups import devices, limits  # noqa: E402
from labkit.kernel.cgroups.group import ContainerCgroups  # noqa: E402

FLAGS = ["--memory", "64m", "--memory-swap", "64m", "--cpus", "0.5", "--pids-limit", "50"]
OCI_RESOURCES = {  # the same limits in an OCI config.json (swap is memory + swap, as Docker's)
    "memory": {"limit": 64 * 2**20, "swap": 64 * 2**20},
    "cpu": {"quota": 50_000, "period": 100_000},
    "pids": {"limit": 50},
}


def limited_bundle(plain: Path) -> Path:
    """A copy of the plain bundle's config with the limits (the rootfs is shared)."""
    bundle = plain.parent / "bundle-limits"
    bundle.mkdir(exist_ok=True)
    config = json.loads((plain / "config.json").read_text())
    config["linux"].setdefault("resources", {}).update(OCI_RESOURCES)
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def contenders(state: dict, python: str, rootfs: str) -> list[startup.Contender]:
    pid = os.getpid()
    bundle: Path = state["bundle"]
    bundles = {"plain": bundle, "limits": limited_bundle(bundle)}
    ns = state["legacy"].prefix() if state["legacy"] is not None else []

    def oci(tool: str, prefix: list[str], kind: str, extra: list[str]) -> Callable:
        def argv(i: int) -> list[str]:
            cid = f"{startup.PREFIX}-{pid}-{tool}-{kind}-{i}"
            if i > 0:
                startup.set_cgroup_path(bundles[kind], cid)
            return [*prefix, tool, *extra, "run", "--bundle", str(bundles[kind]), cid]

        return argv

    labkit = [python, "-m", "labkit.cli", "run", "--rootfs", rootfs]
    crun = ("crun-nsenter" if ns else "crun", ns)
    out = [
        startup.Contender("labkit", "plain", "labkit run true", lambda _: [*labkit, "true"]),
        startup.Contender(
            "labkit",
            "limits",
            "labkit run " + " ".join(FLAGS) + " true",
            lambda _: [*labkit, *FLAGS, "true"],
        ),
        startup.Contender("runc", "plain", "runc run", oci("runc", [], "plain", []), "runc"),
        startup.Contender(
            "runc",
            "limits",
            "runc run, resources in config.json",
            oci("runc", [], "limits", []),
            "runc",
        ),
    ]
    for kind, extra in (("plain", []), ("limits", []), ("disabled", ["--cgroup-manager=disabled"])):
        out.append(
            startup.Contender(
                crun[0],
                kind,
                f"crun {' '.join(extra)} run".replace("  ", " "),
                oci("crun", crun[1], "plain" if kind == "disabled" else kind, extra),
                "crun",
            )
        )
    return out


def lifecycle(runs: int) -> dict[str, list[float]]:
    """labkit's cgroup work alone, in microseconds per part, ``runs`` times."""
    wanted = limits.parse(memory="64m", memory_swap="64m", cpus="0.5", pids_limit="50")
    parts: dict[str, list[float]] = {"create + limits + devices": [], "join": [], "remove": []}
    for i in range(runs):
        group = ContainerCgroups(f"{startup.PREFIX}-{os.getpid()}-{i}")
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            t0 = time.perf_counter_ns()
            paths = group.create(wanted, devices.DOCKER_DEFAULT)
            t1 = time.perf_counter_ns()
            for path in paths:
                (path / "cgroup.procs").write_text(str(sleeper.pid))
            t2 = time.perf_counter_ns()
        finally:
            sleeper.send_signal(signal.SIGKILL)
            sleeper.wait()
        t3 = time.perf_counter_ns()
        removed = group.remove()
        t4 = time.perf_counter_ns()
        if not removed:
            raise SystemExit(f"cgroups.py: could not remove {group.paths()}")
        for name, ns in zip(parts, (t1 - t0, t2 - t1, t4 - t3), strict=True):
            parts[name].append(ns / 1e3)
    return parts


def report(rows: list[startup.Contender], parts: dict[str, list[float]]) -> str:
    med = {(c.name, c.kind): statistics.median(c.samples_ns) / 1e6 for c in rows if c.samples_ns}
    lines = [
        "| runtime | no limits (ms) | with limits (ms) | configuring the limits (ms) |"
        " no cgroups at all (ms) | whole cgroup lifecycle (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(c.name for c in rows):
        plain, lim, off = (med.get((name, k)) for k in ("plain", "limits", "disabled"))
        cells = [plain, lim, lim - plain if plain and lim else None, off]
        cells.append(plain - off if plain and off else None)
        lines.append(f"| {name} | " + " | ".join(startup._fmt(v, 2) for v in cells) + " |")
    total = [sum(p) for p in zip(*parts.values(), strict=True)]
    lines += ["", "labkit's lifecycle in-process, median (p90) of each part, microseconds:", ""]
    for name, values in [*parts.items(), ("all three", total)]:
        lines.append(f"- {name}: {statistics.median(values):.0f} ({startup.p90(values):.0f})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--markdown", metavar="OUT")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--rootfs", default=startup.DEFAULT_ROOTFS)
    parser.add_argument("--python", default=startup.DEFAULT_PYTHON)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("cgroups.py: needs root, as the runtimes do (fix: sudo)", file=sys.stderr)
        return 2
    rootfs = os.path.abspath(args.rootfs)
    wanted = {"runc", "crun", "crun-nsenter"}
    load_before = startup.load_now()
    with startup.fixtures(rootfs, wanted) as state:
        if state["bundle"] is None:
            raise SystemExit("cgroups.py: needs runc or crun (fix: apt-get install runc crun)")
        rows = contenders(state, args.python, rootfs)
        for c in rows:
            if startup._missing(c.needs):
                c.status, c.reason = "missing", f"{c.needs} not found: skipped"
        startup.measure(rows, args.runs, args.warmup, progress=True)
        parts = lifecycle(args.runs)
    text = report(rows, parts)
    text += f"\nload before: {load_before}; after: {startup.load_now()}\n"
    text += "".join(f"\nnote: {n}" for n in state["notes"])
    failed = [
        f"{c.name}/{c.kind}: {c.status} {c.reason} {c.stderr[:300]}"
        for c in rows
        if c.status not in startup.LIVE
    ]
    text += "".join(f"\nFAILED {f}" for f in failed)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": [startup.summarize(c) | {"kind": c.kind} for c in rows],
                    "lifecycle_us": parts,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
