"""Notebook helpers for running things *outside* the Jupyter kernel.

The kernel process is multithreaded and must never unshare, setns, chroot or pivot, so
every container a notebook makes is made by the ``labkit`` CLI in a child process. These
helpers keep those calls short and their output readable.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from labkit import docker as docker_cli


def sh(command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a shell command on the host and capture its output as text."""
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"`{command}` exited {result.returncode}: {result.stderr.strip()}")
    return result


def labkit(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the labkit CLI (with this notebook's Python) and capture its output.

    ``check`` is off by default because a container's own exit code is often the point.
    """
    result = subprocess.run(
        [sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"labkit {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result


def show_source(obj: object) -> None:
    """Display the source of a labkit function or module, highlighted, in the notebook."""
    from IPython.display import Markdown, display

    display(Markdown(f"```python\n{inspect.getsource(obj)}```"))  # type: ignore[arg-type]


@contextlib.contextmanager
def background(*run_args: str, timeout: float = 20) -> Iterator[int]:
    """Start ``labkit run RUN_ARGS`` in the background and yield the container's host PID.

    The CLI process is the container's supervisor; on exit we SIGKILL the container (or
    SIGTERM the CLI if it has not started one yet), wait for the CLI to exit, and SIGKILL it
    if it has not within 10 s, so nothing outlives the cell.
    """
    with tempfile.TemporaryDirectory(prefix="labkit-nb-") as tmp:
        pid_file = Path(tmp) / "pid"
        proc = subprocess.Popen(
            [sys.executable, "-m", "labkit.cli", "run", "--pid-file", str(pid_file), *run_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            pid = _wait_for_pid(pid_file, proc, timeout)
            yield pid
        finally:
            _stop(proc, pid_file)


class Running:
    """A container left running in the background for a while (``keep_running``)."""

    def __init__(self, run_args: Sequence[str], minutes: float, timeout: float) -> None:
        self.minutes = minutes
        self._tmp = tempfile.TemporaryDirectory(prefix="labkit-nb-")
        self._pid_file = Path(self._tmp.name) / "pid"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "labkit.cli", "run", "--pid-file", str(self._pid_file)]
            + list(run_args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            self.pid = _wait_for_pid(self._pid_file, self._proc, timeout)
        except BaseException:
            self.stop()
            raise
        _running.append(self)

    def stop(self) -> None:
        """Kill the container and reap its supervisor (again: nothing happens)."""
        if self._tmp is None:
            return
        _stop(self._proc, self._pid_file)
        self._tmp.cleanup()
        self._tmp = None
        if self in _running:
            _running.remove(self)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_running: list[Running] = []


@atexit.register
def _stop_all() -> None:
    for box in list(_running):
        box.stop()


def keep_running(*run_args: str, minutes: float = 15, timeout: float = 20) -> Running:
    """Start ``labkit run RUN_ARGS -- sleep`` that lasts ``minutes``, for a terminal task.

    Unlike ``background`` it outlives the cell: the learner explores it from JupyterLab's
    terminal, and a later cell calls ``.stop()``. It also ends by itself after ``minutes``
    (or when the kernel exits), so a forgotten one does not stay. ``RUN_ARGS`` are the
    options of ``labkit run``; the command is ``sleep``.
    """
    return Running([*run_args, "--", "sleep", str(int(minutes * 60))], minutes, timeout)


def _wait_for_pid(pid_file: Path, proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_file.exists():
            return int(pid_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"labkit run exited {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.02)
    raise TimeoutError(f"no container PID after {timeout} s")


def _stop(proc: subprocess.Popen, pid_file: Path) -> None:
    if proc.poll() is None:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        else:
            proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def docker_available() -> bool:
    """True if a Docker daemon answers; notebooks assert this before comparing."""
    return docker_cli.reachable()


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the docker CLI and capture its output (``labkit.docker.run``: errors are one line)."""
    return docker_cli.run(*args, check=check, timeout=timeout)


def lines(text: str) -> Sequence[str]:
    """Non-empty, stripped lines of a command's output."""
    return [line.strip() for line in text.splitlines() if line.strip()]
