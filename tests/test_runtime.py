"""labkit.runtime: the spec, its validation, the records, and the supervisor and helper.

A ``Supervisor`` makes its caller a child subreaper and takes over signal handlers, so it
only ever runs in a child interpreter here (``lab.py``), never in pytest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import wait_until

from labkit.errors import LabkitError
from labkit.kernel.namespaces import DOCKER_DEFAULT
from labkit.kernel.procfs import ProcessRef
from labkit.runtime import records
from labkit.runtime.spec import DEFAULT_PATH, ContainerSpec, new_id

pytestmark = pytest.mark.usefixtures("needs_root")


# -- ContainerSpec -------------------------------------------------------------------------------


def test_spec_defaults_are_dockers() -> None:
    spec = ContainerSpec(rootfs="/x", argv=["sh"])
    assert set(spec.namespaces) == DOCKER_DEFAULT
    assert spec.isolation == "pivot_root"
    assert spec.workdir == "/"
    assert re.fullmatch(r"[0-9a-f]{64}", spec.id)  # Docker's: 64 hex digits, 12 shown
    assert spec.name == spec.short_id == spec.id[:12]
    assert (spec.interactive, spec.tty) == (False, False)
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
    assert spec.effective_hostname() == spec.short_id  # as Docker: the short id
    short = spec.short_id
    assert spec.environment() == {"PATH": "/bin", "HOME": "/root", "HOSTNAME": short, "X": "y"}
    assert ContainerSpec(rootfs="/r", argv=["sh"], tty=True).environment()["TERM"] == "xterm"
    spec.hostname = "box"
    assert spec.environment()["HOSTNAME"] == "box"
    no_uts = ContainerSpec(rootfs="/r", argv=["sh"], namespaces=["mnt"])
    assert no_uts.effective_hostname() is None
    assert no_uts.environment() == {"PATH": DEFAULT_PATH, "HOME": "/root"}


def test_a_valid_spec_validates(busybox_rootfs: Path) -> None:
    ContainerSpec(rootfs=str(busybox_rootfs), argv=["true"]).validate()
    ContainerSpec(
        rootfs=str(busybox_rootfs), argv=["true"], namespaces=[], isolation="chroot", image="bb"
    ).validate()
    with pytest.raises(LabkitError, match="inside labkit's image store"):
        # an image's directory given as a plain rootfs, with no mount namespace to protect it
        ContainerSpec(
            rootfs=str(busybox_rootfs), argv=["true"], namespaces=[], isolation="chroot"
        ).validate()


def _invalid_specs() -> list:
    return [
        pytest.param(dict(argv=[]), ("no command",), ("{command}",), id="empty-argv"),
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
            ("hostname", "UTS"),
            ("uts", "{hostname}"),
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
            ("{rootfs}", "{images_ls}"),
            id="missing-rootfs",
        ),
        pytest.param(dict(rootfs="/"), ("host's own /",), ("rootfs",), id="rootfs-is-slash"),
        pytest.param(
            dict(workdir="tmp"), ("workdir", "absolute"), ("{workdir}",), id="relative-workdir"
        ),
        pytest.param(
            dict(namespaces=["uts"], isolation="chroot", tty=True),
            ("terminal", "mount namespace"),
            ("mnt", "{tty}"),
            id="tty-without-mnt",
        ),
        pytest.param(dict(name="-bad"), ("-bad",), ("{name}",), id="bad-name"),
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
            ("--pull", "never", "--image", "labkit-no-such-image", "--", "true"),
            ("No such image", "labkit pull"),
            id="unknown-image",
        ),
    ],
)
def test_cli_refuses_a_bad_spec_and_creates_nothing(
    lab, busybox_rootfs, tmp_path, args, words
) -> None:
    state = tmp_path / "state"  # a state dir of its own: anything created would show here
    if "--image" not in args and "--rootfs" not in args:
        args = ("--rootfs", str(busybox_rootfs), *args)
    done = lab.cli("run", *args, env={"LABKIT_STATE_DIR": str(state)})
    assert done.returncode == 125, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("labkit: ") and done.stderr.count("\n") == 1
    assert "(fix: " in done.stderr and done.stderr.endswith(")\n")
    assert "Traceback" not in done.stderr and "{" not in done.stderr
    for word in words:
        assert word in done.stderr
    assert not state.exists(), "a refused spec created state"


def test_cli_with_an_unbuilt_image_says_how_to_build_it(lab, tmp_path: Path) -> None:
    done = lab.cli("run", "--", "true", env={"LABKIT_STATE_DIR": str(tmp_path / "empty")})
    assert done.returncode == 125
    assert done.stderr == (
        "labkit: image 'busybox' is not built (fix: build it: labkit images build busybox)\n"
    )
    assert not (tmp_path / "empty").exists()


def test_an_empty_rootfs_is_refused_and_left_empty(lab, tmp_path: Path) -> None:
    """labkit never creates anything inside a root filesystem it was given."""
    empty = tmp_path / "empty-root"
    empty.mkdir()
    done = lab.cli("run", "--rootfs", str(empty), "--", "true")
    assert done.returncode == 125
    assert "has no proc, sys, dev directories" in done.stderr
    assert f"mkdir {empty}/proc {empty}/sys {empty}/dev" in done.stderr
    assert list(empty.iterdir()) == []


def test_an_unreadable_rootfs_says_so_not_run_as_root(lab, tmp_path: Path) -> None:
    """Root told to run as root is no help: the errno decides the fix."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    done = lab.cli("run", "--rootfs", str(locked / "root"), "--", "true", user=65534)
    assert done.returncode == 125
    assert "run it as root" in done.stderr or "must run as root" in done.stderr
    as_root = lab.cli("run", "--rootfs", "/proc/1/root", "--", "true")
    assert as_root.returncode == 125
    assert "run as root" not in as_root.stderr and "Traceback" not in as_root.stderr


# -- records -------------------------------------------------------------------------------------


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from labkit import paths

    monkeypatch.setattr(paths, "STATE_DIR", tmp_path / "state")
    return tmp_path / "state"


def _me() -> ProcessRef:
    ref = ProcessRef.of(os.getpid())
    assert ref is not None
    return ref


def test_records_round_trip(state_dir: Path) -> None:
    record = records.claim("a" * 64, "web", {"argv": ["sleep", "1"]}, _me())
    path = state_dir / "containers" / ("a" * 64) / "record.json"
    assert path.is_file() and record.status == "creating"
    assert not list(path.parent.glob("*.tmp"))
    record.process, record.status = _me(), "running"
    record.save()
    (loaded,) = records.all_records()
    assert loaded == record and loaded.is_running() and loaded.is_supervised()
    (path.parent.parent / ("b" * 64)).mkdir()  # a directory without a readable record
    (path.parent.parent / ("b" * 64) / "record.json").write_text("{not json")
    assert [r.id for r in records.all_records()] == ["a" * 64]
    assert len(records.directories()) == 2
    records.remove("a" * 64)
    records.remove("a" * 64)  # twice is fine
    assert [d.name for d in records.directories()] == ["b" * 64]


def test_a_name_in_use_is_a_conflict_and_a_stale_one_is_reclaimed(state_dir: Path) -> None:
    first = records.claim("a" * 64, "web", {}, _me())
    with pytest.raises(LabkitError, match="Conflict. The container name 'web' is already in use"):
        records.claim("b" * 64, "web", {}, _me())
    dead = subprocess.Popen(["true"])
    ref = ProcessRef.of(dead.pid)
    dead.wait()
    first.supervisor = ref  # its supervisor is gone and it never ran: a crash's leftover
    first.save()
    again = records.claim("c" * 64, "web", {}, _me())
    assert [r.id for r in records.all_records()] == [again.id]


def test_a_record_from_an_earlier_boot_is_not_running(state_dir: Path) -> None:
    record = records.claim("a" * 64, "web", {}, _me())
    record.process = _me()._replace(boot_id="00000000-0000-0000-0000-000000000000")
    assert not record.is_running()
    assert records.Record.from_dict(json.loads(json.dumps(record.__dict__))) == record


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen(["true"])
    try:
        ref = ProcessRef.of(child.pid)
        assert ref is not None
        assert wait_until(lambda: Path(f"/proc/{child.pid}/stat").read_text().split()[2] == "Z")
        assert not ref.is_alive()
    finally:
        child.wait()
    assert ProcessRef.of(child.pid) is None


def test_list_records_without_a_dir(state_dir: Path) -> None:
    assert records.all_records() == [] and records.directories() == []


# -- the supervisor and the helper, driven from a child interpreter ------------------------------

_START = """
    import signal
    from labkit.runtime.supervisor import Supervisor
    from labkit.runtime.spec import ContainerSpec
    from labkit.runtime import records
    spec = ContainerSpec(**{spec!r})
    sup = Supervisor()
    c = sup.start(spec)
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
    record = records.load(c.record.directory)
    facts = dict(pid=c.pid, me=os.getpid(), ppid=ppid(c.pid), argv0=cmdline(c.pid),
                 events=c.events, status=record.status if record else None,
                 record_pid=record.pid if record else None,
                 supervisor=list(record.supervisor) if record else None)
    if {kill}:
        c.signal(signal.SIGKILL)
    code = sup.wait(c)
    emit(code=code, error=c.error, record_after=c.record.directory.exists(), **facts)
"""


def _start(lab, busybox_rootfs: Path, kill: bool = False, **fields) -> dict:
    spec = {"rootfs": str(busybox_rootfs), "argv": ["true"], **fields}
    return lab.py(_START.format(spec=spec, kill=kill))


def test_start_with_default_namespaces(lab, busybox_rootfs: Path) -> None:
    out = _start(lab, busybox_rootfs, kill=True, argv=["sleep", "1000"])
    # The helper forked into the PID namespace and exited; we (a subreaper) adopted PID 1.
    assert out["ppid"] == out["me"]
    assert out["argv0"] == "sleep"
    created = out["events"][0]
    assert created["event"] == "created" and created["pid"] == out["pid"]
    assert created["forker"] != out["pid"]
    assert out["status"] == "running" and out["record_pid"] == out["pid"]
    assert out["supervisor"][0] == out["me"], "the record names the supervisor that started it"
    assert not out["record_after"]
    assert out["code"] == 137 and out["error"] is None


def test_start_without_a_pid_namespace_execs_the_helper_itself(lab, busybox_rootfs) -> None:
    out = _start(
        lab,
        busybox_rootfs,
        argv=["sh", "-c", "exit 7"],
        namespaces=[],
        isolation="chroot",
        image="busybox",
    )
    assert out["events"] == [{"event": "created", "pid": out["pid"], "forker": out["pid"]}]
    assert out["code"] == 7


def test_start_with_a_user_namespace(lab, busybox_rootfs: Path) -> None:
    out = _start(
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
        ([""], 127, "ENOENT", 'exec "": executable file not found in $PATH'),
        (["/etc/passwd"], 126, "EACCES", "exec /etc/passwd: permission denied"),
        (["/tmp"], 126, "EACCES", "exec /tmp: permission denied"),
    ],
)
def test_exec_failures_are_reported(lab, busybox_rootfs, argv, code, errno_name, message) -> None:
    out = _start(lab, busybox_rootfs, argv=argv)
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


def test_a_setup_failure_names_its_stage(lab, busybox_rootfs: Path) -> None:
    # a missing workdir is made (as Docker makes one); a file where it should be is not
    out = _start(lab, busybox_rootfs, workdir="/etc/passwd")
    assert out["code"] == 125
    assert out["error"]["stage"] == "workdir"
    assert out["error"]["errno"] == "EEXIST"
    assert "{workdir}" in out["error"]["fix"]


def test_a_missing_workdir_in_a_directory_of_yours_is_not_made(lab, rootfs_copy: Path) -> None:
    """labkit never creates anything in a root filesystem it does not own a layer of."""
    out = _start(lab, rootfs_copy, workdir="/labkit-no-such-dir")
    assert (out["code"], out["error"]["stage"], out["error"]["errno"]) == (125, "workdir", "ENOENT")
    assert not (rootfs_copy / "labkit-no-such-dir").exists()


def test_start_refuses_when_not_root(lab, busybox_rootfs: Path) -> None:
    out = lab.py(
        f"""
        from labkit.errors import LabkitError
        from labkit.runtime.supervisor import Supervisor
        from labkit.runtime.spec import ContainerSpec
        try:
            Supervisor().start(ContainerSpec(rootfs={str(busybox_rootfs)!r}, argv=["true"]))
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
        time.sleep(0.1)


def _ppid(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_a_multithreaded_supervisor_spawns_a_fresh_helper(lab, busybox_rootfs: Path) -> None:
    """A supervisor with threads must not fork: it spawns a fresh `python -I -S` helper."""
    out = lab.py(f"""
        import threading
        from labkit.runtime.supervisor import Supervisor
        from labkit.runtime.spec import ContainerSpec
        stop = threading.Event()
        worker = threading.Thread(target=stop.wait)
        worker.start()
        seen, real_spawn, real_fork = [], os.posix_spawn, os.fork
        def spy(path, argv, *a, **kw):
            seen.append(argv[:3])
            return real_spawn(path, argv, *a, **kw)
        os.posix_spawn = spy
        os.fork = lambda: (_ for _ in ()).throw(AssertionError("no fork expected"))
        try:
            sup = Supervisor()
            spec = ContainerSpec(rootfs={str(busybox_rootfs)!r}, argv=["sh", "-c", "exit 9"])
            c = sup.start(spec)
            code = sup.wait(c)
        finally:
            stop.set()
            worker.join()
        emit(code=code, helper_argv=seen[0] if seen else None)
    """)
    assert out["code"] == 9
    assert out["helper_argv"][1:3] == ["-I", "-S"]


def test_a_single_threaded_supervisor_forks_the_helper(lab, busybox_rootfs: Path) -> None:
    out = lab.py(f"""
        from labkit.runtime.supervisor import Supervisor
        from labkit.runtime.spec import ContainerSpec
        seen = []
        os.posix_spawn = lambda *a, **kw: seen.append(a) or (_ for _ in ()).throw(
            AssertionError("no posix_spawn expected"))
        sup = Supervisor()
        c = sup.start(ContainerSpec(rootfs={str(busybox_rootfs)!r}, argv=["sh", "-c", "exit 8"]))
        emit(code=sup.wait(c), spawn_calls=len(seen))
    """)
    assert (out["code"], out["spawn_calls"]) == (8, 0)


def test_one_supervisor_waits_for_many_containers(lab, busybox_rootfs: Path) -> None:
    """Reaping by pidfd: three containers that end in the opposite order they started, and a
    waitpid(-1)-free loop that gets every exit code right."""
    out = lab.py(f"""
        from labkit.runtime.supervisor import Supervisor
        from labkit.runtime.spec import ContainerSpec
        sup = Supervisor()
        started = [
            sup.start(ContainerSpec(rootfs={str(busybox_rootfs)!r}, argv=["sh", "-c",
                f"while [ ! -e /tmp/go ]; do sleep 0.02; done; exit {{n + 1}}"]))
            for n in range(3)
        ]
        order = []
        for c in reversed(started):  # let the last one go first, and so on
            open(f"/proc/{{c.pid}}/root/tmp/go", "w").close()
            while c.exit_code is None:
                sup.step(1)
            order += [c.spec.name]
        emit(codes=[sup.wait(c) for c in started], order=order,
             names=[c.spec.name for c in started])
    """)
    assert out["codes"] == [1, 2, 3]
    assert out["order"] == list(reversed(out["names"]))
