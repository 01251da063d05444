"""Races at start-up: many runs claiming one name, and supervisors killed half-way.

Each test gets a STATE_DIR of its own, so ``reset`` and the record checks never touch what a
teammate or a notebook has running.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _env, wait_until

from labkit.kernel.procfs import ProcessRef

pytestmark = pytest.mark.usefixtures("needs_root")


def test_ten_runs_with_one_name_start_one_container(busybox_rootfs: Path, tmp_path: Path) -> None:
    """Defect: 10 concurrent `run --name x` started 3 containers sharing one record."""
    env = _env({"LABKIT_STATE_DIR": str(tmp_path / "state")})
    argv = [PYTHON, "-m", "labkit.cli", "run", "--rootfs", str(busybox_rootfs), "--name", "x"]
    procs = [
        subprocess.Popen(
            [*argv, "--", "sleep", "2"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(10)
    ]
    results = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [125] * 9, results
    for code, stderr in results:
        if code == 125:
            assert stderr.startswith(
                "labkit: Conflict. The container name 'x' is already in use by container "
            ), stderr
            assert stderr.rstrip().endswith(
                "(fix: choose another --name, or stop that container first)"
            )
    assert [p.name for p in (tmp_path / "state" / "containers").iterdir()] == [".lock"]


def test_a_name_is_free_again_once_its_container_ended(busybox_rootfs: Path, tmp_path) -> None:
    env = _env({"LABKIT_STATE_DIR": str(tmp_path / "state")})
    argv = [PYTHON, "-m", "labkit.cli", "run", "--rootfs", str(busybox_rootfs), "--name", "web"]
    for _ in range(2):
        done = subprocess.run([*argv, "--", "true"], cwd=REPO, env=env, capture_output=True)
        assert done.returncode == 0, done.stderr


def _start_and_kill(busybox_rootfs: Path, env: dict[str, str], delay: float, argv: list[str]):
    """Start `labkit run`, SIGKILL it after ``delay`` seconds; return its pid."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "labkit.cli", "run", "--rootfs", str(busybox_rootfs), "--", *argv],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(delay)
    proc.kill()
    proc.wait()
    return proc.pid


def _containers_running(busybox_rootfs: Path, argv: list[str]) -> set[int]:
    """Host PIDs of processes whose root is the image and whose argv is ``argv``."""
    want = os.stat(busybox_rootfs)
    raw = ("\0".join(argv) + "\0").encode()
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            st = os.stat(entry / "root")
            same_root = (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)
            if same_root and (entry / "cmdline").read_bytes() == raw:
                found.add(int(entry.name))
    return found


def test_a_supervisor_killed_during_start_up_is_the_one_recorded(
    busybox_rootfs: Path, tmp_path: Path
) -> None:
    """Defect: a CLI killed 25-45 ms into start-up left records naming PID 1 (init) as the
    supervisor, so doctor called the orphan "in use" and hid it. Kill it at moments spread
    over the whole start-up, and check every record and every container that got away."""
    state = tmp_path / "state"
    env = _env({"LABKIT_STATE_DIR": str(state)})
    argv = ["sleep", "1919"]
    t0 = time.perf_counter()
    subprocess.run(
        [PYTHON, "-m", "labkit.cli", "run", "--rootfs", str(busybox_rootfs), "--", "true"],
        cwd=REPO, env=env, check=True,
    )  # fmt: skip
    start_up = time.perf_counter() - t0
    killed: set[int] = set()
    rng = random.Random(5)
    try:
        for _ in range(30):
            delay = rng.uniform(0.2, 1.3) * start_up
            killed.add(_start_and_kill(busybox_rootfs, env, delay, argv))
        time.sleep(0.5)  # a PID 1 whose supervisor died before "go" exits by itself
        running = _containers_running(busybox_rootfs, argv)
        records = [json.loads(p.read_text()) for p in state.glob("containers/*/record.json")]
        for record in records:
            assert record["supervisor"][0] in killed, f"wrong supervisor: {record}"
        recorded = {r["process"][0] for r in records if r["process"]}
        assert running <= recorded, f"running but not recorded: {running - recorded}"
        assert running, "no kill landed after the container was made: the test proved nothing"

        # Reset and the doctor see every one of them as a leftover: their supervisors are dead.
        dry = subprocess.run(
            [PYTHON, "-m", "labkit.cli", "reset", "--dry-run"],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert dry.stdout.count("would remove container ") == len(records), dry.stdout
        doctor_env = subprocess.run(
            [PYTHON, "-c", "from labkit import doctor; print(doctor.check_leftovers()[0].status)"],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert doctor_env.stdout.strip() == "warn"

        done = subprocess.run(
            [PYTHON, "-m", "labkit.cli", "reset"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert wait_until(lambda: not _containers_running(busybox_rootfs, argv), timeout=10)
        assert list(state.glob("containers/*/record.json")) == []
    finally:
        for pid in _containers_running(busybox_rootfs, argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_container_never_runs_unrecorded(busybox_rootfs: Path, tmp_path: Path) -> None:
    """PID 1 waits for "go", which comes only after its record is written: a supervisor
    killed in between leaves PID 1 to exit on its own, never to run the command."""
    out = subprocess.run(
        [PYTHON, "-c", f"""
import os, signal, sys
from labkit.runtime import container, supervisor
def die_before_go(c, pid, go_w):
    print(pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the supervisor dies with PID 1 waiting
container._record_running = die_before_go
from labkit.runtime.spec import ContainerSpec
supervisor.Supervisor().start(ContainerSpec(rootfs={str(busybox_rootfs)!r}, argv=["sleep", "1818"]))
"""],
        cwd=REPO, env=_env({"LABKIT_STATE_DIR": str(tmp_path / "state")}),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    pid = int(out.stdout.split()[0])
    assert wait_until(lambda: ProcessRef.of(pid) is None or _is_zombie(pid), timeout=10)
    assert not _containers_running(busybox_rootfs, ["sleep", "1818"])
    # What the dead supervisor made (its record, the container's cgroup) is reset's to remove.
    env = _env({"LABKIT_STATE_DIR": str(tmp_path / "state")})
    done = subprocess.run([PYTHON, "-m", "labkit.cli", "reset"], cwd=REPO, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert "removing container" in done.stdout and done.returncode == 0, done.stdout


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
