"""Measurements for "why containers": what a VM has to carry, and how long things take to start.

A front end for notebook 00. It only reads files and times child processes (``true``, the
labkit CLI, Docker, QEMU), so it is safe to call from a Jupyter kernel: nothing here touches
the kernel process's namespaces or root.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from labkit.errors import LabkitError
from labkit.images.store import dir_size  # notebook 00 measures sizes as measure.dir_size

#: What the tiny VM's /init prints, so we know the guest really ran our program.
VM_MARKER = "labkit-vm: init ran"

#: The kernel's last line before QEMU exits; its timestamp is the guest's own uptime.
_POWER_DOWN = re.compile(r"\[\s*(\d+\.\d+)\]\s+reboot: Power down")

#: Terminal control sequences the firmware and kernel write to the serial console.
_ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])")

#: Per architecture: QEMU binary, machine options, serial console device.
_QEMU = {
    "x86_64": ("qemu-system-x86_64", [], "ttyS0"),
    "aarch64": ("qemu-system-aarch64", ["-machine", "virt"], "ttyAMA0"),
}


# -- sizes -----------------------------------------------------------------------------------


def _release_key(release: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", release)]


def vm_artifacts(boot: str = "/boot", modules_root: str = "/lib/modules") -> dict:
    """The kernel-side files a VM guest needs: kernel image, initrd and the kernel's modules.

    The running kernel's own files are preferred. Some hosts (a VM whose kernel was passed
    in from outside) have no /boot entry or modules for it; then the newest *installed*
    distro kernel is used, with the modules directory that matches that kernel.
    """
    running = platform.release()
    kernels = {p.name.removeprefix("vmlinuz-"): p for p in Path(boot).glob("vmlinuz-*")}
    if not kernels:
        raise LabkitError(
            f"no kernel image {boot}/vmlinuz-* on this host",
            fix="install a distro kernel, e.g. apt-get install linux-image-amd64",
        )
    release = running if running in kernels else max(kernels, key=_release_key)
    kernel = kernels[release]
    initrd = Path(boot) / f"initrd.img-{release}"
    modules = Path(modules_root) / release
    modules_bytes, modules_files = dir_size(modules) if modules.is_dir() else (0, 0)
    return {
        "running_release": running,
        "release": release,
        "kernel": kernel,
        "kernel_bytes": kernel.stat().st_size,
        "initrd": initrd if initrd.is_file() else None,
        "initrd_bytes": initrd.stat().st_size if initrd.is_file() else 0,
        "modules": modules if modules.is_dir() else None,
        "modules_bytes": modules_bytes,
        "modules_files": modules_files,
    }


def human(n: float) -> str:
    """Bytes as a short human string: 1.9 MiB, 396 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if n >= 100 or unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# -- start times -----------------------------------------------------------------------------


def time_command(
    argv: Sequence[str], runs: int = 5, warmup: int = 1, timeout: float = 120
) -> list[float]:
    """Wall-clock seconds from spawn to exit of ``argv``, ``runs`` times.

    The first ``warmup`` runs are thrown away: they pay for loading files into the page
    cache, which is a one-off cost, not a start-up cost. A non-zero exit raises, because
    the time of a failed start means nothing.
    """
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        result = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-500:]}"
            )
        if i >= warmup:
            times.append(elapsed)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- a tiny VM -------------------------------------------------------------------------------


def qemu_binary() -> str | None:
    """The QEMU system emulator for this machine's architecture, if installed."""
    entry = _QEMU.get(platform.machine())
    return shutil.which(entry[0]) if entry else None


def kvm_usable() -> tuple[bool, str]:
    """Can this host run a guest with hardware virtualisation (KVM)? And why (not)?

    /dev/kvm alone is not enough: inside a VM without nested virtualisation the device
    may exist while the CPU lacks the vmx/svm feature, and guests then hang or crash.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user"
    if platform.machine() == "x86_64":
        flags = set()
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
        if not flags & {"vmx", "svm"}:
            return False, "the CPU has no vmx/svm flag (nested virtualisation is off)"
    return True, "/dev/kvm is usable"


def _newc_entry(
    name: str, mode: int, data: bytes = b"", ino: int = 0, rdev: tuple[int, int] = (0, 0)
) -> bytes:
    """One record of a "newc" cpio archive: the format the kernel unpacks an initramfs from."""
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    record = header + name.encode() + b"\0"
    record += b"\0" * (-len(record) % 4)
    return record + data + b"\0" * (-len(data) % 4)


def build_initramfs(dest_dir: str | os.PathLike[str], busybox: str | os.PathLike[str]) -> Path:
    """Write ``initramfs.cpio``: a static busybox plus an /init that prints a marker and
    powers off. The kernel runs /init as PID 1 straight from this archive."""
    init = (
        f"#!/bin/busybox sh\n/bin/busybox echo '{VM_MARKER}'\n/bin/busybox poweroff -f\n"
    ).encode()
    entries = [
        (".", 0o040755, b"", (0, 0)),
        ("bin", 0o040755, b"", (0, 0)),
        ("bin/busybox", 0o100755, Path(busybox).read_bytes(), (0, 0)),
        ("dev", 0o040755, b"", (0, 0)),
        ("dev/console", 0o020600, b"", (5, 1)),  # init's stdin/stdout before any /dev exists
        ("init", 0o100755, init, (0, 0)),
    ]
    out = Path(dest_dir) / "initramfs.cpio"
    with open(out, "wb") as f:
        for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
            f.write(_newc_entry(name, mode, data, ino, rdev))
        f.write(_newc_entry("TRAILER!!!", 0))
    return out


def qemu_command(
    kernel: str | os.PathLike[str], initrd: str | os.PathLike[str], accel: str
) -> list[str]:
    """The QEMU command line for a headless boot whose guest powers off when /init is done.

    ``-nic none``: the guest needs no network, and without a network card QEMU's firmware
    also skips the card's boot ROM, which is seconds of emulated work without KVM.
    """
    binary, machine, console = _QEMU[platform.machine()]
    cpu = ["-cpu", "host"] if accel == "kvm" else (["-cpu", "max"] if machine else [])
    return [
        binary,
        *machine,
        *cpu,
        "-accel",
        accel,
        "-m",
        "256",
        "-nic",
        "none",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        f"console={console} panic=-1 quiet",
        "-nographic",
        "-no-reboot",
    ]


def boot_tiny_vm(
    kernel: str | os.PathLike[str],
    timeout: float = 180,
    initrd: str | os.PathLike[str] | None = None,
    busybox: str | os.PathLike[str] = "/bin/busybox",
) -> dict:
    """Boot ``kernel`` under QEMU with a one-line /init and time it until QEMU exits.

    KVM is tried first when ``kvm_usable()`` says so, with a short timeout; otherwise (or
    if it fails) QEMU emulates the CPU in software (TCG), which is slower but works
    everywhere. The result says which accelerator ran, the wall time, whether the marker
    appeared on the serial console, and the guest kernel's own uptime at power-off.
    """
    if qemu_binary() is None:
        raise LabkitError(
            f"no QEMU for {platform.machine()}",
            fix="apt-get install qemu-system-x86 (or qemu-system-arm)",
        )
    with contextlib.ExitStack() as stack:
        if initrd is None:  # build a throwaway one, removed when the boot is over
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="labkit-tinyvm-"))
            image = build_initramfs(tmp, busybox)
        else:
            image = Path(initrd)
        ok, why = kvm_usable()
        plan = [("kvm", min(timeout, 30.0))] if ok else []
        plan.append(("tcg", timeout))
        attempts = []
        for accel, limit in plan:
            result = _boot_once(kernel, image, accel, limit)
            attempts.append(result)
            if result["marker_seen"]:
                break
    result = dict(attempts[-1])
    result["kvm_note"] = why
    result["attempts"] = [(a["accel"], a["outcome"]) for a in attempts]
    return result


def _boot_once(kernel: str | os.PathLike[str], initrd: Path, accel: str, timeout: float) -> dict:
    argv = qemu_command(kernel, initrd, accel)
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        output = proc.stdout.decode(errors="replace")
        outcome = f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace")
        outcome = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    guest = _POWER_DOWN.search(output)
    return {
        "accel": accel,
        "seconds": seconds,
        "outcome": outcome,
        "marker_seen": VM_MARKER in output,
        "guest_uptime_s": float(guest.group(1)) if guest else None,
        "command": argv,
        "console_tail": [ln.strip() for ln in _ESCAPES.sub("", output).splitlines() if ln.strip()][
            -3:
        ],
    }
