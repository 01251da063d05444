"""labkit.runtime: the spec, its validation, the records, and spawn/helper seen from a supervisor.

``spawn.start`` makes its caller a child subreaper, so it only ever runs in a child
interpreter here (``lab.py``), never in pytest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import container_records, session_processes, wait_until

from labkit.errors import LabkitError
from labkit.kernel.namespaces import DOCKER_DEFAULT
from labkit.runtime import spawn, state
from labkit.runtime.spec import DEFAULT_PATH, ContainerSpec, new_id

pytestmark = pytest.mark.usefixtures("needs_root")


# -- ContainerSpec -------------------------------------------------------------------------------


def test_spec_defaults_are_dockers() -> None:
    spec = ContainerSpec(rootfs="/x", argv=["sh"])
    assert set(spec.namespaces) == DOCKER_DEFAULT
    assert spec.isolation == "pivot_root"
    assert spec.workdir == "/"
    assert re.fullmatch(r"[0-9a-f]{12}", spec.id)
    assert new_id() != new_id()


def test_spec_json_round_trip() -> None:
    spec = ContainerSpec(
        rootfs="/r",
        argv=["sh", "-c", "echo 'hi there'"],
        namespaces=["uts"],
        hostname="h",
        env={"A": "1"},
        workdir="/tmp",
        try_escape=True,
    )
    assert ContainerSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["argv"] == ["sh", "-c", "echo 'hi there'"]


def test_spec_environment_and_hostname() -> None:
    spec = ContainerSpec(rootfs="/r", argv=["sh"], env={"PATH": "/bin", "X": "y"})
    assert spec.effective_hostname() == spec.id
    assert spec.environment() == {"PATH": "/bin", "HOME": "/root", "HOSTNAME": spec.id, "X": "y"}
    spec.hostname = "box"
    assert spec.environment()["HOSTNAME"] == "box"
    no_uts = ContainerSpec(rootfs="/r", argv=["sh"], namespaces=["mnt"])
    assert no_uts.effective_hostname() is None
    assert no_uts.environment() == {"PATH": DEFAULT_PATH, "HOME": "/root"}


def test_a_valid_spec_validates(busybox_rootfs: Path) -> None:
    ContainerSpec(rootfs=str(busybox_rootfs), argv=["true"]).validate()
    ContainerSpec(
        rootfs=str(busybox_rootfs), argv=["true"], namespaces=[], isolation="chroot"
    ).validate()


def _invalid_specs() -> list:
    return [
        pytest.param(dict(argv=[]), ("no command",), ("--",), id="empty-argv"),
        pytest.param(dict(namespaces=["uts", "bogus"]), ("bogus",), ("uts",), id="unknown-ns"),
        pytest.param(dict(isolation="jail"), ("jail",), ("chroot",), id="unknown-isolation"),
        pytest.param(
            dict(namespaces=["uts", "pid"]),
            ("pivot_root", "mount namespace"),
            ("mnt", "chroot"),
            id="pivot-root-without-mnt",
        ),
        pytest.param(
            dict(namespaces=["mnt"], hostname="h"),
            ("--hostname", "UTS"),
            ("uts",),
            id="hostname-without-uts",
        ),
        pytest.param(
            dict(rootfs="relative/dir"),
            ("relative/dir", "absolute"),
            ("absolute",),
            id="relative-rootfs",
        ),
        pytest.param(
            dict(rootfs="/nonexistent/labkit-rootfs"),
            ("does not exist",),
            ("--rootfs", "labkit images ls"),
            id="missing-rootfs",
        ),
        pytest.param(dict(rootfs="/"), ("host's own /",), ("rootfs",), id="rootfs-is-slash"),
        pytest.param(
            dict(workdir="tmp"), ("workdir", "absolute"), ("--workdir",), id="relative-workdir"
        ),
    ]


@pytest.mark.parametrize(
    ("change", "problem_words", "fix_words"),
    _invalid_specs(),
)
def test_validate_names_the_problem_and_the_fix(
    busybox_rootfs: Path, change: dict, problem_words: tuple, fix_words: tuple
) -> None:
    fields = {"rootfs": str(busybox_rootfs), "argv": ["true"], **change}
    spec = ContainerSpec(**fields)
    with pytest.raises(LabkitError) as info:
        spec.validate()
    err = info.value
    for word in problem_words:
        assert word in err.problem
    assert err.fix
    for word in fix_words:
        assert word in err.fix


def test_validate_resolves_a_symlink_to_slash(tmp_path: Path) -> None:
    link = tmp_path / "looks-like-a-rootfs"
    link.symlink_to("/")
    with pytest.raises(LabkitError, match="host's own /"):
        ContainerSpec(rootfs=str(link), argv=["true"]).validate()


# -- invalid specs through the CLI: exit 125, one line, and nothing created ----------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param((), ("no command", "fix:"), id="no-command"),
        pytest.param(("--",), ("no command", "fix:"), id="only-dashes"),
        pytest.param(("--ns", "uts,bogus", "--", "true"), ("'bogus'",), id="unknown-ns"),
        pytest.param(("--ns", "uts,pid", "--", "true"), ("mount namespace",), id="pivot-no-mnt"),
        pytest.param(
            ("--ns", "mnt", "--isolation", "chroot", "--hostname", "h", "--", "true"),
            ("UTS",),
            id="hostname-no-uts",
        ),
        pytest.param(
            ("--rootfs", "no/such/dir", "--", "true"),
            ("does not exist",),
            id="relative-missing-rootfs",
        ),
        pytest.param(("--rootfs", "/", "--", "true"), ("host's own /",), id="rootfs-slash"),
        pytest.param(("--workdir", "tmp", "--", "true"), ("workdir",), id="relative-workdir"),
        pytest.param(("-e", "NOEQUALS", "--", "true"), ("--env", "KEY=VALUE"), id="bad-env"),
        pytest.param(
            ("--image", "labkit-no-such-image", "--", "true"),
            ("unknown image", "busybox"),
            id="unknown-image",
        ),
    ],
)
def test_cli_refuses_a_bad_spec_and_creates_nothing(lab, busybox_rootfs, args, words) -> None:
    run_dir = Path(f"/run/labkit/test-validate-{os.getpid()}")
    assert not run_dir.exists()
    records, processes = container_records(), session_processes()
    done = lab.cli("run", *args, env={"LABKIT_RUN_DIR": str(run_dir)})
    assert done.returncode == 125, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("labkit: ") and done.stderr.count("\n") == 1
    assert "(fix: " in done.stderr and done.stderr.endswith(")\n")
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr
    assert not run_dir.exists(), "a refused spec created the run dir"
    assert container_records() == records
    assert session_processes() <= processes


def test_cli_with_an_unbuilt_image_says_how_to_build_it(lab, tmp_path: Path) -> None:
    done = lab.cli("run", "--", "true", env={"LABKIT_STATE_DIR": str(tmp_path / "empty")})
    assert done.returncode == 125
    assert done.stderr == (
        "labkit: image 'busybox' is not built (fix: run: labkit images build busybox)\n"
    )
    assert not (tmp_path / "empty").exists()


# -- records -------------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from labkit import paths

    monkeypatch.setattr(paths, "RUN_DIR", tmp_path / "run")
    return tmp_path / "run"


def test_records_round_trip(run_dir: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        path = state.write_record("abc123", sleeper.pid, ["sleep", "1000"], "/r")
        assert path == run_dir / "containers" / "abc123.json"
        assert not list(path.parent.glob("*.tmp"))
        (record,) = state.list_records()
        assert record["pid"] == sleeper.pid and record["argv"] == ["sleep", "1000"]
        assert state.is_alive(record)
        assert not state.is_alive({**record, "start_time": record["start_time"] + 1})
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not state.is_alive(record)
    (run_dir / "containers" / "broken.json").write_text("{not json")
    assert [r["id"] for r in state.list_records()] == ["abc123"]
    state.remove_record("abc123")
    state.remove_record("abc123")  # twice is fine
    assert state.list_records() == []


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen(["true"])
    try:
        record = {"pid": child.pid, "start_time": state.process_start_time(child.pid)}
        assert wait_until(lambda: (state.stat_fields(child.pid) or ["Z"])[0] == "Z")
        assert state.process_start_time(child.pid) == record["start_time"]  # not reaped yet
        assert not state.is_alive(record)
    finally:
        child.wait()
    assert state.stat_fields(child.pid) is None


def test_list_records_without_a_dir(run_dir: Path) -> None:
    assert state.list_records() == []


def test_process_start_time_parses_odd_command_names(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    plain = subprocess.Popen(["sleep", "1000"])
    weird = subprocess.Popen([str(odd), "1000"])
    try:
        comm = Path(f"/proc/{weird.pid}/comm")
        assert wait_until(lambda: comm.read_text().strip() == "a) b (c")
        t_plain, t_weird = state.process_start_time(plain.pid), state.process_start_time(weird.pid)
        ticks = os.sysconf("SC_CLK_TCK")
        assert 0 <= t_weird - t_plain < 10 * ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        assert abs(t_weird / ticks - uptime) < 10
    finally:
        for p in (plain, weird):
            p.kill()
            p.wait()
    assert state.process_start_time(plain.pid) is None


# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -TERM $$", 143),
        ("kill -KILL $$", 137),
    ],
)
def test_exit_code_from_a_real_wait_status(script: str, expected: int) -> None:
    pid = os.posix_spawnp("sh", ["sh", "-c", script], os.environ)
    _, status = os.waitpid(pid, 0)
    assert spawn.exit_code(status) == expected


# -- spawn and helper, driven from a child interpreter -------------------------------------------

_SPAWN = """
    import signal
    from labkit.runtime import spawn
    from labkit.runtime.spec import ContainerSpec
    spec = ContainerSpec(**{spec!r})
    c = spawn.start(spec)
    def ppid(pid):
        try:
            return int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return None
    def cmdline(pid):
        try:
            return open(f"/proc/{{pid}}/cmdline", "rb").read().split(b"\\0")[0].decode()
        except OSError:
            return None
    facts = dict(pid=c.pid, me=os.getpid(), ppid=ppid(c.pid), argv0=cmdline(c.pid),
                 events=c.events, direct=c._popen is not None,
                 record=os.path.exists(f"/run/labkit/containers/{{spec.id}}.json"))
    if {kill}:
        c.signal(signal.SIGKILL)
    code = c.wait()
    emit(code=code, error=c.error, record_after=os.path.exists(
        f"/run/labkit/containers/{{spec.id}}.json"), **facts)
"""


def _spawn(lab, busybox_rootfs: Path, kill: bool = False, **fields) -> dict:
    spec = {"rootfs": str(busybox_rootfs), "argv": ["true"], **fields}
    return lab.py(_SPAWN.format(spec=spec, kill=kill))


def test_spawn_default_namespaces(lab, busybox_rootfs: Path) -> None:
    out = _spawn(lab, busybox_rootfs, kill=True, argv=["sleep", "1000"])
    # The helper forked into the PID namespace and exited; we (a subreaper) adopted the child.
    assert out["ppid"] == out["me"]
    assert out["argv0"] == "sleep"
    assert not out["direct"]
    started = out["events"][0]
    assert started["event"] == "started" and started["pid"] == out["pid"]
    assert started["forker"] != out["pid"]
    assert out["record"] and not out["record_after"]
    assert out["code"] == 137 and out["error"] is None


def test_spawn_without_pid_namespace_execs_the_helper_itself(lab, busybox_rootfs: Path) -> None:
    out = _spawn(
        lab, busybox_rootfs, argv=["sh", "-c", "exit 7"], namespaces=[], isolation="chroot"
    )
    assert out["direct"]
    assert out["events"] == [{"event": "started", "pid": out["pid"], "forker": out["pid"]}]
    assert out["code"] == 7


def test_spawn_with_a_user_namespace(lab, busybox_rootfs: Path) -> None:
    out = _spawn(
        lab,
        busybox_rootfs,
        kill=True,
        argv=["sleep", "1000"],
        namespaces=sorted(DOCKER_DEFAULT | {"user"}),
    )
    assert out["ppid"] == out["me"]
    assert out["argv0"] == "sleep"
    assert out["code"] == 137


@pytest.mark.parametrize(
    ("argv", "code", "errno_name", "message"),
    [
        (
            ["labkit-nosuch"],
            127,
            "ENOENT",
            "exec labkit-nosuch: executable file not found in $PATH",
        ),
        (["/etc/passwd"], 126, "EACCES", "exec /etc/passwd: permission denied"),
        (["/tmp"], 126, "EACCES", "exec /tmp: permission denied"),
    ],
)
def test_spawn_reports_exec_failures(lab, busybox_rootfs, argv, code, errno_name, message) -> None:
    out = _spawn(lab, busybox_rootfs, argv=argv)
    assert out["code"] == code
    fix = out["error"].pop("fix")
    assert fix, "every error carries a fix"
    assert out["error"] == {
        "event": "error",
        "stage": "exec",
        "exit_code": code,
        "message": message,
        "errno": errno_name,
    }
    assert not out["record_after"]


def test_spawn_reports_a_setup_failure(lab, busybox_rootfs: Path) -> None:
    out = _spawn(lab, busybox_rootfs, workdir="/labkit-no-such-dir")
    assert out["code"] == 125
    assert out["error"]["stage"] == "workdir"
    assert out["error"]["errno"] == "ENOENT"


def test_spawn_refuses_when_not_root(lab, busybox_rootfs: Path) -> None:
    out = lab.py(
        f"""
        from labkit.errors import LabkitError
        from labkit.runtime import spawn
        from labkit.runtime.spec import ContainerSpec
        try:
            spawn.start(ContainerSpec(rootfs={str(busybox_rootfs)!r}, argv=["true"]))
        except LabkitError as exc:
            emit(problem=exc.problem, fix=exc.fix)
        """,
        user=65534,
    )
    assert "root" in out["problem"] and "sudo" in out["fix"]


def test_no_python_stays_behind_for_a_running_container(lab, busybox_rootfs: Path) -> None:
    """While a container runs, its supervisor is its parent; no helper interpreter is left."""
    with lab.background("sleep", "1000") as bg:
        status = bg.status()
        assert status["PPid"] == str(bg.proc.pid)
        assert status["Name"] == "sleep"
        children = [
            p.name
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _ppid(p.name) == bg.proc.pid
        ]
        assert children == [str(bg.pid)]
        helpers = [p for p in session_processes() if "labkit.runtime.helper" in p]
        assert helpers == []
        time.sleep(0.1)


def _ppid(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_a_multithreaded_supervisor_starts_a_fresh_helper(lab, busybox_rootfs: Path) -> None:
    """A supervisor with threads must not fork: it execs a fresh `python -I -S` helper."""
    out = lab.py(f"""
        import subprocess, threading
        from labkit.runtime import spawn
        from labkit.runtime.spec import ContainerSpec
        stop = threading.Event()
        worker = threading.Thread(target=stop.wait)
        worker.start()
        seen = []
        real_popen = subprocess.Popen
        def spy(argv, *a, **kw):
            seen.append(argv[:3])
            return real_popen(argv, *a, **kw)
        subprocess.Popen = spy
        try:
            spec = ContainerSpec(rootfs={str(busybox_rootfs)!r}, argv=["sh", "-c", "exit 9"])
            code, container = spawn.run(spec)
        finally:
            stop.set()
            worker.join()
        emit(code=code, helper_argv=seen[0] if seen else None)
    """)
    assert out["code"] == 9
    assert out["helper_argv"][1:3] == ["-I", "-S"]


def test_a_single_threaded_supervisor_forks_the_helper(lab, busybox_rootfs: Path) -> None:
    out = lab.py(f"""
        import subprocess
        from labkit.runtime import spawn
        from labkit.runtime.spec import ContainerSpec
        seen = []
        subprocess.Popen = lambda *a, **kw: seen.append(a) or (_ for _ in ()).throw(
            AssertionError("no Popen expected"))
        spec = ContainerSpec(rootfs={str(busybox_rootfs)!r}, argv=["sh", "-c", "exit 8"])
        code, container = spawn.run(spec)
        emit(code=code, popen_calls=len(seen))
    """)
    assert (out["code"], out["popen_calls"]) == (8, 0)
