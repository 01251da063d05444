"""`labkit run` under the learner VM's conditions: pure cgroup v2 and a *shared* root mount.

CI's host is cgroup v1 (hybrid) and its "/" is private; the learner's Ubuntu VM is pure v2
and, under systemd, "/" is shared. Both change what the runtime meets, so the same
container is started here, in the cgroup-v2 guest, with "/" made rshared first as systemd
does. Run in the learner's VM by ``python tests/guest/run.py``; never on the host.
"""

from __future__ import annotations

import re
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
    # (mounting needs CAP_SYS_ADMIN, which a default container does not keep)
    script = "mount -t tmpfs labkit-in-vm-probe /tmp && cat /proc/mounts"
    done = _labkit("--cap-add", "SYS_ADMIN", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert "labkit-in-vm-probe" in done.stdout
    assert "labkit-in-vm-probe" not in Path("/proc/self/mounts").read_text()
    assert not any("labkit/images" in line for line in Path("/proc/self/mounts").read_text())


def test_the_cgroup_namespace_roots_the_view_at_the_container(shared_root: None) -> None:
    """On cgroup v2, /proc/self/cgroup has one line, "0::<path>"; in a cgroup namespace the
    container's own cgroup is "/", without one its real path: labkit/<id> below the subtree
    systemd delegates to labkit (vagrant/labkit.service), or below the root without systemd."""
    inside = _labkit("--", "cat", "/proc/self/cgroup")
    outside = _labkit("--ns", "uts,pid,mnt,ipc,net", "--", "cat", "/proc/self/cgroup")
    assert inside.returncode == outside.returncode == 0, inside.stderr + outside.stderr
    assert inside.stdout.strip() == "0::/"
    parent = "/system.slice/labkit.service" if Path("/run/systemd/system").is_dir() else ""
    expected = rf"0::{re.escape(parent)}/labkit/[0-9a-f]{{64}}"
    assert re.fullmatch(expected, outside.stdout.strip()), outside.stdout


def test_device_control_on_cgroup_v2_is_an_ebpf_program() -> None:
    """Pure cgroup v2 has no devices.allow: the rules are a BPF program on the container's
    cgroup. A node the container makes cannot be opened; /dev/null can; the cgroup goes."""
    script = (
        "mknod /dev/lk-fuse c 10 229 && echo made; (exec 3</dev/lk-fuse && echo opened); "
        "head -c 1 /dev/zero | wc -c; grep -E '^(Seccomp|CapEff):' /proc/self/status"
    )
    done = _labkit("--", "sh", "-c", script)
    assert done.stdout.split()[:2] == ["made", "1"], done.stdout + done.stderr
    assert "Operation not permitted" in done.stderr
    assert "Seccomp:\t2" in done.stdout and "CapEff:\t00000000a80425fb" in done.stdout
    allowed = _labkit("--device-cgroup-rule", "c 10:229 r", "--", "sh", "-c", script)
    assert "opened" in allowed.stdout, allowed.stderr
    assert not Path("/sys/fs/cgroup/labkit").exists() or not list(
        p for p in Path("/sys/fs/cgroup/labkit").iterdir() if p.is_dir()
    ), "the container's cgroup was removed"
