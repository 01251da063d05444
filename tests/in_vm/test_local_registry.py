"""The learner VM's own registry: the lab's images offline, on 127.0.0.1:5000 only.

vagrant/provision.sh runs Debian's docker-registry as ``labkit-registry.service`` and pushes
the base images into it, so ``labkit pull`` and ``docker pull`` work in the VM without the
internet (a workshop's Wi-Fi). Run in the learner's VM by ``python tests/guest/run.py``;
never on the host (no systemd there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REGISTRY = "localhost:5000"


def test_the_registry_is_a_unit_on_loopback_only() -> None:
    active = subprocess.run(
        ["systemctl", "is-active", "labkit-registry.service"], capture_output=True, text=True
    )
    assert active.stdout.strip() == "active", active.stdout + active.stderr
    listening = subprocess.run(["ss", "-Hltn", "sport = :5000"], capture_output=True, text=True)
    addresses = {line.split()[3] for line in listening.stdout.splitlines()}
    assert addresses == {"127.0.0.1:5000"}, listening.stdout
    debian_unit = subprocess.run(
        ["systemctl", "is-active", "docker-registry.service"], capture_output=True, text=True
    )
    assert debian_unit.stdout.strip() != "active", "Debian's own registry (all addresses) runs"


def test_labkit_pulls_and_runs_the_labs_image_offline(tmp_path: Path) -> None:
    env = {**os.environ, "LABKIT_STATE_DIR": str(tmp_path / "state")}
    name = f"{REGISTRY}/labkit/busybox"
    pulled = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "pull", name],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "Digest: sha256:" in pulled.stdout, pulled.stdout
    ran = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "run", name, "cat", "/etc/os-release"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "busybox" in ran.stdout


def test_docker_pulls_it_too() -> None:
    name = f"{REGISTRY}/labkit/busybox"
    pulled = subprocess.run(["docker", "pull", name], capture_output=True, text=True, timeout=600)
    try:
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    finally:
        subprocess.run(["docker", "rmi", name], capture_output=True, timeout=120)
