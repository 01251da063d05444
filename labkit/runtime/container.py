"""Creating one container: the supervisor's side of its conversation with the helper.

1. the spec is valid and its name claimed (``records.claim``, by the supervisor);
2. with SIGINT, SIGTERM and SIGHUP blocked, the helper starts with the container's stdio as
   descriptors 0-2, REPORT as 3 and GO as 4 (and CONSOLE as 5 with -t);
3. "created PID" arrives on REPORT: PID 1 exists and waits. The supervisor opens a pidfd for
   it, records it as running, plugs it into its network (a veth pair whose inside end is
   created in PID 1's network namespace, as Docker does between ``runc create`` and
   ``runc start``, and the rules of its published ports), and writes "go"; PID 1 then gives
   its ``eth0`` the address;
4. end of file on REPORT means the command runs (the pipe closes on exec); an "error" line
   says which stage failed and why.

A helper that cannot even make PID 1 leaves nothing: ``create`` raises. A PID 1 that fails a
later stage exits by itself with 125, 126 or 127, like Docker's containers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from labkit.errors import LabkitError
from labkit.kernel.cgroups.group import ContainerCgroups
from labkit.kernel.process import arrange_fds, dup_high
from labkit.kernel.procfs import ProcessRef
from labkit.runtime import helper, layer
from labkit.runtime.records import Record
from labkit.runtime.spec import ContainerSpec
from labkit.runtime.stdio import Stdio

if TYPE_CHECKING:
    import socket

    from labkit.network.model import Attachment
    from labkit.network.ports import Published

    Bound = list[tuple[Published, socket.socket]]

#: Signals blocked while a container is made, and passed on to it once it runs.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Container:
    """A started container, seen from its supervisor."""

    def __init__(self, spec: ContainerSpec, record: Record, stdio: Stdio) -> None:
        self.spec, self.record, self.stdio = spec, record, stdio
        self.pid = 0
        self.pidfd = -1
        self.events: list[dict] = []
        self.exit_code: int | None = None
        self.exited_at = 0.0
        self.auto_remove = True
        self.cgroups: ContainerCgroups | None = None
        self.attachment: Attachment | None = None  # its place on a network, if it has one
        self.published: Bound = []  # its published ports' host sockets (bind_ports)

    @property
    def error(self) -> dict | None:
        """The helper's error report, if a stage failed after PID 1 was created."""
        return next((e for e in self.events if e["event"] == "error"), None)

    def release(self) -> None:
        """After PID 1 exited: what it left running is killed (without a PID namespace its
        children outlive it, as under runc, which also kills them), then its cgroups go
        (one still busy is for reset to remove), its published ports are let go, and its
        address goes back to the network."""
        if self.cgroups is not None:
            if self.cgroups.processes():
                self.cgroups.kill()
            if self.cgroups.remove():
                self.cgroups = None
        close_ports(self.published)
        if self.attachment is not None:
            from labkit.network import attach

            attach.unplug(self.attachment)
            self.attachment = None

    @property
    def finished(self) -> bool:
        """Exited, and its output relayed (or given up on after DRAIN_SECONDS)."""
        return self.exit_code is not None and all(r.done for r in self.stdio.relays)

    def signal(self, signum: int) -> None:
        """Send ``signum`` through the pidfd: it can never hit a process that reused the PID."""
        if self.pidfd >= 0 and self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signum)


def create(container: Container, interrupted: Callable[[], bool]) -> None:
    """Make ``container`` exist and run its command; raise LabkitError if nothing ran.

    ``interrupted`` says whether the user asked to stop (Ctrl-C) while its root was being
    prepared: then nothing is started at all.
    """
    # Its root: a layer of its own over the image's (or a copy, or your directory), and
    # its user, looked up in that root.
    spec = layer.root_of(container.spec, container.record)
    # Its cgroups (limits, accounting, device rules), which the helper joins before anything.
    container.cgroups = ContainerCgroups(spec.id)
    paths = container.cgroups.create(spec.limits(), spec.security().device_rules)
    container.record.cgroups = [str(p) for p in paths]
    container.record.save()
    spec = dataclasses.replace(spec, cgroup_paths=container.record.cgroups)
    # Its address, before the helper starts: a full or unknown network stops it here.
    spec = _join_network(container, spec)
    if interrupted():
        raise KeyboardInterrupt
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        console = [container.stdio.console_child] if container.stdio.console_child else []
        helper_pid = _start_helper(spec, [*container.stdio.child, report_w, go_r, *console])
        os.close(report_w)
        os.close(go_r)
        container.stdio.close_child_side()
        with os.fdopen(report_r, "rb") as report:
            for line in report:
                event = json.loads(line)
                container.events.append(event)
                if event["event"] == "created":
                    _reap_forkers(container, helper_pid, pid1=event["pid"])
                    _record_running(container, event["pid"], go_w)
        os.close(go_w)
        if not container.pid:  # it failed before PID 1 existed
            _reap_forkers(container, helper_pid, pid1=0)
        if container.stdio.console_socket is not None:
            container.stdio.receive_console()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if not container.pid:
        error = container.error or {}
        raise LabkitError(
            f"could not create the container: {error.get('message', 'the helper died')}",
            fix=error.get("fix") or "check this host with {doctor}",
        )


def bind_ports(spec: ContainerSpec) -> Bound:
    """Bind the host side of its published ports, before anything else is made: a port that
    is taken stops it here, and a random one is chosen here, once. [] without a network of
    its own (host, none): Docker ignores published ports there."""
    if not spec.publish or spec.network_mode() in ("host", "none"):
        return []
    from labkit.network import ports

    return ports.bind(ports.parse_all(spec.publish))


def close_ports(published: Bound) -> None:
    for _, sock in published:
        sock.close()
    published.clear()


def _join_network(container: Container, spec: ContainerSpec) -> ContainerSpec:
    """Take an address on its network and write its /etc files; the spec then tells PID 1
    what to give its eth0. A container without a network of its own never imports this."""
    if spec.network_mode() in ("host", "none"):
        return spec
    from labkit.network import attach

    record = container.record
    hostname = spec.effective_hostname() or spec.short_id
    ports = [published._asdict() for published, _ in container.published]
    container.attachment = attach.prepare(
        spec.id, spec.name, hostname, spec.network, record.directory, ports, spec.userland_proxy
    )
    if container.attachment is None:
        return spec
    record.network = container.attachment.to_dict()
    record.save()
    inside = attach.inside_config(container.attachment)
    files = attach.files_for(container.attachment) if "mnt" in spec.namespaces else {}
    return dataclasses.replace(spec, net=inside, etc_files=files)


def _record_running(container: Container, pid: int, go_w: int) -> None:
    """PID 1 exists and waits: record it, plug it into its network, then let it go on."""
    container.pid = pid
    container.pidfd = os.pidfd_open(pid)
    container.record.process = ProcessRef.of(pid)
    container.record.status = "running"
    container.record.save()
    if container.attachment is not None:
        from labkit.network import attach

        attach.plug(container.attachment, pid)
    os.write(go_w, b"go")


def kill_and_reap(container: Container) -> None:
    """For a creation that failed half-way: a PID 1 that exists is killed and reaped, and
    what was made for it goes."""
    if container.pidfd >= 0:
        container.signal(signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(container.pid, 0)
        os.close(container.pidfd)
        container.pidfd = -1
    container.release()


def _reap_forkers(container: Container, helper_pid: int, pid1: int) -> None:
    """Reap the processes that forked PID 1 (they exit right after): the helper (our child)
    and, with a user namespace, its child, which became ours when the helper exited. Before
    PID 1 goes on: until reaped they count against the container's pids limit."""
    forker = next((e["forker"] for e in container.events if e["event"] == "created"), None)
    for pid in (helper_pid, forker):
        if pid and pid != pid1:  # without a PID namespace the helper *is* PID 1
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _start_helper(spec: ContainerSpec, fds: list[int]) -> int:
    """Start the helper with ``fds`` as its descriptors 0-4; return its PID.

    A single-threaded supervisor (the CLI) forks: the child already has labkit imported,
    which saves a whole interpreter start (~100 ms). A process with threads must not fork
    (another thread may hold a lock the child would wait on forever), so it spawns a fresh
    ``python -I -S`` that runs the same ``helper.run``.
    """
    if threading.active_count() == 1:
        pid = os.fork()
        if pid == 0:
            try:
                arrange_fds(fds)
                helper.run(spec)
            finally:
                os._exit(helper.EXIT_SETUP_FAILED)
        return pid
    high = [dup_high(fd) for fd in fds]  # clear of 0-4, where the helper wants them
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fd, number) for number, fd in enumerate(high)]
        return os.posix_spawn(sys.executable, _helper_argv(spec), os.environ, file_actions=actions)
    finally:
        for fd in high:
            os.close(fd)


def _helper_argv(spec: ContainerSpec) -> list[str]:
    """A fresh interpreter in isolated mode (-I -S): site-packages would cost more start-up
    time than everything the helper does, and it needs only the stdlib and labkit."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bootstrap = (
        f"import sys; sys.path.insert(0, {package_parent!r}); "
        "from labkit.runtime.helper import main; main(sys.argv[1:])"
    )
    return [sys.executable, "-I", "-S", "-c", bootstrap, spec.to_json()]
