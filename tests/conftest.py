"""Shared fixtures: run labkit for real (as root) in subprocesses, and prove nothing leaks.

The pytest process itself never unshares, chroots or pivots: a test runner in a new mount
or PID namespace would break the rest of the run. Every piece of namespace work happens in
a child: the ``labkit`` CLI, or a short ``python -c`` script that calls ``labkit.kernel``
functions and prints one JSON line back (see ``Lab.py``).

The session fixture ``_nothing_left_behind`` snapshots labkit's mounts, container records and
container processes before the run and fails the session if anything new is still there at
the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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

from labkit import paths
from labkit.kernel.mounts import mount_rows_under
from labkit.runtime import state

# tests/in_vm runs only inside the cgroup-v2 VM started by tests/vm/run_in_cgroup2.py;
# tests/vm holds that launcher script, not tests.
collect_ignore = ["in_vm"]
collect_ignore += ["vm"]

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: Every process this session starts inherits this variable, so a leftover can be told
#: apart from what teammates or notebooks run on the same host at the same time.
SESSION_MARK = f"labkit-test-{os.getpid()}-{secrets.token_hex(4)}"
os.environ["LABKIT_TEST_SESSION"] = SESSION_MARK
#: A JSON line from a ``Lab.py`` script starts with this, so other output cannot confuse us.
JSON_TAG = "LABKIT-TEST-JSON "

#: Root directories of containers this session starts (images plus per-test copies).
_ROOTFS_SEEN: set[Path] = set()

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
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        return subprocess.run(
            argv,
            cwd=REPO,
            env=_env(env),
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
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        done = subprocess.run(
            argv, cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=timeout
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
            _ROOTFS_SEEN.add(Path(rootfs))
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
    from labkit.images.base import image_rootfs

    try:
        root = image_rootfs("busybox")
    except LabkitError as exc:
        pytest.fail(f"no busybox image: {exc}")
    _ROOTFS_SEEN.add(root)
    return root


@pytest.fixture
def rootfs_copy(busybox_rootfs: Path, tmp_path: Path) -> Path:
    """A private copy of the busybox rootfs that a test may change."""
    import shutil

    copy = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, copy, symlinks=True)
    _ROOTFS_SEEN.add(copy)
    return copy


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root: run the tests with sudo bash tests/run.sh")


# -- leak check -------------------------------------------------------------------------------


#: An image build's scratch dir: IMAGES_DIR/.tmp-<name>-<pid> (see labkit.images.base).
_BUILD_DIR = re.compile(r"/\.tmp-(?:old-)?[\w.-]+?-(\d+)(?:/|$)")


def _foreign_build(target: str) -> bool:
    """A mount inside an image build that a live process outside this session is running."""
    match = _BUILD_DIR.search(target)
    if not match:
        return False
    try:
        environ = Path(f"/proc/{match.group(1)}/environ").read_bytes()
    except OSError:
        return False  # the builder is gone: whatever it left is a leak
    return f"LABKIT_TEST_SESSION={SESSION_MARK}".encode() not in environ.split(b"\0")


def labkit_mounts() -> set[str]:
    """Host mounts (in our mount namespace) at or under labkit's directories.

    Mounts of an image build that someone else is running right now (a teammate, a
    notebook) are not ours and are skipped.
    """
    return {
        f"{m.fstype} {m.source} on {m.target}"
        for m in mount_rows_under(paths.STATE_DIR, paths.RUN_DIR)
        if not _foreign_build(m.target)
    }


def container_records() -> set[str]:
    records = state.containers_dir()
    return {p.name for p in records.glob("*.json")} if records.is_dir() else set()


def _rootfs_ids() -> set[tuple[int, int]]:
    ids = set()
    candidates = set(_ROOTFS_SEEN) | set(paths.IMAGES_DIR.glob("*/rootfs"))
    for root in candidates:
        with contextlib.suppress(OSError):
            st = os.stat(root)
            ids.add((st.st_dev, st.st_ino))
    return ids


def session_processes() -> set[str]:
    """Processes this session started (by inherited marker), or running in a labkit rootfs."""
    me = os.getpid()
    roots = _rootfs_ids()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            st = os.stat(entry / "root")
            raw_cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, a kernel thread, or a zombie
        cmdline = raw_cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        marked = f"LABKIT_TEST_SESSION={SESSION_MARK}".encode() in environ.split(b"\0")
        if marked or (st.st_dev, st.st_ino) in roots:
            found.add(f"{entry.name} {cmdline}")
    return found


def snapshot() -> dict[str, set[str]]:
    return {
        "mount": labkit_mounts(),
        "container record": container_records(),
        "process": session_processes(),
    }


def leftovers(before: dict[str, set[str]], settle: float = 10) -> list[str]:
    """What is new since ``before``, re-checked for up to ``settle`` s (exits take a moment)."""
    deadline = time.monotonic() + settle
    while True:
        now = snapshot()
        new = [f"{kind}: {item}" for kind in now for item in sorted(now[kind] - before[kind])]
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.2)


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """Fail the session if it leaves labkit mounts, container records or processes behind."""
    before = snapshot()
    yield
    new = leftovers(before)
    if new:
        pytest.fail(
            "the test session left these behind (fix: sudo labkit reset, then find the "
            "test that did not clean up):\n  " + "\n  ".join(new),
            pytrace=False,
        )


def pytest_sessionstart(session: pytest.Session) -> None:
    """The tests drive the real kernel: without root every one of them would fail."""
    if os.geteuid() != 0:
        pytest.exit("labkit's tests need root: run sudo bash tests/run.sh", returncode=4)
