"""Start-to-exit latency of ``true`` in a container: labkit next to unshare, runc, crun, Docker.

    sudo /opt/labkit/venv/bin/python bench/startup.py [--runs N] [--warmup K] [--json OUT]
                     [--markdown OUT] [--only NAME,...] [--rootfs DIR] [--python PY]

What one sample is: the wall time (``time.perf_counter_ns``) around ``subprocess.Popen`` and a
blocking ``os.wait4`` of one contender's command, from fork to the reaping of its exit status
(plus the CPU time of that process tree). For a container that covers
create + start + the command's run + teardown (``--rm``); it never includes pulling an image:
every runtime runs the *same* busybox rootfs directory, already on disk (Docker runs an image
imported from that directory, because Docker cannot run a bare directory).

Contenders run round-robin, one sample each per round, and the order rotates every round, so
slow drift (another job on the machine, page-cache state, CPU frequency) lands on all of them
alike. Warm-up rounds are run and thrown away. A contender whose binary is missing is reported
as ``missing``; one whose command exits non-zero the first time is ``failed``, with its stderr,
and not run again; one that fails after having worked is ``flaky`` (given up after
MAX_FAILURES). None is dropped silently.

Everything the script makes is named ``labkit-bench-*`` (OCI bundle directory, container ids,
cgroups ``/labkit-bench/<id>`` in every hierarchy, Docker container names) and is removed at
the end, also after an error or Ctrl-C.

Standard library plus labkit itself (run it with labkit's venv Python): Docker is probed,
imported into and cleaned up through ``labkit.docker``, like everywhere else. It needs root
(the runtimes do) and is not a test: nothing here asserts a timing. See docs/benchmarks.md
for what the numbers mean.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from labkit import docker
from labkit.errors import LabkitError
from labkit.images.store import image_rootfs
from labkit.kernel import cgroups

DEFAULT_ROOTFS = "/var/lib/labkit/images/busybox/rootfs"
DEFAULT_PYTHON = os.environ.get("LABKIT_PYTHON", "/opt/labkit/venv/bin/python")
DOCKER_IMAGE = docker.image_tag("busybox")  # labkit/busybox:latest
PREFIX = "labkit-bench"
#: cgroup parent under which runc and crun put each container's cgroup (every hierarchy).
CGROUP_PARENT = f"/{PREFIX}"
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The cgroup-v2 hierarchy of a "hybrid" host (v1 controllers + a v2 tree for tracking).
UNIFIED = CGROUP_ROOT / "unified"
REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120.0
OCI_CONTENDERS = {"runc", "crun", "crun-nsenter", "runc-nsenter"}
MAX_FAILURES = 5  # a flaky contender is given up after this many failed runs
LIVE = ("ok", "flaky")
STDERR_KEEP = 2000  # characters of a failing contender's stderr kept in the report


@dataclass
class Contender:
    """One command to time. ``argv`` gets the sample's serial number (for unique ids)."""

    name: str
    kind: str  # "container" or "baseline"
    what: str  # one line for the report
    argv: Callable[[int], list[str]]
    needs: str | None = None  # a binary; missing -> status "missing"
    status: str = "ok"  # ok | flaky (some runs failed) | failed | missing
    reason: str = ""  # of the first failure, or why it is missing
    stderr: str = ""  # of the first failure
    returncode: int | None = None
    failures: list[dict] = field(default_factory=list)
    samples_ns: list[int] = field(default_factory=list)
    cpu_ns: list[int] = field(default_factory=list)  # per measured sample, see time_once
    warmup_ns: list[int] = field(default_factory=list)

    def example(self) -> str:
        return shlex.join(self.argv(0))


# --------------------------------------------------------------------------- host facts


def _out(argv: list[str], timeout: float = 20.0) -> str:
    """A command's stdout (stripped), or "" if it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return ""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def cgroup_layout() -> dict[str, object]:
    """v1, v2 or hybrid, as labkit detects it (labkit.kernel.cgroups)."""
    layout = cgroups.detect()
    return {
        "mode": layout.kind,
        "v1_hierarchies": list(layout.v1_hierarchies),
        "v2_controllers": " ".join(layout.v2_controllers),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_now() -> str:
    """Load average and CPU pressure (PSI): how busy the machine was around the run."""
    facts = []
    with contextlib.suppress(OSError):
        facts.append("loadavg " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    with contextlib.suppress(OSError):
        facts.append("cpu pressure " + Path("/proc/pressure/cpu").read_text().splitlines()[0])
    return "; ".join(facts)


def host_facts(python: str) -> dict[str, object]:
    versions = _docker_versions()
    server, _, client = versions.partition(" ")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "cgroups": cgroup_layout(),
        "python": _out([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "python_path": python,
        "bench_python": sys.version.split()[0],
        "runc": " / ".join(_out(["runc", "--version"]).splitlines()[:2]),
        "crun": _out(["crun", "--version"]).splitlines()[0] if shutil.which("crun") else "",
        "docker": f"server {server}, client {client}" if versions else "",
        "unshare": _out(["unshare", "--version"]),
        "nsenter": _out(["nsenter", "--version"]),
        "labkit_revision": labkit_revision(),
    }


def _docker_versions() -> str:
    """ "SERVER CLIENT" versions of Docker, or "" if the CLI is missing or no daemon answers."""
    fmt = "{{.Server.Version}} {{.Client.Version}}"
    try:
        done = docker.run("version", "--format", fmt, check=False, timeout=docker.PROBE_TIMEOUT)
    except LabkitError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def labkit_revision() -> str:
    """The commit of the labkit being measured, "+dirty" if labkit/ has local changes."""
    repo = str(Path(__file__).resolve().parents[1])
    commit = _out(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    if not commit:
        return "unknown (not a git checkout)"
    dirty = _out(["git", "-C", repo, "status", "--porcelain", "--", "labkit"])
    return commit + ("+dirty" if dirty else "")


# --------------------------------------------------------------------------- fixtures


def _runtime_bin() -> str | None:
    return shutil.which("runc") or shutil.which("crun")


def make_bundle(rootfs: str, directory: Path) -> Path:
    """An OCI bundle for ``/bin/true`` on ``rootfs``: ``runc spec`` (or ``crun spec``) + edits.

    The rootfs is used in place, read-only (nothing is copied and nothing written into it).
    The namespaces are made to match labkit's default set (pid, net, ipc, uts, mnt, cgroup):
    the generated spec has no cgroup namespace, so one is added. The network namespace is a
    new one (no ``path``). Each container gets an explicit cgroup ``/labkit-bench/<id>``,
    because the default (a child of the caller's own cgroup) would nest it wherever the
    benchmark happens to run.
    """
    tool = _runtime_bin()
    assert tool is not None
    subprocess.run([tool, "spec"], cwd=directory, check=True, capture_output=True)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["root"] = {"path": os.path.abspath(rootfs), "readonly": True}
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    namespaces = [
        {"type": ns["type"]} if ns["type"] == "network" else ns
        for ns in config["linux"].get("namespaces", [])
    ]
    if not any(ns["type"] == "cgroup" for ns in namespaces):
        namespaces.append({"type": "cgroup"})
    config["linux"]["namespaces"] = namespaces
    config_path.write_text(json.dumps(config, indent=2))
    return directory


def set_cgroup_path(bundle: Path, container_id: str) -> None:
    """runc and crun read the cgroup path from config.json, so each id needs its own file."""
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    config["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/{container_id}"
    path.write_text(json.dumps(config, indent=2))


def cgroup_leftovers() -> list[Path]:
    """Our cgroup directories, in every mounted hierarchy."""
    found = []
    for hierarchy in [CGROUP_ROOT, *sorted(CGROUP_ROOT.iterdir())]:
        parent = hierarchy / CGROUP_PARENT.lstrip("/")
        if parent.is_dir():
            found.extend(p for p in parent.iterdir() if p.is_dir())
            found.append(parent)
    return found


def remove_cgroups() -> list[str]:
    """rmdir every labkit-bench cgroup (children first); returns those that would not go."""
    stuck = []
    for path in cgroup_leftovers():
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            stuck.append(f"{path}: {exc.strerror}")
    return stuck


class LegacyCgroupNamespace:
    """A mount namespace in which /sys/fs/cgroup/unified is not mounted.

    crun refuses to run on a hybrid host whose v2 tree has any controller ("cgroups in hybrid
    mode not supported, drop all controllers from cgroupv2"; here the v2 tree lists hugetlb,
    which no v1 hierarchy has taken). Seen from a mount namespace without that tree, the host
    looks like plain cgroup v1, which crun supports. A sleeping process holds the namespace;
    contenders enter it with ``nsenter --mount``. Nothing on the host changes.
    """

    def __init__(self) -> None:
        script = f"umount {UNIFIED} && echo ready && exec sleep 86400"
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"could not make the mount namespace: {self.proc.stderr.read()}")

    def prefix(self) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.proc.pid}/ns/mnt", "--"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def docker_image_ready(rootfs: str) -> str:
    """Make sure Docker holds the busybox image as ``labkit images docker-import`` makes it
    (re-imported only if the image was rebuilt since). Returns a note for the report."""
    try:
        tag = docker.import_image("busybox")
    except LabkitError as exc:
        return f"import failed: {exc}"
    note = f"{tag} is the labkit busybox image"
    with contextlib.suppress(LabkitError):
        if Path(rootfs) != image_rootfs("busybox"):
            note += f" (not --rootfs {rootfs}: Docker cannot run a bare directory)"
    return note


def remove_docker_containers() -> list[str]:
    """Remove any labkit-bench-* container that --rm did not (there should be none)."""
    try:
        return docker.remove_containers(f"{PREFIX}-")
    except LabkitError:  # Docker does not answer: the suite's leak check still looks
        return []


def remove_runtime_state() -> list[str]:
    """Delete any runc/crun container of ours still in the runtime's state dir."""
    left = []
    for tool, state_dir in (("runc", "/run/runc"), ("crun", "/run/crun")):
        directory = Path(state_dir)
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if entry.name.startswith(f"{PREFIX}-"):
                left.append(f"{tool}:{entry.name}")
                subprocess.run([tool, "delete", "--force", entry.name], capture_output=True)
    return left


# --------------------------------------------------------------------------- contenders


def build_contenders(
    rootfs: str,
    python: str,
    bundle: Path | None,
    legacy: LegacyCgroupNamespace | None,
    baseline: Path | None = None,
    own_rootfs: Path | None = None,
) -> list[Contender]:
    pid = os.getpid()
    labkit_script = Path(python).parent / "labkit"
    # --network none: like runc's bundle, a network namespace with nothing in it; the
    # *-bridge rows add what a default container pays for its network
    run_args = ["run", "--rootfs", rootfs, "--network", "none", "--", "true"]
    bridge_args = ["run", "--rootfs", rootfs, "--", "true"]
    chroot_root = str(own_rootfs or rootfs)
    chroot_args = ["run", "--rootfs", chroot_root, "--ns", "none", "--isolation", "chroot"]
    chroot_args += ["--", "true"]

    def oci(tool: str, prefix: list[str], tag: str) -> Callable[[int], list[str]]:
        def argv(i: int) -> list[str]:
            cid = f"{PREFIX}-{pid}-{tag}-{i}"
            if bundle is not None and i > 0:
                set_cgroup_path(bundle, cid)
            return [*prefix, tool, "run", "--bundle", str(bundle), cid]

        return argv

    def fixed(argv: list[str]) -> Callable[[int], list[str]]:
        return lambda _i: list(argv)

    unshare = [
        "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "--cgroup",
        "--mount-proc", "--root", rootfs, "/bin/true",
    ]  # fmt: skip
    docker_run = ["docker", "run", "--rm", "--network", "none"]
    out = [
        Contender(
            "labkit",
            "container",
            "python -m labkit.cli run (uts,pid,mnt,ipc,net,cgroup + pivot_root)",
            fixed([python, "-m", "labkit.cli", *run_args]),
            needs=python,
        ),
        Contender(
            "labkit-bridge",
            "container",
            "python -m labkit.cli run on the default network (labkit0): a veth pair, an "
            "address, /etc/hosts and resolv.conf, set up and torn down",
            fixed([python, "-m", "labkit.cli", *bridge_args]),
            needs=python,
        ),
        Contender(
            "labkit-privileged",
            "container",
            "python -m labkit.cli run --privileged: the same, without the hardening (no "
            "seccomp, masks, device cgroup, capability drop)",
            fixed([python, "-m", "labkit.cli", "run", "--privileged", *run_args[1:]]),
            needs=python,
        ),
        Contender(
            "labkit-script",
            "container",
            "installed console script `labkit run` (same work as above)",
            fixed([str(labkit_script), *run_args]),
            needs=str(labkit_script),
        ),
        Contender(
            "labkit-chroot-nons",
            "container",
            "labkit run --ns none --isolation chroot on a copy of the rootfs the benchmark made "
            "(floor: labkit's Python path, no namespaces)",
            fixed([python, "-m", "labkit.cli", *chroot_args]),
            needs=python,
        ),
        Contender(
            "unshare",
            "container",
            "util-linux unshare, same 6 namespaces + /proc, chroot via --root",
            fixed(unshare),
            needs="unshare",
        ),
        Contender(
            "runc",
            "container",
            "runc run (OCI bundle, same rootfs read-only, 6 namespaces, cgroups v1)",
            oci("runc", [], "runc"),
            needs="runc",
        ),
        Contender(
            "crun",
            "container",
            "crun run (same bundle)",
            oci("crun", [], "crun"),
            needs="crun",
        ),
    ]
    if legacy is not None:
        out += [
            Contender(
                "crun-nsenter",
                "container",
                "nsenter --mount=<ns without the cgroup2 tree> crun run (same bundle)",
                oci("crun", legacy.prefix(), "crunns"),
                needs="crun",
            ),
            Contender(
                "runc-nsenter",
                "container",
                "nsenter --mount=<same ns> runc run: runc under crun's conditions",
                oci("runc", legacy.prefix(), "runcns"),
                needs="runc",
            ),
        ]
    out += [
        Contender(
            "docker",
            "container",
            f"docker run --rm --network none {DOCKER_IMAGE} true (daemon, containerd, shim, runc)",
            lambda i: [*docker_run, "--name", f"{PREFIX}-{pid}-{i}", DOCKER_IMAGE, "true"],
            needs="docker",
        ),
        Contender(
            "docker-bridge",
            "container",
            f"docker run --rm {DOCKER_IMAGE} true on Docker's default network (docker0)",
            lambda i: [
                "docker",
                "run",
                "--rm",
                "--name",
                f"{PREFIX}-{pid}-b{i}",
                DOCKER_IMAGE,
                "true",
            ],  # noqa: E501  # fmt: skip
            needs="docker",
        ),
        Contender("true", "baseline", "bare /bin/true: fork + exec + wait", fixed(["/bin/true"])),
    ]
    if legacy is not None:
        out.append(
            Contender(
                "nsenter-true",
                "baseline",
                "nsenter --mount=<same ns> /bin/true: what the nsenter hop costs",
                fixed([*legacy.prefix(), "/bin/true"]),
                needs="nsenter",
            )
        )
    out += [
        Contender(
            "python-c-pass",
            "baseline",
            "labkit's interpreter: python -c pass (with site: the venv's .pth files)",
            fixed([python, "-c", "pass"]),
            needs=python,
        ),
        Contender(
            "python-I-c-pass",
            "baseline",
            "python -I -c pass (isolated: no env vars, no user site; venv site still runs)",
            fixed([python, "-I", "-c", "pass"]),
            needs=python,
        ),
        Contender(
            "python-S-c-pass",
            "baseline",
            "python -S -c pass (no site module at all: the interpreter's own floor)",
            fixed([python, "-S", "-c", "pass"]),
            needs=python,
        ),
    ]
    # The same CLI call, from two checkouts, through the same `env`, each run from its own
    # checkout: `python -m` puts the working directory first on sys.path (the helper it starts
    # too), so run from one checkout both would import that one (an earlier run measured this
    # checkout twice).
    if baseline is not None:
        for name, checkout in (("labkit-current", REPO), ("labkit-baseline", baseline)):
            hop = ["env", "-C", str(checkout), f"PYTHONPATH={checkout}"]
            out.append(
                Contender(
                    name,
                    "container",
                    f"env -C {checkout} PYTHONPATH={checkout} python -m labkit.cli run",
                    fixed([*hop, python, "-m", "labkit.cli", *run_args]),
                    needs=python,
                )
            )
    return out


def _missing(needs: str | None) -> bool:
    if needs is None:
        return False
    if os.sep in needs:
        return not os.access(needs, os.X_OK)
    return shutil.which(needs) is None


# --------------------------------------------------------------------------- measuring


class _Watchdog:
    """Kills the running sample after TIMEOUT_S, with SIGALRM rather than a timeout argument.

    ``subprocess.run(timeout=...)`` waits by polling with sleeps that grow to 50 ms, which
    rounds every sample up to the next poll; a blocking ``wait4`` returns the moment the
    child exits, and SIGALRM interrupts nothing while no sample is over time.
    """

    def __init__(self) -> None:
        self.pid = 0
        self.fired = False
        self.previous = signal.signal(signal.SIGALRM, self._fire)

    def _fire(self, _signum: int, _frame: object) -> None:
        if self.pid:
            self.fired = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def arm(self) -> None:
        self.pid, self.fired = 0, False
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.pid = 0

    def close(self) -> None:
        self.disarm()
        signal.signal(signal.SIGALRM, self.previous)


def time_once(argv: list[str], errors: BinaryIO, watchdog: _Watchdog) -> tuple[int, int, int]:
    """(wall ns, CPU ns, exit status) of one run; stdout discarded, stderr kept in ``errors``.

    Wall time runs from just before the fork to the return of a blocking ``wait4``.
    stderr goes to an (emptied) temporary file rather than /dev/null so that a failing run
    can be reported with its own message; a run that succeeds writes nothing there, so the
    file costs no more than /dev/null would.

    CPU is user + system time of the reaped child and every descendant it waited for (the
    rusage ``wait4`` returns): less disturbed than wall time by other jobs on a shared
    machine, but blind to work done elsewhere (the Docker daemon, containerd and the shim
    are not our descendants).
    """
    errors.seek(0)
    errors.truncate()
    watchdog.arm()
    try:
        start = time.perf_counter_ns()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
        )
        watchdog.pid = proc.pid
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter_ns() - start
    finally:
        watchdog.disarm()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if watchdog.fired:
        raise TimeoutError(f"killed after {TIMEOUT_S:.0f} s")
    return wall, int((usage.ru_utime + usage.ru_stime) * 1e9), proc.returncode


def _read(errors: BinaryIO) -> str:
    errors.seek(0)
    return errors.read().decode(errors="replace").strip()[-STDERR_KEEP:]


def record_failure(c: Contender, serial: int, code: int | None, why: str, stderr: str) -> None:
    """Keep the failure with its stderr. A contender that never succeeded is given up at once
    ("failed"); one that worked before is "flaky" and goes on, until MAX_FAILURES."""
    c.failures.append({"serial": serial, "returncode": code, "reason": why, "stderr": stderr})
    if len(c.failures) == 1:
        c.reason, c.stderr, c.returncode = why, stderr, code
    worked = bool(c.samples_ns or c.warmup_ns)
    c.status = "flaky" if worked and len(c.failures) < MAX_FAILURES else "failed"


def sample(c: Contender, serial: int, warmup: bool, errors: BinaryIO, dog: _Watchdog) -> None:
    try:
        ns, cpu, code = time_once(c.argv(serial), errors, dog)
    except TimeoutError as exc:
        record_failure(c, serial, None, str(exc), _read(errors))
        return
    except OSError as exc:
        record_failure(c, serial, None, f"could not start: {exc}", "")
        return
    if code != 0:
        record_failure(c, serial, code, f"exit status {code}", _read(errors))
    elif warmup:
        c.warmup_ns.append(ns)
    else:
        c.samples_ns.append(ns)
        c.cpu_ns.append(cpu)


def measure(contenders: list[Contender], runs: int, warmup: int, progress: bool) -> None:
    """Round-robin: every round runs each live contender once, starting one further along."""
    serial = 0
    total = warmup + runs
    gc.disable()  # no collector pauses in the timing process
    watchdog = _Watchdog()
    try:
        with tempfile.TemporaryFile(prefix=f"{PREFIX}-stderr-") as errors:
            for round_no in range(total):
                live = [c for c in contenders if c.status in LIVE]
                if not live:
                    return
                shift = round_no % len(live)
                for c in live[shift:] + live[:shift]:
                    serial += 1
                    sample(c, serial, round_no < warmup, errors, watchdog)
                if progress and (round_no + 1) % 10 == 0:
                    print(f"  round {round_no + 1}/{total}", file=sys.stderr, flush=True)
    finally:
        watchdog.close()
        gc.enable()


# --------------------------------------------------------------------------- reporting


def p90(values: list[float]) -> float:
    """90th percentile, linear interpolation between closest ranks (numpy's default)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def summarize(c: Contender) -> dict[str, object]:
    row: dict[str, object] = {
        "name": c.name,
        "kind": c.kind,
        "what": c.what,
        "command": c.example(),
        "status": c.status,
        "n": len(c.samples_ns),
    }
    if c.reason:
        row["reason"] = c.reason
    if c.stderr:
        row["stderr"] = c.stderr
    if c.returncode is not None:
        row["returncode"] = c.returncode
    if c.failures:
        row["failed_runs"] = len(c.failures)
        row["failures"] = c.failures
    if c.samples_ns:
        ms = sorted(ns / 1e6 for ns in c.samples_ns)
        row.update(
            median_ms=round(statistics.median(ms), 3),
            p90_ms=round(p90(ms), 3),
            min_ms=round(ms[0], 3),
            max_ms=round(ms[-1], 3),
            mean_ms=round(statistics.fmean(ms), 3),
            cpu_median_ms=round(statistics.median(ns / 1e6 for ns in c.cpu_ns), 3),
            samples_ms=[round(ns / 1e6, 3) for ns in c.samples_ns],
            cpu_ms=[round(ns / 1e6, 3) for ns in c.cpu_ns],
        )
    if c.status not in LIVE:
        row["median_ms"] = None  # a failed contender has no figure, whatever it measured
    return row


def add_ratios(rows: list[dict[str, object]]) -> None:
    by_name = {r["name"]: r for r in rows}
    for ref in ("labkit", "runc"):
        base = by_name.get(ref, {}).get("median_ms")
        for r in rows:
            value = r.get("median_ms")
            r[f"x_{ref}"] = round(value / base, 3) if value and base else None


def _fmt(value: object, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{suffix}"


def _status(r: dict) -> str:
    if r["status"] == "ok":
        return f"ok (n={r['n']})"
    if r.get("failed_runs"):
        return f"{r['status']} ({r['failed_runs']} failed, {r['n']} measured)"
    return r["status"]


def markdown(report: dict) -> str:
    meta = report["meta"]
    cg = meta["host"]["cgroups"]
    lines = [
        f"Run {meta['host']['date']}: {meta['runs']} measured runs per contender "
        f"(+{meta['warmup']} warm-up, discarded), round-robin, rotating order; "
        f"rootfs `{meta['rootfs']}`.",
        "",
        "| contender | median ms | p90 ms | min ms | × labkit | × runc | CPU ms | status |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["contenders"]:
        lines.append(
            f"| `{r['name']}` | {_fmt(r.get('median_ms'))} | {_fmt(r.get('p90_ms'))} | "
            f"{_fmt(r.get('min_ms'))} | {_fmt(r.get('x_labkit'), 2, '×')} | "
            f"{_fmt(r.get('x_runc'), 2, '×')} | {_fmt(r.get('cpu_median_ms'))} | {_status(r)} |"
        )
    lines += ["", "Commands (sample serial numbers make ids unique):", ""]
    for r in report["contenders"]:
        lines.append(f"- `{r['name']}`: {r['what']}  \n  `{r['command']}`")
    problems = [r for r in report["contenders"] if r["status"] != "ok"]
    if problems:
        lines += ["", "Failed, flaky or missing (first failure's last stderr line):", ""]
        for r in problems:
            detail = r.get("stderr", "").strip().splitlines()
            tail = f": `{detail[-1]}`" if detail else ""
            if not detail and r["status"] != "missing":
                tail = " (no stderr)"
            lines.append(f"- `{r['name']}` {_status(r)}, {r.get('reason', '')}{tail}")
    host = meta["host"]
    lines += [
        "",
        "Machine:",
        "",
        f"- kernel {host['kernel']}, {host['cpu_model']}, nproc {host['nproc']}",
        f"- cgroups: {cg['mode']}; v2 controllers: `{cg['v2_controllers'] or 'none'}`",
        f"- python {host['python']} ({host['python_path']}); labkit {host['labkit_revision']}",
        f"- {host['runc'] or 'runc missing'}; {host['crun'] or 'crun missing'}",
        f"- docker {host['docker'] or 'missing'}; {host['unshare']}",
        f"- before: {meta['load_before']}",
        f"- after: {meta['load_after']}",
    ]
    for note in meta["notes"]:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


def print_table(report: dict) -> None:
    head = ["median", "p90", "min", "×labkit", "×runc", "cpu"]
    print(f"{'contender':<24}" + "".join(f"{h:>9}" for h in head) + "  status")
    for r in report["contenders"]:
        print(
            f"{r['name']:<24}{_fmt(r.get('median_ms')):>9}{_fmt(r.get('p90_ms')):>9}"
            f"{_fmt(r.get('min_ms')):>9}{_fmt(r.get('x_labkit'), 2):>9}"
            f"{_fmt(r.get('x_runc'), 2):>9}{_fmt(r.get('cpu_median_ms')):>9}"
            f"  {_status(r)} {r.get('reason', '')}"
        )


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def default_network_kept_as_found() -> Iterator[None]:
    """labkit's default network (``labkit0`` and its rules) stays once made, as docker0 does;
    a benchmark that made it takes it away again, so it leaves the host as it found it."""
    had = os.path.exists("/sys/class/net/labkit0")
    try:
        yield
    finally:
        if not had:
            from labkit.network import cleanup

            cleanup.remove_default_if_unused()


@contextlib.contextmanager
def fixtures(rootfs: str, wanted: set[str] | None) -> Iterator[dict]:
    """The bundle directory, the legacy-cgroup mount namespace if crun needs it, cleanup."""
    state: dict = {"bundle": None, "legacy": None, "notes": [], "own_rootfs": None}
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
        # A rootfs of the benchmark's own: without a mount namespace labkit would copy an
        # image for every run, and this contender measures labkit's floor, not a copy.
        state["own_rootfs"] = tmp / "own-rootfs"
        shutil.copytree(rootfs, state["own_rootfs"], symlinks=True)
        if _runtime_bin() and (wanted is None or wanted & OCI_CONTENDERS):
            bundle = tmp / "bundle"
            bundle.mkdir()
            state["bundle"] = make_bundle(rootfs, bundle)
        if shutil.which("crun") and state["bundle"] is not None and _crun_needs_legacy(wanted):
            try:
                state["legacy"] = LegacyCgroupNamespace()
                state["notes"].append(
                    "crun refuses this hybrid host; crun-nsenter runs it in a mount namespace "
                    "without /sys/fs/cgroup/unified (nsenter-true is that hop's own cost)"
                )
            except (OSError, RuntimeError) as exc:
                state["notes"].append(f"no legacy-cgroup namespace for crun: {exc}")
        yield state
    finally:
        if state["legacy"] is not None:
            state["legacy"].close()
        left = remove_runtime_state() + remove_docker_containers()
        stuck = remove_cgroups()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if left:
            state["notes"].append(f"cleaned up leftovers: {', '.join(left)}")
        if stuck:
            state["notes"].append(f"cgroups that would not go: {', '.join(stuck)}")


def _crun_needs_legacy(wanted: set[str] | None) -> bool:
    """True on a hybrid host whose v2 tree has controllers: the case crun rejects."""
    if wanted is not None and not wanted & {"crun-nsenter", "runc-nsenter", "nsenter-true"}:
        return False
    try:
        return bool((UNIFIED / "cgroup.controllers").read_text().strip())
    except OSError:
        return False


def run(args: argparse.Namespace) -> dict:
    rootfs = os.path.abspath(args.rootfs)
    if not Path(rootfs, "bin", "true").exists() and not Path(rootfs, "bin", "busybox").exists():
        raise SystemExit(f"startup.py: no busybox rootfs at {rootfs} (fix: labkit images build)")
    wanted = set(args.only.split(",")) if args.only else None
    host = host_facts(args.python)
    load_before = load_now()
    with default_network_kept_as_found(), fixtures(rootfs, wanted) as state:
        baseline = Path(args.baseline).resolve() if args.baseline else None
        contenders = build_contenders(
            rootfs, args.python, state["bundle"], state["legacy"], baseline, state["own_rootfs"]
        )
        if wanted is not None:
            unknown = wanted - {c.name for c in contenders}
            if unknown:
                state["notes"].append(f"--only names not available here: {sorted(unknown)}")
            contenders = [c for c in contenders if c.name in wanted]
        for c in contenders:
            if _missing(c.needs):
                c.status, c.reason = "missing", f"{c.needs} not found: skipped"
        if any(c.name == "docker" and c.status == "ok" for c in contenders):
            state["notes"].append(f"docker image: {docker_image_ready(rootfs)}")
        if not args.quiet:
            names = ", ".join(c.name for c in contenders if c.status == "ok")
            print(f"startup.py: {args.warmup}+{args.runs} rounds of: {names}", file=sys.stderr)
        measure(contenders, args.runs, args.warmup, progress=not args.quiet)
    rows = [summarize(c) for c in contenders]
    add_ratios(rows)
    if labkit_revision() != host["labkit_revision"]:
        state["notes"].append(
            f"labkit changed during the run: {host['labkit_revision']} -> {labkit_revision()}"
        )
    return {
        "meta": {
            "runs": args.runs,
            "warmup": args.warmup,
            "rootfs": rootfs,
            "host": host,
            "load_before": load_before,
            "load_after": load_now(),
            "notes": state["notes"],
            "method": "perf_counter_ns around subprocess.run, stdout/stderr to /dev/null, "
            "round-robin with rotating start, warm-up discarded",
        },
        "contenders": rows,
    }


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="measured runs each (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="discarded rounds (default 5)")
    parser.add_argument("--json", metavar="OUT", help="write the full report (with samples)")
    parser.add_argument("--markdown", metavar="OUT", help="write the results table")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated contender names")
    parser.add_argument("--rootfs", default=DEFAULT_ROOTFS)
    parser.add_argument("--python", default=DEFAULT_PYTHON, help="labkit's interpreter")
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="another labkit checkout (e.g. a `git worktree` of an older commit) to time "
        "beside this one, as labkit-baseline and labkit-current",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    if os.geteuid() != 0:
        print("startup.py: needs root, as the runtimes do (fix: sudo)", file=sys.stderr)
        return 2
    report = run(args)
    if args.json:
        _write(args.json, json.dumps(report, indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, markdown(report))
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
