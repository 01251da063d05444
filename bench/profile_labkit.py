"""Where `labkit run -- true` spends its time: a phase timeline and the import costs behind it.

    sudo python bench/profile_labkit.py [--runs N] [--rootfs DIR] [--python PY] [--json OUT]

Two views, medians over N runs each:

1. Phases, from ``strace -f --seccomp-bpf -ttt`` limited to process and namespace system
   calls (only those stop the tracee, so the overhead stays small but is not zero):
   CLI start -> helper exec -> unshare -> exec of the command -> its exit -> CLI exit, and
   the time spent in ``/sbin/ldconfig -p`` children (what ``ctypes.util.find_library``
   runs).
2. Import costs, as wall time of small interpreter runs timed round-robin like
   bench/startup.py: the bare interpreter with and without ``site``, the CLI's imports, the
   helper's imports, and ``ctypes.util.find_library("c")`` alone.

Companion to bench/startup.py (which compares runtimes); see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_ROOTFS = "/var/lib/labkit/images/busybox/rootfs"
DEFAULT_PYTHON = os.environ.get("LABKIT_PYTHON", "/opt/labkit/venv/bin/python")
REPO = Path(__file__).resolve().parents[1]
TRACED = "execve,vfork,clone,clone3,unshare,pivot_root,exit_group,wait4"
EVENT = re.compile(r"(\d+)\s+([\d.]+) (.*)")


def trace_once(argv: list[str], out: Path) -> dict[str, float]:
    """One traced run, cut into phases (seconds)."""
    subprocess.run(
        ["strace", "-f", "--seccomp-bpf", "-ttt", "-o", str(out), "-e", f"trace={TRACED}", *argv],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    events = [(int(m[1]), float(m[2]), m[3]) for m in map(EVENT.match, out.open()) if m]
    cli_pid, t0 = events[0][0], events[0][1]

    def first(test, after: float = 0.0) -> float:
        return next(t for pid, t, call in events if t >= after and test(pid, call))

    def is_helper_exec(pid: int, call: str) -> bool:
        return pid != cli_pid and call.startswith("execve(") and "ldconfig" not in call

    helper_exec = first(is_helper_exec)
    unshare = first(lambda _p, call: call.startswith("unshare("))
    exec_cmd = first(lambda _p, call: call.startswith("execve(") and "true" in call, unshare)
    cmd_exit = first(lambda _p, call: call.startswith("+++ exited"), exec_cmd)
    ldconfig_cli = ldconfig_helper = 0.0
    count = 0
    for pid, t, call in events:
        if not call.startswith('execve("/sbin/ldconfig"'):
            continue
        count += 1
        forked = max(tt for _p, tt, c in events if tt <= t and c.startswith(("vfork(", "clone")))
        reaped = next(tt for _p, tt, c in events if tt > t and c.startswith(f"wait4({pid},"))
        if t < helper_exec:
            ldconfig_cli += reaped - forked
        else:
            ldconfig_helper += reaped - forked
    return {
        "1 CLI: interpreter + site + imports + argparse, until the helper's exec": (
            helper_exec - t0
        ),
        "  of which ldconfig -p children (ctypes.util.find_library)": ldconfig_cli,
        "2 helper: interpreter + imports, until unshare()": unshare - helper_exec,
        "  of which ldconfig -p children": ldconfig_helper,
        "3 kernel work: unshare + fork + mounts + pivot_root, until exec": exec_cmd - unshare,
        "4 the command (/bin/true) runs": cmd_exit - exec_cmd,
        "5 reap + record removal + CLI shutdown": events[-1][1] - cmd_exit,
        "total (traced)": events[-1][1] - t0,
        "ldconfig runs": float(count),
    }


def phases(python: str, rootfs: str, runs: int) -> dict[str, float]:
    argv = [python, "-m", "labkit.cli", "run", "--rootfs", rootfs, "--", "true"]
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        for i in range(runs):
            for name, value in trace_once(argv, Path(tmp, f"trace{i}")).items():
                rows.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in rows.items()}


def import_costs(python: str, runs: int) -> dict[str, float]:
    helper = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import labkit.runtime.helper, "
        "labkit.kernel.rootfs"
    )
    cli = "import labkit.cli, labkit.runtime.supervisor, labkit.runtime.spec"
    bare = [python, "-I", "-S", "-c"]
    find_library = "import ctypes.util; ctypes.util.find_library('c')"
    commands = {
        "python -S -c pass (no site)": [python, "-S", "-c", "pass"],
        "python -I -S -c pass": [python, "-I", "-S", "-c", "pass"],
        "python -c pass (venv site + .pth files)": [python, "-c", "pass"],
        "python -c 'import <CLI run path>'": [python, "-c", cli],
        "python -I -S -c 'import <helper path>'": [python, "-I", "-S", "-c", helper],
        "python -I -S -c 'import ctypes.util'": [python, "-I", "-S", "-c", "import ctypes.util"],
        "python -I -S -c 'ctypes.util.find_library(\"c\")'": [*bare, find_library],
        "python -I -S -c 'ctypes.CDLL(None)'": [*bare, "import ctypes; ctypes.CDLL(None)"],
        "/sbin/ldconfig -p": ["/sbin/ldconfig", "-p"],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for round_no in range(runs + 2):  # two warm-up rounds
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter_ns()
            subprocess.run(commands[name], stdout=subprocess.DEVNULL, check=True)
            if round_no >= 2:
                samples[name].append((time.perf_counter_ns() - start) / 1e9)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rootfs", default=DEFAULT_ROOTFS)
    parser.add_argument("--python", default=DEFAULT_PYTHON)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    report: dict[str, dict[str, float]] = {}
    if shutil.which("strace") and os.geteuid() == 0:
        report["phases"] = phases(args.python, os.path.abspath(args.rootfs), args.runs)
    else:
        print("profile_labkit.py: no strace or not root: phase timeline skipped", file=sys.stderr)
    report["imports"] = import_costs(args.python, args.runs)
    for section, rows in report.items():
        print(f"\n{section} (median of {args.runs}):")
        for name, value in rows.items():
            shown = f"{value:.0f}" if name == "ldconfig runs" else f"{value * 1e3:8.1f} ms"
            print(f"  {name:<72} {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
