"""``labkit doctor`` against the real host: the report must match what the kernel says."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import doctor, paths
from labkit.kernel import cgroups

EXPECTED = {
    "root", "linux", "kernel", "architecture", "python", "namespaces", "user namespaces",
    "overlayfs", "cgroups", "seccomp", "device control", "capabilities", "iptables", "docker",
    "image busybox", "image debian", "leftovers",
}  # fmt: skip


def test_run_checks_covers_everything_and_every_problem_has_a_fix() -> None:
    checks = doctor.run_checks()
    names = {c.name for c in checks}
    assert names >= EXPECTED, EXPECTED - names
    for c in checks:
        assert c.status in ("ok", "info", "warn", "fail"), c
        assert c.detail, c
        if c.status in ("warn", "fail"):
            assert c.fix and "\n" not in c.fix, f"{c.name} has no one-line fix"
        assert "crashed" not in c.detail, c


def test_checks_agree_with_the_host() -> None:
    by = {c.name: c for c in doctor.run_checks()}
    assert by["root"].status == ("ok" if os.geteuid() == 0 else "fail")
    assert by["kernel"].detail == platform.release()
    assert platform.machine() in by["architecture"].detail
    assert by["namespaces"].status == "ok"
    iptables_v = subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout
    if "nf_tables" in iptables_v:
        assert "nf_tables" in by["iptables"].detail


def test_cgroup_layout_matches_the_filesystem_type() -> None:
    layout = cgroups.detect()
    fstype = subprocess.run(
        ["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], capture_output=True, text=True
    ).stdout.strip()
    if fstype == "cgroup2fs":
        assert layout.kind == "unified" and layout.v2_mount == "/sys/fs/cgroup"
        assert not layout.v1_hierarchies
    else:
        assert layout.kind in ("hybrid", "legacy")
        assert "memory" in layout.v1_hierarchies or "cpu" in layout.v1_hierarchies
    if layout.v2_mount:
        root = Path(layout.v2_mount)
        assert list(layout.v2_controllers) == (root / "cgroup.controllers").read_text().split()
        assert list(layout.v2_delegated) == (root / "cgroup.subtree_control").read_text().split()
    assert layout is cgroups.detect(), "detected once"


def test_main_json_parses_and_exit_status_follows_failures(capsys: pytest.CaptureFixture) -> None:
    rc = doctor.main(as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert {"name", "status", "detail", "fix"} <= set(data[0])
    assert rc == (1 if any(c["status"] == "fail" for c in data) else 0)
    rc_table = doctor.main()
    table = capsys.readouterr().out
    assert rc_table == rc
    assert "checks:" in table and "kernel" in table


def test_module_entry_point_prints_json() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "labkit.doctor", "--json"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert res.returncode in (0, 1), res.stderr
    assert any(c["name"] == "kernel" for c in json.loads(res.stdout))


def test_leftovers_are_reported_with_reset_as_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "RUN_DIR", tmp_path / "run")
    monkeypatch.setattr(paths, "STATE_DIR", tmp_path / "state")
    monkeypatch.setattr(paths, "IMAGES_DIR", tmp_path / "state" / "images")
    (c,) = doctor.check_leftovers()
    assert c.status == "ok"
    gone = tmp_path / "state" / "containers" / "gone"
    gone.mkdir(parents=True)
    (gone / "record.json").write_text(json.dumps({"id": "gone", "name": "gone", "config": {},
                                                  "supervisor": None}))  # fmt: skip
    (c,) = doctor.check_leftovers()
    assert c.status == "warn"
    assert c.detail.startswith("1 leftover objects from earlier runs")
    assert c.fix == "labkit reset"
    # with no images in the (private) state dir, the image checks point at the build command
    imgs = [c for c in doctor.check_images()]
    assert all(c.status == "warn" and c.fix == "labkit images build all" for c in imgs)


def test_cgroups_reports_what_is_delegated_and_forward_policy_is_information() -> None:
    """A runtime's cgroups can use only what the root delegates (cgroup.subtree_control), so
    that is what the doctor names on cgroup v2; Docker's FORWARD policy is a fact, not a
    warning with nothing to fix."""
    by = {c.name: c for c in doctor.run_checks()}
    layout = cgroups.detect()
    if layout.kind == "unified":
        delegated = " ".join(layout.v2_delegated) or "(none)"
        assert f"delegated to cgroups below it: {delegated}" in by["cgroups"].detail
        missing = set(doctor.NEEDED_CONTROLLERS) - set(layout.v2_delegated)
        assert by["cgroups"].status == ("warn" if missing else "ok")
    if "docker FORWARD policy" in by:
        assert by["docker FORWARD policy"].status == "info"
        assert not by["docker FORWARD policy"].fix
