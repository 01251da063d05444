"""The helper process: a single-threaded Python process that turns itself into a container.

A supervisor (``labkit.runtime.spawn``) forks it when the supervisor is single-threaded,
or else starts a fresh interpreter running the same function, like::

    python -I -S -c 'from labkit.runtime.helper import main; ...' REPORT_FD SPEC_JSON

``main`` then does, in order:

1. with a user namespace: fork; the child unshares CLONE_NEWUSER and waits while this
   process, still in the host's user namespace, writes the child's uid_map and gid_map;
2. unshare(2) every other namespace kind in one call;
3. with a PID namespace: fork, because only children enter a new PID namespace; the
   child is PID 1 there;
4. in the container process: make mounts private, bind the rootfs, mount /proc, /sys and
   a fresh /dev, pivot_root (or chroot), set the hostname, and exec the command.

Every step reports to the supervisor as one JSON line on REPORT_FD. The report pipe is
close-on-exec, so a successful exec closes it: end-of-file means "the command is running".
No Python process stays behind: the forking parents exit at once and the container
process becomes the supervisor's child (the supervisor is a child subreaper).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from labkit.kernel import namespaces, rootfs, syscalls
from labkit.runtime import state
from labkit.runtime.spec import USERNS_HOST_BASE, USERNS_SIZE, ContainerSpec

#: Exit codes with Docker's meaning.
EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class Reporter:
    """Writes one JSON object per line to the supervisor."""

    def __init__(self, fd: int) -> None:
        os.set_inheritable(fd, False)  # close-on-exec: exec success == EOF
        self.fd = fd

    def send(self, event: str, **fields: object) -> None:
        # If the supervisor is gone, the container's record still names it.
        with contextlib.suppress(BrokenPipeError):
            os.write(self.fd, (json.dumps({"event": event, **fields}) + "\n").encode())

    def fail(
        self, stage: str, exc: BaseException, exit_code: int = EXIT_SETUP_FAILED, fix: str = ""
    ) -> None:
        err = getattr(exc, "errno", None)
        self.send(
            "error",
            stage=stage,
            exit_code=exit_code,
            message=_describe(stage, exc),
            errno=errno.errorcode.get(err, None) if isinstance(err, int) else None,
            fix=fix or FIXES.get(stage, ""),
        )
        os._exit(exit_code)


#: What to do when a stage fails, shown after the error.
FIXES = {
    "unshare": "run `labkit doctor` to check namespace support",
    "mounts": "run `labkit doctor`; check the rootfs has /proc, /sys and /dev directories",
    "pivot_root": "run `labkit doctor`; the rootfs must be a directory on a local filesystem",
    "workdir": "pass a --workdir that exists in the image",
    "exec": "check the command exists in the image and is executable",
}


def _describe(stage: str, exc: BaseException) -> str:
    """'<stage>: <why>: <path>' so the user sees what and where, not just an errno."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        text = exc.strerror if exc.strerror.startswith(stage) else f"{stage}: {exc.strerror}"
        return text + where
    return f"{stage}: {exc}"


def main(argv: list[str]) -> None:
    """Entry point of a freshly started helper interpreter: ``REPORT_FD SPEC_JSON``."""
    run(int(argv[0]), ContainerSpec.from_json(argv[1]))


def run(report_fd: int, spec: ContainerSpec) -> None:
    """Become the container described by ``spec``; never returns (exec or _exit)."""
    report = Reporter(report_fd)

    def announce(pid: int) -> None:
        _started(spec, report, pid, forker=os.getpid())

    try:
        if "user" in spec.namespaces:
            announce = _enter_user_namespace(spec, report)
        other = namespaces.clone_flags(set(spec.namespaces) - {"user"})
        if other:
            syscalls.unshare(other)
    except OSError as exc:
        report.fail("unshare", exc)
    if "pid" in spec.namespaces:
        recorded_r, recorded_w = os.pipe()
        child = os.fork()
        if child:
            announce(child)
            os._exit(0)  # closes recorded_w: the child may go on
        # Wait until the parent has recorded us: it shares our new mount namespace, so once
        # we pivot_root its "/" moves too, and it must have written to the host's /run first.
        os.close(recorded_w)
        os.read(recorded_r, 1)
        os.close(recorded_r)
    else:
        announce(os.getpid())
    _become_container(spec, report)


def _started(spec: ContainerSpec, report: Reporter, pid: int, forker: int) -> None:
    """Record the container *before* telling the supervisor, so that even a supervisor
    killed at this very moment leaves a record that ``labkit reset`` can act on."""
    try:
        # Our parent is the supervisor: it forked or spawned this helper.
        state.write_record(spec.id, pid, spec.argv, spec.rootfs, supervisor=os.getppid())
    except OSError as exc:  # the container runs regardless; say so rather than orphan it
        report.send("warning", message=f"could not record the container: {exc}")
    report.send("started", pid=pid, forker=forker)


def _enter_user_namespace(spec: ContainerSpec, report: Reporter) -> Callable[[int], None]:
    """Fork; the child enters a new user namespace while this process maps its ids.

    Only a process with CAP_SETUID in the *parent* user namespace may map a range, so the
    maps are written from outside, as runc's nsexec does. For the same reason this
    process, not the child (whose root is uid 100000 on the host), writes the container's
    record: the child sends the container's PID back and this process announces it.
    Returns, in the child, the function that sends that PID.
    """
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(to_child_w)
        os.close(to_parent_r)
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
        except OSError as exc:
            report.fail("unshare user", exc)
        os.write(to_parent_w, b"1")
        if os.read(to_child_r, 1) != b"1":
            report.fail("user namespace", OSError(errno.EPERM, "the id maps were not written"))
        os.close(to_child_r)
        os.setgid(0)
        os.setuid(0)

        def send_pid(pid: int) -> None:
            os.write(to_parent_w, f"{pid}\n".encode())
            os.close(to_parent_w)

        return send_pid
    os.close(to_child_r)
    os.close(to_parent_w)
    if os.read(to_parent_r, 1) == b"1":
        mapping = f"0 {USERNS_HOST_BASE} {USERNS_SIZE}\n"
        try:
            Path(f"/proc/{child}/uid_map").write_text(mapping)
            Path(f"/proc/{child}/gid_map").write_text(mapping)
        except OSError as exc:
            report.fail("write uid_map", exc)
        os.write(to_child_w, b"1")
        with os.fdopen(to_parent_r, "rb") as from_child:
            line = from_child.readline()
        if line.strip():
            _started(spec, report, int(line), forker=child)
    os._exit(0)


def _become_container(spec: ContainerSpec, report: Reporter) -> None:
    """Build the container's filesystem view around this process, then exec the command."""
    root = Path(spec.rootfs)
    kinds = set(spec.namespaces)
    stage = "mounts"
    try:
        if "mnt" in kinds:
            rootfs.make_mounts_private()
            if spec.isolation == "pivot_root":
                rootfs.bind_onto_itself(root)
            _mount_fresh_or_bind(root, "proc", rootfs.mount_proc, "pid" in kinds)
            _mount_fresh_or_bind(root, "sys", rootfs.mount_sys, "net" in kinds)
            rootfs.mount_dev(root, can_mknod="user" not in kinds, mqueue="ipc" in kinds)
        stage = spec.isolation
        if spec.isolation == "pivot_root":
            rootfs.pivot_into(root)
        else:
            rootfs.chroot_into(root)
        hostname = spec.effective_hostname()
        if hostname:
            stage = "sethostname"
            syscalls.sethostname(hostname)
        if spec.try_escape:
            stage = "escape"
            rootfs.chroot_escape()
            _remove_hideout(root)
        stage = "workdir"
        os.chdir(spec.workdir)
    except OSError as exc:
        report.fail(stage, exc)
    # The command gets a clean slate. exec resets handlers but keeps the mask (the
    # supervisor blocked signals so creation cannot be cut in half) and keeps *ignored*
    # signals ignored: Python ignores SIGPIPE and SIGXFSZ, so `yes | head` would misbehave.
    for signum in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    try:
        os.execvpe(spec.argv[0], spec.argv, spec.environment())
    except FileNotFoundError as exc:
        report.fail(
            "exec",
            _exec_error(spec, exc, "executable file not found in $PATH"),
            EXIT_NOT_FOUND,
            fix="check the command's name, or give its full path",
        )
    except PermissionError as exc:
        report.fail("exec", _exec_error(spec, exc, "permission denied"), EXIT_NOT_EXECUTABLE)
    except OSError as exc:
        report.fail("exec", _exec_error(spec, exc, exc.strerror or "failed"), EXIT_NOT_EXECUTABLE)


def _mount_fresh_or_bind(
    root: Path, name: str, mount_fresh: Callable[[Path], None], owns_namespace: bool
) -> None:
    """A fresh proc (sysfs) may only be mounted by the user namespace that owns the PID
    (network) namespace. A container in a new user namespace that shares the host's PID
    (network) namespace cannot, so it gets a recursive bind of the host's instead."""
    try:
        mount_fresh(root)
    except PermissionError:
        if owns_namespace:
            raise
        syscalls.mount(f"/{name}", root / name, None, syscalls.MS_BIND | syscalls.MS_REC)


def _remove_hideout(root: Path) -> None:
    """Tidy the directory the escape made, wherever the escape ended up."""
    for candidate in (root / "labkit-escape", Path("/labkit-escape")):
        try:
            os.rmdir(candidate)
            return
        except OSError:
            continue


def _exec_error(spec: ContainerSpec, exc: OSError, why: str) -> OSError:
    return OSError(exc.errno, f"exec {spec.argv[0]}: {why}")


if __name__ == "__main__":
    main(sys.argv[1:])
