"""bench/startup.py runs end to end and accounts for every contender.

A smoke test of the benchmark script, not a benchmark: two runs each, no warm-up, and no
assertion about any timing (this 2-core machine is shared, and timing belongs in
docs/benchmarks.md, not in a pass/fail). What it does check: every contender comes back
either measured (a positive median over the runs asked for) or explicitly ``failed`` /
``missing`` with a reason, and the run leaves nothing behind (the suite's leak check). Like the
rest of the suite it runs as root on the busybox image, and fails rather than skips without.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "startup.py"
ALWAYS_LISTED = {
    "labkit", "labkit-privileged", "labkit-script", "labkit-chroot-nons", "unshare", "runc",
    "crun", "docker", "true", "python-c-pass", "python-I-c-pass", "python-S-c-pass",
}  # fmt: skip


def _bench(rootfs: Path, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out, md = tmp_path / "startup.json", tmp_path / "startup.md"
    argv = [sys.executable, str(SCRIPT), "--runs", "2", "--warmup", "0", "--quiet"]
    argv += ["--rootfs", str(rootfs)]
    done = subprocess.run(
        [*argv, "--json", str(out), "--markdown", str(md), *extra],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), md.read_text()


def test_every_contender_is_measured_or_says_why_not(busybox_rootfs: Path, tmp_path: Path) -> None:
    report, md = _bench(busybox_rootfs, tmp_path)
    rows = {r["name"]: r for r in report["contenders"]}
    assert rows.keys() >= ALWAYS_LISTED, ALWAYS_LISTED - rows.keys()
    for name, r in rows.items():
        assert r["status"] in ("ok", "flaky", "failed", "missing"), r
        if r["status"] in ("ok", "flaky"):  # flaky: measured, but some runs failed
            assert r["n"] == 2 - r.get("failed_runs", 0) > 0, r
            assert isinstance(r["median_ms"], float) and r["median_ms"] > 0, r
            assert r["p90_ms"] >= r["median_ms"] >= r["min_ms"] > 0, r
        else:
            assert r["median_ms"] is None, r
        if r["status"] != "ok":
            assert r["reason"], f"{name} is {r['status']} without a reason"
        assert f"| `{name}` |" in md
    # The floor of the method itself must always work: fork + exec + wait of /bin/true.
    assert rows["true"]["status"] == "ok", rows["true"]
    host = report["meta"]["host"]
    assert host["kernel"] and host["nproc"] and host["cgroups"]["mode"]


def test_only_selects_contenders_and_names_unknown_ones(
    busybox_rootfs: Path, tmp_path: Path
) -> None:
    report, _ = _bench(busybox_rootfs, tmp_path, "--only", "true,no-such-runtime")
    assert [r["name"] for r in report["contenders"]] == ["true"]
    assert any("no-such-runtime" in note for note in report["meta"]["notes"])


def test_a_baseline_checkout_is_timed_beside_this_one(busybox_rootfs: Path, tmp_path: Path) -> None:
    """--baseline times another checkout's CLI through the same wrapper as this one's."""
    names = "labkit-current,labkit-baseline"
    report, _ = _bench(busybox_rootfs, tmp_path, "--baseline", str(REPO), "--only", names)
    rows = {r["name"]: r for r in report["contenders"]}
    assert set(rows) == {"labkit-current", "labkit-baseline"}
    assert all(r["status"] == "ok" for r in rows.values()), rows


def test_the_baseline_runs_its_own_code_not_this_checkouts(
    busybox_rootfs: Path, tmp_path: Path
) -> None:
    """Defect: run from this checkout, `python -m` put it first on sys.path, so the baseline
    contender timed this checkout's code a second time. A baseline whose CLI only fails must
    fail, while this checkout's works."""
    broken = tmp_path / "broken-checkout"
    shutil.copytree(
        REPO / "labkit", broken / "labkit", ignore=shutil.ignore_patterns("__pycache__")
    )
    (broken / "labkit" / "cli.py").write_text("raise SystemExit('the baseline checkout ran')\n")
    names = "labkit-current,labkit-baseline"
    report, _ = _bench(busybox_rootfs, tmp_path, "--baseline", str(broken), "--only", names)
    rows = {r["name"]: r for r in report["contenders"]}
    assert rows["labkit-current"]["status"] == "ok", rows
    assert rows["labkit-baseline"]["status"] == "failed", rows


def test_the_cgroup_benchmark_measures_every_runtime(busybox_rootfs: Path, tmp_path: Path) -> None:
    """bench/cgroups.py: labkit, runc and crun with and without the limits, and labkit's
    in-process lifecycle, all measured (none failed); what it made is gone (leak check)."""
    out = tmp_path / "cgroups.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cgroups.py"), "--runs", "2", "--warmup", "0",
         "--rootfs", str(busybox_rootfs), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "FAILED" not in done.stdout, done.stdout
    report = json.loads(out.read_text())
    measured = {(r["name"].removesuffix("-nsenter"), r["kind"]) for r in report["rows"]
                if r["status"] == "ok"}  # fmt: skip
    assert measured >= {("labkit", "plain"), ("labkit", "limits"), ("runc", "plain"),
                        ("runc", "limits"), ("crun", "plain"), ("crun", "limits"),
                        ("crun", "disabled")}, measured  # fmt: skip
    assert all(len(v) == 2 and min(v) > 0 for v in report["lifecycle_us"].values())


def test_the_pull_benchmark_measures_every_contender(tmp_path: Path) -> None:
    """bench/pull.py: labkit, skopeo (copy plus unpack) and a cold docker pull from a real
    registry, all measured; then N containers' disk, with the image's layers counted once."""
    out = tmp_path / "pull.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "pull.py"), "--runs", "1", "--warmup", "0",
         "--images", "busybox", "--counts", "1,2", "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    image = json.loads(out.read_text())["images"]["busybox"]
    for name, row in image["pull"].items():
        assert row["status"] == "ok" and len(row["samples_ms"]) == 1, (name, row)
        assert row["median_ms"] > 0, (name, row)
    # the same files: labkit's layer and skopeo's unpacked rootfs (within labkit's metadata)
    ours, skopeos = image["pull"]["labkit"]["unpacked_k"], image["pull"]["skopeo"]["unpacked_k"]
    assert 0 < skopeos <= ours < skopeos * 1.05, (ours, skopeos)
    for tool, part in (("labkit", "layers_k"), ("docker", "image_k")):
        one, two = image["disk"][tool]
        assert one[part] == two[part] > 0, (tool, one, two)  # the image once, whatever N
        assert two["containers_k"] > one["containers_k"] > 0, (tool, one, two)
