"""Capabilities: root's powers, split into about forty pieces, and the 14 a container keeps.

Since Linux 2.2, "root can do anything" is a set of capabilities, each checked on its own:
CAP_SYS_ADMIN for mount(2) and most of the rest, CAP_SYS_MODULE for loading kernel modules,
CAP_DAC_READ_SEARCH for open_by_handle_at(2) (the "shocker" escape), and so on. A process
has five sets of them (``man 7 capabilities``):

* **effective**: what the kernel checks right now;
* **permitted**: what it may make effective;
* **bounding**: the most it can ever regain, even by exec of a setuid-root program;
* **inheritable** and **ambient**: what exec passes on to a program that is not setuid.

Docker keeps 14 capabilities in effective, permitted and bounding, and nothing inheritable
or ambient: a container's root can chown files and bind port 80, but cannot mount, load
modules or change the clock. For root, exec makes the new permitted set the bounding set,
so shrinking the bounding set is what really takes a capability away.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

from labkit.errors import LabkitError
from labkit.kernel import procfs
from labkit.kernel.stage import stage

#: Numbers from linux/capability.h, in order.
NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip

#: What `docker run` keeps (moby's DefaultCapabilities).
DOCKER_DEFAULT = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    }
)  # fmt: skip


def last_cap() -> int:
    """The highest capability this kernel knows (older kernels know fewer)."""
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except OSError:
        return len(NAMES) - 1


def known() -> frozenset[str]:
    """Every capability name this kernel has."""
    return frozenset(NAMES[: last_cap() + 1])


def number(name: str) -> int:
    return NAMES.index(name)


def normalize(name: str) -> str:
    """ "cap_sys_admin", "SYS_ADMIN" and "sys_admin" all mean SYS_ADMIN; "all" is ALL."""
    upper = name.strip().upper()
    return upper.removeprefix("CAP_")


def resolve(add: Iterable[str], drop: Iterable[str], privileged: bool) -> frozenset[str]:
    """The capabilities a container keeps, by Docker's rules for --cap-add/--cap-drop.

    --privileged keeps all; --cap-add ALL keeps all but the dropped ones; --cap-drop ALL
    keeps only the added ones; otherwise the defaults, minus drops, plus adds.
    """
    adds, drops = {normalize(n) for n in add}, {normalize(n) for n in drop}
    unknown = (adds | drops) - known() - {"ALL"}
    if unknown:
        name = sorted(unknown)[0]
        raise LabkitError(
            f"unknown capability: CAP_{name}",
            fix="use a name from `man 7 capabilities`, such as NET_ADMIN or SYS_PTRACE",
        )
    if privileged:
        return known()
    if "ALL" in adds:
        return known() - drops
    if "ALL" in drops:
        return frozenset(adds)
    return (DOCKER_DEFAULT - drops) | adds


def mask(names: Iterable[str]) -> int:
    """The bitmask the kernel uses (as in /proc/PID/status: CapEff, CapBnd, ...)."""
    value = 0
    for name in names:
        value |= 1 << number(name)
    return value


def names_of(value: int | str) -> list[str]:
    """The names in a bitmask; a hex string from /proc/PID/status is fine too."""
    bits = int(value, 16) if isinstance(value, str) else value
    return [name for i, name in enumerate(NAMES) if bits >> i & 1]


# -- dropping them (in the helper, last thing before exec) ---------------------------------------

PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _prctl(option: int, arg: int, what: str) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({what}) failed: {os.strerror(err)}")


def _capset(value: int) -> None:
    """Effective and permitted := ``value``; inheritable := nothing."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    low, high = value & 0xFFFFFFFF, value >> 32
    data = (_Data * 2)(_Data(low, low, 0), _Data(high, high, 0))
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset failed: {os.strerror(err)}")


@stage("capabilities", fix="check the names given to {cap_add} and {cap_drop}")
def keep_only(names: Iterable[str]) -> None:
    """Shrink every capability set of this process to ``names``, as runc does for Docker.

    The bounding set goes first (dropping from it needs CAP_SETPCAP, which capset may be
    about to remove), then ambient is cleared, then effective and permitted are set.
    """
    keep = set(names) & own_bounding()  # nobody can give what it does not have itself
    for i in range(last_cap() + 1):
        if NAMES[i] not in keep:
            _prctl(PR_CAPBSET_DROP, i, f"PR_CAPBSET_DROP {NAMES[i]}")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL")
    _capset(mask(keep))


def bounding(pid: int | str = "self") -> set[str]:
    """A process's bounding set, by name (from /proc/PID/status)."""
    return set(names_of(procfs.status(pid).get("CapBnd", "0")))


PR_CAPBSET_READ = 23


def own_bounding() -> set[str]:
    """This process's bounding set, asked of the kernel itself: after a chroot without a
    mount namespace there is no /proc to read it from."""
    return {
        NAMES[i] for i in range(last_cap() + 1) if _libc.prctl(PR_CAPBSET_READ, i, 0, 0, 0) == 1
    }


PR_SET_NO_NEW_PRIVS = 38


@stage("no_new_privs", fix="this is a labkit bug: please report it")
def set_no_new_privs() -> None:
    """After this, exec never grants privileges: setuid bits and file capabilities are
    ignored, for this process and every child. Docker leaves it off unless asked."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
