"""A container's standard streams: what it gets as descriptors 0, 1 and 2, and the relays.

Docker never hands a container its caller's descriptors, and neither does labkit:

* stdin is /dev/null, or with ``-i`` a pipe the supervisor fills from its own stdin;
* stdout and stderr are pipes the supervisor copies to its own stdout and stderr;
* with ``-t``, all three are the slave side of a pseudo-terminal that the container opens
  in its own /dev/pts and whose master side it sends back over a unix socket (runc's
  "console socket"); the supervisor copies the master side (and, with ``-i``, puts its own
  terminal in raw mode so keys reach the container unchanged).

So a container can read neither the caller's files through an inherited descriptor nor the
caller's terminal. A ``Relay`` is one direction of copying; the supervisor's loop moves the
bytes when the kernel says a side is ready (``labkit.runtime.supervisor``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import termios

from labkit.errors import LabkitError


class Relay:
    """Copies what arrives on ``src`` to ``dst``, in the supervisor's loop.

    ``dst`` is non-blocking when it is a pipe into the container: a container that does not
    read its stdin must not stall the supervisor. What could not be written yet waits in
    ``pending`` and reading pauses until ``dst`` drains.
    """

    def __init__(self, src: int, dst: int, owns_src: bool, owns_dst: bool) -> None:
        self.src, self.dst = src, dst
        self.owns_src, self.owns_dst = owns_src, owns_dst
        self.pending = b""
        self.done = False

    def pump(self) -> None:
        """``src`` is readable: copy one chunk (end of file or EIO from a pty ends the relay)."""
        try:
            data = os.read(self.src, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # a pty whose slave side is closed says EIO
                raise
            data = b""
        if not data:
            self.finish()
            return
        self.pending = data
        self.flush()

    def flush(self) -> None:
        """Write what is pending; a reader that went away (EPIPE) ends the relay."""
        try:
            while self.pending:
                self.pending = self.pending[os.write(self.dst, self.pending) :]
        except BlockingIOError:
            return
        except BrokenPipeError:
            self.pending = b""
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.owns_src:
            os.close(self.src)
        if self.owns_dst:
            os.close(self.dst)


class Stdio:
    """The container's descriptors 0-2 (``child``) and the relays that serve them."""

    def __init__(self, child: tuple[int, int, int], relays: list[Relay]) -> None:
        self.child = child  # what the container gets as descriptors 0, 1, 2
        self.relays = relays
        self.console_child: int | None = None  # its end of the console socket, with -t
        self.master: int | None = None  # the pty's master side, with -t
        self.console_socket: int | None = None  # our end of the console socket
        self._terminal: tuple[int, int, int, bool] | None = None  # stdin, stdout, -i
        self._saved_tty: tuple[int, list] | None = None

    @classmethod
    def attached(
        cls, interactive: bool, tty: bool, stdin: int = 0, stdout: int = 1, stderr: int = 2
    ) -> Stdio:
        """Streams relayed to and from the caller's own ``stdin``, ``stdout``, ``stderr``."""
        if tty:
            if interactive and not os.isatty(stdin):
                raise LabkitError(
                    "the input device is not a TTY",
                    fix="leave out {tty}, or run this from a terminal",
                )
            import socket

            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # until the console exists
            io = cls((null, null, null), [])
            io.console_socket, io.console_child = ours.detach(), theirs.detach()
            io._terminal = (stdin, stdout, stderr, interactive)
            return io
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        relays = [
            Relay(out_r, stdout, owns_src=True, owns_dst=False),
            Relay(err_r, stderr, owns_src=True, owns_dst=False),
        ]
        if interactive:
            in_r, in_w = os.pipe()
            os.set_blocking(in_w, False)
            relays.append(Relay(stdin, in_w, owns_src=False, owns_dst=True))
        else:
            in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return cls((in_r, out_w, err_w), relays)

    def receive_console(self) -> None:
        """With -t: take the pty master the container sent, and relay it (end of file on the
        socket means the container failed before it had one; its report says why)."""
        import socket

        assert self.console_socket is not None and self._terminal is not None
        with socket.socket(fileno=self.console_socket) as sock:
            _, fds, _, _ = socket.recv_fds(sock, 64, 1)
        self.console_socket = None
        if not fds:
            return
        self.master = fds[0]
        stdin, stdout, _, interactive = self._terminal
        self.relays.append(Relay(self.master, stdout, owns_src=False, owns_dst=False))
        if interactive:
            os.set_blocking(self.master, False)
            self.relays.append(Relay(stdin, self.master, owns_src=False, owns_dst=False))
            self._raw_mode(stdin)
        self._copy_window_size(stdin if os.isatty(stdin) else stdout)

    def close_child_side(self) -> None:
        """After the helper has its copies: the container's ends are not ours to hold open
        (an open write end would keep the relay from ever seeing end of file)."""
        for fd in {*self.child, self.console_child} - {None}:
            os.close(fd)
        self.console_child = None

    def window_changed(self, stdin: int = 0) -> None:
        """SIGWINCH: pass the caller's new terminal size on to the container's pty."""
        if self.master is not None and os.isatty(stdin):
            self._copy_window_size(stdin)

    def close(self) -> None:
        """End every relay and give the caller's terminal back its settings."""
        for relay in self.relays:
            relay.finish()
        if self.console_socket is not None:
            os.close(self.console_socket)
            self.console_socket = None
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None
        if self._saved_tty is not None:
            fd, attrs = self._saved_tty
            termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
            self._saved_tty = None

    def _copy_window_size(self, from_fd: int) -> None:
        if self.master is None or not os.isatty(from_fd):
            return
        size = fcntl.ioctl(from_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    def _raw_mode(self, fd: int) -> None:
        import tty

        self._saved_tty = (fd, termios.tcgetattr(fd))
        tty.setraw(fd)
