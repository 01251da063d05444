"""Tests in this directory run only inside the learner's VM (tests/guest/run.py boots it:
Debian 13, systemd owning a pure cgroup-v2 tree, Docker 26), or inside a learner's own VM.

They create cgroups at the root of /sys/fs/cgroup and expect a pure cgroup-v2 kernel, which
the CI host (hybrid v1/v2) is not. The guest sets LABKIT_IN_VM=1; anywhere else this
directory collects nothing, so a plain ``pytest`` on the host never runs them.
"""

from __future__ import annotations

import os

import pytest

IN_VM = os.environ.get("LABKIT_IN_VM") == "1"

if not IN_VM:
    collect_ignore_glob = ["test_*.py"]
# (No LABKIT_STATE_DIR of their own: these tests run in one pytest process with others that
# need the machine's images, and the learner's VM is theirs to write in.)


@pytest.fixture(autouse=True)
def _only_in_vm() -> None:
    """A file named explicitly on the command line is collected anyway: skip it on the host."""
    if not IN_VM:
        pytest.skip("runs inside the learner's VM: python tests/guest/run.py -- tests/in_vm")
