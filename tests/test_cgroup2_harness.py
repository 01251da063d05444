"""The cgroup-v2 harness: boot a pure cgroup-v2 kernel and run tests/in_vm inside it.

CI's host is hybrid cgroup v1/v2 while learners' VMs are pure v2; this proves the v2 paths
against a real v2 kernel. Slow (a VM under software emulation, about a minute): marked ``vm``,
deselect with ``-m "not vm"``. On a host that already is pure cgroup v2 (the learner's VM)
no second kernel is needed: the same tests run right here.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SMOKE = TESTS / "in_vm" / "test_cgroup2_smoke.py"


def _load_harness():
    """Import tests/vm/run_in_cgroup2.py by path: tests/ is not a package."""
    spec = importlib.util.spec_from_file_location(
        "labkit_run_in_cgroup2", TESTS / "vm" / "run_in_cgroup2.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _count_smoke_tests() -> int:
    """Every test function in tests/in_vm/, so a file that silently collects nothing fails."""
    return sum(
        isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        for path in SMOKE.parent.glob("test_*.py")
        for node in ast.parse(path.read_text()).body
    )


def _host_cgroup_fs() -> str:
    return subprocess.run(
        ["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.vm
def test_in_vm_tests_pass_on_a_cgroup2_kernel() -> None:
    if _host_cgroup_fs() == "cgroup2fs":
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-v"]
            + ["tests/in_vm"],
            cwd=TESTS.parent,
            env={**os.environ, "LABKIT_IN_VM": "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{_count_smoke_tests()} passed" in done.stdout, done.stdout
        return
    harness = _load_harness()
    # No skip when the VM cannot boot: a missing prerequisite fails with the harness's fix.
    try:
        result = harness.run_in_cgroup2(["tests/in_vm", "-v"], timeout=600)
    except harness.HarnessError as err:
        pytest.fail(f"cgroup-v2 harness cannot run: {err}", pytrace=False)

    print(
        f"host /sys/fs/cgroup: {result['host_cgroup_fs']} ({result['host_kernel_release']}); "
        f"guest: {result['cgroup_fs']} ({result['kernel_release']}); "
        f"{result['seconds']} s, VM max RSS {result['vm_max_rss_mb']} MiB"
    )
    assert result["error"] is None, result["error"]
    assert result["cgroup_fs"] == "cgroup2fs"
    assert {"cpu", "memory", "pids", "io"} <= set(result["controllers"])
    assert result["exit_code"] == 0, result["output"]
    expected = _count_smoke_tests()
    assert expected >= 7
    assert result["outcomes"]["passed"] >= expected, result["output"]
    assert result["outcomes"]["failed"] == 0, result["output"]
    assert result["outcomes"]["errors"] == 0, result["output"]
