"""The helper process: a single-threaded process that turns itself into a container.

The supervisor (``labkit.runtime.supervisor``) forks it, or starts a fresh interpreter
running ``main`` when the supervisor has threads. Either way it starts with these descriptors:

    0, 1, 2   the container's stdin, stdout and stderr (never the caller's own)
    3         REPORT: one JSON line per event to the supervisor; closes itself at exec
    4         GO: the supervisor writes "go" once the container is recorded
    5         CONSOLE (only with -t): a unix socket to send the pty's master side back on

What it does is a list of stages, each a function from the kernel module that owns that
step, with its own name and fix (``labkit.kernel.stage``):

1. ``namespace_stages``: a user namespace (forking, so its ids can be mapped from
   outside), every other namespace in one unshare(2), and the fork that makes PID 1 (the
   forking parent reports the new PID as "created" and exits);
2. PID 1 waits for GO: the supervisor records it first and plugs its network in, between
   "created" and "go", as Docker does; ``network_stages`` then set up ``lo`` and ``eth0``;
3. ``container_stages``: its root filesystem, hostname, working directory, a clean
   process (credentials, session, signals, descriptors), and exec.

A later lab step adds its stage to one of these lists. The first stage that fails reports
an "error" event (stage, errno, message, fix) and exits 125; a command that cannot be
executed exits 127 (not found) or 126, the codes Docker uses. No Python process stays
behind: exec replaces PID 1, and the forking parents have exited.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from labkit.kernel import (
    binds,
    capabilities,
    cgroups,
    masks,
    namespaces,
    netdev,
    overlay,
    process,
    rootfs,
    seccomp,
)
from labkit.kernel.cgroups import view
from labkit.kernel.namespaces import USERNS_HOST_BASE, USERNS_SIZE
from labkit.kernel.stage import Stage, stage
from labkit.runtime.spec import ContainerSpec

REPORT_FD = 3
GO_FD = 4
CONSOLE_FD = 5

#: Exit codes with Docker's meaning.
EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def stages(spec: ContainerSpec, report: Reporter) -> list[Stage]:
    """Everything the helper does, in order: the whole life of a container before exec."""
    return [
        *namespace_stages(spec, report),
        Stage(wait_for_go),
        *network_stages(spec),
        *container_stages(spec),
    ]


def network_stages(spec: ContainerSpec) -> list[Stage]:
    """In PID 1, once plugged in: ``lo`` up, and on a network ``eth0``'s address and the
    default route (the supervisor made eth0 in this namespace before it said "go")."""
    if "net" not in spec.namespaces:
        return []  # the host's network: nothing of its own to set up
    return [Stage(netdev.configure_inside, spec.net)]


def namespace_stages(spec: ContainerSpec, report: Reporter) -> list[Stage]:
    """In the helper: new namespaces, and PID 1 (whose PID is reported as "created")."""
    steps = []
    if spec.etc_files:  # while still the host's root, who may search every directory
        steps.append(Stage(binds.open_sources, spec.etc_files))
    if spec.cgroup_paths:  # first: every namespace, and PID 1, is then made inside them
        steps.append(Stage(cgroups.join_self, spec.cgroup_paths))
    if "user" in spec.namespaces:
        steps.append(Stage(namespaces.unshare_user, USERNS_HOST_BASE, USERNS_SIZE))
    steps.append(Stage(namespaces.unshare, set(spec.namespaces) - {"user"}))
    if "pid" in spec.namespaces:
        steps.append(Stage(namespaces.fork_pid1, report.created))
    else:  # no new PID namespace: this process is the container
        steps.append(Stage(report_self, report))
    return steps


def container_stages(spec: ContainerSpec) -> list[Stage]:
    """In PID 1, once recorded: everything from the root filesystem to exec, in order."""
    root, kinds, security = Path(spec.rootfs), set(spec.namespaces), spec.security()
    steps = []
    if "mnt" in kinds:
        privileged, userns = security.privileged, "user" in kinds
        steps += [
            Stage(rootfs.make_mounts_private),
            root_stage(spec),
            Stage(rootfs.mount_proc, root, "pid" not in kinds),
            Stage(rootfs.mount_sys, root, "net" not in kinds, not privileged),
            Stage(
                view.mount_cgroups,
                root,
                spec.cgroup_paths,
                "cgroup" in kinds and not userns,
                not privileged,
            ),  # fmt: skip
            Stage(rootfs.mount_dev, root, not userns, "ipc" in kinds, privileged),
            *([Stage(binds.bind_files, root, spec.etc_files)] if spec.etc_files else []),
            # /tmp and /run on a root nobody may write: read-only, or, in a user namespace,
            # owned by host ids the namespace does not map (Docker's userns-remap chowns
            # a copy of every layer instead)
            *([Stage(rootfs.mount_scratch, root)] if spec.read_only or userns else []),
        ]
    if spec.isolation == "pivot_root":
        steps.append(Stage(rootfs.pivot_into, root))
    else:
        # with a mount namespace, chroot on a moved root (runc's --no-pivot); without, plain
        moving = "mnt" in kinds
        steps.append(Stage(rootfs.move_onto_root if moving else rootfs.chroot_into, root))
    hostname = spec.effective_hostname()
    if hostname:
        steps.append(Stage(namespaces.set_hostname, hostname))
    if spec.try_escape:
        steps.append(Stage(rootfs.chroot_escape))
    if spec.layer:  # Docker makes a missing WorkingDir in the container's layer (or copy)
        steps.append(Stage(process.change_dir, spec.workdir, True))
    if spec.read_only:  # after the directory is made, before anything else may write
        steps.append(Stage(rootfs.make_readonly, "/"))
    if "mnt" in kinds and security.masks:
        steps += [Stage(masks.mask), Stage(masks.make_read_only)]
    who = spec.identity
    steps += [
        *([] if spec.layer else [Stage(process.change_dir, spec.workdir)]),
        Stage(process.reset_credentials, who.get("groups"), who.get("gid", 0)),
        *([Stage(process.open_console, CONSOLE_FD)] if spec.tty else []),
        Stage(process.new_session, spec.tty),
        Stage(process.reset_signals),
        *hardening_stages(spec),
        *([Stage(process.become_user, who["uid"])] if who.get("uid") else []),
        Stage(process.keep_only_stdio, REPORT_FD),
        Stage(process.exec_command, spec.argv, spec.environment()),
    ]
    return steps


def root_stage(spec: ContainerSpec) -> Stage:
    """What becomes the root: an image's layers under a writable layer of the container's
    own (an overlay, mounted at ``rootfs``), or a directory of yours, bound onto itself."""
    if spec.layer and spec.lowers:
        layer = Path(spec.layer)
        upper, work = str(layer / "upper"), str(layer / "work")
        return Stage(overlay.mount, spec.rootfs, spec.lowers, upper, work)
    return Stage(rootfs.bind_onto_itself, Path(spec.rootfs))


def hardening_stages(spec: ContainerSpec) -> list[Stage]:
    """The last defences, in the order they can be applied: no_new_privs, then seccomp
    (which needs CAP_SYS_ADMIN unless no_new_privs is set), then capabilities are dropped."""
    security = spec.security()
    steps = []
    if security.no_new_privs:
        steps.append(Stage(capabilities.set_no_new_privs))
    if security.seccomp:
        steps.append(Stage(seccomp.load, security.capabilities))
    steps.append(Stage(capabilities.keep_only, security.capabilities))
    return steps


@stage("created", fix="this is a labkit bug: please report it")
def report_self(report: Reporter) -> None:
    """Without a new PID namespace there is no fork: the helper itself becomes the container."""
    report.created(os.getpid())


@stage("wait for the supervisor", fix="the supervisor went away: nothing was started")
def wait_for_go() -> None:
    """Block until the supervisor has recorded this process (end of file: it died first)."""
    if os.read(GO_FD, 2) != b"go":
        raise OSError(errno.ECANCELED, "the supervisor closed the GO pipe")
    os.close(GO_FD)


def run(spec: ContainerSpec) -> NoReturn:
    """Become the container described by ``spec``; never returns (exec or _exit)."""
    report = Reporter(REPORT_FD)
    run_stages(report, stages(spec, report))
    os._exit(EXIT_SETUP_FAILED)  # not reached: the last stage execs


def run_stages(report: Reporter, stages: Sequence[Stage]) -> None:
    for step in stages:
        try:
            step.run()
        except OSError as exc:
            report.fail(step, exc)


class Reporter:
    """Writes one JSON object per line to the supervisor."""

    def __init__(self, fd: int) -> None:
        os.set_inheritable(fd, False)  # close-on-exec: a successful exec is end of file
        self.fd = fd

    def send(self, event: str, **fields: object) -> None:
        # A supervisor that is gone cannot be told; the GO pipe makes PID 1 stop anyway.
        with contextlib.suppress(BrokenPipeError):
            os.write(self.fd, (json.dumps({"event": event, **fields}) + "\n").encode())

    def created(self, pid: int) -> None:
        """PID 1 exists (``pid`` as the host sees it) and waits for GO."""
        self.send("created", pid=pid, forker=os.getpid())

    def fail(self, step: Stage, exc: OSError) -> NoReturn:
        code = EXIT_SETUP_FAILED
        if step.func is process.exec_command:
            code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE
        self.send(
            "error",
            stage=step.name,
            exit_code=code,
            message=describe(step, exc),
            errno=errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None,
            fix=step.fix,
        )
        os._exit(code)


def describe(step: Stage, exc: OSError) -> str:
    """'<stage>: <why>: <path>' so the user sees what and where, not just an errno."""
    if step.func is process.exec_command:
        why = {
            errno.ENOENT: "executable file not found in $PATH",
            errno.EACCES: "permission denied",
        }
        argv0 = (step.args[0] or [""])[0] or '""'
        return f"exec {argv0}: {why.get(exc.errno or 0, exc.strerror or 'failed')}"
    text = exc.strerror or str(exc)
    where = f": {exc.filename}" if exc.filename else ""
    return (text if text.startswith(step.name) else f"{step.name}: {text}") + where


def main(argv: list[str]) -> NoReturn:
    """Entry point of a fresh helper interpreter: ``SPEC_JSON``, descriptors as above."""
    spec = ContainerSpec.from_json(argv[0])
    process.arrange_fds([0, 1, 2, REPORT_FD, GO_FD, *([CONSOLE_FD] if spec.tty else [])])
    run(spec)


if __name__ == "__main__":
    main(sys.argv[1:])
