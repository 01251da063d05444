"""The busybox image: the host's static busybox, a symlink per applet, and a minimal /etc.

It needs no network and builds in seconds, which is why it is the lab's default image. The
binary must be statically linked (Debian's ``busybox-static``): the image holds no libc or
dynamic loader, so a dynamically linked busybox would not even start inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from labkit.errors import LabkitError
from labkit.images.store import HOSTS

BUSYBOX_BINARY = "/bin/busybox"
FHS_DIRS = (
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "tmp",
    "root",
)
FHS_DIRS += ("var", "var/tmp", "run", "home")


def build_rootfs(rootfs: Path) -> str:
    """One static binary + applet symlinks + the handful of /etc files programs expect.

    Returns the one-line source the store records in image.json.
    """
    import shutil
    import subprocess

    binary = Path(BUSYBOX_BINARY)
    if not binary.exists():
        raise LabkitError(
            f"{BUSYBOX_BINARY} not found (the busybox image is built from the host's copy)",
            fix="apt-get install busybox-static",
        )
    if not _is_static_elf(binary):
        raise LabkitError(
            f"{BUSYBOX_BINARY} is dynamically linked and would not run without its libraries",
            fix="apt-get install busybox-static",
        )
    for d in FHS_DIRS:
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    os.chmod(rootfs / "var/tmp", 0o1777)
    os.chmod(rootfs / "root", 0o700)
    shutil.copy2(binary.resolve(), rootfs / "bin/busybox")
    applets = subprocess.run(
        [str(binary), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in applets:
        link = rootfs / rel
        if "/" not in rel or rel == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    banner = subprocess.run([str(binary)], capture_output=True, text=True, check=False).stdout
    version = banner.split()[1] if len(banner.split()) > 1 else "unknown"  # "BusyBox v1.35.0 ..."
    _write_etc(rootfs, version)
    return f"busybox-static {version} ({binary.resolve()})"


def _is_static_elf(path: Path) -> bool:
    """True if the ELF file has no PT_INTERP header (no dynamic loader needed)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return False
        endian = "<" if head[5] == 1 else ">"
        if head[4] == 2:  # ELFCLASS64
            (phoff,) = struct.unpack_from(endian + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
        else:
            (phoff,) = struct.unpack_from(endian + "I", head, 28)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(
        struct.unpack_from(endian + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum)
    )


def _write_etc(rootfs: Path, version: str) -> None:
    etc = rootfs / "etc"
    files = {
        "passwd": (
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        ),
        "group": "root:x:0:\nnogroup:x:65534:\n",
        "hostname": "labkit\n",
        "hosts": HOSTS,
        "os-release": (
            'NAME="labkit busybox"\n'
            "ID=labkit-busybox\n"
            f'VERSION_ID="{version}"\n'
            f'PRETTY_NAME="labkit busybox {version}"\n'
            'HOME_URL="https://busybox.net/"\n'
        ),
    }
    for fname, text in files.items():
        (etc / fname).write_text(text)
