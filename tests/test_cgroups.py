"""cgroups: limits proven by their effect, accounting by the kernel's own counters.

Runs on cgroup v1 (the CI host) and on v2 (the learner's VM): the tests go through
``labkit run`` and ``ContainerCgroups``, which pick the driver. The memory and fork-bomb
tests check that their limit is in place before they start, so a broken limit fails the
test instead of loading the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _env, wait_until

from labkit import docker
from labkit.errors import LabkitError
from labkit.kernel import cgroups
from labkit.kernel.cgroups import limits as lim
from labkit.kernel.cgroups.group import ContainerCgroups

pytestmark = pytest.mark.usefixtures("needs_root")

#: A container that waits for /tmp/go (created from the host) before it runs SCRIPT.
WAIT_FOR_GO = "while [ ! -e /tmp/go ]; do sleep 0.05; done; {script}"


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "labkit.cli", *args],
        cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@contextmanager
def container(*opts: str, script: str, name: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A background `labkit run --name NAME OPTS -- sh -c SCRIPT`, waiting for /tmp/go."""
    pid_file = Path(f"/run/labkit-test-{name}.pid")
    proc = subprocess.Popen(
        [PYTHON, "-m", "labkit.cli", "run", "--name", name, "--pid-file", str(pid_file), *opts,
         "--", "sh", "-c", WAIT_FOR_GO.format(script=script)],
        cwd=REPO, env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_until(lambda: pid_file.exists() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, proc.communicate()
        yield proc, int(pid_file.read_text())
    finally:
        if proc.poll() is None:
            if pid_file.exists():  # PID 1 ignores SIGTERM (as under Docker): kill it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
            else:
                proc.terminate()
            proc.wait(timeout=20)
        proc.communicate()
        pid_file.unlink(missing_ok=True)


def _go(pid: int) -> None:
    Path(f"/proc/{pid}/root/tmp/go").write_text("")


def _members(procs: Path) -> list[str]:
    try:
        return procs.read_text().split()
    except FileNotFoundError:
        return []


def _stats(name: str) -> dict:
    done = _cli("stats", name, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- limits as Docker spells them -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64m", 64 * 2**20), ("1.5g", int(1.5 * 2**30)), ("512k", 512 * 1024), ("1024", 1024),
     ("64MB", 64 * 2**20), ("64mib", 64 * 2**20)],
)  # fmt: skip
def test_sizes_are_dockers(text: str, expected: int) -> None:
    assert lim.parse_bytes(text, "x") == expected


def test_dockers_defaults_and_conversions() -> None:
    limits = lim.parse(memory="64m", cpus="0.5", cpu_shares="512", pids_limit="-1")
    assert limits.swap_limit == 128 * 2**20  # memory + swap = twice the memory
    assert limits.pids is None  # -1: no limit
    assert lim.cpu_weight(1024) == 39 and lim.cpu_weight(2) == 1 and lim.cpu_weight(262144) == 10000


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--memory", "4m"), "below 6 MiB"),
        (("--memory", "lots"), "invalid size"),
        (("--memory", "64m", "--memory-swap", "32m"), "at least the memory limit"),
        (("--memory", "64m", "--memory-reservation", "128m"), "above the memory limit"),
        (("--cpus", "99"), "not possible on this host"),
        (("--cpu-shares", "1"), "invalid CPU shares"),
        (("--pids-limit", "ten"), "invalid pids limit"),
        (("--cpuset-cpus", "99"), "not all online"),
        (("--device-read-bps", "/etc/passwd:1m"), "not a block device"),
    ],
)
def test_a_limit_the_host_cannot_honour_is_refused_before_anything_exists(
    flags, words, tmp_path: Path, busybox_rootfs: Path
) -> None:
    state = tmp_path / "state"
    done = subprocess.run(
        [PYTHON, "-m", "labkit.cli", "run", "--rootfs", str(busybox_rootfs), *flags, "--", "true"],
        cwd=REPO, env=_env({"LABKIT_STATE_DIR": str(state)}), capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 125 and done.stderr.count("\n") == 1, done.stderr
    assert words in done.stderr and "(fix: " in done.stderr and "{" not in done.stderr
    assert not state.exists()


# -- by effect ------------------------------------------------------------------------------


def test_memory_limit_ends_in_an_oom_kill_the_kernel_records() -> None:
    script = "dd if=/dev/zero of=/dev/null bs=64M count=1; echo dd-exit:$?; sleep 30"
    flags = ("--memory", "16m", "--memory-swap", "16m")
    with container(*flags, script=script, name="lk-oom") as (_, pid):
        before = _stats("lk-oom")
        assert before["memory_limit_bytes"] == 16 * 2**20, "the limit is not in place"
        _go(pid)
        assert wait_until(lambda: _stats("lk-oom")["oom_kills"] >= 1, timeout=30)
        assert _stats("lk-oom")["memory_peak_bytes"] <= 16 * 2**20


def test_a_fork_bomb_stops_at_the_pids_limit() -> None:
    # A shell forks until the kernel says no (busybox sh then gives up); the outer shell was
    # forked before, and execs its last command: it needs no fork to go on.
    script = "sh -c 'while :; do sleep 30 & done' 2>/dev/null; exec sleep 30"
    with container("--pids-limit", "20", script=script, name="lk-forks") as (_, pid):
        assert _stats("lk-forks")["pids_limit"] == 20, "the limit is not in place"
        _go(pid)
        seen = []

        def refused() -> bool:
            stats = _stats("lk-forks")
            seen.append(stats["pids"])
            return stats["pids_refused"] >= 1

        assert wait_until(refused, timeout=30), f"no fork was refused; pids seen: {seen}"
        assert max(seen) <= 20, seen
        assert max(seen) >= 10, f"the bomb never got going: {seen}"


def test_the_pids_limit_is_all_the_containers_own() -> None:
    """The processes that forked PID 1 are reaped before it goes on: until then they would
    count against its limit, and with --pids-limit 2 its shell's first fork could fail."""
    # 12 tries on the host; 4 in the emulated learner's VM, where each run takes 4 s (the
    # race is the runtime's own, the same on both)
    tries = 4 if os.environ.get("LABKIT_IN_VM") == "1" else 12
    runs = [_cli("run", "--pids-limit", "2", "--", "sh", "-c", "true; sleep 0 && echo ok")
            for _ in range(tries)]  # fmt: skip
    assert [r.stdout for r in runs] == ["ok\n"] * tries, [r.stderr for r in runs if r.stderr]


def test_cpu_quota_shows_in_the_kernels_accounting() -> None:
    """--cpus 0.2 with two busy loops: the kernel throttles them, and their usage over the
    periods that passed stays at a fifth of a CPU (counters, not wall-clock time). The quota
    is small so that even a busy 2-core host gives the loops more than it allows."""
    script = "(while :; do :; done) & while :; do :; done"
    with container("--cpus", "0.2", script=script, name="lk-cpu") as (_, pid):
        _go(pid)
        assert wait_until(lambda: _stats("lk-cpu")["cpu_periods"] >= 5, timeout=60)
        first = _stats("lk-cpu")
        assert wait_until(lambda: _stats("lk-cpu")["cpu_periods"] >= first["cpu_periods"] + 20)
        last = _stats("lk-cpu")
    periods = last["cpu_periods"] - first["cpu_periods"]
    used = last["cpu_usage_us"] - first["cpu_usage_us"]
    throttled = last["cpu_throttled_periods"] - first["cpu_throttled_periods"]
    assert throttled >= 1, f"never throttled in {periods} periods (used {used} us)"
    assert used <= 0.2 * periods * lim.CPU_PERIOD * 1.15, (used, periods)


def _whole_disk_under(path: Path) -> Path | None:
    """The block device (the whole disk: throttling is per disk) that holds PATH."""
    dev = os.stat(path).st_dev
    sysfs = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sysfs.exists():
        return None  # tmpfs, overlay, 9p: no block device to throttle
    disk = sysfs.resolve().parent if (sysfs / "partition").exists() else sysfs.resolve()
    return Path("/dev") / disk.name  # /dev/vda, as a user would type it


def test_a_read_limit_holds_reads_to_its_rate() -> None:
    """--device-read-bps DISK:1mb: the kernel's byte counter for the container grows no faster
    than 1 MiB a second while dd reads past the page cache (O_DIRECT)."""
    from labkit.images import store

    disk = _whole_disk_under(store.image_rootfs("debian"))
    if disk is None:
        pytest.skip("the debian image is not on a block device here")
    script = "while :; do dd if=/usr/bin/perl of=/dev/null bs=64k iflag=direct 2>/dev/null; done"
    flags = ("--image", "debian", "--device-read-bps", f"{disk}:1mb")
    with container(*flags, script=script, name="lk-io") as (_, pid):
        _go(pid)
        assert wait_until(lambda: _stats("lk-io")["io_read_bytes"] > 0, timeout=30)
        first, t0 = _stats("lk-io"), time.monotonic()
        time.sleep(3)
        last, t1 = _stats("lk-io"), time.monotonic()
    read = last["io_read_bytes"] - first["io_read_bytes"]
    assert read > 0, "the kernel counted no reads for the container"
    # the throttle lets a little burst through: one 64k request and a slice's worth
    assert read <= 2**20 * (t1 - t0) * 1.1 + 2**19, (read, t1 - t0)


def test_a_paused_container_makes_no_progress() -> None:
    script = "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; done"
    with container(script=script, name="lk-pause") as (_, pid):
        _go(pid)
        counter = Path(f"/proc/{pid}/root/tmp/n")
        assert wait_until(lambda: counter.exists() and counter.read_text().strip() != "")
        assert _cli("pause", "lk-pause").returncode == 0
        time.sleep(0.2)
        frozen = counter.read_text()
        time.sleep(0.5)
        assert counter.read_text() == frozen, "a paused container kept counting"
        assert _cli("unpause", "lk-pause").returncode == 0
        assert wait_until(lambda: counter.read_text() != frozen), "it did not go on"


def test_killing_the_cgroup_kills_every_process_in_it() -> None:
    with container("--ns", "uts,mnt,ipc,net", script="sleep 100 & sleep 100 & sleep 100",
                   name="lk-kill") as (proc, pid):  # fmt: skip
        _go(pid)
        group = ContainerCgroups(_stats("lk-kill")["id"])
        procs = group.paths()[0] / "cgroup.procs"
        assert wait_until(lambda: len(procs.read_text().split()) >= 3)
        group.kill()
        # Empty, then gone: once PID 1 is dead labkit removes the container's cgroups.
        assert wait_until(lambda: _members(procs) == []), _members(procs)
        assert proc.wait(timeout=20) == 137


def test_no_cgroup_outlives_its_container() -> None:
    with container("--memory", "32m", "--cpus", "1", script="exit 0", name="lk-gone") as (
        proc,
        pid,
    ):
        group = ContainerCgroups(_stats("lk-gone")["id"])
        assert len(group.paths()) >= 1
        _go(pid)
        assert proc.wait(timeout=30) == 0
    assert group.paths() == []


def test_no_process_outlives_its_container_without_a_pid_namespace() -> None:
    """Without a PID namespace the kernel does not kill PID 1's children when it exits;
    labkit kills what is left in the cgroup, as runc does, so nothing runs on unseen."""
    seconds = str(300_000 + os.getpid() % 100_000)  # a duration no other sleep has
    done = _cli("run", "--ns", "uts,mnt,ipc,net", "--", "sh", "-c",
                f"sleep {seconds} & sleep {seconds} & exit 0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    left = subprocess.run(["pgrep", "-f", f"sleep {seconds}"], capture_output=True, text=True)
    assert left.stdout == "", f"still running after labkit returned: {left.stdout}"


def test_a_container_is_in_its_cgroups_before_its_command_runs() -> None:
    """It joins them before it makes any namespace: in its cgroup namespace every path is
    "/", and without one each path names labkit/<id>."""
    inside = _cli("run", "--", "cat", "/proc/self/cgroup").stdout
    assert {line.rsplit(":", 1)[1] for line in inside.splitlines()} == {"/"}
    outside = _cli("run", "--ns", "uts,pid,mnt,ipc,net", "--", "cat", "/proc/self/cgroup").stdout
    ours = [line for line in outside.splitlines() if "/labkit/" in line]
    assert ours and all(re.search(r"/labkit/[0-9a-f]{64}$", line) for line in ours)


def test_a_container_reads_its_own_limits_read_only_as_under_docker() -> None:
    """/sys/fs/cgroup inside: the container's own cgroups (its limit, no other cgroup in
    sight), read-only; the same listing and limit as Docker shows for the same flags."""
    unified = cgroups.detect().kind == "unified"
    limit = "memory.max" if unified else "memory/memory.limit_in_bytes"
    script = (f"cat /sys/fs/cgroup/{limit}; ls /sys/fs/cgroup{'' if unified else '/memory'}"
              f" | grep -c labkit; echo 1 > /sys/fs/cgroup/{limit} || echo refused")  # fmt: skip
    ours = _cli("run", "--memory", "64m", "--", "sh", "-c", script)
    assert ours.stdout.split() == [str(64 * 2**20), "0", "refused"], ours
    assert "Read-only file system" in ours.stderr
    # v1: the same hierarchies by name; v2: the same limit (the files listed depend on the
    # controllers each manager enables, which differ by design)
    show = f"cat /sys/fs/cgroup/{limit}" + ("" if unified else "; ls /sys/fs/cgroup")
    theirs = docker.run("run", "--rm", "--memory", "64m", "labkit/busybox", "sh", "-c", show)
    assert _cli("run", "--memory", "64m", "--", "sh", "-c", show).stdout == theirs.stdout


# -- beside Docker ----------------------------------------------------------------------------


#: The files each version's driver writes for FLAGS, by hierarchy (v1) or alone (v2).
V1_FILES = (("memory", "memory.limit_in_bytes"), ("memory", "memory.memsw.limit_in_bytes"),
            ("memory", "memory.soft_limit_in_bytes"), ("cpu", "cpu.cfs_quota_us"),
            ("cpu", "cpu.cfs_period_us"), ("cpu", "cpu.shares"), ("pids", "pids.max"))  # fmt: skip
V2_FILES = ("memory.max", "memory.swap.max", "memory.low", "cpu.max", "cpu.weight", "pids.max")
FLAGS = ("--memory", "64m", "--memory-swap", "96m", "--memory-reservation", "32m",
         "--cpus", "0.5", "--cpu-shares", "512", "--pids-limit", "50")  # fmt: skip


def _files(where: dict[str, Path]) -> dict[str, str]:
    """The limit files, as "hierarchy/file" (v1) or "file" (v2), from WHERE (by hierarchy)."""
    if "" in where:
        return {name: (where[""] / name).read_text().strip() for name in V2_FILES}
    return {f"{h}/{name}": (where[h] / name).read_text().strip() for h, name in V1_FILES}


def _docker_files(container_id: str) -> dict[str, str]:
    """What Docker wrote for its container (cgroupfs driver on v1: docker/<id> in each
    hierarchy; on v2 with systemd, system.slice/docker-<id>.scope)."""
    layout = cgroups.detect()
    if layout.kind == "unified":
        return _files({"": next(Path(layout.v2_mount).rglob(f"*{container_id}*"))})
    return _files({h: layout.v1_path(h) / "docker" / container_id for h, _ in V1_FILES})


def test_the_same_limits_as_docker() -> None:
    name = f"labkit-test-limits-{os.getpid()}"
    docker.run("run", "-d", "--name", name, *FLAGS, "labkit/busybox", "sleep", "30")
    try:
        theirs = _docker_files(docker.inspect(name, "{{.Id}}"))
    finally:
        docker.run("rm", "-f", name, check=False)
    with container(*FLAGS, script="sleep 30", name="lk-same") as _:
        group = ContainerCgroups(_stats("lk-same")["id"])
        if group.unified:
            ours = _files({"": group.v2_path})
        else:
            ours = _files({h: cgroups.path_for(group.layout.v1_path(h), group.id)
                           for h, _ in V1_FILES})  # fmt: skip
    assert ours == theirs


def test_stats_of_a_container_that_is_not_running() -> None:
    done = _cli("stats", "labkit-no-such-container")
    assert done.returncode == 125
    assert done.stderr.startswith("labkit: No such container: labkit-no-such-container (fix: ")


def test_limits_errors_name_settings_not_flags() -> None:
    with pytest.raises(LabkitError) as err:
        lim.parse(memory="1k")
    assert "{memory}" in err.value.fix
