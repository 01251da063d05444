"""The escape gallery's helpers (notebook 08): flags, canaries, probes run for real, the evidence
readers and the terminal the notebook makes. The probes themselves are checked against every
defence by tests/test_escapes.py; here, that the notebook's plumbing says what happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.kernel import capabilities
from labkit.lab import escape_boundary, escape_grid, escape_probes, escapes

pytestmark = pytest.mark.usefixtures("needs_root")


def test_flags_turn_off_every_defence_but_the_named_ones() -> None:
    off = [*escapes.ALL_OFF]
    assert off == ["--cap-add", "ALL", "--security-opt", "seccomp=unconfined"] + [
        "--security-opt",
        "systempaths=unconfined",
        "--device-cgroup-rule",
        "a *:* rwm",
    ]
    only_seccomp = escapes.flags("seccomp")
    assert "seccomp=unconfined" not in only_seccomp and "--cap-add" in only_seccomp
    assert escapes.flags(*escapes.DEFENCES) == ()
    with pytest.raises(ValueError, match="apparmor"):
        escapes.flags("apparmor")


def test_a_canary_is_planted_removed_and_a_dead_kernels_one_swept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = escape_probes.CANARIES / f"labkit-canary-{dead.pid}-0123abcd"
    stale.mkdir()
    (stale / "canary").write_text("old\n")
    with escapes.plant_canary() as canary:
        assert canary.path.read_text() == canary.token + "\n"
        assert canary.path.parent.name.startswith(f"labkit-canary-{os.getpid()}-")
        assert not stale.exists() or Path(f"/proc/{dead.pid}").exists()  # (a reused PID)
    assert not canary.path.parent.exists()


def test_a_probe_is_shown_as_typed_and_judged_by_what_it_printed(capsys) -> None:
    core = Path("/proc/sys/kernel/core_pattern").read_text()
    probe = escapes.probes()["core_pattern"]
    stopped = escapes.attempt(probe)
    through = escapes.attempt(probe, *escapes.flags("capabilities"), show=False)
    shown = capsys.readouterr().out
    assert shown.startswith("$ labkit run --image busybox -- sh -c ': >> /proc/sys/kernel/")
    assert "Read-only file system" in shown and shown.endswith("→ stopped (EROFS)\n")
    assert (stopped.escaped, stopped.said) == (False, "EROFS")
    assert (through.escaped, through.said) == (True, "went through")
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core


def test_masked_reads_a_containers_mount_table() -> None:
    def mountinfo(*flags: str) -> str:
        argv = [
            sys.executable,
            "-m",
            "labkit.cli",
            "run",
            *flags,
            "--",
            "cat",
            "/proc/self/mountinfo",
        ]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout

    hidden = escapes.masked(mountinfo())
    assert {"/proc/keys", "/proc/timer_list"} <= set(hidden["masked"])
    assert {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"} <= set(hidden["read-only"])
    assert escapes.masked(mountinfo("--security-opt", "systempaths=unconfined")) == {
        "masked": [],
        "read-only": [],
    }


def test_the_evidence_readers() -> None:
    status = "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nSeccomp:\t2\n"
    assert sorted(escapes.cap_names(status)) == sorted(capabilities.DOCKER_DEFAULT)
    assert escapes.cap_names(status, "CapInh") == []
    assert escapes.status_line(status, "Seccomp") == "2"
    assert escapes.errno_word("mount: permission denied\nx: Operation not permitted") == "EPERM"
    assert escapes.errno_word("all good") == ""


def test_docker_gets_every_capability_root_has_never_more() -> None:
    flags = escapes.docker_flags(escapes.ALL_OFF)
    added = {flags[i + 1] for i, f in enumerate(flags) if f == "--cap-add"}
    if capabilities.bounding() >= capabilities.known():
        assert added == {"ALL"}
    else:  # a host that took a capability away from root: name the ones it has
        assert "ALL" not in added and added <= capabilities.bounding()


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the 32-bit table is x86's")
def test_the_int80_program_makes_a_32_bit_call(tmp_path: Path) -> None:
    program = tmp_path / "lk32"
    program.write_bytes(escape_probes.int80_program())
    program.chmod(0o755)
    assert subprocess.run([program], capture_output=True, text=True).stdout == (
        "32-bit getpid: allowed\n"
    )
    run = escapes.attempt(escapes.probes()["syscall32"], show=False)
    assert run.stdout == "32-bit getpid: Operation not permitted\n" and not run.escaped


def test_a_pty_of_our_own_shows_what_was_typed_into_it() -> None:
    typer = escape_boundary.tiocsti("echo labkit-typed")
    out, queued = escape_boundary.in_a_pty(["perl", "-e", typer])
    assert "/proc/self/fd/0: typed" in out and "echo labkit-typed\n" in queued
    out, queued = escape_boundary.in_a_pty(
        ["labkit", "run", "--image", "debian", "--", "perl", "-e", typer]
    )
    assert queued == "" and "/dev/tty: cannot open" in out


def test_the_grid_columns_and_groups() -> None:
    assert list(escape_grid.columns(docker=False)) == [
        t for t, c in escape_grid.COLUMNS.items() if c.runtime == "labkit"
    ]
    assert escape_grid._wrap(["all off + user ns", "seccomp only"]) == [
        "all off\n+ user ns",
        "seccomp\nonly",
    ]
