"""Shared fixtures: run labkit for real (as root) in subprocesses, and prove nothing leaks.

The pytest process itself never unshares, chroots or pivots: a test runner in a new mount
or PID namespace would break the rest of the run. Every piece of namespace work happens in
a child: the ``labkit`` CLI, or a short ``python -c`` script that calls ``labkit.kernel``
functions and prints one JSON line back (see ``Lab.py``).

Whether the run left anything behind on the host is checked by ``tests/run.sh`` with
``tests/leakcheck.py`` (before and after the whole run), not here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# tests/in_vm runs only inside the learner's VM (tests/guest/run.py boots it); tests/guest
# holds the scripts that build and boot that VM, not tests.
collect_ignore = ["in_vm", "guest"]

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: Every process this session starts inherits this variable, so a leftover can be told
#: apart from what teammates or notebooks run on the same host at the same time.
SESSION_MARK = f"labkit-test-{os.getpid()}-{secrets.token_hex(4)}"
os.environ["LABKIT_TEST_SESSION"] = SESSION_MARK
#: A JSON line from a ``Lab.py`` script starts with this, so other output cannot confuse us.
JSON_TAG = "LABKIT-TEST-JSON "

_PRELUDE = f"""\
import errno, json, os, socket, sys
def emit(**fields):
    sys.stdout.write({JSON_TAG!r} + json.dumps(fields) + "\\n")
    sys.stdout.flush()
def attempt(fn, *args, **kwargs):
    '''Call fn; describe the OSError it raises (None if it does not raise).'''
    try:
        fn(*args, **kwargs)
    except OSError as exc:
        return {{"type": type(exc).__name__, "errno": exc.errno,
                "name": errno.errorcode.get(exc.errno), "strerror": exc.strerror,
                "filename": exc.filename, "str": str(exc)}}
    return None
"""


@dataclass
class Background:
    """A container running in the background: its supervisor (the CLI) and its host PID."""

    proc: subprocess.Popen
    pid: int
    pid_file: Path

    def status(self) -> dict[str, str]:
        return proc_status(self.pid)


class Lab:
    """Runs labkit the way a user does: the CLI, or a python script in a child process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def cli(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        user: int | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """``python -m labkit.cli ARGS`` (as ``user`` via setpriv if given)."""
        argv = [PYTHON, "-m", "labkit.cli", *args]
        cwd, run_env = REPO, _env(env)
        if user is not None:
            argv, cwd, run_env = _as_user(user, argv, run_env)
        return subprocess.run(
            argv,
            cwd=cwd,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run(self, *command: str, opts: tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess:
        """``labkit run OPTS -- COMMAND``."""
        return self.cli("run", *opts, "--", *command, **kw)

    def sh(self, script: str, opts: tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess:
        """``labkit run OPTS -- sh -c SCRIPT``, asserting it succeeded; returns the result."""
        done = self.run("sh", "-c", script, opts=opts, **kw)
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def py(
        self,
        code: str,
        user: int | None = None,
        timeout: float = 60,
        check: bool = True,
        python: str = PYTHON,
    ) -> dict:
        """Run ``code`` in a fresh single-threaded interpreter; return what it ``emit``-ed.

        The script gets ``emit(**fields)`` and ``attempt(fn, *args)`` (see ``_PRELUDE``).
        """
        argv = [python, "-c", _PRELUDE + textwrap.dedent(code)]
        cwd, run_env = REPO, _env(None)
        if user is not None:
            argv, cwd, run_env = _as_user(user, argv, run_env)
        done = subprocess.run(
            argv, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=timeout
        )
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(JSON_TAG)]
        if check and (done.returncode != 0 or not lines):
            raise AssertionError(
                f"script failed (exit {done.returncode})\nstdout:\n{done.stdout}\n"
                f"stderr:\n{done.stderr}"
            )
        result = json.loads(lines[-1][len(JSON_TAG) :]) if lines else {}
        result.setdefault("_exit", done.returncode)
        result.setdefault("_stderr", done.stderr)
        return result

    @contextlib.contextmanager
    def background(
        self,
        *command: str,
        opts: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        rootfs: Path | None = None,
    ) -> Iterator[Background]:
        """Start ``labkit run --pid-file F OPTS -- COMMAND`` and yield once the command runs.

        On the way out the container is killed (SIGKILL) and its supervisor reaped, unless a
        test already ended it.
        """
        if rootfs is not None:
            opts = ("--rootfs", str(rootfs), *opts)
        pid_file = self.tmp / f"bg-{secrets.token_hex(4)}.pid"
        proc = subprocess.Popen(
            [PYTHON, "-m", "labkit.cli", "run", "--pid-file", str(pid_file), *opts, "--", *command],
            cwd=REPO,
            env=_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pid = None
        try:
            pid = _wait_for_pid_file(pid_file, proc)
            yield Background(proc, pid, pid_file)
        finally:
            if proc.poll() is None:
                if pid is not None and proc_status(pid).get("PPid") == str(proc.pid):
                    os.kill(pid, signal.SIGKILL)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.communicate()


def _as_user(user: int, argv: list[str], env: dict[str, str]):
    """``argv`` as ``user`` (setpriv), able to import labkit wherever the checkout is.

    A Vagrant checkout sits in /home/vagrant, which distributions make 0700 or 0750, so an
    unprivileged user cannot import labkit from it. The behaviour under test (what labkit
    says to a user who is not root) needs labkit importable, so such a run gets a copy of
    the package that everyone can read, and starts in "/"."""
    readable = _package_for_everyone()
    _check_import_as(user, readable)
    argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return argv, "/", {**env, "PYTHONPATH": readable}


_READABLE_COPY: list[str] = []


def _package_for_everyone() -> str:
    """A world-readable copy of labkit/ (made once a session, removed at its end)."""
    if not _READABLE_COPY:
        import atexit
        import shutil
        import tempfile

        top = tempfile.mkdtemp(prefix="labkit-test-package-")
        atexit.register(shutil.rmtree, top, True)
        shutil.copytree(
            REPO / "labkit", Path(top) / "labkit", ignore=shutil.ignore_patterns("__pycache__")
        )
        for d in (top, *(str(p) for p in Path(top).rglob("*") if p.is_dir())):
            os.chmod(d, 0o755)
        for f in Path(top).rglob("*"):
            if f.is_file():
                os.chmod(f, 0o644)
        _READABLE_COPY.append(top)
    return _READABLE_COPY[0]


_IMPORT_CHECKED: set[int] = set()


def _check_import_as(user: int, pythonpath: str) -> None:
    """Fail with the reason, before the test, if ``user`` cannot import labkit at all: a test
    about what a non-root user is told must not pass or fail on an ImportError."""
    if user in _IMPORT_CHECKED:
        return
    done = subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", PYTHON, "-c",
         "import labkit.cli"],
        cwd="/", env={**_env(None), "PYTHONPATH": pythonpath},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        pytest.fail(
            f"uid {user} cannot run {PYTHON} with labkit from {pythonpath}: {last} "
            f"(is the interpreter or its venv readable by other users?)",
            pytrace=False,
        )
    _IMPORT_CHECKED.add(user)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


def _wait_for_pid_file(pid_file: Path, proc: subprocess.Popen, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_file.exists():
            text = pid_file.read_text()
            if text.endswith("\n"):
                return int(text)
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"container exited ({proc.returncode}) early:\n{out}\n{err}")
        time.sleep(0.02)
    raise AssertionError(f"no pid file {pid_file} after {timeout}s")


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict ({} if the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def wait_until(predicate, timeout: float = 10, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    """The busybox image's rootfs (built by ``labkit images build busybox``)."""
    from labkit.errors import LabkitError
    from labkit.images.store import image_rootfs

    try:
        root = image_rootfs("busybox")
    except LabkitError as exc:
        pytest.fail(f"no busybox image: {exc}")
    return root


@pytest.fixture
def rootfs_copy(busybox_rootfs: Path, tmp_path: Path) -> Path:
    """A private copy of the busybox rootfs that a test may change."""
    import shutil

    copy = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, copy, symlinks=True)
    return copy


@pytest.fixture
def network_up(lab: Lab) -> None:
    """The default network exists: it stays once made, as docker0 does, so a snapshot taken
    after this sees only what the test itself leaves behind."""
    done = lab.run("true")
    assert done.returncode == 0, done.stderr


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root: run the tests with sudo bash tests/run.sh")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The tests drive the real kernel: without root every one of them would fail."""
    if os.geteuid() != 0:
        pytest.exit("labkit's tests need root: run sudo bash tests/run.sh", returncode=4)
    session.config.stash[_HAD_DEFAULT_NETWORK] = os.path.exists(DEFAULT_BRIDGE)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Containers start on the default network (``labkit0``), which stays, as docker0 does.
    A run that made it takes it away again, so the leak check finds the host as it was."""
    made_here = not session.config.stash.get(_HAD_DEFAULT_NETWORK, True)
    # In the learner's VM the notebooks ran first (through JupyterLab) and may have made it;
    # the guest's leak check compares with the state from before them.
    if (made_here or os.environ.get("LABKIT_IN_VM") == "1") and os.geteuid() == 0:
        from labkit.network import cleanup

        cleanup.remove_default_if_unused()


_HAD_DEFAULT_NETWORK = pytest.StashKey[bool]()
DEFAULT_BRIDGE = "/sys/class/net/labkit0"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The learner's VM test last: tests/run.sh boots the VM beside the host's tests, and the
    test only waits for it, so everything else should have run by the time it starts waiting."""
    items.sort(key=lambda item: item.get_closest_marker("vm") is not None)
