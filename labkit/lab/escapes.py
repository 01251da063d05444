"""The escape gallery's plumbing (notebook 08): run a break-out probe in a labkit or a Docker
container with a chosen set of defences off, and read what stopped it.

The probes and the canary they read are in ``labkit.lab.escape_probes`` (re-exported here:
``escapes.plant_canary()``, ``escapes.probes(canary)``), those of the process boundary in
``labkit.lab.escape_boundary``; every one is harmless. Defences are turned off with Docker's
own flags, one at a time (``OFF``), the same for labkit and Docker:

    capabilities  --cap-add ALL                        all of root's powers
    seccomp       --security-opt seccomp=unconfined    no system call filter
    masks         --security-opt systempaths=unconfined  /proc and /sys as the host has them
    devices       --device-cgroup-rule 'a *:* rwm'     any device node may be opened

A cell shows the command as a learner would type it and its raw output (``Attempt.show``);
the grid of probes against defences, and its picture, are in ``labkit.lab.escape_grid``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import NamedTuple

from labkit.kernel import capabilities, procfs
from labkit.lab.escape_probes import Canary, Probe, plant_canary, probes

__all__ = ["ALL_OFF", "DEFENCES", "OFF", "USERNS", "Attempt", "Canary", "Probe", "attempt"]
__all__ += ["attempt_all"]
__all__ += ["cap_names", "docker_ready", "flags", "masked", "plant_canary", "probes"]

#: Docker's flag that turns each defence off, and nothing else.
OFF: dict[str, tuple[str, ...]] = {
    "capabilities": ("--cap-add", "ALL"),
    "seccomp": ("--security-opt", "seccomp=unconfined"),
    "masks": ("--security-opt", "systempaths=unconfined"),
    "devices": ("--device-cgroup-rule", "a *:* rwm"),
}
DEFENCES = tuple(OFF)
#: labkit's user-namespace mode: root inside is an unprivileged user (100000) outside.
USERNS = ("--ns", "user,uts,pid,mnt,ipc,net,cgroup")


def flags(*on: str) -> tuple[str, ...]:
    """The flags for a container with every defence off except those named in ``on``."""
    unknown = set(on) - set(OFF)
    if unknown:
        raise ValueError(f"no defence {sorted(unknown)[0]!r}: choose from {', '.join(OFF)}")
    return tuple(flag for name, pair in OFF.items() if name not in on for flag in pair)


ALL_OFF = flags()


# -- running one ----------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One run of a probe: what was typed, what came out, and whether it went through."""

    probe: Probe
    runtime: str  # "labkit" or "docker"
    flags: tuple[str, ...]
    command: str
    stdout: str
    stderr: str
    returncode: int

    @property
    def escaped(self) -> bool:
        return self.probe.escaped(self.stdout)

    @property
    def said(self) -> str:
        """The kernel's answer in a word: the errno name in the error, or what it printed."""
        return errno_word(self.stderr + self.stdout) or ("went through" if self.escaped else "")

    def show(self) -> None:
        """Print it as a terminal would (its output, then its errors), then one line: went
        through, or stopped. All on standard output, so a notebook keeps them in order."""
        print(f"$ {self.command}")
        for text in (self.stdout, self.stderr):
            if text:
                print(text, end="" if text.endswith("\n") else "\n")
        if self.escaped:
            print(f"→ WENT THROUGH ({self.probe.title})")
        else:
            print(f"→ stopped ({self.said or f'exit {self.returncode}'})")


ERRNO_WORDS = {
    "Operation not permitted": "EPERM",
    "Permission denied": "EACCES",
    "Read-only file system": "EROFS",
    "No such file or directory": "ENOENT",
    "Invalid argument": "EINVAL",
    "Stale file handle": "ESTALE",
}


def errno_word(text: str) -> str:
    """The errno name of the first error message in ``text`` ("" if there is none)."""
    found = [(text.find(m), name) for m, name in ERRNO_WORDS.items() if m in text]
    return min(found)[1] if found else ""


class Command(NamedTuple):
    """What a learner would type: the program (``labkit`` or ``docker``) and its arguments."""

    program: str
    args: list[str]

    def __str__(self) -> str:
        return f"{self.program} {shlex.join(self.args)}"


def command(probe: Probe, *flags: str, runtime: str = "labkit") -> Command:
    """What runs ``probe`` with ``flags``: ``labkit run ...`` or ``docker run --rm ...``."""
    if runtime == "docker":
        args = ["run", "--rm", *docker_flags(flags), f"labkit/{probe.image}", *probe.argv]
        return Command(program="docker", args=args)
    source = ("--rootfs", probe.rootfs) if probe.rootfs else ("--image", probe.image)
    return Command("labkit", ["run", *source, *flags, "--", *probe.argv])


def docker_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """``flags`` for Docker, for the same container labkit would make with them.

    Where Docker confines containers with AppArmor (Ubuntu), its ``docker-default`` profile is
    a fifth defence labkit does not have: a run that changes any defence turns it off too
    (``--security-opt apparmor=unconfined``), so that both runtimes run with the same four.
    ``--cap-add ALL`` makes runc ask for every capability Docker knows, and where this host's
    root lacks one (some machines take one away) runc refuses to start: there it names the
    ones root has, which is what "all" can mean here (``attempt`` leaves out any this Docker
    does not know).
    """
    if flags and docker_apparmor():
        flags = (*flags, "--security-opt", "apparmor=unconfined")
    have = capabilities.bounding()
    if have >= capabilities.known():
        return flags
    out: list[str] = []
    for i, flag in enumerate(flags):
        if flag == "--cap-add" and flags[i + 1].upper() == "ALL":
            for name in sorted(have - capabilities.DOCKER_DEFAULT):
                out += ["--cap-add", name]
        elif not (i and flags[i - 1] == "--cap-add" and flag.upper() == "ALL"):
            out.append(flag)
    return tuple(out)


@functools.cache
def docker_apparmor() -> bool:
    """Does Docker confine its containers with an AppArmor profile on this host?"""
    from labkit import docker

    done = docker.run("info", "--format", "{{json .SecurityOptions}}", check=False)
    return "name=apparmor" in done.stdout


def attempt(probe: Probe, *flags: str, runtime: str = "labkit", show: bool = True) -> Attempt:
    """Run ``probe`` in a fresh container of ``runtime`` with ``flags``; print it if ``show``."""
    typed = command(probe, *flags, runtime=runtime)
    done = _run(typed)
    unknown = re.search(r'unknown capability: "CAP_(\w+)"', done.stderr)
    while typed.program == "docker" and unknown and done.returncode == 125:  # an older Docker
        at = typed.args.index(unknown[1])
        del typed.args[at - 1 : at + 1]
        done = _run(typed)
        unknown = re.search(r'unknown capability: "CAP_(\w+)"', done.stderr)
    result = Attempt(probe, runtime, flags, str(typed), done.stdout, done.stderr, done.returncode)
    if show:
        result.show()
    return result


def _run(typed: Command) -> subprocess.CompletedProcess[str]:
    if typed.program == "docker":
        from labkit import docker

        return docker.run(*typed.args, check=False, timeout=120)
    cli = [sys.executable, "-m", "labkit.cli", *typed.args]  # this notebook's labkit
    return subprocess.run(cli, capture_output=True, text=True, timeout=120)


def attempt_all(runs: list[tuple[Probe, tuple[str, ...], str]], workers: int = 4) -> list[Attempt]:
    """``attempt`` for each ``(probe, flags, runtime)``, a few at a time, nothing printed;
    the results in the order asked (each in a container of its own, so order cannot matter)."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(attempt, p, *f, runtime=r, show=False) for p, f, r in runs]
        return [job.result() for job in jobs]


# -- evidence -------------------------------------------------------------------------------------


def cap_names(text: str, line: str = "CapEff") -> list[str]:
    """The capability names in one ``Cap*`` line of a /proc/PID/status text."""
    for row in text.splitlines():
        key, _, value = row.partition(":")
        if key.strip() == line:
            return capabilities.names_of(value.strip())
    raise ValueError(f"no {line} line in: {text!r}")


def host_capabilities() -> list[str]:
    """What the notebook's own root holds (a container can never get more)."""
    return sorted(capabilities.bounding())


def status_line(text: str, key: str) -> str:
    """The value of one line (``Seccomp``, ``NoNewPrivs``) of a /proc/PID/status text."""
    for row in text.splitlines():
        name, _, value = row.partition(":")
        if name.strip() == key:
            return value.strip()
    raise ValueError(f"no {key} line in: {text!r}")


def masked(mountinfo: str) -> dict[str, list[str]]:
    """The masked and read-only paths a mountinfo text shows under /proc and /sys:
    ``{"masked": [...], "read-only": [...]}``. A file masked with /dev/null shows as a bind of
    ``/null`` from a tmpfs (the container's /dev), a masked directory as an empty read-only tmpfs;
    a read-only path is a bind of the proc filesystem's own directory, remounted ``ro``."""
    found: dict[str, list[str]] = {"masked": [], "read-only": []}
    for m in procfs.parse_mountinfo(mountinfo):
        if not m.target.startswith(("/proc/", "/sys/")) or m.target.startswith("/sys/fs/cgroup"):
            continue  # (a cgroup filesystem mounted read-only is a view, not a hidden path)
        if m.fstype == "tmpfs" and (m.root.endswith("/null") or m.options.startswith("ro")):
            found["masked"].append(m.target)
        elif m.options.startswith("ro") and m.root != "/":
            found["read-only"].append(m.target)
    return {k: sorted(v) for k, v in found.items()}


def docker_ready(images: tuple[str, ...] = ("busybox", "debian")) -> bool:
    """True if Docker answers and has labkit's images (imported now if they are missing)."""
    from labkit import docker

    if shutil.which("docker") is None or not docker.reachable():
        return False
    for name in images:
        if docker.run("image", "inspect", f"labkit/{name}", check=False).returncode != 0:
            docker.import_image(name)
    return True
