"""Tests in this directory run only inside the cgroup-v2 VM (tests/vm/run_in_cgroup2.py).

They create cgroups at the root of /sys/fs/cgroup and expect a pure cgroup-v2 kernel, which
the CI host (hybrid v1/v2) is not. The harness sets LABKIT_IN_VM=1 in the guest; anywhere
else this directory collects nothing, so a plain ``pytest`` on the host never runs them.
"""

from __future__ import annotations

import os
import tempfile

import pytest

IN_VM = os.environ.get("LABKIT_IN_VM") == "1"

if not IN_VM:
    collect_ignore_glob = ["test_*.py"]
elif "LABKIT_STATE_DIR" not in os.environ:
    # The guest sees the host's files read-only; container records go to its throwaway /tmp.
    os.environ["LABKIT_STATE_DIR"] = tempfile.mkdtemp(prefix="labkit-state-")


@pytest.fixture(autouse=True)
def _only_in_vm() -> None:
    """A file named explicitly on the command line is collected anyway: skip it on the host."""
    if not IN_VM:
        pytest.skip("runs inside the VM: python tests/vm/run_in_cgroup2.py tests/in_vm")
