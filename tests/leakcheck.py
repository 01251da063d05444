"""Find host objects that a test run created and did not clean up.

A container lab changes global kernel state: namespaces, links, mounts, firewall rules,
cgroups and processes outlive the Python object that made them. ``tests/run.sh`` takes a
snapshot before the test suite and compares after it, so a leak fails the run even when every
test passed. Nothing is ever changed or removed here; this only looks.

    python tests/leakcheck.py                 # print the current snapshot
    python tests/leakcheck.py --save FILE     # write a baseline
    python tests/leakcheck.py --since FILE    # print what is new since FILE; exit 1 if anything

Standard library only, so it runs with any Python 3.11+.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# Filesystems a runtime mounts for a container; others count only under labkit's own dirs.
RUNTIME_FSTYPES = {"overlay", "proc", "sysfs", "devpts", "mqueue", "nsfs", "cgroup", "cgroup2"}
LABKIT_DIRS = ("/var/lib/labkit", "/run/labkit")
# Process command lines that mean "something of ours is still running".
PROCESS_WORDS = ("labkit", "nbval", "ipykernel")
# cgroups systemd creates and removes by itself (logins, timers); not ours unless named so.
SYSTEMD_SUBTREES = ("user.slice", "init.scope", "system.slice")
CGROUP_DEPTH = 3


def _run(argv: list[str]) -> list[str]:
    """Lines of a command's output, or nothing when the tool is missing or fails."""
    if shutil.which(argv[0]) is None:
        return []
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return done.stdout.splitlines() if done.returncode == 0 else []


def netns() -> Iterable[str]:
    run_netns = Path("/run/netns")
    if run_netns.is_dir():
        yield from sorted(p.name for p in run_netns.iterdir())


def links() -> Iterable[str]:
    # Links of the namespace we run in: the host's when run from tests/run.sh.
    yield from sorted(os.listdir("/sys/class/net"))


def _unescape(field: str) -> str:
    """/proc/self/mountinfo writes spaces and tabs in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts() -> Iterable[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        target = _unescape(left.split()[4])
        fstype = right.split()[0]
        ours = "labkit" in target or any(
            target == d or target.startswith(d + "/") for d in LABKIT_DIRS
        )
        if fstype in RUNTIME_FSTYPES or ours:
            yield f"{fstype} {target}"


def firewall() -> Iterable[str]:
    for table in ("nat", "filter"):
        for rule in _run(["iptables", "-w", "-t", table, "-S"]):
            yield f"{table} {rule}"


def _cgroup_roots() -> list[Path]:
    """The unified root on cgroup v2, or every mounted hierarchy on v1/hybrid."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.procs").exists():
        return [base]
    return sorted(p for p in base.iterdir() if (p / "cgroup.procs").exists() and not p.is_symlink())


def _cgroup_is_noise(rel: Path) -> bool:
    """systemd's own churn, unless the cgroup is labkit's or a container's."""
    if not rel.parts or rel.parts[0] not in SYSTEMD_SUBTREES:
        return False
    name = str(rel)
    return "labkit" not in name and "docker-" not in name


def _has_processes(cgroup: Path) -> bool:
    """Whether any process lives in this cgroup or below it."""
    events = cgroup / "cgroup.events"  # cgroup v2 keeps the answer in one file
    if events.exists():
        return "populated 1" in events.read_text()
    for dirpath, _, _ in os.walk(cgroup):
        try:
            if Path(dirpath, "cgroup.procs").read_text().strip():
                return True
        except OSError:
            continue
    return False


def cgroups() -> Iterable[str]:
    """Cgroups that look like ours or like a container's, plus empty ones left behind.

    A cgroup named after neither, with live processes in it, belongs to whoever else is
    using the machine (a login, a CI job), so it is not reported.
    """
    found = set()
    for root in _cgroup_roots():
        for dirpath, dirnames, _ in os.walk(root):
            path = Path(dirpath)
            rel = path.relative_to(root)
            if len(rel.parts) >= CGROUP_DEPTH:
                dirnames.clear()
            if not rel.parts or _cgroup_is_noise(rel):
                continue
            named = "labkit" in str(rel) or "docker" in str(rel)
            if named or not _has_processes(path):
                found.add(str(path))
    yield from sorted(found)


def _ancestors(pid: int) -> set[int]:
    """This process and its parents: whoever is running the check is not a leak."""
    chain = set()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
    return chain


def processes() -> Iterable[str]:
    skip = _ancestors(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        # One line per process (the snapshot file is line based), whatever the arguments hold.
        cmdline = " ".join(raw.decode(errors="replace").replace("\0", " ").split())[:300]
        if cmdline and any(word in cmdline.lower() for word in PROCESS_WORDS):
            # The pid is part of the key: a new process with an old command line still counts.
            yield f"{entry.name} {cmdline}"


def containers() -> Iterable[str]:
    """Docker containers, running or stopped: a comparison test must remove its own."""
    if shutil.which("docker") is None:
        return
    fmt = "{{.ID}} {{.Image}} {{.Names}}"
    yield from sorted(_run(["timeout", "20", "docker", "ps", "-a", "--no-trunc", "--format", fmt]))


PROBES: dict[str, Callable[[], Iterable[str]]] = {
    "netns": netns,
    "link": links,
    "mount": mounts,
    "iptables": firewall,
    "cgroup": cgroups,
    "process": processes,
    "container": containers,
}


def snapshot() -> set[str]:
    return {f"{kind}: {item}" for kind, probe in PROBES.items() for item in probe()}


def _load(path: str) -> set[str]:
    return {line for line in Path(path).read_text().splitlines() if line.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--save", metavar="FILE", help="write the current state to FILE")
    group.add_argument("--since", metavar="FILE", help="report what is new since FILE")
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --since: keep re-checking this long, so that kernels and helper "
        "processes that are already exiting are not reported (default 10)",
    )
    args = parser.parse_args(argv)

    if args.save:
        Path(args.save).write_text("".join(f"{line}\n" for line in sorted(snapshot())))
        return 0
    if not args.since:
        for line in sorted(snapshot()):
            print(line)
        return 0

    baseline = _load(args.since)
    deadline = time.monotonic() + args.settle
    while True:
        new = snapshot() - baseline
        if not new or time.monotonic() >= deadline:
            break
        time.sleep(1)
    if not new:
        print("leakcheck: nothing left behind")
        return 0
    print("leakcheck: these appeared during the run and are still there:")
    for line in sorted(new):
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
