"""Find host objects that a test run created and did not clean up.

A container lab changes global kernel state: namespaces, links, mounts, firewall rules,
cgroups and processes outlive the Python object that made them. ``tests/run.sh`` takes a
snapshot before the test suite and compares after it, so a leak fails the run even when every
test passed. Nothing is ever changed or removed here; this only looks.

What counts: anything named like labkit's; any process in a PID namespace other than ours (a
container, whatever its command line says); Docker containers and their cgroups. What does
not: state Docker creates once and keeps, such as the parent cgroup ``<hierarchy>/docker``
it makes on its first container (cgroupfs driver) or ``system.slice/docker.service``.

    python tests/leakcheck.py                 # print the current snapshot
    python tests/leakcheck.py --save FILE     # write a baseline
    python tests/leakcheck.py --since FILE    # print what is new since FILE; exit 1 if anything

Standard library only, so it runs with any Python 3.11+.
"""

from __future__ import annotations

import argparse
import os
import re
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
# A Docker container's cgroup: <parent>/docker/<id> (cgroupfs driver), or
# docker-<id>.scope (systemd driver). The parent "docker" itself is Docker's, and lasting.
DOCKER_PARENT = "docker"
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
DOCKER_SCOPE = re.compile(r"docker-[0-9a-f]{64}\.scope")


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


def _is_docker_container(rel: Path) -> bool:
    """A Docker container's cgroup (or one below it): always a leak once the run is over."""
    parts = rel.parts
    for i, part in enumerate(parts):
        if DOCKER_SCOPE.fullmatch(part):
            return True
        if part == DOCKER_PARENT and i + 1 < len(parts) and CONTAINER_ID.fullmatch(parts[i + 1]):
            return True
    return False


def _is_lasting_state(rel: Path) -> bool:
    """Cgroups that are not a test's doing: systemd's churn, and what Docker creates once
    (on its first container) and keeps, e.g. ``docker`` and ``system.slice/docker.service``.
    Called only for cgroups that are neither labkit's nor a container's."""
    return rel.parts[0] in SYSTEMD_SUBTREES or DOCKER_PARENT in rel.parts


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


def cgroups(roots: Iterable[Path] | None = None) -> Iterable[str]:
    """Cgroups that look like ours or like a container's, plus empty ones left behind.

    A cgroup named after neither, with live processes in it, belongs to whoever else is
    using the machine (a login, a CI job), so it is not reported; nor is Docker's and
    systemd's lasting state. ``roots`` (default: every mounted hierarchy) lets a test point
    the check at a subtree it made.
    """
    found = set()
    for root in _cgroup_roots() if roots is None else roots:
        for dirpath, dirnames, _ in os.walk(root):
            path = Path(dirpath)
            rel = path.relative_to(root)
            if len(rel.parts) >= CGROUP_DEPTH:
                dirnames.clear()
            if not rel.parts:
                continue
            named = "labkit" in str(rel) or _is_docker_container(rel)
            if named or not (_is_lasting_state(rel) or _has_processes(path)):
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


#: A learner's VM run (tests/guest/run.py) that tests/run.sh starts beside the host suite.
GUEST_RUN = "tests/guest/run.py"
#: What such a run keeps in /tmp while it runs: the checkout it shares, the browser's profile.
GUEST_TMP = ("labkit-guest-checkout-", "labkit-ci-chromium-")


def _guest_runs() -> set[int]:
    """Every process of a learner's VM run that is in progress (qemu, Chromium, ...).

    tests/run.sh boots the VM beside the host's tests, so a test that compares two snapshots
    (tests/test_cleanup.py) would otherwise see the VM's processes come and go. They are not
    ignored for good: run.sh's own check comes after the VM has stopped, and sees them all."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int(
                (entry / "stat").read_text().rpartition(")")[2].split()[1]
            )
            if GUEST_RUN in (entry / "cmdline").read_bytes().decode(errors="replace"):
                roots.add(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    roots -= _ancestors(os.getpid())  # a check the VM run makes itself sees everything
    tree = set(roots)
    grew = True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def processes() -> Iterable[str]:
    skip = _ancestors(os.getpid()) | _guest_runs()
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


def _start_time(pid: str) -> str:
    """Field 22 of /proc/PID/stat: with the pid, it names one process even if pids recycle."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()  # the name in it may be any bytes
    return stat.rpartition(b")")[2].split()[19].decode()


def pid_namespaces() -> Iterable[str]:
    """Processes in a PID namespace other than ours: containers, whatever they are called.

    The pid namespace, the pid and its start time say which process it is; the command name
    after " comm=" is for the reader and not compared (a process may exec something else).
    """
    own = os.readlink("/proc/self/ns/pid")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ns = os.readlink(entry / "ns" / "pid")
            start = _start_time(entry.name)
            comm = " ".join((entry / "comm").read_bytes().decode(errors="replace").split())
        except (OSError, IndexError):
            continue  # gone meanwhile, or a zombie (its namespaces are already released)
        if ns != own:
            yield f"{ns} pid={entry.name} start={start} comm={comm}"


def labkit_state() -> Iterable[str]:
    """labkit's own container records (STATE_DIR/containers/<id>/) and image build scratch:
    a container that ended takes its record with it, and a finished build renames its own."""
    state = Path(os.environ.get("LABKIT_STATE_DIR", "/var/lib/labkit"))
    for directory in (state / "containers", state / "images"):
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                if directory.name == "containers" and not entry.name.startswith("."):
                    yield f"record {entry.name}"
                elif entry.name.startswith(".tmp-"):
                    yield f"image build {entry.name}"


def containers() -> Iterable[str]:
    """Docker containers, running or stopped: a comparison test must remove its own."""
    if shutil.which("docker") is None:
        return
    fmt = "{{.ID}} {{.Image}} {{.Names}}"
    yield from sorted(_run(["timeout", "20", "docker", "ps", "-a", "--no-trunc", "--format", fmt]))


def host_settings() -> Iterable[str]:
    """Host-wide settings a run may change for a while and must undo: the binfmt_misc entry
    the arm64 learner's VM is built with (tests/guest/image.py), and temporary files named
    like labkit's in /tmp (the guest's checkout copies, notebooks' scratch directories)."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if binfmt.is_dir():
        yield from (f"binfmt_misc {e.name}" for e in binfmt.glob("labkit*"))
    guest_running = bool(_guest_runs())
    for e in sorted(Path("/tmp").glob("labkit*")):
        if not (guest_running and e.name.startswith(GUEST_TMP)):
            yield f"tmp {e}"


PROBES: dict[str, Callable[[], Iterable[str]]] = {
    "netns": netns,
    "link": links,
    "mount": mounts,
    "iptables": firewall,
    "cgroup": cgroups,
    "process": processes,
    "pidns": pid_namespaces,
    "labkit": labkit_state,
    "container": containers,
    "host": host_settings,
}


def snapshot() -> set[str]:
    return {f"{kind}: {item}" for kind, probe in PROBES.items() for item in probe()}


def identity(line: str) -> str:
    """The part of a snapshot line that says which object it is (what --since compares)."""
    if line.startswith("pidns: "):
        return line.partition(" comm=")[0]
    return line


def new_since(baseline: Iterable[str], now: Iterable[str]) -> set[str]:
    """Lines of ``now`` whose object was not in ``baseline``."""
    known = {identity(line) for line in baseline}
    return {line for line in now if identity(line) not in known}


def leftovers(baseline: Iterable[str], settle: float = 10.0) -> list[str]:
    """What is new since ``baseline``, re-checked for up to ``settle`` seconds (processes and
    kernel objects that are already on their way out take a moment)."""
    deadline = time.monotonic() + settle
    while True:
        new = new_since(baseline, snapshot())
        if not new or time.monotonic() >= deadline:
            return sorted(new)
        time.sleep(0.2)


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

    new = leftovers(_load(args.since), args.settle)
    if not new:
        print("leakcheck: nothing left behind")
        return 0
    print("leakcheck: these appeared during the run and are still there:")
    for line in new:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
