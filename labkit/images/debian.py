"""The debian image: ``debootstrap --variant=minbase bookworm``, a real distribution to compare.

It takes minutes and a Debian mirror, so it is built once and cached by the store. The build
uses the mirror the host's apt already reaches (a proxy or local mirror in a classroom), on
a non-Debian host verifies with the Debian keyring, and scrubs what debootstrap copies from
the build host (hostname, resolv.conf) and the ~100 MB of apt caches the image never needs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from labkit import paths
from labkit.errors import LabkitError
from labkit.images.store import HOSTS

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def build_rootfs(rootfs: Path) -> str:
    """debootstrap a minimal bookworm from the host's Debian mirror, then drop apt caches.

    Returns the one-line source the store records in image.json.
    """
    import shutil

    if shutil.which("debootstrap") is None:
        raise LabkitError(
            "debootstrap is not installed (the debian image is built with it)",
            fix="apt-get install debootstrap debian-archive-keyring",
        )
    on_debian = _host_os_id() == "debian"
    mirror = host_debian_mirror() if on_debian else DEFAULT_MIRROR
    cmd = ["debootstrap", "--variant=minbase"]
    if not on_debian:  # e.g. Ubuntu: its default keyring cannot verify Debian's archive
        if not Path(DEBIAN_KEYRING).exists():
            raise LabkitError(
                f"{DEBIAN_KEYRING} is missing, so debootstrap cannot verify Debian packages",
                fix="apt-get install debian-archive-keyring debootstrap",
            )
        cmd.append(f"--keyring={DEBIAN_KEYRING}")
    cmd += [SUITE, str(rootfs), mirror]
    log_path = paths.IMAGES_DIR / ".build-debian.log"
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = _run_in_own_group(cmd, log)
    if rc != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise LabkitError(
            f"debootstrap {SUITE} from {mirror} failed (exit {rc}): {' | '.join(tail)}",
            fix=f"read {log_path}; check the mirror is reachable (apt-get update), "
            "and on Ubuntu: apt-get install debootstrap debian-archive-keyring",
        )
    _clean_apt_caches(rootfs)
    _scrub_host_identity(rootfs)
    return f"debootstrap --variant=minbase {SUITE} {mirror}"


def host_debian_mirror() -> str:
    """The first Debian mirror the host's apt uses for the target suite, else deb.debian.org.

    Reading it from apt keeps the build on whatever mirror or proxy the host can reach.
    """
    for uri, suites in _apt_sources():
        if SUITE in suites and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _run_in_own_group(cmd: list[str], log: IO[str]) -> int:
    """Run ``cmd`` as its own process group and, if we are interrupted, kill the whole group
    (debootstrap's dpkg children too) before the caller deletes the tree they write into."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # orphaned group members are reaped by init
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        raise


def _clean_apt_caches(rootfs: Path) -> None:
    """Downloaded .debs and package lists are ~100 MB the image never needs offline."""
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/*.bin",
        "var/lib/apt/lists/*",
    ):
        for p in rootfs.glob(pattern):
            if p.is_file() and p.name != "lock":
                p.unlink()


def _scrub_host_identity(rootfs: Path) -> None:
    """debootstrap copies the build host's hostname and resolv.conf; an image must not carry
    them (the runtime sets hostname and DNS per container)."""
    etc = rootfs / "etc"
    (etc / "hostname").write_text("labkit\n")
    (etc / "hosts").write_text(HOSTS)
    resolv = etc / "resolv.conf"
    if resolv.is_file() and not resolv.is_symlink():
        resolv.write_text("")


def _apt_sources() -> list[tuple[str, list[str]]]:
    """(uri, suites) for every ``deb`` entry in sources.list and deb822 *.sources files."""
    out: list[tuple[str, list[str]]] = []
    legacy = Path("/etc/apt/sources.list")
    listd = Path("/etc/apt/sources.list.d")
    one_line = [legacy] + (sorted(listd.glob("*.list")) if listd.is_dir() else [])
    for f in one_line:
        for line in _read_lines(f):
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                rest = parts[1:]
                if rest[0].startswith("["):  # options like [arch=amd64 signed-by=...]
                    while rest and not rest[0].endswith("]"):
                        rest = rest[1:]
                    rest = rest[1:]
                if len(rest) >= 2:
                    out.append((rest[0], [rest[1]]))
    for f in sorted(listd.glob("*.sources")) if listd.is_dir() else []:
        for stanza in "\n".join(_read_lines(f)).split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    out.append((uri, fields.get("suites", "").split()))
    return out


def _read_lines(f: Path) -> list[str]:
    try:
        return f.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _host_os_id() -> str:
    for line in _read_lines(Path("/etc/os-release")):
        if line.startswith("ID="):
            return line[3:].strip().strip('"')
    return ""
