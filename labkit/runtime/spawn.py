"""The supervisor side: start the helper, read its report, and later reap the container.

The process that calls ``start`` becomes a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER):
when the helper exits, the container process is re-parented to us instead of to the
host's PID 1, so we can wait for it and learn its exit status. That is the job the Docker
daemon leaves to containerd-shim, one per container; here one supervisor (the CLI now,
the daemon later) waits for all of its containers, and no Python process is left per
container. The Jupyter kernel is never a supervisor: notebooks run the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from labkit.errors import LabkitError
from labkit.kernel import syscalls
from labkit.runtime import state
from labkit.runtime.spec import ContainerSpec


def exit_code(status: int) -> int:
    """A wait status as a shell and Docker show it: the exit code, or 128 + signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


@dataclass
class Container:
    """A started container process, seen from its supervisor."""

    spec: ContainerSpec
    pid: int
    events: list[dict] = field(default_factory=list)
    _popen: subprocess.Popen | _ForkedHelper | None = field(default=None, repr=False)

    @property
    def error(self) -> dict | None:
        """The helper's error report, if setup or exec failed after the process started."""
        return next((e for e in self.events if e["event"] == "error"), None)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def wait(self) -> int:
        """Reap the container and return its exit code; forget its record."""
        try:
            if self._popen is not None:  # our direct child: let Popen reap it
                returncode = self._popen.wait()
            else:
                returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return 128 - returncode if returncode < 0 else returncode
        finally:
            state.remove_record(self.spec.id)


#: Signals a foreground supervisor passes on to its container, as `docker run` does.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def start(spec: ContainerSpec, forward_signals: bool = True) -> Container:
    """Create the container described by ``spec`` and return once its command runs.

    Raises LabkitError if the container could not be created at all; a command that
    fails to exec still returns a Container, whose ``wait`` gives 126 or 127.
    The forwarded signals are blocked while the container is being made, so a Ctrl-C
    cannot leave half a container behind; once it runs they are passed on to it.
    """
    spec.validate()
    if os.geteuid() != 0:
        raise LabkitError(
            "labkit must run as root to create namespaces",
            fix="run it with sudo, or as root inside the lab VM",
        )
    if any(r["id"] == spec.id and state.is_alive(r) for r in state.list_records()):
        raise LabkitError(
            f"the name {spec.id!r} is already in use by a running container",
            fix="choose another --name, or stop that container",
        )
    syscalls.set_child_subreaper()
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        container = _create(spec)
        if forward_signals:
            for signum in FORWARDED_SIGNALS:
                signal.signal(signum, lambda s, _frame: container.signal(s))
        return container
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


class _ForkedHelper:
    """The helper as a fork of a single-threaded supervisor, with Popen's wait() contract."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


def _start_helper(report_fd: int, spec: ContainerSpec) -> subprocess.Popen | _ForkedHelper:
    """Start the helper process, the cheapest safe way.

    A single-threaded supervisor (the CLI) forks: the child is a single-threaded copy that
    already has labkit imported, which saves a whole interpreter start (~100 ms). A
    multithreaded one (a Jupyter kernel, a daemon) must not fork, so it starts a fresh
    interpreter whose ``helper.main`` calls the same ``helper.run``.
    """
    if threading.active_count() == 1:
        from labkit.runtime import helper

        pid = os.fork()
        if pid == 0:
            try:
                helper.run(report_fd, spec)
            finally:
                os._exit(helper.EXIT_SETUP_FAILED)  # run() only ends by exec or _exit
        return _ForkedHelper(pid)
    return subprocess.Popen(_helper_command(report_fd, spec), pass_fds=(report_fd,))


def _create(spec: ContainerSpec) -> Container:
    read_fd, write_fd = os.pipe()
    try:
        helper = _start_helper(write_fd, spec)
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as report:
        events = [json.loads(line) for line in report]
    started = next((e for e in events if e["event"] == "started"), None)
    if started is None:
        helper.wait()
        error = next((e for e in events if e["event"] == "error"), None)
        message = error["message"] if error else f"helper exited with {helper.returncode}"
        raise LabkitError(
            f"could not create the container: {message}",
            fix=(error or {}).get("fix") or "run `labkit doctor` to check this host",
        )
    if started["pid"] == helper.pid:
        # No new PID or user namespace: the helper itself exec'd into the command.
        return Container(spec, helper.pid, events, _popen=helper)
    helper.wait()
    if started["forker"] not in (helper.pid, started["pid"]):
        # With a user namespace the helper's child did the forking; it is ours now.
        os.waitpid(started["forker"], 0)
    return Container(spec, started["pid"], events)


def _helper_command(report_fd: int, spec: ContainerSpec) -> list[str]:
    """The helper's command line: isolated mode (-I -S) skips site-packages, which costs
    more start-up time than everything the helper does; it needs only stdlib and labkit."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bootstrap = (
        f"import sys; sys.path.insert(0, {package_parent!r}); "
        "from labkit.runtime.helper import main; main(sys.argv[1:])"
    )
    return [sys.executable, "-I", "-S", "-c", bootstrap, str(report_fd), spec.to_json()]


def run(spec: ContainerSpec) -> tuple[int, Container]:
    """Start a container in the foreground and wait for it, like ``docker run`` without -d.

    Returns its exit code and the container.
    """
    container = start(spec)
    return container.wait(), container
