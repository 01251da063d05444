"""The small things a lesson cell does: show raw evidence, state a claim against what the kernel
showed, reveal a prediction, and hand the learner a task for JupyterLab's terminal.

* ``terminal("uname -r")`` runs a command as the learner would type it and prints it as a
  terminal shows it (``$ uname -r`` and its raw output). ``labkit`` in the command is this
  notebook's labkit, so ``terminal("labkit run -- uname -r")`` works as typed.
* ``expect(actual, expected, claim)`` says ✓ and the claim when the kernel agrees; when it does
  not, it stops the cell with what the kernel showed *against* what the lesson expected, which
  stays true when a learner has changed a value above (no traceback, no plumbing).
* ``reveal(guess, actual)`` answers a "Predict:" prompt.
* ``terminal_task(pid, commands)`` prints commands to try in a terminal with the PID filled in.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from labkit.lab.i18n import Text, pick, t


class LessonMismatch(AssertionError):
    """A claim of the lesson that the kernel did not bear out. Shown as its message alone."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [
            f"\x1b[31m{line}\x1b[0m" if i == 0 else line
            for i, line in enumerate(str(self).splitlines())
        ]


@dataclass(frozen=True)
class Matcher:
    """An expectation other than equality, with the words that describe it."""

    words: str
    test: Callable[[Any], bool]

    def __repr__(self) -> str:
        return self.words


def at_least(x: float) -> Matcher:
    return Matcher(f"at least {x!r}", lambda v: v >= x)


def at_most(x: float) -> Matcher:
    return Matcher(f"at most {x!r}", lambda v: v <= x)


def contains(x: Any) -> Matcher:
    return Matcher(f"something containing {x!r}", lambda v: x in v)


def differs_from(x: Any) -> Matcher:
    return Matcher(f"anything but {x!r}", lambda v: v != x)


def expect(actual: Any, expected: Any, claim: Text | str) -> None:
    """Check one claim of the lesson against what the kernel showed."""
    ok = expected.test(actual) if isinstance(expected, Matcher) else actual == expected
    if ok:
        print(f"✓ {pick(claim)}")
        return
    said = t(
        "the kernel showed:   {a}\nthe lesson expected: {e}\n"
        "If you changed something above, this is what your change did. For a fresh copy "
        "of a notebook, run in a terminal: labkit lab restore <its number> (yours is kept).",
        "커널이 보여준 값:   {a}\n수업에서 기대한 값: {e}\n"
        "위에서 무언가를 바꿨다면, 이것이 그 변경의 결과입니다. 노트북을 처음 상태로 "
        "되돌리려면 터미널에서: labkit lab restore <노트북 번호> (지금 파일은 백업으로 남습니다).",
    )
    raise LessonMismatch(f"✗ {pick(claim)}\n{pick(said).format(a=repr(actual), e=repr(expected))}")


def reveal(guess: Any, actual: float, unit: str = "", digits: int = 0) -> None:
    """Answer a prediction: what the learner guessed (if anything) next to the measurement."""
    shown = f"{actual:.{digits}f}{unit}"
    if guess is None or guess is ...:
        print(pick(t(f"measured: {shown} (no guess made)", f"측정값: {shown} (예측 없음)")))
        return
    try:
        off = max(actual, guess) / min(actual, guess) if min(actual, guess) > 0 else float("inf")
    except TypeError:
        print(
            pick(
                t(f"you guessed {guess!r}; measured: {shown}", f"예측: {guess!r}, 측정값: {shown}")
            )
        )
        return
    close = (
        t("close!", "거의 맞았습니다!") if off < 2 else t(f"off by {off:.0f}x", f"{off:.0f}배 차이")
    )
    print(
        pick(
            t(
                f"you guessed {guess}{unit}; measured: {shown}",
                f"예측: {guess}{unit}, 측정값: {shown}",
            )
        ),
        "·",
        pick(close),
    )


class Shown(str):
    """Output that ``terminal`` has already printed: a notebook does not echo it again."""

    def _ipython_display_(self) -> None:
        pass


def _labkit_function() -> str:
    """A shell function so that ``labkit`` in a command is this notebook's labkit."""
    return f'labkit() {{ {shlex.quote(sys.executable)} -m labkit.cli "$@"; }}\n'


def terminal(command: str, check: bool = True, timeout: float = 120) -> Shown:
    """Run ``command`` with bash as a learner would type it; print it and its raw output.

    Returns the standard output. With ``check``, a failing command stops the cell with its
    exit status and error output (the command and its output are already on screen).
    """
    done = subprocess.run(
        ["bash", "-c", _labkit_function() + command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"$ {command}")
    print(done.stdout, end="" if done.stdout.endswith("\n") or not done.stdout else "\n")
    if done.stderr:  # flushed in turn: Jupyter shows each stream in the order it is flushed
        sys.stdout.flush()
        print(done.stderr, end="" if done.stderr.endswith("\n") else "\n", file=sys.stderr)
        sys.stderr.flush()
    if check and done.returncode != 0:
        raise LessonMismatch(f"✗ `{command}` exited {done.returncode}")
    return Shown(done.stdout)


def terminal_task(pid: int, commands: Sequence[str], minutes: float = 0) -> None:
    """Print a task for JupyterLab's terminal: the commands, with ``{pid}`` filled in."""
    head = t(
        "Terminal task: open a terminal (File > New > Terminal) and run:",
        "터미널 과제: 터미널을 열고(File > New > Terminal) 다음을 실행하세요:",
    )
    print(pick(head))
    for command in commands:
        print(f"    {command.format(pid=pid)}")
    if minutes:
        until = t(
            f"(the container runs for {minutes:.0f} minutes, or until you run the next cell)",
            f"(컨테이너는 {minutes:.0f}분 동안, 또는 다음 셀을 실행할 때까지 실행됩니다)",
        )
        print(pick(until))
