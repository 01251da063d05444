"""The inside of a learner's child process (started by ``labkit.lab.child``; never imported by
the Jupyter kernel itself).

A fresh interpreter is the only safe place for a learner's namespace experiments: it has one
thread (so ``unshare``, ``setns``, ``chroot`` and ``pivot_root`` behave as the man pages say)
and nothing else depends on it. This module runs the learner's code there and reports back
over a pipe, as JSON lines, what the notebook needs to explain the result:

* ``{"report": {...}}`` for each ``report(**fields)`` the code (or a checker's harness) calls;
* ``{"error": {...}}`` if it raised: the errno and its name for an ``OSError``, the problem
  and fix for a ``LabkitError``, the fix of the labkit stage that failed, and only the frames
  of the learner's own code (the plumbing around it is of no use to them);
* ``{"done": status}`` at the end. Its absence means the code replaced the process (exec).

With a ``sandbox`` (kinds such as ``net``, ``mnt``) the code starts in scratch namespaces of
those kinds instead of the host's.

Whatever the code started and left running is killed before the process exits: it is a
child subreaper, so orphans come back to it instead of escaping to init.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import linecache
import os
import signal
import sys
import time
import traceback
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

#: What the learner's code finds already imported (documented in docs/exercises.md).
PRELUDE = "import errno, os, subprocess, sys, time\nfrom pathlib import Path\n"

_report_file: Any = None


def report(**fields: Any) -> None:
    """Send values back to the notebook (any JSON-able value; others as their repr)."""
    _send({"report": fields})


def _send(message: dict) -> None:
    if _report_file is not None:
        _report_file.write(json.dumps(message, default=repr) + "\n")
        _report_file.flush()


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by the notebook (signal {signum})")


def _stage_of(tb: Any) -> tuple[str, str] | None:
    """The innermost labkit stage (``@stage(name, fix)``) on the traceback, if any."""
    found = None
    while tb is not None:
        code = tb.tb_frame.f_code
        func = tb.tb_frame.f_globals.get(code.co_name)
        if getattr(func, "__code__", None) is code and hasattr(func, "__stage__"):
            found = func.__stage__
        tb = tb.tb_next
    return found


def describe(exc: BaseException, learner_files: set[str]) -> dict:
    """What went wrong, in the terms a learner can use: no frames but their own."""
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc), "where": []}
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename in learner_files:
            where = {
                "line": frame.lineno,
                "text": (frame.line or "").strip(),
                "file": frame.filename,
            }
            info["where"].append(where)
    if isinstance(exc, SyntaxError):
        info["message"] = exc.msg
        if exc.filename in learner_files:
            info["where"] = [{"line": exc.lineno, "text": (exc.text or "").strip()}]
    if isinstance(exc, OSError) and exc.errno:
        info.update(errno=exc.errno, errname=errno.errorcode.get(exc.errno, str(exc.errno)))
        info.update(strerror=exc.strerror, filename=exc.filename)
        if exc.strerror:  # without Python's "[Errno 2]" prefix; labkit's text names the errno
            where = (
                f": {exc.filename}"
                if exc.filename and str(exc.filename) not in exc.strerror
                else ""
            )
            info["message"] = f"{exc.strerror}{where}"
    problem, fix = getattr(exc, "problem", None), getattr(exc, "fix", None)
    if isinstance(problem, str) and isinstance(fix, str):  # a LabkitError
        info.update(problem=problem, fix=fix)
    stage = _stage_of(exc.__traceback__)
    if stage:
        info["stage"], stage_fix = stage
        info.setdefault("fix", stage_fix)
    return info


def _children(proc_fd: int, me: int) -> list[int]:
    """PIDs whose parent is ``me``, read through a /proc opened before any chroot."""
    kids = []
    for name in os.listdir(proc_fd):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"{name}/stat", os.O_RDONLY, dir_fd=proc_fd)
            try:
                stat = os.read(fd, 4096).decode(errors="replace")
            finally:
                os.close(fd)
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(me) and fields[0] != "Z":
            kids.append(int(name))
    return kids


def _reap(proc_fd: int) -> None:
    """Kill and reap whatever the learner's code left running (we are their subreaper)."""
    me = os.getpid()
    for _ in range(100):
        kids = _children(proc_fd, me)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if not kids:
            return
        time.sleep(0.01)


def _sandbox(kinds: list[str]) -> None:
    """Scratch namespaces for the code to play in (a checker's choice: a learner's firewall
    rules go into a network namespace of their own, never the host's tables)."""
    if not kinds:
        return
    from labkit.kernel import namespaces, rootfs

    namespaces.unshare(kinds)
    if "mnt" in kinds:
        rootfs.make_mounts_private()  # and nothing mounted here reaches the host


def main(argv: list[str]) -> None:
    """``python -I -u -c BOOT REQUEST_FD REPORT_FD PARENT_PID``: run the request, report."""
    global _report_file
    request_fd, report_fd, parent = int(argv[1]), int(argv[2]), int(argv[3])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the notebook went: so do we
    if os.getppid() != parent:
        os._exit(1)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    with os.fdopen(request_fd, "rb") as f:
        request = json.loads(f.read())
    os.set_inheritable(report_fd, False)
    _report_file = os.fdopen(report_fd, "w")
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    signal.signal(signal.SIGTERM, _stop)

    namespace: dict[str, Any] = {"__name__": "__main__", "report": report}
    exec(PRELUDE, namespace)
    namespace.update(request.get("values", {}))
    learner = {p["filename"] for p in request["parts"] if p.get("learner")}
    status = 0
    try:
        _sandbox(request.get("sandbox") or [])
        for part in request["parts"]:
            source, filename = part["source"], part["filename"]
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            exec(compile(source, filename, "exec"), namespace)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the learner's code may raise anything; report it, no traceback
        _send({"error": describe(exc, learner)})
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _reap(proc_fd)
    _send({"done": status})
    os._exit(status)
