#!/usr/bin/env python3
"""Run chosen pytest tests inside a pure cgroup-v2 kernel, booted with virtme-ng.

Why: CI (Debian 12) runs a hybrid cgroup v1/v2 host, but learners' VMs are pure cgroup v2, so
cgroup code must also be tested against a v2 kernel. virtme-ng boots the distro kernel from
/boot on a read-only, copy-on-write view of this machine's own filesystem, so the guest runs
the same interpreter, venv and checkout as the host: no image to build, nothing to install.
There is no KVM on CI, so the guest always runs under software emulation (TCG): a smoke run
takes about a minute.

    python tests/vm/run_in_cgroup2.py [--kernel PATH] [--timeout S] [--json PATH] [PYTEST ARGS]

Harness options come first; everything after them (or after ``--``) goes to pytest, which runs
in the guest as ``<this python> -m pytest -p no:cacheprovider -o addopts= ARGS`` with the repo
as its working directory (relative paths are relative to the repo root). The exit status is
the guest pytest's, or EXIT_TIMEOUT / EXIT_VM_FAILED / EXIT_SETUP below.

Importable: ``run_in_cgroup2(["tests/in_vm"])`` returns the result as a dict.

Inside the guest this same file runs again as ``--guest DIR``: it makes sure cgroup2 is
mounted at /sys/fs/cgroup, runs pytest, and writes result.json into DIR, a host directory
shared read-write with the guest (the rest of the host filesystem is read-only there).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CGROUP_ROOT = "/sys/fs/cgroup"
#: Where the command line writes its JSON result unless told otherwise (overwritten each run).
DEFAULT_RESULT = Path("/run/labkit/vm/cgroup2-result.json")

GUEST_MEMORY = "1G"
GUEST_CPUS = 2
#: No v1 hierarchy can be mounted at all, so the guest is pure v2 whatever its init does.
KERNEL_ARGS = ("cgroup_no_v1=all", "systemd.unified_cgroup_hierarchy=1")
#: Under TCG, udev loading drivers for qemu's emulated PC hardware (SATA, CD-ROM, i2c, kvm,
#: SIMD crypto with its self-tests) is most of the boot: skipping them cut the time to the
#: guest script from 67-74 s to 34-43 s here. Modules a test asks for (veth, nf_tables, ...)
#: still load on demand.
FAST_BOOT_ARGS = (
    "cryptomgr.notests",
    "modprobe.blacklist="
    + ",".join(
        [
            *("ahci", "libahci", "libata", "sr_mod", "cdrom", "sg"),
            *("i2c_i801", "i2c_smbus", "lpc_ich", "iTCO_wdt", "iTCO_vendor_support"),
            *("intel_pmc_bxt", "pcspkr", "psmouse", "serio_raw", "evdev", "qemu_fw_cfg"),
            *("kvm", "kvm_amd", "kvm_intel", "irqbypass", "ccp"),
            *("aesni_intel", "ghash_clmulni_intel", "crc32_pclmul", "crct10dif_pclmul"),
            *("sha1_ssse3", "sha256_ssse3", "sha512_ssse3"),
        ]
    ),
)
#: Shows in the qemu command line, so a stray VM is visible to tests/leakcheck.py.
VM_NAME = "labkit-vm"

EXIT_SETUP = 69  # a prerequisite is missing (EX_UNAVAILABLE)
EXIT_VM_FAILED = 70  # the VM did not boot, or the guest side did not report (EX_SOFTWARE)
EXIT_TIMEOUT = 124  # like timeout(1)

_OUTCOME_NOUNS = {
    "passed": "passed",
    "failed": "failed",
    "error": "errors",
    "errors": "errors",
    "skipped": "skipped",
    "xfailed": "xfailed",
    "xpassed": "xpassed",
    "deselected": "deselected",
    "warning": "warnings",
    "warnings": "warnings",
    "rerun": "rerun",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class HarnessError(Exception):
    """Something the user must install or fix before a VM can boot."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem} (fix: {self.fix})"


# --------------------------------------------------------------------------- shared helpers


def cgroup_fs_type(path: str = CGROUP_ROOT) -> str:
    """``stat -fc %T``: cgroup2fs on pure v2, tmpfs on hybrid/v1 hosts."""
    done = subprocess.run(["stat", "-fc", "%T", path], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else f"unknown ({done.stderr.strip()})"


def parse_outcomes(output: str) -> dict[str, int]:
    """Outcome counts from pytest's final summary line, e.g. ``3 passed, 1 failed in 2.1s``."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for line in reversed(_ANSI.sub("", output).splitlines()):
        if not re.search(r"\bin [\d.]+s\b", line) and "no tests ran" not in line:
            continue
        found = re.findall(r"(\d+) (\w+)", line)
        if "no tests ran" not in line and not any(n in _OUTCOME_NOUNS for _, n in found):
            continue
        for number, noun in found:
            if noun in _OUTCOME_NOUNS:
                counts[_OUTCOME_NOUNS[noun]] = int(number)
        break
    return counts


# --------------------------------------------------------------------------- host side


def _version_key(release: str) -> list[tuple[int, str]]:
    return [(int(t), "") if t.isdigit() else (-1, t) for t in re.split(r"[.\-+~_]", release)]


def find_kernel() -> Path:
    """The newest distro kernel in /boot: one shipped with its modules and config.

    The guest mounts the host filesystem over 9p, which a distro kernel has as modules, so a
    kernel without /lib/modules/<release> could not boot this way.
    """
    found = []
    for image in Path("/boot").glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / release / "modules.dep"
        config = Path("/boot") / f"config-{release}"
        if modules.is_file() and config.is_file() and os.access(image, os.R_OK):
            found.append((_version_key(release), image))
    if not found:
        raise HarnessError(
            "no distro kernel with modules in /boot/vmlinuz-*", "apt-get install linux-image-amd64"
        )
    return max(found)[1]


def find_vng() -> Path:
    """vng of this interpreter's venv first: the venv's bin need not be on PATH."""
    here = Path(sys.executable).parent / "vng"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which("vng")
    if found is None:
        raise HarnessError("virtme-ng (vng) is not installed", "pip install virtme-ng")
    return Path(found)


def check_tools() -> None:
    """qemu and busybox, which vng needs but does not check for up front."""
    machine = os.uname().machine
    if shutil.which(f"qemu-system-{machine}") is None:
        package = "qemu-system-x86" if machine == "x86_64" else "qemu-system"
        raise HarnessError(f"qemu-system-{machine} is not installed", f"apt-get install {package}")
    if not any(shutil.which(b) for b in ("busybox-static", "busybox.static", "busybox")):
        # virtme-ng builds the guest's initramfs out of busybox.
        raise HarnessError("busybox is not installed", "apt-get install busybox-static")


def _guest_path(arg: str) -> str:
    """Repo-relative stays as is; a path that only exists from the caller's cwd becomes absolute."""
    if arg.startswith("-"):
        return arg
    path, sep, rest = arg.partition("::")
    if not path or os.path.isabs(path) or (REPO / path).exists() or not Path(path).exists():
        return arg
    return str(Path(path).resolve()) + sep + rest


def _kill_group(pgid: int, grace: float = 5.0) -> None:
    """End vng and everything it started (virtme-run, qemu): they share one process group."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _pump(stream: Any, tail: collections.deque[str], echo: bool) -> None:
    """Copy the VM's console (guest stdout/stderr) to ours as it comes, keeping the tail."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        tail.append(line)
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()


def run_in_cgroup2(
    pytest_args: list[str],
    timeout: float = 600,
    *,
    kernel: str | os.PathLike[str] | None = None,
    result_path: str | os.PathLike[str] | None = None,
    echo: bool = True,
) -> dict[str, Any]:
    """Boot a cgroup-v2 kernel, run pytest with ``pytest_args`` inside, return the result.

    Raises HarnessError when a prerequisite is missing. A VM that fails to boot or times out
    is reported in the result: ``status`` is then EXIT_VM_FAILED or EXIT_TIMEOUT and ``error``
    says why; otherwise ``status`` is the guest pytest's exit code.
    """
    started = time.monotonic()
    kernel_path = Path(kernel) if kernel else find_kernel()
    if not kernel_path.is_file():
        raise HarnessError(f"no kernel image at {kernel_path}", "apt-get install linux-image-amd64")
    vng = find_vng()
    check_tools()
    args = [_guest_path(a) for a in pytest_args]

    result: dict[str, Any] = {
        "status": EXIT_VM_FAILED,
        "error": None,
        "exit_code": None,
        "outcomes": {},
        "cgroup_fs": None,
        "kernel_release": None,
        "controllers": [],
        "host_cgroup_fs": cgroup_fs_type(),
        "host_kernel_release": os.uname().release,
        "kernel": str(kernel_path),
        "pytest_args": args,
        "seconds": None,
        "vm_max_rss_mb": None,
        "output": "",
    }
    work = Path(tempfile.mkdtemp(prefix="labkit-vm-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        shared = work / "out"  # read-write in the guest, at the same path
        scratch = work / "tmp"  # vng's own temp files, so a killed run leaves none in /tmp
        shared.mkdir()
        scratch.mkdir()
        request = {"python": sys.executable, "cwd": str(REPO), "pytest_args": args}
        (shared / "request.json").write_text(json.dumps(request))
        guest_cmd = shlex.join(
            [sys.executable, str(Path(__file__).resolve()), "--guest", str(shared)]
        )
        cmd = [
            str(vng),
            "--run",
            str(kernel_path),
            "--disable-kvm",  # no usable KVM on CI; TCG everywhere keeps runs comparable
            "--force-9p",  # virtiofsd cannot start here; skips its ~3 s of retries
            "--user",
            "root",
            "--name",
            VM_NAME,
            "--memory",
            GUEST_MEMORY,
            "--cpus",
            str(GUEST_CPUS),
            "--cwd",
            str(REPO),
            "--rwdir",
            str(shared),
        ]
        for karg in (*KERNEL_ARGS, *FAST_BOOT_ARGS):
            cmd += ["--append", karg]
        cmd += ["--exec", guest_cmd]
        env = dict(os.environ, TMPDIR=str(scratch))
        # vng runs virtme-run through the shell, so its directory must be on PATH.
        env["PATH"] = os.pathsep.join([str(vng.parent), env.get("PATH", os.defpath)])

        tail: collections.deque[str] = collections.deque(maxlen=40)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,  # its own process group, to kill the lot on timeout
        )
        reader = threading.Thread(target=_pump, args=(proc.stdout, tail, echo), daemon=True)
        reader.start()
        deadline = started + timeout
        timed_out = False
        while True:
            pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                _kill_group(proc.pid)
                pid, wait_status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
        _kill_group(proc.pid)  # anything vng left running
        reader.join(timeout=10)
        # Linux reports ru_maxrss in KiB; the largest process of the tree is qemu.
        result["vm_max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)

        guest_file = shared / "result.json"
        guest = json.loads(guest_file.read_text()) if guest_file.is_file() else {}
        result.update({k: v for k, v in guest.items() if k in result or k.startswith("guest_")})
        if timed_out:
            result["status"] = EXIT_TIMEOUT
            result["error"] = f"the VM did not finish within {timeout:g} s and was killed"
        elif guest.get("exit_code") is None:
            why = guest.get("guest_error") or f"vng exited with status {proc.returncode}"
            last = "".join(tail).strip()
            result["error"] = f"the VM failed before pytest finished: {why}\n{last}"
        else:
            result["status"] = guest["exit_code"]
    finally:
        if proc is not None:
            if proc.returncode is None:  # interrupted (Ctrl-C, SIGTERM) while waiting
                _kill_group(proc.pid)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(work, ignore_errors=True)
        result["seconds"] = round(time.monotonic() - started, 1)
    if result_path is not None:
        out = Path(result_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _split_argv(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Harness options up front, the rest verbatim for pytest (whose options we don't know)."""
    options: dict[str, str] = {}
    known = ("--kernel", "--timeout", "--json", "--guest")
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return options, argv[i + 1 :]
        if arg in ("-h", "--help"):
            options["help"] = ""
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name not in known:
            break
        if not eq:
            if i + 1 >= len(argv):
                raise HarnessError(f"{name} needs a value", f"{name} VALUE")
            value = argv[i + 1]
            i += 1
        options[name.lstrip("-")] = value
        i += 1
    return options, argv[i:]


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so the finally blocks kill the VM and remove the temp dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "run_in_cgroup2"
    try:
        options, pytest_args = _split_argv(argv)
        if "guest" in options:
            return guest_main(Path(options["guest"]))
        if "help" in options:
            print(__doc__.strip())
            return 0
        timeout = float(options.get("timeout", 600))
        result_path = Path(options.get("json", DEFAULT_RESULT))
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
        result = run_in_cgroup2(
            pytest_args, timeout, kernel=options.get("kernel"), result_path=result_path
        )
    except HarnessError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_SETUP
    except ValueError as err:
        print(f"{prog}: bad option value: {err} (fix: --timeout SECONDS)", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the VM was stopped", file=sys.stderr)
        return 130
    if result["error"]:
        print(f"{prog}: {result['error']}", file=sys.stderr)
    counts = ", ".join(f"{n} {k}" for k, n in result["outcomes"].items() if n) or "no outcomes"
    print(
        f"{prog}: guest {result['kernel_release']} with /sys/fs/cgroup={result['cgroup_fs']}"
        f" (host: {result['host_cgroup_fs']}); pytest exit {result['exit_code']} ({counts});"
        f" {result['seconds']} s (guest booted in {result.get('guest_boot_seconds')} s),"
        f" VM max RSS {result['vm_max_rss_mb']} MiB;"
        f" result in {result_path}",
        file=sys.stderr,
    )
    return result["status"]


# --------------------------------------------------------------------------- guest side


def _ensure_cgroup2() -> bool:
    """Mount cgroup2 at /sys/fs/cgroup unless the guest's init already did; True if we did."""
    if cgroup_fs_type() == "cgroup2fs":
        return False
    subprocess.run(["mount", "-t", "cgroup2", "cgroup2", CGROUP_ROOT], check=True)
    return True


def _meminfo_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0])
    return fields


def guest_main(shared: Path) -> int:
    """Runs inside the VM: cgroup2 at /sys/fs/cgroup, then pytest, then result.json."""
    request = json.loads((shared / "request.json").read_text())
    # Seconds since the guest kernel started: how long the boot took.
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    result: dict[str, Any] = {"exit_code": None, "guest_boot_seconds": uptime}
    try:
        result["guest_mounted_cgroup2"] = _ensure_cgroup2()
        result["cgroup_fs"] = cgroup_fs_type()
        result["kernel_release"] = os.uname().release
        result["controllers"] = Path(CGROUP_ROOT, "cgroup.controllers").read_text().split()
        result["guest_cmdline"] = Path("/proc/cmdline").read_text().strip()
        if result["cgroup_fs"] != "cgroup2fs":
            raise RuntimeError(f"{CGROUP_ROOT} is {result['cgroup_fs']}, not cgroup2fs")
        argv = [request["python"], "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts="]
        argv += request["pytest_args"]
        env = dict(
            os.environ,
            LABKIT_IN_VM="1",  # lets tests/in_vm collect (see tests/in_vm/conftest.py)
            PYTHONDONTWRITEBYTECODE="1",  # the checkout is read-only in the guest
            PYTHONUNBUFFERED="1",
            TMPDIR="/tmp",
        )
        print(f"[guest] cwd {request['cwd']}: {shlex.join(argv)}", flush=True)
        output = []
        with subprocess.Popen(
            argv, cwd=request["cwd"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as proc:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                sys.stdout.buffer.write(raw)
                sys.stdout.buffer.flush()
                output.append(raw.decode(errors="replace"))
        result["output"] = "".join(output)
        result["outcomes"] = parse_outcomes(result["output"])
        result["exit_code"] = proc.returncode
    except Exception as err:  # reported to the host, which has no other way to see it
        result["guest_error"] = f"{type(err).__name__}: {err}"
        print(f"[guest] {result['guest_error']}", file=sys.stderr, flush=True)
    finally:
        mem = _meminfo_kib()
        result["guest_mem_total_mb"] = mem["MemTotal"] // 1024
        result["guest_mem_used_mb"] = (mem["MemTotal"] - mem["MemAvailable"]) // 1024
        partial = shared / "result.json.part"
        partial.write_text(json.dumps(result))
        partial.rename(shared / "result.json")
    return EXIT_VM_FAILED if result["exit_code"] is None else result["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
