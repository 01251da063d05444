"""The supervisor: starts containers, then waits for all of them in one loop.

One supervisor (the CLI now, the daemon later) is the parent of every container it starts:
it is a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER), so when the helper that forked a
container's PID 1 exits, PID 1 is re-parented to the supervisor and not to the host's init.
That is the job Docker gives a containerd-shim per container (13 MiB each); here no Python
process stays alive per container.

Its loop waits on file descriptors only, never on one child at a time:

* a **pidfd** per container (pidfd_open(2)), readable when that process exits, and then
  reaped with ``waitpid(pid, WNOHANG)`` for exactly that PID, so a ``waitpid(-1)`` elsewhere
  (or the subprocess module) never races it;
* the **stdio relays** of each container (``labkit.runtime.stdio``);
* a **wakeup pipe** that Python writes a byte to when a signal arrives: SIGINT, SIGTERM and
  SIGHUP are passed on to the containers, as ``docker run`` does; SIGWINCH resizes ptys.

Starting one container is a short conversation with the helper (``labkit.runtime.helper``):
claim the name (a record saying "creating"), fork the helper with signals blocked, read
"created PID" from its report pipe, record PID 1 as running, write "go", read until end of
file (exec succeeded) or an "error" line.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

from labkit.errors import LabkitError
from labkit.kernel import syscalls
from labkit.kernel.process import arrange_fds, dup_high
from labkit.kernel.procfs import ProcessRef
from labkit.runtime import helper, records
from labkit.runtime.records import Record
from labkit.runtime.spec import ContainerSpec
from labkit.runtime.stdio import Relay, Stdio

#: Signals a supervisor passes on to its containers, as `docker run` does.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How long output may still arrive after PID 1 exited (from processes it left behind).
DRAIN_SECONDS = 2.0


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

    @property
    def error(self) -> dict | None:
        """The helper's error report, if a stage failed after PID 1 was created."""
        return next((e for e in self.events if e["event"] == "error"), None)

    @property
    def finished(self) -> bool:
        """Exited, and its output relayed (or given up on after DRAIN_SECONDS)."""
        return self.exit_code is not None and all(r.done for r in self.stdio.relays)

    def signal(self, signum: int) -> None:
        """Send ``signum`` through the pidfd: it can never hit a process that reused the PID."""
        if self.pidfd >= 0 and self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signum)


class Supervisor:
    """Starts containers and reaps them, routes signals and relays stdio for all of them."""

    def __init__(self, forward_signals: bool = True) -> None:
        syscalls.set_child_subreaper()
        self.identity = ProcessRef.of(os.getpid())
        self.containers: list[Container] = []
        # poll, not epoll: epoll refuses regular files and /dev/null, and stdin may be one.
        self._selector = selectors.PollSelector()
        self._watched: dict[int, dict[int, Callable[[], None]]] = {}
        self._signals: list[int] = []
        self._saved_handlers: dict[int, object] = {}
        main = threading.current_thread() is threading.main_thread()
        if forward_signals and main:
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
            for signum in (*FORWARDED_SIGNALS, signal.SIGWINCH):
                self._saved_handlers[signum] = signal.signal(signum, self._note_signal)
            self._watch(self._wake_r, selectors.EVENT_READ, self._route_signals)

    def _note_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    # -- starting ----------------------------------------------------------------------------

    def start(self, spec: ContainerSpec, stdio: Stdio | None = None) -> Container:
        """Create the container ``spec`` describes; return once its command runs.

        Raises LabkitError if it could not be created (nothing is left behind then). A
        stage that fails after PID 1 exists, exec included, still returns a Container whose
        exit code (125, 126, 127) and ``error`` say what happened.
        """
        if os.geteuid() != 0:
            raise LabkitError(
                "labkit must run as root to create namespaces",
                fix="run it with sudo, or as root inside the lab VM",
            )
        spec.validate()
        assert self.identity is not None
        record = records.claim(spec.id, spec.name, asdict(spec), self.identity)
        try:
            stdio = stdio or Stdio.attached(spec.interactive, spec.tty)
        except BaseException:
            records.remove(spec.id)
            raise
        container = Container(spec, record, stdio)
        try:
            self._create(container)
        except BaseException:
            _kill_and_reap(container)  # if it got as far as running, it must not outlive this
            stdio.close()
            records.remove(spec.id)
            raise
        self.containers.append(container)
        self._watch(container.pidfd, selectors.EVENT_READ, lambda: self._reap(container))
        for relay in stdio.relays:
            self._watch_relay(relay)
        return container

    def _create(self, container: Container) -> None:
        spec = container.spec
        if spec.runs_on_a_copy:
            spec = _on_a_copy(spec, container.record)
        if any(s in FORWARDED_SIGNALS for s in self._signals):  # Ctrl-C while we prepared
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
                        self._record_running(container, event["pid"], go_w)
            os.close(go_w)
            _reap_forkers(container, helper_pid)
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

    def _record_running(self, container: Container, pid: int, go_w: int) -> None:
        """PID 1 exists and waits: record it, then let it go on."""
        container.pid = pid
        container.pidfd = os.pidfd_open(pid)
        container.record.process = ProcessRef.of(pid)
        container.record.status = "running"
        container.record.save()
        os.write(go_w, b"go")

    # -- the loop ---------------------------------------------------------------------------

    def wait(self, container: Container) -> int:
        """Run the loop until ``container`` has exited and its output is relayed; its code."""
        while not container.finished:
            timeout = None
            if container.exit_code is not None:  # exited: give its output a moment to end
                timeout = container.exited_at + DRAIN_SECONDS - time.monotonic()
                if timeout <= 0:
                    self._finish_relays(container)
                    break
            self.step(timeout)
        assert container.exit_code is not None
        if container.auto_remove:
            records.remove(container.record.id)
        return container.exit_code

    def step(self, timeout: float | None = None) -> None:
        """Wait until something is ready (or ``timeout``), and handle it."""
        for key, events in self._selector.select(timeout):
            for event in (selectors.EVENT_READ, selectors.EVENT_WRITE):
                handler = self._watched.get(key.fd, {}).get(event)
                if events & event and handler is not None:
                    handler()

    def _reap(self, container: Container) -> None:
        try:
            pid, status = os.waitpid(container.pid, os.WNOHANG)
        except ChildProcessError:  # not ours to reap (a labkit bug): do not spin on its pidfd
            pid, status = container.pid, 255 << 8
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        container.exit_code = 128 - code if code < 0 else code
        container.exited_at = time.monotonic()
        self._unwatch(container.pidfd, selectors.EVENT_READ)
        os.close(container.pidfd)
        container.pidfd = -1

    def _route_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        pending, self._signals[:] = self._signals[:], []
        for signum in pending:
            for container in self.containers:
                if signum == signal.SIGWINCH:
                    container.stdio.window_changed()
                else:
                    container.signal(signum)

    # -- stdio relays -------------------------------------------------------------------------

    def _watch_relay(self, relay: Relay) -> None:
        """Read ``src`` while nothing is pending; else wait until ``dst`` can take more."""

        def readable() -> None:
            relay.pump()
            update()

        def writable() -> None:
            relay.flush()
            update()

        def update() -> None:
            self._unwatch(relay.src, selectors.EVENT_READ)
            self._unwatch(relay.dst, selectors.EVENT_WRITE)
            if relay.done:
                return
            if relay.pending:
                self._watch(relay.dst, selectors.EVENT_WRITE, writable)
            else:
                self._watch(relay.src, selectors.EVENT_READ, readable)

        update()

    def _finish_relays(self, container: Container) -> None:
        for relay in container.stdio.relays:
            self._unwatch(relay.src, selectors.EVENT_READ)
            self._unwatch(relay.dst, selectors.EVENT_WRITE)
        container.stdio.close()

    def _watch(self, fd: int, event: int, handler: Callable[[], None]) -> None:
        handlers = self._watched.setdefault(fd, {})
        handlers[event] = handler
        self._register(fd, handlers)

    def _unwatch(self, fd: int, event: int) -> None:
        handlers = self._watched.get(fd)
        if handlers and handlers.pop(event, None) is not None:
            self._register(fd, handlers)

    def _register(self, fd: int, handlers: dict[int, Callable[[], None]]) -> None:
        events = 0
        for event in handlers:
            events |= event
        with contextlib.suppress(KeyError):
            self._selector.unregister(fd)
        if events:
            self._selector.register(fd, events)
        else:
            del self._watched[fd]

    def close(self) -> None:
        """Give back the signal handlers and the caller's terminal."""
        for container in self.containers:
            container.stdio.close()
        if self._saved_handlers:
            signal.set_wakeup_fd(self._old_wakeup)
            for signum, handler in self._saved_handlers.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
            self._saved_handlers.clear()
            os.close(self._wake_r)
            os.close(self._wake_w)
        self._selector.close()


def _kill_and_reap(container: Container) -> None:
    """For a creation that failed half-way: a PID 1 that exists is killed and reaped."""
    if container.pidfd < 0:
        return
    container.signal(signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(container.pid, 0)
    os.close(container.pidfd)
    container.pidfd = -1


def _reap_forkers(container: Container, helper_pid: int) -> None:
    """Reap the processes that forked PID 1 and have exited since: the helper (our child)
    and, with a user namespace, its child, which became ours when the helper exited."""
    forker = next((e["forker"] for e in container.events if e["event"] == "created"), None)
    for pid in (helper_pid, forker):
        if pid and pid != container.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _on_a_copy(spec: ContainerSpec, record: Record) -> ContainerSpec:
    """The spec with its root replaced by a throwaway copy in the container's directory:
    without a mount namespace nothing else keeps a container from changing its image."""
    import dataclasses
    import shutil

    from labkit.kernel.mounts import mounts_under

    mounted = mounts_under(spec.rootfs)
    if mounted:  # copying a mounted /proc would never end
        raise LabkitError(
            f"something is mounted inside image {spec.image}: {', '.join(mounted)}",
            fix=f"unmount it (umount {mounted[0]}), then try again",
        )
    copy = record.directory / "rootfs"
    shutil.copytree(spec.rootfs, copy, symlinks=True)
    return dataclasses.replace(spec, rootfs=str(copy))


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
