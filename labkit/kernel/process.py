"""What a process carries across execve(2), and how a container starts with a clean slate.

execve replaces a process's program but keeps much of the rest, and each of those is a way
out of a container or into its caller:

* **open file descriptors** without close-on-exec: a descriptor of the caller's "/" lets
  the container read the host's files through /proc/self/fd/N whatever its root is;
* the **session and controlling terminal**: a process that shares its caller's terminal can
  push keystrokes into the caller's shell with the TIOCSTI ioctl;
* **supplementary groups** and the **umask** of whoever started it;
* the **signal mask** and *ignored* signals (handlers are reset, ignored stays ignored).

So before exec the container gets exactly three standard streams from its supervisor, a
session of its own, the groups of its user in the image, umask 0022 and default signals,
as Docker gives it. Runs in the helper process, never in a Jupyter kernel.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import termios
from collections.abc import Sequence
from pathlib import Path

from labkit.kernel.stage import stage

#: Where ``arrange_fds`` first moves descriptors, clear of the numbers they are moved to.
_HIGH_FD = 64


def arrange_fds(fds: Sequence[int]) -> None:
    """Make ``fds[i]`` this process's descriptor ``i`` and close every other one.

    Each is first duplicated above _HIGH_FD, so that moving one into place never overwrites
    another that is still to be moved. 0, 1 and 2 survive exec; the others are close-on-exec.
    """
    high = [dup_high(fd) for fd in fds]
    for number, fd in enumerate(high):
        os.dup2(fd, number, inheritable=number <= 2)
    os.closerange(len(fds), _max_fd())


def dup_high(fd: int) -> int:
    """A close-on-exec copy of ``fd`` numbered at least _HIGH_FD."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)


def close_fds_from(first: int, keep: int | None = None) -> None:
    """Close every descriptor >= ``first`` except ``keep``."""
    if keep is None or keep < first:
        os.closerange(first, _max_fd())
        return
    os.closerange(first, keep)
    os.closerange(keep + 1, _max_fd())


def _max_fd() -> int:
    return os.sysconf("SC_OPEN_MAX")


@stage("close descriptors", fix="this is a labkit bug: please report it")
def keep_only_stdio(report_fd: int) -> None:
    """Close everything but 0, 1, 2 and the report pipe (which closes itself at exec)."""
    close_fds_from(3, keep=report_fd)


@stage("new session", fix="this is a labkit bug: please report it")
def new_session(tty: bool) -> None:
    """A session of its own, so the container never shares its caller's controlling terminal.

    With ``tty`` (``-t``), stdin is the slave side of a pseudo-terminal made for this
    container alone; TIOCSCTTY makes it the session's controlling terminal, as a login does.
    """
    os.setsid()
    if tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


TIOCGPTN = 0x80045430  # the number of a pty master's slave: /dev/pts/N
TIOCSPTLCK = 0x40045431  # lock (1) or unlock (0) the slave, what unlockpt(3) does


@stage("console", fix="the container's /dev needs a devpts (ptmx): check {ns} has mnt")
def open_console(console_socket: int) -> None:
    """A pseudo-terminal from the container's *own* devpts, as runc makes one for ``-t``.

    The slave becomes descriptors 0, 1 and 2 (so ``tty`` prints /dev/pts/0 inside); the
    master goes to the supervisor over a unix socket (SCM_RIGHTS), which relays it.
    """
    import socket
    import struct

    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    with socket.socket(fileno=console_socket) as sock:
        socket.send_fds(sock, [b"console"], [master])
    os.close(master)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)


def image_groups(user: str, gid: int, group_file: str = "/etc/group") -> list[int]:
    """The groups ``user`` belongs to according to the image's /etc/group: its primary
    group and every group that lists it as a member (what runc gives Docker's containers)."""
    groups = {gid}
    try:
        lines = Path(group_file).read_text(errors="replace").splitlines()
    except OSError:
        return [gid]
    for line in lines:
        fields = line.split(":")
        if len(fields) == 4 and fields[2].isdigit() and user in fields[3].split(","):
            groups.add(int(fields[2]))
    return sorted(groups)


@stage("credentials", fix="check the image's /etc/group")
def reset_credentials(groups: Sequence[int] | None = None, gid: int = 0) -> None:
    """The groups and primary group of the container's user (never the caller's; by
    default root's groups in the image), and umask 0022. The uid changes last
    (``become_user``): a uid other than 0 loses the capabilities the next stages need."""
    os.setgroups(list(groups) if groups is not None else image_groups("root", 0))
    os.setresgid(gid, gid, gid)
    os.umask(0o022)


@stage("user", fix="give {user} a user the container may become")
def become_user(uid: int) -> None:
    """Switch to the container's user, after the capabilities were cut to the container's
    set: leaving uid 0 then empties the permitted and effective sets (no keep-caps), so a
    non-root user starts with no capabilities, as under Docker."""
    if uid != 0:
        os.setresuid(uid, uid, uid)


@stage("workdir", fix="give {workdir} a directory that exists in the image")
def change_dir(path: str, create: bool = False) -> None:
    """The command's working directory, resolved inside the container's root. With
    ``create`` (a container on an image layer of its own) a missing one is made, root-owned
    and 0755, as Docker makes an image's WorkingDir."""
    if create:
        old = os.umask(0o022)
        try:
            os.makedirs(path, 0o755, exist_ok=True)
        finally:
            os.umask(old)
    os.chdir(path)


@stage("signals", fix="this is a labkit bug: please report it")
def reset_signals() -> None:
    """Default dispositions and an empty signal mask for the command.

    An ignored signal stays ignored across exec: Python ignores SIGPIPE and SIGXFSZ (so
    `yes | head` would print "Broken pipe" instead of stopping quietly), and whoever started
    labkit may have ignored more (`nohup` ignores SIGHUP; a background job of a script,
    SIGINT and SIGQUIT). Docker's containers start with every signal at its default, whoever
    ran `docker run`. The supervisor also blocks signals while it creates a container (so a
    Ctrl-C cannot leave half of one), and a blocked mask is inherited across fork and exec.
    """
    for signum in signal.valid_signals():
        try:
            if signal.getsignal(signum) == signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP and the C library's own
            continue
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


@stage("exec", fix="check the command's name, or give its full path")
def exec_command(argv: Sequence[str], env: dict[str, str]) -> None:
    """Replace this process with the command, looked up in the container's PATH."""
    if not argv or not argv[0]:  # execvp("") would raise ValueError, not the kernel's ENOENT
        raise FileNotFoundError(errno.ENOENT, 'exec "": executable file not found in $PATH')
    os.execvpe(argv[0], list(argv), env)
