"""Masked and read-only paths: the parts of /proc and /sys a container must not use.

A fresh procfs in a new PID namespace hides other processes, but not the *kernel's* own
files, and some of those are a way out or a way to spy:

* ``/proc/sys/kernel/core_pattern`` names a program the kernel runs, as root on the host,
  whenever any process dumps core: write ``|/path`` there and the host runs your file;
* ``/proc/sysrq-trigger`` can crash or reboot the host; ``/proc/kcore`` is the host's memory;
* ``/proc/keys``, ``/proc/timer_list``, ``/proc/sched_debug`` and friends leak what the host
  and other containers are doing; ``/sys/firmware`` exposes firmware tables.

runc does what Docker asks: it **masks** some paths (a file gets /dev/null bind-mounted over
it, a directory an empty read-only tmpfs) and makes others **read-only** (a bind mount of
the path onto itself, remounted read-only). Without CAP_SYS_ADMIN, and with mount(2)
refused by seccomp, the container cannot undo either.
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

from labkit.kernel import syscalls
from labkit.kernel.stage import stage
from labkit.kernel.syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT

#: moby's defaultLinuxMaskedPaths (plus, per CPU, its thermal_throttle directory).
MASKED = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)  # fmt: skip
THERMAL = "/sys/devices/system/cpu/cpu*/thermal_throttle"
#: moby's defaultLinuxReadonlyPaths.
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def _is_dev_null(path: str) -> bool:
    """The real /dev/null (char 1:3): a container that replaced it by a symlink to a proc
    file could otherwise turn a mask into a writable bind (CVE-2025-31133)."""
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


@stage("mask paths", fix="set {systempaths_unconfined} to run without the masks")
def mask(paths: tuple[str, ...] = MASKED) -> None:
    """Hide each path that exists: /dev/null over a file, an empty read-only tmpfs over a dir.

    Runs inside the container's root (after pivot_root), with its fresh /proc and /sys.
    """
    if not _is_dev_null("/dev/null"):
        raise OSError("refusing to mask: /dev/null in the container is not the null device")
    for path in (*paths, *sorted(glob.glob(THERMAL))):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # this kernel or machine has no such file
        if stat.S_ISDIR(st.st_mode):
            syscalls.mount("tmpfs", path, "tmpfs", MS_RDONLY, "nr_blocks=1,nr_inodes=1")
        else:
            syscalls.mount("/dev/null", path, None, MS_BIND)


@stage("read-only paths", fix="set {systempaths_unconfined} to run without them")
def make_read_only(paths: tuple[str, ...] = READ_ONLY) -> None:
    """Bind each path onto itself, then remount that bind read-only (keeping nosuid,
    nodev, noexec, which proc has and a user namespace could not drop anyway)."""
    for path in paths:
        if not Path(path).exists():
            continue
        syscalls.mount(path, path, None, MS_BIND | syscalls.MS_REC)
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
        syscalls.mount(path, path, None, flags)
