"""The ``labkit`` command as a user runs it: exit codes, messages, options, signals, imports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, proc_status, wait_until

from labkit.kernel import namespaces
from labkit.kernel.namespaces import USERNS_HOST_BASE

pytestmark = pytest.mark.usefixtures("needs_root")

NOBODY = 65534
CHROOT_NO_NS = ("--ns", "none", "--isolation", "chroot")


def _one_error_line(stderr: str) -> str:
    assert stderr.startswith("labkit: "), stderr
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert "Traceback" not in stderr
    return stderr.strip()


# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3, 42])
def test_exit_code_is_the_commands(lab, code: int) -> None:
    done = lab.run("sh", "-c", f"exit {code}")
    assert done.returncode == code
    assert done.stderr == ""


def test_stdout_and_stderr_pass_through(lab) -> None:
    done = lab.run("sh", "-c", "echo out; echo err >&2")
    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")


def test_command_not_found_is_127(lab) -> None:
    done = lab.run("labkit-no-such-command", "arg")
    assert done.returncode == 127
    line = _one_error_line(done.stderr)
    assert line.startswith(
        "labkit: exec labkit-no-such-command: executable file not found in $PATH (fix: "
    )


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc"])
def test_not_executable_is_126(lab, path: str) -> None:
    done = lab.run(path)
    assert done.returncode == 126
    assert _one_error_line(done.stderr).startswith(f"labkit: exec {path}: permission denied (fix: ")


@pytest.mark.parametrize(
    "opts",
    [
        pytest.param(CHROOT_NO_NS, id="no-namespaces"),
        pytest.param(("--ns", "uts,mnt,ipc,net,cgroup"), id="no-pid-namespace"),
    ],
)
def test_killed_by_a_signal_is_128_plus_n(lab, opts) -> None:
    done = lab.run("sh", "-c", "kill -TERM $$", opts=opts)
    assert done.returncode == 128 + signal.SIGTERM


def test_pid_1_in_a_pid_namespace_ignores_unhandled_signals(lab) -> None:
    """Why the test above avoids a PID namespace: the kernel shields PID 1 from itself."""
    done = lab.run("sh", "-c", "kill -TERM $$; echo survived")
    assert (done.returncode, done.stdout) == (0, "survived\n")


def test_container_killed_from_the_host_is_137(lab) -> None:
    with lab.background("sleep", "1000") as bg:
        os.kill(bg.pid, signal.SIGKILL)
        assert bg.proc.wait(timeout=20) == 128 + signal.SIGKILL


def test_labkit_errors_are_125_and_one_line(lab) -> None:
    done = lab.run("true", opts=("--ns", "uts,labkit-bogus"))
    assert done.returncode == 125
    line = _one_error_line(done.stderr)
    assert line.startswith("labkit: unknown namespace kind 'labkit-bogus' (fix: ")


def test_not_root_is_a_clear_error(lab) -> None:
    done = lab.run("true", user=NOBODY)
    assert done.returncode == 125
    line = _one_error_line(done.stderr)
    assert "root" in line and "(fix: " in line


# -- options -------------------------------------------------------------------------------------


def test_env_workdir_and_hostname(lab) -> None:
    done = lab.sh(
        'echo "$FOO|$EMPTY|$HOME|$PATH|$HOSTNAME|$(hostname)|$(pwd)"',
        opts=("-e", "FOO=bar=baz", "--env", "EMPTY=", "-w", "/tmp", "--hostname", "box"),
    )
    fields = done.stdout.strip().split("|")
    assert fields[0] == "bar=baz"
    assert fields[1] == ""
    assert fields[2] == "/root"
    assert "/bin" in fields[3].split(":")
    assert fields[4:] == ["box", "box", "/tmp"]


def test_env_does_not_leak_the_host_environment(lab) -> None:
    done = lab.sh("env | sort", env={"LABKIT_SECRET_HOST_VAR": "x"})
    assert "LABKIT_SECRET_HOST_VAR" not in done.stdout
    assert "LABKIT_TEST_SESSION" not in done.stdout


def test_default_hostname_is_per_container_not_the_hosts(lab) -> None:
    import socket

    # As Docker: the short id, whatever the container's name.
    done = lab.sh('echo "$(hostname) $HOSTNAME"', opts=("--name", "labkit-named"))
    hostname, env = done.stdout.split()
    assert hostname == env and re.fullmatch(r"[0-9a-f]{12}", hostname)
    done = lab.sh("hostname")
    assert done.stdout.strip() != socket.gethostname()


def test_a_workdir_that_cannot_be_made_is_125(lab) -> None:
    done = lab.run("true", opts=("-w", "/etc/passwd"))  # a missing one is made, as Docker
    assert done.returncode == 125
    _one_error_line(done.stderr)


def test_user_namespace_root_inside_is_unprivileged_outside(lab) -> None:
    opts = ("--ns", "user,uts,pid,mnt,ipc,net,cgroup")
    assert lab.sh("id -u; id -g", opts=opts).stdout.split() == ["0", "0"]
    with lab.background("sleep", "1000", opts=opts) as bg:
        status = bg.status()
        host_id = str(USERNS_HOST_BASE)
        assert status["Uid"].split() == [host_id] * 4
        assert status["Gid"].split() == [host_id] * 4
        assert Path(f"/proc/{bg.pid}/uid_map").read_text().split() == [
            "0",
            host_id,
            "65536",
        ]


def test_pid_file_holds_the_host_pid(lab) -> None:
    with lab.background("sleep", "1000") as bg:
        assert bg.pid_file.read_text() == f"{bg.pid}\n"
        status = bg.status()
        assert status["Name"] == "sleep"
        assert status["NSpid"].split() == [str(bg.pid), "1"]
        assert not Path(f"{bg.pid_file}.tmp").exists()


def test_sigterm_to_the_supervisor_reaches_the_container(lab) -> None:
    script = 'trap "exit 42" TERM; while :; do sleep 0.1; done'
    with lab.background("sh", "-c", script) as bg:
        # Wait until both have a handler: the shell's trap and the supervisor's forwarder.
        def catches_term(pid: int) -> bool:
            caught = int(proc_status(pid).get("SigCgt", "0"), 16)
            return bool(caught & (1 << (signal.SIGTERM - 1)))

        assert wait_until(lambda: catches_term(bg.pid) and catches_term(bg.proc.pid))
        bg.proc.send_signal(signal.SIGTERM)
        assert bg.proc.wait(timeout=20) == 42


# -- other commands ------------------------------------------------------------------------------


def test_ns_ls(lab) -> None:
    with lab.background("sleep", "1000") as bg:
        done = lab.cli("ns", "ls")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split() == ["NS", "TYPE", "NPROCS", "PID", "COMMAND"]
        uts = namespaces.inode(bg.pid, "uts")
        assert any(ln.split()[:4] == [str(uts), "uts", "1", str(bg.pid)] for ln in lines[1:])

        done = lab.cli("ns", "ls", "--json")
        rows = json.loads(done.stdout)
        ours = {r["kind"]: r for r in rows if r["pid"] == bg.pid}
        assert set(ours) == namespaces.DOCKER_DEFAULT
        for kind, row in ours.items():
            assert row["inode"] == namespaces.inode(bg.pid, kind)
            assert row["command"] == "sleep 1000"
        hosts = {r["kind"] for r in rows if r["inode"] == namespaces.inode("self", r["kind"])}
        assert hosts == set(namespaces.KINDS)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), ("usage: labkit", "run", "images", "ns", "doctor", "reset")),
        (("run",), ("--ns", "--isolation", "--pid-file", "--env", "--workdir", "--rootfs")),
    ],
)
def test_help(lab, args, words) -> None:
    done = lab.cli(*args, "--help")
    assert done.returncode == 0
    for word in words:
        assert word in done.stdout


def test_no_command_is_a_usage_error(lab) -> None:
    done = lab.cli()
    assert done.returncode == 125
    assert "arguments are required: COMMAND" in _one_error_line(done.stderr)


def test_console_script_entry_point() -> None:
    """`labkit = labkit.cli:main`: main returns an int for sys.exit."""
    from labkit import cli

    assert cli.main(["ns", "ls", "--json"]) == 0


# -- start-up cost -------------------------------------------------------------------------------

HEAVY = ("pyroute2", "matplotlib", "IPython", "ipykernel", "jupyter_client", "numpy")


def test_cli_start_up_imports_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import labkit.cli\n"
        "labkit.cli.build_parser()\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []


def test_importtime_of_the_cli() -> None:
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import labkit.cli"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()}
    assert "labkit" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, json\n"
        "import labkit.cli\n"
        "try:\n"
        "    labkit.cli.main(['run', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []


# -- regressions: start-up races, names, error messages -------------------------------------------


def _processes_in(rootfs: Path, argv: list[str]) -> list[int]:
    """Host PIDs of processes whose root is ``rootfs`` and whose argv is ``argv``."""
    want = os.stat(rootfs)
    raw = ("\0".join(argv) + "\0").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(entry / "root")
            same_root = (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)
            if same_root and (entry / "cmdline").read_bytes() == raw:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_sigterm_while_starting_leaves_no_untracked_container(
    lab, busybox_rootfs: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    argv = ["sleep", "1717"]
    proc = subprocess.Popen(
        [PYTHON, "-m", "labkit.cli", "run", "--rootfs", str(busybox_rootfs), "--", *argv],
        cwd=REPO,
        env={**os.environ, "LABKIT_STATE_DIR": str(state)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    orphans: list[int] = []
    try:

        def helper_running() -> bool:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and proc_status(int(entry.name)).get("PPid") == str(
                    proc.pid
                ):
                    return True
            return False

        assert wait_until(helper_running, timeout=20, interval=0.002)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            # The CLI blocked SIGTERM until the container ran, then forwarded it; `sleep` as
            # PID 1 of its namespace ignores it (as under Docker). The supervisor dying now
            # must still leave the container recorded.
            proc.kill()
            proc.wait(timeout=20)
        wait_until(lambda: bool(_processes_in(busybox_rootfs, argv)), timeout=2)
        orphans = _processes_in(busybox_rootfs, argv)
        recorded = {_recorded_pid(p) for p in state.glob("containers/*/record.json")}
        assert set(orphans) <= recorded, f"running but untracked: {orphans}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in orphans or _processes_in(busybox_rootfs, argv):
            os.kill(pid, signal.SIGKILL)
        # A supervisor killed with -9 leaves its container's record and cgroups, as a killed
        # runc leaves its state: `labkit reset` is how a user removes them, so the test does.
        made = [c for r in state.glob("containers/*/record.json") for c in _cgroups_of(r)]
        lab.cli("reset", env={"LABKIT_STATE_DIR": str(state)})
        assert not [c for c in made if Path(c).exists()], "reset left the container's cgroups"


def _cgroups_of(record: Path) -> list[str]:
    return json.loads(record.read_text()).get("cgroups") or []


def _recorded_pid(path: Path) -> int | None:
    return (json.loads(path.read_text()).get("process") or [None])[0]


@pytest.mark.parametrize("name", ["a b/c", "../labkit-escaped-record", "x" * 65])
def test_a_bad_name_is_refused_before_anything_starts(
    lab, busybox_rootfs: Path, tmp_path: Path, name: str
) -> None:
    state = tmp_path / "state"
    opts = ("--rootfs", str(busybox_rootfs), "--name", name)
    done = lab.run("true", opts=opts, env={"LABKIT_STATE_DIR": str(state)})
    assert done.returncode == 125
    _one_error_line(done.stderr)
    assert not state.exists() and not (tmp_path / "labkit-escaped-record").exists()


def test_a_workdir_that_cannot_be_made_is_named_in_the_error(lab) -> None:
    done = lab.run("true", opts=("-w", "/etc/passwd/labkit-sub"))
    assert done.returncode == 125
    line = _one_error_line(done.stderr)
    assert "/etc/passwd/labkit-sub" in line and "(fix: " in line


def test_a_too_long_hostname_is_refused_by_validate(busybox_rootfs: Path) -> None:
    from labkit.errors import LabkitError
    from labkit.runtime.spec import ContainerSpec

    spec = ContainerSpec(rootfs=str(busybox_rootfs), argv=["true"], hostname="h" * 65)
    with pytest.raises(LabkitError):
        spec.validate()


def test_the_command_starts_with_default_signal_dispositions(lab, busybox_rootfs: Path) -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and `nohup` or a script's background job makes
    labkit ignore SIGHUP, SIGINT and SIGQUIT: an exec'd command must inherit none of that
    (Docker's start with every signal at its default, whoever ran `docker run`)."""
    done = lab.sh("grep SigIgn /proc/self/status; yes | head -1")
    assert done.stdout.split() == ["SigIgn:", "0000000000000000", "y"], done.stdout
    assert "Broken pipe" not in done.stderr
    ignoring = subprocess.run(
        ["sh", "-c", "trap '' HUP INT QUIT; exec \"$@\"", "sh", PYTHON, "-m", "labkit.cli"]
        + ["run", "--rootfs", str(busybox_rootfs), "--", "grep", "SigIgn", "/proc/self/status"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ignoring.stdout.split() == ["SigIgn:", "0000000000000000"], ignoring.stderr


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_an_unwritable_pid_file_stops_the_container_and_says_why(
    lab, busybox_rootfs: Path, tmp_path: Path, where: str
) -> None:
    """Defect: `--pid-file DIR` left `DIR.tmp` behind (and the container is stopped)."""
    state = tmp_path / "state"
    target = tmp_path / "no-such-dir" / "pid" if where == "missing-dir" else tmp_path
    opts = ("--rootfs", str(busybox_rootfs), "--pid-file", str(target))
    done = lab.run("sleep", "30", opts=opts, env={"LABKIT_STATE_DIR": str(state)})
    assert done.returncode == 125
    line = _one_error_line(done.stderr)
    assert f"--pid-file {target}" in line and "(fix: " in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"], "a temp file was left"
    assert [p.name for p in (state / "containers").iterdir()] == [".lock"], "a record was left"


def test_a_running_container_is_in_use_not_a_leftover(lab) -> None:
    from labkit import doctor, reset

    with lab.background("sleep", "1000") as bg:
        mine = [i for i in reset.plan() if i.ref.get("pid") == bg.pid]
        assert len(mine) == 1 and mine[0].ref["in_use"], mine
        leftovers = [c for c in doctor.check_leftovers() if c.status != "ok"]
        assert not any(str(bg.pid) in c.detail for c in leftovers)


def test_the_parser_constants_match_the_runtime() -> None:
    """cli.py spells out the isolations to stay cheap to import; they must not drift."""
    from labkit import cli
    from labkit.kernel.namespaces import DOCKER_DEFAULT, parse_kinds
    from labkit.runtime import spec

    assert parse_kinds(cli.DEFAULT_NAMESPACES) == DOCKER_DEFAULT
    assert cli.ISOLATIONS == spec.ISOLATIONS
