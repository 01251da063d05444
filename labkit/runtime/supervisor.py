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
  SIGHUP are passed on to the containers, as ``docker run`` does; SIGWINCH resizes ptys;
* the **userland proxy** of containers with published ports (``labkit.network.proxy``): their
  listening sockets and relays, so the host's loopback reaches them with no process of its own.

Starting one container is a short conversation with the helper, in
``labkit.runtime.container``; the supervisor claims the name first and watches it after.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from labkit.errors import LabkitError
from labkit.kernel import syscalls
from labkit.kernel.procfs import ProcessRef
from labkit.runtime import records
from labkit.runtime.container import (
    FORWARDED_SIGNALS,
    Container,
    bind_ports,
    close_ports,
    create,
    kill_and_reap,
)
from labkit.runtime.spec import ContainerSpec
from labkit.runtime.stdio import Relay, Stdio

if TYPE_CHECKING:
    from labkit.network.proxy import Proxy

#: How long output may still arrive after PID 1 exited (from processes it left behind).
DRAIN_SECONDS = 2.0


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
        self._proxies: dict[str, Proxy] = {}  # container id -> its published ports' proxy
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

    def _interrupted(self) -> bool:
        """Ctrl-C (or TERM, HUP) arrived and no container is there yet to pass it on to."""
        return any(s in FORWARDED_SIGNALS for s in self._signals)

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
        published = bind_ports(spec)  # a taken host port stops it here, before anything exists
        try:
            record = records.claim(spec.id, spec.name, asdict(spec), self.identity)
        except BaseException:
            close_ports(published)
            raise
        try:
            stdio = stdio or Stdio.attached(spec.interactive, spec.tty)
        except BaseException:
            close_ports(published)
            records.remove(spec.id)
            raise
        container = Container(spec, record, stdio)
        container.published = published
        try:
            create(container, self._interrupted)
        except BaseException:
            kill_and_reap(container)  # if it got as far as running, it must not outlive this
            stdio.close()
            records.remove(spec.id)
            raise
        self.containers.append(container)
        if container.published and spec.userland_proxy and container.attachment is not None:
            from labkit.network.proxy import Proxy

            proxy = self._proxies[spec.id] = Proxy(self._watch, self._unwatch)
            for published, sock in container.published:
                proxy.serve(sock, (container.attachment.address, published.container_port))
        self._watch(container.pidfd, selectors.EVENT_READ, lambda: self._reap(container))
        for relay in stdio.relays:
            self._watch_relay(relay)
        return container

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
        self.containers.remove(container)
        return container.exit_code

    def step(self, timeout: float | None = None) -> None:
        """Wait until something is ready (or ``timeout``, or a proxied UDP flow's expiry),
        and handle it."""
        proxies = list(self._proxies.values())
        expiries = [t for t in (p.timeout() for p in proxies) if t is not None]
        if expiries:
            timeout = min(expiries) if timeout is None else min(timeout, *expiries)
        for key, events in self._selector.select(timeout):
            for event in (selectors.EVENT_READ, selectors.EVENT_WRITE):
                handler = self._watched.get(key.fd, {}).get(event)
                if events & event and handler is not None:
                    handler()
        for proxy in proxies:
            proxy.expire()

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
        proxy = self._proxies.pop(container.record.id, None)
        if proxy is not None:
            proxy.close()
        container.release()

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
        """Give back the signal handlers and the caller's terminal; stop the proxies."""
        for proxy in self._proxies.values():
            proxy.close()
        self._proxies.clear()
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
