"""Run a learner's code as root in a fresh, single-threaded child process, from a notebook cell.

The Jupyter kernel is multithreaded and has to keep working after every cell, so it must never
``unshare``, ``setns``, ``chroot`` or ``pivot_root`` itself. A learner who wants to try those
calls gets a fresh interpreter for each try (``labkit.lab._child`` runs there), with labkit's
primitives importable (``from labkit.kernel import namespaces, syscalls, rootfs``):

* its output is shown as it comes, not when it ends;
* an error is shown as the kernel's errno and labkit's fix, with the learner's own line, never
  as a traceback through this module;
* nothing it starts outlives it, and it is stopped after ``timeout`` seconds.

From a cell: ``%%labkit_child`` (``%load_ext labkit.lab``, see ``labkit.lab.magic``), or
``lab.run_child(code)``. Checkers use ``run`` with a *harness*: their own code that runs after
the learner's in the same process and ``report``-s what it finds.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.lab.i18n import label

#: Kinds of scratch namespace a child can start in (a user namespace needs id maps: not here).
SANDBOX_KINDS = frozenset({"net", "mnt", "uts", "ipc", "cgroup"})
#: The name the learner's code has in error messages and in the child's frames.
LEARNER_FILE = "<your code>"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")  # as in labkit.errors
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
_BOOT = (
    f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
    "from labkit.lab import _child; _child.main(sys.argv)"
)


@dataclass
class ChildRun:
    """What a child process did: its output, its reports, and its error if it raised."""

    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    reports: list[dict] = field(default_factory=list)
    error: dict | None = None
    finished: bool = False  # it reached the end itself (False: exec'd, killed or stopped)
    timed_out: bool = False
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.error is None and not self.timed_out

    def value(self, key: str, default: Any = None) -> Any:
        """The last value reported under ``key``."""
        for fields in reversed(self.reports):
            if key in fields:
                return fields[key]
        return default

    def explain(self) -> str:
        """The error (or timeout) in the learner's terms and language; "" if it went well."""
        if self.timed_out:
            return label("timeout", seconds=self.seconds)
        if self.error:
            return format_error(self.error)
        if self.returncode not in (0, None):
            return f"{label('child_failed')} (exit {self.returncode})"
        return ""


def format_error(error: Mapping[str, Any]) -> str:
    """An error from the child: what the kernel said (errno), where in the learner's code,
    and labkit's fix, with fixes worded as the CLI words them (``--rootfs``, ``labkit doctor``)."""
    from labkit.cli import WORDS  # the notebooks drive the CLI too, so they share its words

    kind = error.get("type", "Error")
    errname = error.get("errname")
    head = f"{kind} [errno {errname}]" if errname else kind
    where = error.get("where") or []
    if where:
        last = where[-1]
        head += f" {label('your_line')} {last['line']}: {last.get('text', '')}".rstrip()
    message = error.get("problem") or error.get("message", "")
    lines = [head, f"  {message}"]
    if error.get("stage"):
        lines[-1] += f"  (labkit stage: {error['stage']})"
    if error.get("fix"):
        fix = _PLACEHOLDER.sub(lambda m: WORDS.get(m[1], m[1]), error["fix"])
        lines.append(f"  {label('fix')}: {fix}")
    return "\n".join(lines)


def run(
    source: str,
    *,
    harness: str = "",
    prelude: str = "",
    values: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
    echo: bool = True,
    cwd: str | None = None,
    sandbox: Iterable[str] = (),
) -> ChildRun:
    """Run ``prelude``, the learner's ``source`` and a checker's ``harness`` in one fresh child.

    ``values`` (JSON-able; paths become strings) are defined as variables before any code runs.
    With ``echo`` the child's output is written to this process's stdout/stderr as it arrives
    (in a notebook: under the cell). Errors are reported, never raised. ``sandbox`` names
    namespace kinds (``net``, ``mnt``, ``uts``, ``ipc``, ``cgroup``) the child gets scratch ones
    of before any code runs: where a checker runs an answer that would otherwise change the
    host (a firewall rule, a mount), it passes them.
    """
    kinds = sorted(sandbox)
    if not set(kinds) <= SANDBOX_KINDS:
        raise ValueError(f"sandbox kinds are {sorted(SANDBOX_KINDS)}, not {kinds}")
    parts = [{"source": prelude, "filename": "<setup>"}] if prelude else []
    parts.append({"source": source, "filename": LEARNER_FILE, "learner": True})
    if harness:
        parts.append({"source": harness, "filename": "<checker>"})
    message = {"parts": parts, "values": dict(values or {}), "sandbox": kinds}
    request = json.dumps(message, default=str).encode()

    request_r, request_w = os.pipe()
    report_r, report_w = os.pipe()
    argv = [sys.executable, "-I", "-u", "-c", _BOOT, str(request_r), str(report_w)]
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*argv, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(request_r, report_w),
            start_new_session=True,  # its own process group: a timeout kills all of it
            cwd=cwd,
        )
    except BaseException:
        os.close(request_w)
        os.close(report_r)
        raise
    finally:
        os.close(request_r)
        os.close(report_w)
    try:
        with os.fdopen(request_w, "wb") as f:
            f.write(request)
    except BrokenPipeError:
        pass  # it died before reading: the exit status and stderr will say why
    result = ChildRun()
    try:
        _pump(proc, report_r, result, started + timeout, echo)
    finally:
        os.close(report_r)
    result.returncode = proc.returncode
    result.seconds = time.monotonic() - started
    return result


def _pump(proc: subprocess.Popen, report_fd: int, result: ChildRun, deadline: float, echo: bool):
    """Copy the child's output as it comes and collect its reports, until it is gone."""
    assert proc.stdout is not None and proc.stderr is not None
    decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("o", "e", "r")}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "o")
    sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "e")
    sel.register(report_fd, selectors.EVENT_READ, "r")
    pending = ""
    stop_at: float | None = None
    exited_at: float | None = None
    while sel.get_map():
        try:
            now = time.monotonic()
            if stop_at is None and now > deadline:
                result.timed_out = True
                stop_at = _stop(proc)
            if stop_at is not None and now > stop_at:
                _kill(proc)
                stop_at = float("inf")
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now > exited_at + 2:
                break  # something it left behind holds the pipes open: stop reading
            events = sel.select(timeout=0.1)
        except KeyboardInterrupt:  # the notebook's stop button: stop the child, not the kernel
            result.interrupted = True
            stop_at = _stop(proc)
            continue
        for key, _ in events:
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fd)
            text = decoders[key.data].decode(chunk, final=not chunk)
            if key.data == "r":
                pending += text
                *lines, pending = pending.split("\n")
                for line in filter(None, lines):
                    _take(json.loads(line), result)
                continue
            if key.data == "o":
                result.stdout += text
            else:
                result.stderr += text
            if echo and text:
                stream = sys.stdout if key.data == "o" else sys.stderr
                stream.write(text)
                stream.flush()
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
    proc.wait()


def _take(message: dict, result: ChildRun) -> None:
    if "report" in message:
        result.reports.append(message["report"])
    elif "error" in message:
        result.error = message["error"]
    elif "done" in message:
        result.finished = True


def _stop(proc: subprocess.Popen) -> float:
    """Ask the child to stop (it then kills what it started); SIGKILL follows in 3 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    return time.monotonic() + 3.0


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
