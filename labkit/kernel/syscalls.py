"""The raw system calls a container is made of, callable from Python.

Python 3.12 has ``os.unshare`` and ``os.setns``; Debian 12 ships 3.11, so we fall back to
libc through ctypes. ``mount``, ``umount2``, ``pivot_root`` and ``sethostname`` have no
``os`` wrapper in any version. Every failure is an ``OSError`` whose message names the
errno (``EPERM``, ``EINVAL`` ...) and says what usually causes it, because a bare
"Invalid argument" teaches nothing.
"""

from __future__ import annotations

import ctypes
import errno
import os

# clone(2) flags: one per namespace kind.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20

# umount2(2) flags.
MNT_DETACH = 2

#: glibc has no pivot_root() wrapper, and the syscall number differs per architecture
#: (an Apple Silicon VM is aarch64).
PIVOT_ROOT_SYSCALL = {"x86_64": 155, "aarch64": 41, "arm64": 41}

_HINTS = {
    errno.EPERM: "needs root (CAP_SYS_ADMIN) in the namespace that owns the target",
    errno.EINVAL: "a flag or argument is wrong for this call",
    errno.EBUSY: "the target is busy or already mounted",
    errno.ENOENT: "a path does not exist",
    errno.ENOSYS: "the kernel does not have this system call",
}

# dlopen(NULL): the symbols already loaded into this process, libc's among them. Cheaper
# than ctypes.util.find_library, which imports more modules and runs `ldconfig -p`.
_libc = ctypes.CDLL(None, use_errno=True)


def _raise(what: str, err: int, hint: str | None = None, path: str | None = None) -> None:
    name = errno.errorcode.get(err, str(err))
    why = hint or _HINTS.get(err, "")
    message = f"{what} failed: {name} ({os.strerror(err)})" + (f": {why}" if why else "")
    raise OSError(err, message, path)


def _check(ret: int, what: str, hint: str | None = None, path: str | None = None) -> None:
    if ret != 0:
        _raise(what, ctypes.get_errno(), hint, path)


def _encode(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces of the kinds in ``flags``.

    A multithreaded caller gets EINVAL for a user namespace and moves only one thread
    for the others, which is why labkit does this in a fresh helper process.
    """
    try:
        if hasattr(os, "unshare"):
            os.unshare(flags)
            return
    except OSError as exc:
        _raise("unshare", exc.errno or 0, _unshare_hint(exc.errno or 0))
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare", _unshare_hint(ctypes.get_errno()))


def _unshare_hint(err: int) -> str | None:
    if err == errno.EINVAL:
        return "a multithreaded process cannot unshare a user namespace; use a fresh process"
    if err == errno.EPERM:
        return "creating a namespace needs CAP_SYS_ADMIN, which root has (user namespaces aside)"
    return None


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open /proc/PID/ns/KIND file) refers to."""
    try:
        if hasattr(os, "setns"):
            os.setns(fd, nstype)
            return
    except OSError as exc:
        _raise("setns", exc.errno or 0, _setns_hint(exc.errno or 0))
    _check(
        _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)),
        "setns",
        _setns_hint(ctypes.get_errno()),
    )


def _setns_hint(err: int) -> str | None:
    if err == errno.EINVAL:
        return (
            "the fd is not a namespace of that type, or a multithreaded process tried "
            "to join a mount or user namespace"
        )
    return None


def mount(
    source: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2): attach a filesystem, or change a mount's flags and propagation."""
    ret = _libc.mount(
        _encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data)
    )
    _check(
        ret,
        f"mount {fstype or ''} on {os.fspath(target)}".replace("  ", " "),
        path=os.fspath(target),
    )


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    """umount2(2): detach a mount; ``MNT_DETACH`` lets busy mounts go lazily."""
    _check(
        _libc.umount2(_encode(target), ctypes.c_int(flags)),
        f"umount {os.fspath(target)}",
        path=os.fspath(target),
    )


def umount_detach(target: str | os.PathLike[str]) -> None:
    """Lazily detach ``target`` for cleanup code: a mount that is already gone is no error."""
    try:
        umount2(target, MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            raise


def pivot_root(new_root: str | os.PathLike[str], put_old: str | os.PathLike[str]) -> None:
    """pivot_root(2): make ``new_root`` the root mount and move the old one to ``put_old``.

    The kernel refuses (EINVAL) when new_root is not a mount point or when the current
    root's mount is shared, so callers make mounts private and bind new_root first.
    """
    arch = os.uname().machine
    number = PIVOT_ROOT_SYSCALL.get(arch)
    if number is None:
        _raise("pivot_root", errno.ENOSYS, f"no syscall number known for {arch}")
    ret = _libc.syscall(ctypes.c_long(number), _encode(new_root), _encode(put_old))
    _check(
        ret,
        "pivot_root",
        hint=(
            "new_root must be a mount point and no mount on the way may be shared: "
            "make / private (MS_REC|MS_PRIVATE) and bind-mount new_root onto itself"
        )
        if ctypes.get_errno() in (errno.EINVAL, errno.EBUSY)
        else None,
    )


#: The new mount API came after the syscall tables were unified: one number everywhere.
OPEN_TREE_SYSCALL, MOVE_MOUNT_SYSCALL = 428, 429
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100


def open_tree_clone(path: str | os.PathLike[str]) -> int:
    """open_tree(2) with OPEN_TREE_CLONE: a bind mount of ``path`` not attached anywhere yet,
    held by the returned descriptor. ``move_mount`` attaches it later, in another mount
    namespace, even one whose user namespace may not search ``path``'s directories."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC
    fd = _libc.syscall(ctypes.c_long(OPEN_TREE_SYSCALL), ctypes.c_int(AT_FDCWD), _encode(path),
                       ctypes.c_uint(flags))  # fmt: skip
    if fd < 0:
        _raise("open_tree", ctypes.get_errno(), path=os.fspath(path))
    return fd


def move_mount(fd: int, target: str | os.PathLike[str]) -> None:
    """move_mount(2): attach the detached mount ``fd`` (from ``open_tree_clone``) at ``target``."""
    ret = _libc.syscall(ctypes.c_long(MOVE_MOUNT_SYSCALL), ctypes.c_int(fd), b"",
                        ctypes.c_int(AT_FDCWD), _encode(target),
                        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))  # fmt: skip
    _check(ret, "move_mount", path=os.fspath(target))


def sethostname(name: str) -> None:
    """sethostname(2): only affects the caller's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to us, not to init.

    This is how one supervisor can wait for containers whose helper has already exited.
    """
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0), "prctl")
