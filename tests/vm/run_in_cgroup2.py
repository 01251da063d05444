#!/usr/bin/env python3
"""Run chosen pytest tests inside a pure cgroup-v2 kernel, booted with virtme-ng.

Why: CI (Debian 12) runs a hybrid cgroup v1/v2 host, but learners' VMs are pure cgroup v2, so
cgroup code must also be tested against a v2 kernel. virtme-ng boots the distro kernel from
/boot on a read-only, copy-on-write view of this machine's own filesystem, so the guest runs
the same interpreter, venv and checkout as the host: no image to build, nothing to install.
There is no KVM on CI, so the guest always runs under software emulation (TCG), where Python
is some 50 times slower than on the host: keep what runs inside small.

    python tests/vm/run_in_cgroup2.py [--kernel PATH] [--timeout S] [--json PATH] [PYTEST ARGS]

Harness options come first; everything after them (or after ``--``) goes to pytest, which runs
in the guest as ``<this python> -m pytest -p no:cacheprovider -o addopts= ARGS`` with the repo
as its working directory (relative paths are relative to the repo root), LABKIT_IN_VM=1, and
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 (importing nbval and Jupyter alone costs a minute under TCG;
name a plugin with ``-p NAME`` to load it). The exit status is the guest pytest's, or
EXIT_TIMEOUT / EXIT_VM_FAILED / EXIT_SETUP below. The JSON result goes to DEFAULT_RESULT.

Importable: ``run_in_cgroup2(["tests/in_vm"])`` returns the result as a dict.
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
#: Where the command line writes its JSON result unless told otherwise (overwritten each run).
DEFAULT_RESULT = Path("/run/labkit/vm/cgroup2-result.json")

GUEST_MEMORY = "1G"
GUEST_CPUS = 2
#: No v1 hierarchy can be mounted at all, so the guest is pure v2 whatever its init does.
KERNEL_ARGS = ("cgroup_no_v1=all", "systemd.unified_cgroup_hierarchy=1")
#: Under TCG, udev loading drivers for qemu's emulated PC hardware (SATA, CD-ROM, i2c, kvm,
#: SIMD crypto with its self-tests) is most of the boot: skipping them cut the time to the
#: guest script from 67-74 s to 34-43 s on a busy CI host. Modules a test asks for (veth,
#: nf_tables, ...) still load on demand.
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
EXIT_VM_FAILED = 70  # the VM did not boot, or pytest never finished in it (EX_SOFTWARE)
EXIT_TIMEOUT = 124  # like timeout(1)

# What runs in the guest. Plain sh, not Python: each Python start costs seconds under TCG.
# Every fact goes to its own file in the shared directory, so a guest that dies half way
# still tells the host how far it got.
_GUEST_SCRIPT = """\
out={out}
cut -d' ' -f1 /proc/uptime > "$out/boot_seconds"
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    mount -t cgroup2 cgroup2 /sys/fs/cgroup && echo yes > "$out/mounted_cgroup2"
fi
stat -fc %T /sys/fs/cgroup > "$out/cgroup_fs"
uname -r > "$out/kernel_release"
cat /sys/fs/cgroup/cgroup.controllers > "$out/controllers"
cat /proc/cmdline > "$out/cmdline"
if [ "$(cat "$out/cgroup_fs")" != cgroup2fs ]; then
    echo "[guest] /sys/fs/cgroup is $(cat "$out/cgroup_fs"), not cgroup2fs; not running pytest"
    exit {vm_failed}
fi
cd {cwd} || exit {vm_failed}
export LABKIT_IN_VM=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
{autoload}
echo "[guest] $(uname -r), /sys/fs/cgroup is cgroup2fs; in $PWD:" {argv_shown}
{{ {argv}; echo $? > "$out/exit_code"; }} 2>&1 | tee "$out/pytest.log"
cat /proc/meminfo > "$out/meminfo"
exit "$(cat "$out/exit_code")"
"""

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


def cgroup_fs_type(path: str = "/sys/fs/cgroup") -> str:
    """``stat -fc %T``: cgroup2fs on pure v2, tmpfs on hybrid/v1 hosts."""
    done = subprocess.run(["stat", "-fc", "%T", path], capture_output=True, text=True)
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


def _read(shared: Path, name: str) -> str | None:
    path = shared / name
    return path.read_text(errors="replace").strip() if path.is_file() else None


def _guest_facts(shared: Path) -> dict[str, Any]:
    """What the guest script left in the shared directory, as result fields."""
    facts: dict[str, Any] = {
        "cgroup_fs": _read(shared, "cgroup_fs"),
        "kernel_release": _read(shared, "kernel_release"),
        "controllers": (_read(shared, "controllers") or "").split(),
        "guest_mounted_cgroup2": _read(shared, "mounted_cgroup2") == "yes",
        "guest_cmdline": _read(shared, "cmdline"),
        "output": _read(shared, "pytest.log") or "",
    }
    boot = _read(shared, "boot_seconds")
    facts["guest_boot_seconds"] = float(boot) if boot else None
    code = _read(shared, "exit_code")
    facts["exit_code"] = int(code) if code and code.lstrip("-").isdigit() else None
    facts["outcomes"] = parse_outcomes(facts["output"]) if facts["exit_code"] is not None else {}
    meminfo = _read(shared, "meminfo")
    if meminfo:
        kib = {
            k: int(v.split()[0]) for k, _, v in (ln.partition(":") for ln in meminfo.split("\n"))
        }
        facts["guest_mem_total_mb"] = kib["MemTotal"] // 1024
        facts["guest_mem_used_mb"] = (kib["MemTotal"] - kib["MemAvailable"]) // 1024
    return facts


def run_in_cgroup2(
    pytest_args: list[str],
    timeout: float = 600,
    *,
    kernel: str | os.PathLike[str] | None = None,
    result_path: str | os.PathLike[str] | None = None,
    echo: bool = True,
    autoload_plugins: bool = False,
) -> dict[str, Any]:
    """Boot a cgroup-v2 kernel, run pytest with ``pytest_args`` inside, return the result.

    Raises HarnessError when a prerequisite is missing. A VM that fails to boot or times out
    is reported in the result: ``status`` is then EXIT_VM_FAILED or EXIT_TIMEOUT and ``error``
    says why; otherwise ``status`` is the guest pytest's exit code.
    """
    started = time.monotonic()
    kernel_path = Path(kernel) if kernel else find_kernel()
    if not kernel_path.is_file():
        raise HarnessError(
            f"no kernel image at {kernel_path}", "name a /boot/vmlinuz-* file, or omit --kernel"
        )
    vng = find_vng()
    check_tools()
    args = [_guest_path(a) for a in pytest_args]
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", *args]

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
        "pytest_argv": argv,
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
        script = _GUEST_SCRIPT.format(
            out=shlex.quote(str(shared)),
            cwd=shlex.quote(str(REPO)),
            vm_failed=EXIT_VM_FAILED,
            autoload="" if autoload_plugins else "export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1",
            argv=shlex.join(argv),
            argv_shown=shlex.quote(shlex.join(argv)),
        )
        (shared / "guest.sh").write_text(script)
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
        cmd += ["--exec", shlex.join(["sh", str(shared / "guest.sh")])]
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
        if not timed_out:  # a killed qemu is reaped by init, which keeps its rusage
            # Linux reports ru_maxrss in KiB; the largest process of the tree is qemu.
            result["vm_max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)

        result.update(_guest_facts(shared))
        if timed_out:
            result["status"] = EXIT_TIMEOUT
            result["error"] = f"the VM did not finish within {timeout:g} s and was killed"
        elif result["exit_code"] is None:
            last = "".join(tail).strip() or "(no output)"
            result["error"] = (
                f"the VM failed before pytest finished (vng exit status {proc.returncode}); "
                f"last output:\n{last}"
            )
        else:
            result["status"] = result["exit_code"]
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
    valued = ("--kernel", "--timeout", "--json")
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return options, argv[i + 1 :]
        if arg in ("-h", "--help", "--autoload-plugins"):
            options[arg.lstrip("-")] = ""
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name not in valued:
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
    raise KeyboardInterrupt  # so the finally blocks stop the VM and remove the temp dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "run_in_cgroup2"
    try:
        options, pytest_args = _split_argv(argv)
        if "help" in options or "h" in options:
            print(__doc__.strip())
            return 0
        timeout = float(options.get("timeout", 600))
        result_path = Path(options.get("json", DEFAULT_RESULT))
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
        result = run_in_cgroup2(
            pytest_args,
            timeout,
            kernel=options.get("kernel"),
            result_path=result_path,
            autoload_plugins="autoload-plugins" in options,
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
        f" VM max RSS {result['vm_max_rss_mb']} MiB; result in {result_path}",
        file=sys.stderr,
    )
    return result["status"]


if __name__ == "__main__":
    sys.exit(main())
