"""The learner's child process (labkit.lab.child): fresh and single-threaded, output as it comes,
errors as errno and fix with the learner's line, nothing left running, stopped on time."""

from __future__ import annotations

import os
import time
from pathlib import Path

from labkit.lab import child


class Clock:
    """A stream that notes when each piece of output arrived."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> None:
        self.writes.append((time.monotonic(), text))

    def flush(self) -> None:
        pass


def test_output_is_shown_as_it_comes(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr("sys.stdout", clock)
    run = child.run("print('first')\nimport time\ntime.sleep(1)\nprint('second')\n")
    end = time.monotonic()
    first = next(when for when, text in clock.writes if "first" in text)
    assert end - first > 0.8, "the first line arrived only when the child ended"
    assert run.ok and run.stdout == "first\nsecond\n"


def test_a_fresh_single_threaded_process_that_may_unshare() -> None:
    run = child.run(
        "from labkit.kernel import namespaces, syscalls\n"
        "report(threads=len(os.listdir('/proc/self/task')), pid=os.getpid())\n"
        "namespaces.unshare({'user', 'uts'})  # EINVAL in a multithreaded process\n"
        "report(uts=os.readlink('/proc/self/ns/uts'))\n",
        echo=False,
    )
    assert run.ok, run.explain()
    assert run.value("threads") == 1 and run.value("pid") != os.getpid()
    assert run.value("uts") != os.readlink("/proc/self/ns/uts")


def test_an_oserror_names_errno_line_and_fix_without_plumbing() -> None:
    run = child.run(
        "from pathlib import Path\nfrom labkit.kernel import rootfs\n\n"
        "rootfs.mount_proc(Path('/nonexistent-labkit-root'))\n",
        echo=False,
    )
    text = run.explain()
    assert not run.ok and run.error["errname"] == "ENOENT"
    assert "[errno ENOENT]" in text and "line 4: rootfs.mount_proc" in text
    assert "labkit stage: mount /proc" in text and "fix:" in text
    assert "Traceback" not in text and "_child.py" not in text and "rootfs.py" not in text


def test_a_labkit_error_is_worded_as_the_cli_words_fixes() -> None:
    run = child.run(
        "from labkit.errors import LabkitError\n"
        "raise LabkitError('no such rootfs', fix='pass a directory as {rootfs}; see {doctor}')\n",
        echo=False,
    )
    assert "no such rootfs" in run.explain()
    assert "fix: pass a directory as --rootfs; see labkit doctor" in run.explain()


def test_syntax_errors_and_exit_codes() -> None:
    bad = child.run("def f(:\n    pass\n", echo=False)
    assert bad.error["type"] == "SyntaxError" and "line 1" in bad.explain()
    code = child.run("import sys\nsys.exit(3)\n", echo=False)
    assert code.returncode == 3 and code.error is None and not code.ok
    execd = child.run("os.execv('/bin/echo', ['echo', 'replaced'])\n", echo=False)
    assert execd.returncode == 0 and execd.stdout == "replaced\n" and not execd.finished


def _running_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_nothing_it_started_outlives_it() -> None:
    marker = f"{300 + os.getpid() % 1000}.{time.time_ns() % 997}"
    run = child.run(
        f"subprocess.Popen(['sleep', '{marker}'])\n"
        f"subprocess.Popen(['setsid', 'sleep', '{marker}'])  # a session of its own\n"
        "time.sleep(0.2)\n",
        echo=False,
    )
    assert run.ok, run.explain()
    assert not _running_with(marker)


def test_stopped_after_the_timeout_with_what_it_started() -> None:
    marker = f"{400 + os.getpid() % 1000}.{time.time_ns() % 991}"
    start = time.monotonic()
    run = child.run(f"subprocess.Popen(['sleep', '{marker}'])\nwhile True: pass\n", timeout=1)
    assert run.timed_out and not run.ok and "1 s" in run.explain()
    assert time.monotonic() - start < 6
    assert not _running_with(marker)


def test_values_are_passed_in() -> None:
    run = child.run("report(path=ROOT, n=N + 1)\n", values={"ROOT": Path("/x"), "N": 1}, echo=False)
    assert run.value("path") == "/x" and run.value("n") == 2


def test_a_sandbox_keeps_the_host_untouched() -> None:
    """Answers that would change the host (a link, a mount) run in scratch namespaces."""
    link = f"lk-sbx{os.getpid() % 100000}"
    run = child.run(
        f"subprocess.run('ip link add {link} type veth peer name {link}p'.split(), check=True)\n"
        "subprocess.run(['mount', '-t', 'tmpfs', 'labkit-sandbox-test', '/mnt'], check=True)\n"
        "links = subprocess.run(['ip', '-o', 'link'], capture_output=True, text=True).stdout\n"
        "report(links=links,\n"
        "       mounted='labkit-sandbox-test' in open('/proc/self/mounts').read())\n",
        sandbox={"net", "mnt"},
        echo=False,
    )
    assert run.ok, run.explain()
    assert link in run.value("links") and run.value("mounted")
    assert not Path(f"/sys/class/net/{link}").exists()
    assert "labkit-sandbox-test" not in Path("/proc/self/mounts").read_text()
