"""tests/leakcheck.py against real kernel objects: what it must report, and what it must not.

Every object here is made by the test itself (cgroups named ``labkit-leaktest-*``, a process
in a new PID namespace, a Docker container) and removed again, whether the test passed or not.
The checker runs in-process for the probes and as ``python -I -S tests/leakcheck.py`` (the
standard library only, as tests/run.sh runs it) for the command line.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import leakcheck
import pytest
from conftest import wait_until

pytestmark = pytest.mark.usefixtures("needs_root")

LEAKCHECK = Path(leakcheck.__file__)
DOCKER_IMAGE = "labkit/busybox"


def _hierarchies() -> dict[str, Path]:
    """One real cgroup hierarchy per version this host mounts: "v2" and, on v1/hybrid, "v1"."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.procs").exists():
        return {"v2": base}
    found: dict[str, Path] = {}
    for path in sorted(base.iterdir()):
        if path.is_symlink() or not (path / "cgroup.procs").exists():
            continue
        found.setdefault("v2" if (path / "cgroup.controllers").exists() else "v1", path)
    return found


HIERARCHIES = _hierarchies()


def _remove_cgroups(top: Path) -> None:
    """rmdir a cgroup and everything below it, deepest first (cgroupfs has no rm -r)."""
    if top.exists():
        for dirpath, _, _ in os.walk(top, topdown=False):
            os.rmdir(dirpath)


@pytest.fixture(params=sorted(HIERARCHIES))
def hierarchy(request: pytest.FixtureRequest) -> Path:
    return HIERARCHIES[request.param]


@pytest.fixture
def cgroup_parent(hierarchy: Path) -> Iterator[Path]:
    """A private cgroup in a real hierarchy, for a test to build a tree under."""
    parent = hierarchy / f"labkit-leaktest-{secrets.token_hex(4)}"
    parent.mkdir()
    try:
        yield parent
    finally:
        _remove_cgroups(parent)


def _checker(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line, as tests/run.sh uses it; -I -S: nothing but the standard library."""
    return subprocess.run(
        [sys.executable, "-I", "-S", str(LEAKCHECK), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- cgroups -------------------------------------------------------------------------------------


def test_a_leaked_labkit_cgroup_is_reported(hierarchy: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline"
    assert _checker("--save", str(baseline)).returncode == 0
    leaked = hierarchy / f"labkit-leaktest-{secrets.token_hex(4)}"
    leaked.mkdir()
    try:
        assert str(leaked) in set(leakcheck.cgroups())
        done = _checker("--since", str(baseline), "--settle", "0")
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"  cgroup: {leaked}\n" in done.stdout
    finally:
        _remove_cgroups(leaked)
    assert str(leaked) not in set(leakcheck.cgroups())


def test_dockers_parent_cgroup_is_not_a_leak_but_a_containers_is(cgroup_parent: Path) -> None:
    """What Docker creates on its first container and keeps is not a leak; a container is.

    The checker is pointed at a real cgroup tree made here, laid out as Docker lays out a
    hierarchy: cgroupfs driver (``docker/<id>``) and systemd driver (``docker-<id>.scope``).
    """
    root = cgroup_parent
    assert list(leakcheck.cgroups([root])) == []
    for lasting in ("docker", "system.slice", "system.slice/docker.service"):
        (root / lasting).mkdir()
    assert list(leakcheck.cgroups([root])) == [], "Docker's own lasting cgroups were reported"

    container_id = secrets.token_hex(32)
    cgroupfs = root / "docker" / container_id
    systemd = root / "system.slice" / f"docker-{container_id}.scope"
    cgroupfs.mkdir()
    systemd.mkdir()
    assert set(leakcheck.cgroups([root])) == {str(cgroupfs), str(systemd)}

    # An empty cgroup of nobody in particular is still a leftover, as before.
    stray = root / "leftover-job"
    stray.mkdir()
    assert str(stray) in set(leakcheck.cgroups([root]))

    for path in (cgroupfs, systemd, stray):
        path.rmdir()
    assert list(leakcheck.cgroups([root])) == []


# -- processes in other PID namespaces -----------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if int(stat.rpartition(b")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _lines_for(pid: int, lines: set[str]) -> list[str]:
    return sorted(line for line in lines if f" pid={pid} " in line)


def test_a_process_left_in_another_pid_namespace_is_reported() -> None:
    """A container's process is reported by its PID namespace, whatever its command line
    says, and stays the same object in the diff when it execs something else."""
    baseline = leakcheck.snapshot()
    unshare = subprocess.Popen(
        # --kill-child: should this test die, the namespace's init dies with unshare.
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        + ["sh", "-c", "read line; exec sleep 1000"],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: len(_children(unshare.pid)) == 1), "no child of unshare"
        (child,) = _children(unshare.pid)
        assert wait_until(lambda: _comm(child) == "sh")
        ns = os.readlink(f"/proc/{child}/ns/pid")
        assert ns != os.readlink("/proc/self/ns/pid")

        running = leakcheck.snapshot()
        (line,) = _lines_for(child, leakcheck.new_since(baseline, running))
        assert line.startswith(f"pidns: {ns} pid={child} start=")
        assert line.endswith(" comm=sh")
        # Nothing in its command line would have given it away.
        assert not [p for p in running if p.startswith(f"process: {child} ")]

        unshare.stdin.write("go\n")
        unshare.stdin.flush()
        assert wait_until(lambda: _comm(child) == "sleep")
        execed = leakcheck.snapshot()
        assert _lines_for(child, leakcheck.new_since(running, execed)) == []
        (line,) = _lines_for(child, leakcheck.new_since(baseline, execed))
        assert line.startswith(f"pidns: {ns} pid={child} ") and line.endswith(" comm=sleep")

        os.kill(child, signal.SIGKILL)
        unshare.wait(timeout=20)
    finally:
        if unshare.poll() is None:
            unshare.kill()
            unshare.wait()
        unshare.stdin.close()
    assert wait_until(lambda: not [p for p in leakcheck.pid_namespaces() if p.startswith(ns)])


# -- Docker --------------------------------------------------------------------------------------


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_docker_container_is_a_leak_until_removed() -> None:
    """A running container shows as a container, its cgroups and its processes; once removed,
    nothing of it is left, and what Docker keeps (its parent cgroups) is not reported."""
    assert shutil.which("docker"), "no docker client: sudo bash vagrant/provision.sh"
    assert _docker("image", "inspect", DOCKER_IMAGE).returncode == 0, (
        f"no {DOCKER_IMAGE} in Docker: sudo labkit images docker-import busybox"
    )
    baseline = leakcheck.snapshot()
    name = f"labkit-leaktest-{secrets.token_hex(4)}"
    started = _docker(
        "run", "-d", "--network", "none", "--name", name, DOCKER_IMAGE, "sleep", "1000"
    )
    try:
        assert started.returncode == 0, started.stderr
        container_id = started.stdout.strip()
        pid = _docker("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        new = leakcheck.new_since(baseline, leakcheck.snapshot())
        assert any(line.startswith(f"container: {container_id} ") for line in new), new
        assert any(line.startswith("cgroup: ") and container_id in line for line in new), new
        assert any(line.startswith("pidns: ") and f" pid={pid} " in line for line in new), new
    finally:
        _docker("rm", "-f", name)
    assert wait_until(lambda: _docker("ps", "-aq", "--filter", f"name={name}").stdout == "")
    new = leakcheck.new_since(baseline, leakcheck.snapshot())
    assert not [line for line in new if container_id in line or f" pid={pid} " in line], new
    # Docker keeps its parent cgroups (made on a host's first container): not a leak.
    assert not [line for line in new if line.startswith("cgroup: ") and line.endswith("/docker")]


# -- a clean run ---------------------------------------------------------------------------------


def test_a_clean_before_and_after_is_clean(tmp_path: Path, cgroup_parent: Path) -> None:
    """Objects made and removed between --save and --since leave nothing to report."""
    baseline = tmp_path / "baseline"
    saved = _checker("--save", str(baseline))
    assert saved.returncode == 0, saved.stderr
    assert baseline.read_text().strip(), "an empty snapshot: the probes saw nothing at all"

    for name in ("labkit-gone", "docker", f"docker/{secrets.token_hex(32)}"):
        (cgroup_parent / name).mkdir()
    _remove_cgroups(cgroup_parent)
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "true"], timeout=30
    )
    assert done.returncode == 0

    checked = _checker("--since", str(baseline))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == "leakcheck: nothing left behind\n"
