"""Plumbing for the cgroups notebook (03): containers that wait for a go, their kernel counters
sampled over time, where a process's cgroups are, and a cgroup the learner makes by hand.

Everything here reads or writes cgroup files and starts ``labkit run`` or ``docker run`` as
child processes: nothing moves the Jupyter kernel into a cgroup or changes its namespaces (and
a learner's answer that moved it is undone). Every context manager removes what it started,
even when the cell around it fails, so a section leaves nothing behind. The files a runtime
writes are in ``labkit.lab.cgroup_files``, the plots in ``labkit.lab.cgroup_plots``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit import docker
from labkit.kernel import cgroups
from labkit.kernel.cgroups import v2
from labkit.kernel.cgroups.group import ContainerCgroups
from labkit.kernel.cgroups.stats import Stats

#: A container's script starts with this: it waits until the notebook says go (``Box.go``),
#: so the notebook can check a limit is in place before anything heavy runs.
WAIT_FOR_GO = "while [ ! -e /tmp/go ]; do sleep 0.05; done; "

#: One reading of a container's counters: (seconds since sampling began, what the kernel said).
Reading = tuple[float, Stats]


def cgroup_dirs(pid: int) -> dict[str, Path]:
    """Where process ``pid`` is, per controller: ``{"memory": Path, "cpu": Path, ...}``.

    Asked of the kernel (``/proc/PID/cgroup``), so it finds a Docker container's cgroups
    whatever its cgroup driver as well as labkit's. On v1 each line names the controllers of
    one hierarchy; on v2 the one line ``0::/path`` holds every controller.
    """
    layout = cgroups.detect()
    dirs: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if not names and layout.kind == "unified":
            here = Path(layout.v2_mount + path)
            for name in (*v2.CONTROLLERS, "freezer"):  # v2 freezes in the same directory
                dirs[name] = here
        for name in filter(None, names.split(",")):
            mount = layout.v1_path(name)
            if mount is not None:
                dirs[name] = Path(str(mount) + path)
    return dirs


class Box:
    """A labkit container running in the background, started by ``started``."""

    def __init__(self, proc: subprocess.Popen, pid_file: Path, log: Path) -> None:
        self.proc, self.log = proc, log
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"labkit run did not start a container: {self.output()}")
            time.sleep(0.02)
        self.pid = int(pid_file.read_text())
        self.id = cgroup_dirs(self.pid)["pids"].name  # its cgroup is labkit/<container id>
        self.group = ContainerCgroups(self.id)

    def go(self) -> None:
        """Let the script run (it waits for /tmp/go inside the container)."""
        Path(f"/proc/{self.pid}/root/tmp/go").write_text("")

    def dirs(self) -> dict[str, Path]:
        return cgroup_dirs(self.pid)

    def stats(self) -> Stats:
        return self.group.stats()

    def output(self) -> str:
        """What the container printed so far (its stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def sample(
        self,
        seconds: float,
        every: float = 0.05,
        until: Callable[[Stats], bool] | None = None,
        linger: float = 0.0,
    ) -> list[Reading]:
        """Read the counters every ``every`` seconds for ``seconds``, or until ``until`` says so
        (then ``linger`` seconds more, to show what followed). Counters, not guesses: each
        reading is what the kernel's files said at that moment."""
        start, stop_at = time.monotonic(), None
        readings: list[Reading] = []
        while True:
            now = time.monotonic() - start
            readings.append((now, self.stats()))
            if stop_at is None and until is not None and until(readings[-1][1]):
                stop_at = now + linger
            if now >= seconds or (stop_at is not None and now >= stop_at):
                return readings
            time.sleep(every)

    def stop(self) -> None:
        """Thaw it (a frozen process cannot even die), SIGKILL its PID 1 (which, as under
        Docker, ignores SIGTERM), and wait for labkit to remove its cgroups."""
        with contextlib.suppress(OSError):
            self.group.freeze(False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def started(*flags: str, script: str, name: str, wait: bool = True) -> Iterator[Box]:
    """``labkit run --name NAME FLAGS -- sh -c SCRIPT`` in the background; stopped on exit.

    With ``wait`` the script waits for ``Box.go()`` first. A container left by an earlier run
    that died half-way (same name) is stopped first, so the name is free.
    """
    with contextlib.suppress(Exception):
        _stop_leftover(name)
    with tempfile.TemporaryDirectory(prefix="labkit-nb03-") as tmp:
        pid_file, log = Path(tmp) / "pid", Path(tmp) / "output"
        argv = [sys.executable, "-m", "labkit.cli", "run", "--name", name]
        argv += ["--pid-file", str(pid_file), *flags, "--", "sh", "-c"]
        argv.append((WAIT_FOR_GO if wait else "") + script)
        with log.open("w") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        box = None
        try:
            box = Box(proc, pid_file, log)
            yield box
        finally:
            if box is not None:
                box.stop()
            elif proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


def _stop_leftover(name: str) -> None:
    from labkit.runtime import records

    record = records.find(name)
    if record.pid and record.is_running():
        ContainerCgroups(record.id).freeze(False)
        os.kill(record.pid, signal.SIGKILL)


@contextlib.contextmanager
def docker_box(flags: Sequence[str], name: str = "labkit-nb03-docker") -> Iterator[int]:
    """``docker run -d --name NAME FLAGS labkit/busybox sleep 600``; yields its host PID and
    removes it on exit (``docker rm -f``), as well as one left by an earlier run."""
    image = docker.import_image("busybox")  # a no-op when Docker has it already
    docker.run("rm", "-f", name, check=False)
    try:
        docker.run("run", "-d", "--name", name, *flags, image, "sleep", "600")
        yield docker.container_pid(name)
    finally:
        docker.run("rm", "-f", name, check=False)


# -- a cgroup by hand -------------------------------------------------------------------------


def _keeper(name: str, controller: str) -> Path:
    """An empty cgroup beside the learner's, made first: while it is there labkit's parent is
    not empty, so no container's clean-up (which removes an empty parent) takes it away
    between our checks and the learner's ``mkdir``. On v2 the parent then hands the
    controllers down to its children, as labkit's driver does before a container's cgroup."""
    layout = cgroups.detect()
    root = cgroups.v2_root(layout) if layout.kind == "unified" else layout.v1_path(controller)
    if root is None:
        raise RuntimeError(f"this host has no {controller} hierarchy")
    if layout.kind == "unified":
        v2.enable_controllers(root)
    keeper = cgroups.make(cgroups.path_for(root, f"{name}-keeper"))
    if layout.kind == "unified":
        v2.enable_controllers(keeper.parent)
    return keeper


@dataclass
class Scratch:
    """A cgroup for the learner to make by hand (``scratch_cgroup``)."""

    path: Path
    intruded: bool = False  # the notebook's own process had been moved into it (and back)


@contextlib.contextmanager
def scratch_cgroup(name: str, controller: str = "pids") -> Iterator[Scratch]:
    """A cgroup NAME under labkit's parent, not made yet: that ``mkdir`` is the learner's.

    On exit this process (the notebook's) goes back where it was if it had been moved in
    (a limit meant for a child would otherwise hold the notebook), what is left inside is
    killed, and the cgroup is removed, with labkit's parent if no container uses it.
    """
    keeper = _keeper(name, controller)
    scratch = Scratch(keeper.parent / name)
    home = cgroup_dirs(os.getpid())
    try:
        yield scratch
    finally:
        for name_, now in cgroup_dirs(os.getpid()).items():
            if name_ in home and now != home[name_]:
                scratch.intruded = True
                (home[name_] / "cgroup.procs").write_text(str(os.getpid()))
        _remove(scratch.path)
        _remove(keeper)


def _remove(path: Path) -> None:
    """rmdir a cgroup, its children first, killing what is still in it."""
    if path.is_dir():
        for child in [p for p in path.iterdir() if p.is_dir()]:
            _remove(child)
    procs = path / "cgroup.procs"
    for _ in range(50):
        if not path.exists() or cgroups.remove(path, timeout=0.2):
            return
        for pid in procs.read_text().split() if procs.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    raise RuntimeError(f"could not remove {path}: processes are still in it")
