"""The supervisor side: start the helper, read its report, and later reap the container.

The process that calls ``start`` becomes a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER):
when the helper exits, the container process is re-parented to us instead of to the
host's PID 1, so we can wait for it and learn its exit status. That is the job the Docker
daemon leaves to containerd-shim, one per container; here one supervisor (the CLI now,
the daemon later) waits for all of its containers, and no Python process is left per
container. The Jupyter kernel is never a supervisor: notebooks run the CLI.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from labkit.errors import LabkitError
from labkit.runtime import state
from labkit.runtime.spec import ContainerSpec

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt orphaned descendants, so containers whose helper exited stay our children."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


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
    _popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def error(self) -> dict | None:
        """The helper's error report, if setup or exec failed after the process started."""
        return next((e for e in self.events if e["event"] == "error"), None)

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        """Reap the container and return its exit code; forget its record."""
        try:
            if self._popen is not None:  # our direct child: let Popen reap it
                code = self._popen.wait()
                return 128 - code if code < 0 else code
            _, status = os.waitpid(self.pid, 0)
            return exit_code(status)
        finally:
            state.remove_record(self.spec.id)


def start(spec: ContainerSpec) -> Container:
    """Create the container described by ``spec`` and return once its command runs.

    Raises LabkitError if the container could not be created at all; a command that
    fails to exec still returns a Container, whose ``wait`` gives 126 or 127.
    """
    spec.validate()
    if os.geteuid() != 0:
        raise LabkitError("labkit must run as root to create namespaces",
                          fix="run it with sudo, or as root inside the lab VM")
    become_subreaper()
    read_fd, write_fd = os.pipe()
    try:
        helper = subprocess.Popen(_helper_command(write_fd, spec), pass_fds=(write_fd,))
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as report:
        events = [json.loads(line) for line in report]
    started = next((e for e in events if e["event"] == "started"), None)
    if started is None:
        helper.wait()
        error = next((e for e in events if e["event"] == "error"), None)
        message = error["message"] if error else f"helper exited with {helper.returncode}"
        raise LabkitError(f"could not create the container: {message}",
                          fix="run `labkit doctor` to check this host")
    if started["pid"] == helper.pid:
        # No new PID or user namespace: the helper itself exec'd into the command.
        container = Container(spec, helper.pid, events, _popen=helper)
    else:
        helper.wait()
        if started["forker"] not in (helper.pid, started["pid"]):
            # With a user namespace the helper's child did the forking; it is ours now.
            os.waitpid(started["forker"], 0)
        container = Container(spec, started["pid"], events)
    state.write_record(spec.id, container.pid, spec.argv, spec.rootfs)
    return container


def _helper_command(report_fd: int, spec: ContainerSpec) -> list[str]:
    """The helper's command line: isolated mode (-I -S) skips site-packages, which costs
    more start-up time than everything the helper does; it needs only stdlib and labkit."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bootstrap = (f"import sys; sys.path.insert(0, {package_parent!r}); "
                 "from labkit.runtime.helper import main; main(sys.argv[1:])")
    return [sys.executable, "-I", "-S", "-c", bootstrap, str(report_fd), spec.to_json()]


def supervise(container: Container) -> int:
    """Wait for a container in the foreground, like ``docker run`` without -d.

    SIGINT, SIGTERM and SIGHUP sent to the supervisor are passed on to the container.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, _frame: container.signal(s))
    return container.wait()


def run(spec: ContainerSpec) -> tuple[int, Container]:
    """Start a container and wait for it; returns its exit code and the container."""
    container = start(spec)
    return supervise(container), container

