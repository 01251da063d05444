"""`labkit run` under the learner VM's conditions: pure cgroup v2 and a *shared* root mount.

CI's host is cgroup v1 (hybrid) and its "/" is private; the learner's Ubuntu VM is pure v2
and, under systemd, "/" is shared. Both change what the runtime meets, so the same
container is started here, in the cgroup-v2 guest, with "/" made rshared first as systemd
does. Run by ``python tests/vm/run_in_cgroup2.py tests/in_vm``; never on the host.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTFS = Path("/var/lib/labkit/images/busybox/rootfs")


def _labkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", "run", "--rootfs", str(ROOTFS), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _propagation(target: str = "/") -> str:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target:
            return "shared" if any(f.startswith("shared:") for f in fields[6:]) else "private"
    raise AssertionError(f"{target} is not a mount point")


@pytest.fixture(scope="module")
def shared_root() -> Iterator[None]:
    """Make "/" rshared, as systemd does on the learner's VM, and undo it afterwards."""
    before = _propagation()
    subprocess.run(["mount", "--make-rshared", "/"], check=True)
    assert _propagation() == "shared"
    yield
    if before == "private":
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def test_a_container_runs_with_a_shared_root(shared_root: None) -> None:
    done = _labkit("--hostname", "learner", "--", "sh", "-c", "hostname; echo $$")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["learner", "1"]


def test_its_mounts_do_not_propagate_to_the_host(shared_root: None) -> None:
    """With "/" shared, a mount made inside would appear on the host unless labkit made the
    container's mounts private first (the classic "host /proc vanished" bug)."""
    done = _labkit("--", "sh", "-c", "mount -t tmpfs labkit-in-vm-probe /tmp && cat /proc/mounts")
    assert done.returncode == 0, done.stderr
    assert "labkit-in-vm-probe" in done.stdout
    assert "labkit-in-vm-probe" not in Path("/proc/self/mounts").read_text()
    assert not any("labkit/images" in line for line in Path("/proc/self/mounts").read_text())


def test_the_cgroup_namespace_roots_the_view_at_the_container(shared_root: None) -> None:
    """On cgroup v2, /proc/self/cgroup has one line, "0::<path>"; in a cgroup namespace the
    container's own cgroup is "/"."""
    inside = _labkit("--", "cat", "/proc/self/cgroup")
    outside = _labkit("--ns", "uts,pid,mnt,ipc,net", "--", "cat", "/proc/self/cgroup")
    assert inside.returncode == outside.returncode == 0, inside.stderr + outside.stderr
    assert inside.stdout.strip() == "0::/"
    host_view = Path("/proc/self/cgroup").read_text().strip()
    assert outside.stdout.strip() == host_view and host_view.startswith("0::")
