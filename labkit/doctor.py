"""``labkit doctor``: check, before the lab starts, everything later steps rely on.

Each check reports ``ok``, ``info`` (a fact worth knowing, nothing to do), ``warn`` (the lab
works, with a caveat) or ``fail`` (a step will break), and every warning and failure carries a
one-line fix, so a learner never has to decode a kernel errno three notebooks later.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit import docker
from labkit.errors import LabkitError
from labkit.kernel import cgroups
from labkit.kernel.namespaces import KINDS
from labkit.kernel.syscalls import PIVOT_ROOT_SYSCALL


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # "ok" | "info" | "warn" | "fail"
    detail: str
    fix: str = ""


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _run(*cmd: str) -> subprocess.CompletedProcess | None:
    """Run a probe command; None if it is not installed or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


# -- checks: each returns one or more Check ---------------------------------------------------


def check_root() -> list[Check]:
    if os.geteuid() == 0:
        return [_ok("root", "running as root (uid 0)")]
    return [
        Check(
            "root",
            "fail",
            f"running as uid {os.geteuid()}; namespaces and mounts need root",
            "run with sudo (e.g. sudo labkit doctor)",
        )
    ]


def check_platform() -> list[Check]:
    out = []
    system = platform.system()
    if system == "Linux":
        out.append(_ok("linux", "Linux"))
    else:
        out.append(
            Check(
                "linux",
                "fail",
                f"{system}: containers are a Linux kernel feature",
                "use the lab VM (vagrant up)",
            )
        )
    out.append(_ok("kernel", platform.release()))
    arch = platform.machine()
    if arch in PIVOT_ROOT_SYSCALL:
        out.append(
            _ok("architecture", f"{arch} (pivot_root is syscall {PIVOT_ROOT_SYSCALL[arch]})")
        )
    else:
        known = ", ".join(sorted(PIVOT_ROOT_SYSCALL))
        out.append(
            Check(
                "architecture",
                "fail",
                f"{arch}: no pivot_root syscall number known",
                f"use an x86_64 or aarch64 machine (known: {known})",
            )
        )
    return out


def check_python() -> list[Check]:
    v = sys.version_info
    version = f"{v.major}.{v.minor}.{v.micro}"
    how = "os.unshare/os.setns" if hasattr(os, "unshare") else "ctypes fallback (no os.unshare)"
    if v >= (3, 11):
        return [_ok("python", f"{version}; namespaces via {how}")]
    return [Check("python", "fail", f"{version} is too old", "install Python 3.11 or newer")]


def check_namespaces() -> list[Check]:
    present = (
        {p.name for p in Path("/proc/self/ns").iterdir()}
        if Path("/proc/self/ns").is_dir()
        else set()
    )
    missing = [k for k in KINDS if k not in present]
    out = []
    if missing:
        out.append(
            Check(
                "namespaces",
                "fail",
                f"kernel lacks: {', '.join(missing)}",
                "use a distro kernel >= 4.6 (built with CONFIG_*_NS)",
            )
        )
    else:
        out.append(_ok("namespaces", " ".join(KINDS)))
    raw = _read("/proc/sys/user/max_user_namespaces").strip()
    if raw and int(raw) > 0:
        out.append(_ok("user namespaces", f"enabled (max_user_namespaces={raw})"))
    else:
        out.append(
            Check(
                "user namespaces",
                "warn",
                f"disabled (max_user_namespaces={raw or '?'})",
                "sysctl -w user.max_user_namespaces=15000",
            )
        )
    return out


def check_overlay() -> list[Check]:
    fs = _read("/proc/filesystems").split()
    if "overlay" in fs:
        return [_ok("overlayfs", "overlay in /proc/filesystems")]
    return [
        Check(
            "overlayfs",
            "warn",
            "overlay is not loaded (needed for image layers later)",
            "modprobe overlay",
        )
    ]


#: What the later steps limit: a runtime's cgroups get only what the root delegates.
NEEDED_CONTROLLERS = ("cpu", "memory", "pids")


def check_cgroups() -> list[Check]:
    """Where labkit makes its containers' cgroups, and whether the limits the cgroups step
    writes (cpu, memory, pids) have their controllers there."""
    layout = cgroups.detect()
    if layout.kind == "none":
        return [
            Check(
                "cgroups",
                "fail",
                "no cgroup filesystem mounted",
                "mount -t cgroup2 none /sys/fs/cgroup",
            )
        ]
    if layout.kind != "unified":  # v1 (or hybrid): a tree per controller, all labkit's to use
        missing = [c for c in NEEDED_CONTROLLERS if layout.v1_path(c) is None]
        if missing:
            detail = f"{layout.describe()}; no v1 tree for {' '.join(missing)}"
            return [Check("cgroups", "warn", detail, "boot with cgroup v2 (cgroup_no_v1=all)")]
        return [Check("cgroups", "ok", f"{layout.describe()} (labkit uses the v1 trees)")]
    try:
        where = cgroups.v2_root(layout)
    except LabkitError as exc:
        return [Check("cgroups", "fail", f"unified (v2); {exc.problem}", exc.fix)]
    # A cgroup can hand its children only the controllers it has itself (cgroup.controllers),
    # which is what its parent enabled for it; labkit enables them for its own children.
    have = (where / "cgroup.controllers").read_text().split()
    detail = f"unified (v2); labkit's cgroups under {where}, controllers: {' '.join(have)}"
    missing = [c for c in NEEDED_CONTROLLERS if c not in have]
    if not missing:
        return [Check("cgroups", "ok", detail)]
    if cgroups.under_systemd():
        unit = cgroups.SYSTEMD_UNIT
        fix = (
            f"give {unit} Delegate=yes (vagrant/labkit.service), then "
            f"systemctl daemon-reload && systemctl restart {unit}"
        )
    else:
        fix = f"echo '{' '.join('+' + c for c in missing)}' > {where.parent}/cgroup.subtree_control"
    return [Check("cgroups", "warn", f"{detail}; missing: {' '.join(missing)}", fix)]


def check_hardening() -> list[Check]:
    """What the default container's defences need: a seccomp filter with errno returns and a
    syscall table for this machine, and a way to control devices (v1 list or v2 BPF)."""
    from labkit.kernel import capabilities, seccomp

    out = []
    actions = _read("/proc/sys/kernel/seccomp/actions_avail").split()
    machine = platform.machine()
    if {"errno", "allow"} <= set(actions) and machine in seccomp.ARCHES:
        out.append(_ok("seccomp", f"filters with errno and allow; syscall table for {machine}"))
    else:
        out.append(
            Check(
                "seccomp",
                "fail",
                f"no seccomp filters here (actions: {' '.join(actions) or 'none'}) or no "
                f"syscall table for {machine}",
                "use a kernel built with CONFIG_SECCOMP_FILTER on x86_64 or aarch64",
            )
        )
    layout = cgroups.detect()
    if layout.v1_path("devices") is not None:
        out.append(_ok("device control", f"cgroup v1 devices at {layout.v1_path('devices')}"))
    elif layout.kind == "unified":
        out.append(_ok("device control", "cgroup v2: an eBPF device program per container"))
    else:
        out.append(
            Check(
                "device control",
                "fail",
                "neither a v1 devices hierarchy nor cgroup v2",
                "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)",
            )
        )
    missing = sorted(capabilities.known() - capabilities.bounding())
    detail = f"{len(capabilities.known())} known to this kernel"
    if missing:
        detail += f"; labkit itself lacks {', '.join(missing)} (--privileged cannot give them)"
    out.append(_ok("capabilities", detail))
    return out


def check_iptables() -> list[Check]:
    res = _run("iptables", "-V")
    if res is None or res.returncode != 0:
        return [
            Check(
                "iptables",
                "warn",
                "iptables not found (needed for networking later)",
                "apt-get install iptables",
            )
        ]
    text = res.stdout.strip()
    backend = "nf_tables" if "nf_tables" in text else "legacy" if "legacy" in text else "unknown"
    return [_ok("iptables", f"{text} (backend: {backend})")]


def check_docker() -> list[Check]:
    if not docker.installed():
        return [
            Check(
                "docker",
                "warn",
                "docker CLI not found (used for side-by-side comparisons)",
                "apt-get install docker.io",
            )
        ]
    version = docker.server_version()
    if version is None:
        return [
            Check(
                "docker",
                "warn",
                "docker CLI present, daemon not reachable",
                "start dockerd (systemctl start docker, or `dockerd &` as root)",
            )
        ]
    out = [_ok("docker", f"daemon reachable (server {version})")]
    fwd = _run("iptables", "-S", "FORWARD")
    if fwd is not None and fwd.returncode == 0 and "-P FORWARD DROP" in fwd.stdout:
        out.append(
            Check(
                "docker FORWARD policy",
                "info",
                "Docker set the iptables FORWARD policy to DROP: routed container traffic is "
                "dropped unless a rule accepts it; labkit adds its own ACCEPT rules in the "
                "networking step (nothing to do)",
            )
        )
    return out


def check_images() -> list[Check]:
    from labkit.images.store import KNOWN, list_images

    built = {i["name"]: i for i in list_images()}
    out = []
    for name in KNOWN:
        if name in built:
            mb = built[name]["size_bytes"] / 1e6
            out.append(_ok(f"image {name}", f"built ({mb:.1f} MB, {built[name]['files']} files)"))
        else:
            out.append(Check(f"image {name}", "warn", "not built", "labkit images build all"))
    return out


def check_leftovers() -> list[Check]:
    from labkit import reset

    items = [i for i in reset.plan() if not i.ref.get("in_use")]
    if any(i.kind == "network" for i in items):
        # A network no container uses is not left over (docker0 stays too): it, and the
        # chains and ip_forward that would go with it, are what reset may remove, not what
        # a crash left behind.
        items = [i for i in items if i.kind not in ("network", "net-chains", "net-forward")]
    if not items:
        return [_ok("leftovers", "none from earlier runs")]
    kinds = sorted({i.kind for i in items})
    return [
        Check(
            "leftovers",
            "warn",
            f"{len(items)} leftover objects from earlier runs ({', '.join(kinds)})",
            "labkit reset",
        )
    ]


CHECKS: list[Callable[[], list[Check]]] = [
    check_root,
    check_platform,
    check_python,
    check_namespaces,
    check_overlay,
    check_cgroups,
    check_hardening,
    check_iptables,
    check_docker,
    check_images,
    check_leftovers,
]


def run_checks() -> list[Check]:
    """Run every check; a check that crashes is reported as a failure, not a traceback."""
    out: list[Check] = []
    for fn in CHECKS:
        name = fn.__name__.removeprefix("check_")
        try:
            out += fn()
        except Exception as exc:  # noqa: BLE001 - the doctor must always finish its report
            out.append(
                Check(name, "fail", f"check crashed: {exc!r}", "report this as a labkit bug")
            )
    return out


def main(as_json: bool = False) -> int:
    """Print the report (table or JSON); exit status 1 if any check failed."""
    checks = run_checks()
    if as_json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        mark = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"[{mark[c.status]}] {c.name:<{width}}  {c.detail}")
            if c.fix:
                print(f"       {'':<{width}}  fix: {c.fix}")
        fails = sum(c.status == "fail" for c in checks)
        warns = sum(c.status == "warn" for c in checks)
        print(f"\n{len(checks)} checks: {fails} failed, {warns} warnings")
    return 1 if any(c.status == "fail" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main(as_json="--json" in sys.argv[1:]))
