"""The one place labkit runs the docker CLI, so every caller probes, times out and fails alike.

Docker is in the lab as the reference to compare labkit with: the notebooks run the same
rootfs in both, the doctor checks a daemon answers, ``labkit reset --images`` removes the
``labkit/*`` images. All of it goes through the CLI rather than the Engine API, so every call
is a command a learner can copy into a shell. Every call has a timeout (a wedged dockerd
must not hang a notebook cell, the doctor or reset), and every failure is one LabkitError
line with a fix.

A service beside ``labkit.images``: it imports images, paths and errors, never the runtime
or a front end. subprocess is imported inside the functions, since the CLI imports this
module only for ``labkit images docker-import``.
"""

from __future__ import annotations

import shutil
from typing import IO, TYPE_CHECKING

from labkit import paths
from labkit.errors import LabkitError

if TYPE_CHECKING:
    import subprocess

#: Seconds: a probe (version, inspect, listing), any other command, an image import.
PROBE_TIMEOUT = 20.0
TIMEOUT = 120.0
IMPORT_TIMEOUT = 600.0
INSTALL_FIX = "apt-get install docker.io"
START_FIX = "start dockerd (systemctl start docker, or run `dockerd &` as root)"


# -- probe and run ----------------------------------------------------------------------------


def installed() -> bool:
    """True if the docker CLI is on PATH (a daemon may still be missing)."""
    return shutil.which("docker") is not None


def server_version() -> str | None:
    """The Docker daemon's version, or None if the CLI is missing or no daemon answers."""
    try:
        res = run("version", "--format", "{{.Server.Version}}", check=False, timeout=PROBE_TIMEOUT)
    except LabkitError:
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def reachable() -> bool:
    """True if a Docker daemon answers the docker CLI."""
    return server_version() is not None


def require() -> None:
    """Return if Docker can be used; else a LabkitError saying what to install or start."""
    if not installed():
        raise LabkitError("the docker CLI is not installed", fix=INSTALL_FIX)
    if not reachable():
        raise LabkitError("the Docker daemon is not reachable", fix=START_FIX)


def run(
    *args: str,
    check: bool = True,
    timeout: float = TIMEOUT,
    stdin: IO[bytes] | int | None = None,
) -> subprocess.CompletedProcess[str]:
    """``docker ARGS`` with stdout and stderr captured as text.

    A missing CLI or a command still running after ``timeout`` seconds (it is killed) is a
    LabkitError; so is a non-zero exit when ``check``, with Docker's message on one line.
    """
    import subprocess

    shown = " ".join(["docker", *args])
    try:
        res = subprocess.run(
            ["docker", *args],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise LabkitError("the docker CLI is not installed", fix=INSTALL_FIX) from None
    except OSError as exc:
        raise LabkitError(f"cannot run `{shown}`: {exc.strerror}", fix="run as root") from None
    except subprocess.TimeoutExpired:
        raise LabkitError(
            f"`{shown}` did not finish within {timeout:g} s",
            fix="check that dockerd is healthy (docker info); restart it if it hangs",
        ) from None
    if check and res.returncode != 0:
        raise LabkitError(
            f"`{shown}` exited {res.returncode}: {one_line(res.stderr)}", fix=_fix(res.stderr)
        )
    return res


def one_line(text: str) -> str:
    """Docker's (possibly multi-line) message as one line, without its "See --help" hint."""
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    return " | ".join(s for s in lines if not s.startswith("See '")) or "(no message)"


def _fix(stderr: str) -> str:
    if "Cannot connect to the Docker daemon" in stderr:
        return START_FIX
    if "No such" in stderr:
        return "check the name: docker ps -a, docker images"
    return "run the same command in a shell; check docker info"


# -- containers -------------------------------------------------------------------------------


def inspect(name: str, template: str, timeout: float = PROBE_TIMEOUT) -> str:
    """``docker inspect -f TEMPLATE NAME`` (a container or an image), stripped."""
    return run("inspect", "-f", template, name, timeout=timeout).stdout.strip()


def container_pid(name: str) -> int:
    """The host PID of a running Docker container's first process.

    ``docker top`` and ``docker exec`` hide it, but it is the handle that lets us read the
    container's /proc/PID/ns links exactly as we read a labkit container's.
    """
    pid = int(inspect(name, "{{.State.Pid}}"))
    if pid == 0:
        raise LabkitError(f"docker container {name} is not running", fix=f"docker start {name}")
    return pid


def cgroupns_mode(name: str) -> str:
    """Docker's cgroup namespace mode, "host" or "private": its default depends on the host.

    On cgroup v1 Docker shares the host's cgroup namespace, on v2 it makes a private one;
    an empty answer (very old Docker) means "host".
    """
    return inspect(name, "{{.HostConfig.CgroupnsMode}}") or "host"


def remove_containers(prefix: str) -> list[str]:
    """Force-remove every container whose name starts with ``prefix`` (``labkit-...``);
    return their names. Nothing to do, and [] returned, if Docker is not there."""
    _check_ours(prefix, f"{paths.NAME_PREFIX}-")
    if not installed():
        return []
    listed = run("ps", "-a", "--filter", f"name={prefix}", "--format", "{{.Names}}", check=False)
    names = sorted(n for n in listed.stdout.split() if n.startswith(prefix))
    for name in names:
        run("rm", "-f", name, check=False)
    return names


# -- labkit images in Docker ------------------------------------------------------------------


def image_tag(name: str) -> str:
    """The Docker tag of labkit image ``name``: ``labkit/<name>:latest``."""
    return f"{paths.NAME_PREFIX}/{name}:latest"


def import_image(name: str) -> str:
    """Load the image into Docker as ``labkit/<name>:latest`` so both runtimes run the same files.

    The build stamp travels as the image comment (``docker import --message``); if Docker
    already holds the tag with that comment the import is skipped. Returns the tag.
    """
    import subprocess

    from labkit.images.store import image_meta, image_rootfs

    rootfs = image_rootfs(name)
    message = f"labkit {name} {image_meta(name)['created']}"
    tag = image_tag(name)
    require()
    old = run("image", "inspect", "--format", "{{.Id}} {{.Comment}}", tag, check=False)
    old_id = ""
    if old.returncode == 0:
        old_id, _, comment = old.stdout.strip().partition(" ")
        if comment == message:
            return tag
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE
    )
    assert tar.stdout is not None
    args = ("import", "--change", 'CMD ["/bin/sh"]', "--message", message, "-", tag)
    try:
        imp = run(*args, stdin=tar.stdout, check=False, timeout=IMPORT_TIMEOUT)
    except BaseException:
        tar.kill()
        raise
    finally:
        tar.stdout.close()
        tar_rc = tar.wait()
    if tar_rc != 0 or imp.returncode != 0:
        why = one_line(imp.stderr) if imp.stderr.strip() else f"tar exit {tar_rc}"
        raise LabkitError(
            f"docker import of {name} failed: {why}",
            fix="check `docker info` and free disk space, then retry",
        )
    if old_id:  # the previous import is now an untagged leftover; drop it (best effort)
        run("rmi", old_id, check=False)
    return tag


def labkit_images() -> list[str]:
    """Tags of the Docker images named ``labkit/*``; [] if Docker is missing or says no."""
    if not installed():
        return []
    ref = f"reference={paths.NAME_PREFIX}/*"
    try:
        res = run("images", "--filter", ref, "--format", "{{.Repository}}:{{.Tag}}", check=False)
    except LabkitError:
        return []
    return sorted(set(res.stdout.split())) if res.returncode == 0 else []


def remove_image(tag: str) -> None:
    """``docker rmi TAG`` for a ``labkit/*`` tag; an image Docker keeps (in use) stays."""
    _check_ours(tag, f"{paths.NAME_PREFIX}/")
    run("rmi", tag, check=False)


def _check_ours(name: str, prefix: str) -> None:
    """Only names carrying the labkit tag may be removed: never touch a teammate's objects."""
    if not name.startswith(prefix):
        raise LabkitError(
            f"refusing to remove Docker objects named {name!r}: not a labkit name",
            fix=f"use a name starting with {prefix!r}",
        )
