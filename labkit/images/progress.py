"""Progress of a pull or push, one line per blob, as ``docker pull`` shows it.

The registry client only *reports* (``start``, ``advance``, ``done``); how it is shown is up to
the front end: ``TerminalProgress`` here for the CLI, a notebook widget in ``labkit.lab``.
On a terminal the lines are redrawn in place (cursor up, rewrite, ``\\r``), as Docker does;
in a log or a pipe each blob gets a line when it starts and one when it is done, so a slow
pull cannot flood a CI log with thousands of percentage lines.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def short(digest: str) -> str:
    """Docker's short id of a blob: the first 12 hex digits."""
    return digest.removeprefix("sha256:")[:12]


def human(n: float) -> str:
    """Sizes as Docker prints them: 1.2MB (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}GB"


class Progress:
    """The protocol: what a pull or push reports. This base class shows nothing."""

    def start(self, digest: str, total: int) -> None:
        """A transfer of ``total`` bytes begins."""

    def advance(self, digest: str, n: int) -> None:
        """``n`` more bytes arrived (or were sent)."""

    def done(self, digest: str, status: str) -> None:
        """Finished, with Docker's words: "Pull complete", "Already exists", "Pushed"."""


class TerminalProgress(Progress):
    """``a1b2c3d4e5f6: Downloading 1.2MB/3.4MB`` per blob; redrawn in place on a tty."""

    REDRAW_EVERY = 0.1  # seconds: often enough to look alive, rare enough to be cheap

    def __init__(self, out: TextIO | None = None, verb: str = "Downloading") -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.verb = verb
        self.rows: dict[str, str] = {}  # digest -> its current line, in the order started
        self.sizes: dict[str, list[int]] = {}
        self.drawn = 0  # how many rows are on the screen (tty mode)
        self.last = 0.0

    def start(self, digest: str, total: int) -> None:
        self.sizes[digest] = [0, total]
        self._set(digest, f"{self.verb} {human(0)}/{human(total)}", force=True)

    def advance(self, digest: str, n: int) -> None:
        got, total = self.sizes.setdefault(digest, [0, 0])
        self.sizes[digest][0] = got + n
        if self.tty:
            self._set(digest, f"{self.verb} {human(got + n)}/{human(total)}")

    def done(self, digest: str, status: str) -> None:
        self._set(digest, status, force=True)

    def _set(self, digest: str, text: str, force: bool = False) -> None:
        new = digest not in self.rows
        self.rows[digest] = f"{short(digest)}: {text}"
        if not self.tty:
            # a log gets each blob's first line and each change of status, never byte counts
            if new or force:
                self.out.write(self.rows[digest] + "\n")
                self.out.flush()
            return
        now = time.monotonic()
        if force or new or now - self.last >= self.REDRAW_EVERY:
            self.last = now
            self._redraw()

    def _redraw(self) -> None:
        # move the cursor up over what we drew, then rewrite every row (erasing each line end)
        parts = [f"\x1b[{self.drawn}A"] if self.drawn else []
        parts += [f"\r{row}\x1b[K\n" for row in self.rows.values()]
        self.out.write("".join(parts))
        self.out.flush()
        self.drawn = len(self.rows)
