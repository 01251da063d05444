"""Base images built offline from what the host already has, so the lab needs no registry.

Two images, both plain directories a container can pivot_root into:

* ``busybox`` - one statically linked binary plus a symlink per applet; builds in seconds.
* ``debian``  - ``debootstrap --variant=minbase bookworm``; takes minutes, so it is cached.

An image is *complete* only when ``image.json`` sits beside its ``rootfs``: the builder
writes it last, into a temp dir that is renamed into place in one step. A crash therefore
leaves at most a ``.tmp-*`` dir (removed by the next build or by ``labkit reset``), never a
half-made image that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO

from labkit import paths
from labkit.errors import LabkitError
from labkit.kernel.mounts import remove_tree

KNOWN = ("busybox", "debian")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BUSYBOX_BINARY = "/bin/busybox"
TMP_PREFIX = ".tmp-"
META = "image.json"
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


# -- public API ------------------------------------------------------------------------------


def image_dir(name: str) -> Path:
    """The directory holding ``rootfs`` and ``image.json`` for ``name`` (may not exist)."""
    _check_name(name)
    return paths.IMAGES_DIR / name


def build(name: str, force: bool = False) -> Path:
    """Build image ``name`` unless a complete one exists; return its rootfs directory.

    A per-image lock makes concurrent callers (parallel tests, two terminals) wait for one
    build instead of racing; the loser then finds the finished image and returns at once.
    """
    import fcntl

    _check_name(name)
    paths.IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with open(_lock_path(name), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        final = image_dir(name)
        if not force and _read_meta(final) is not None:
            return final / "rootfs"
        _remove_stale_tmp(name)  # we hold the lock, so every .tmp-<name>-* is a dead build
        tmp = paths.IMAGES_DIR / f"{TMP_PREFIX}{name}-{os.getpid()}"
        try:
            _exit_cleanly_on_sigterm()
            tmp.mkdir()
            source = _BUILDERS[name](tmp / "rootfs")
            _write_meta(tmp, name, source)
            _swap_into_place(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        finally:
            _restore_sigterm()
        return final / "rootfs"


def image_rootfs(name: str) -> Path:
    """The rootfs of a built image, or a LabkitError telling the user how to build it."""
    d = image_dir(name)
    if _read_meta(d) is None:
        raise LabkitError(f"image '{name}' is not built", fix=f"run: labkit images build {name}")
    return d / "rootfs"


def list_images() -> list[dict]:
    """The complete images on disk, with their size, file count and build time."""
    out = []
    if not paths.IMAGES_DIR.is_dir():
        return out
    for d in sorted(paths.IMAGES_DIR.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        meta = _read_meta(d)
        if meta is None:
            continue
        out.append(
            {
                "name": meta.get("name", d.name),
                "rootfs": str(d / "rootfs"),
                "size_bytes": meta.get("size_bytes", 0),
                "files": meta.get("files", 0),
                "created": meta.get("created", ""),
            }
        )
    return out


def docker_import(name: str) -> str:
    """Load the image into Docker as ``labkit/<name>:latest`` so both runtimes run the same files.

    The build stamp travels as the image comment (``docker import --message``); if Docker
    already holds the tag with that comment the import is skipped.
    """
    import shutil
    import subprocess

    rootfs = image_rootfs(name)
    created = _read_meta(image_dir(name))["created"]
    tag = f"{paths.NAME_PREFIX}/{name}:latest"
    message = f"labkit {name} {created}"
    if shutil.which("docker") is None:
        raise LabkitError("the docker CLI is not installed", fix="apt-get install docker.io")
    if not docker_reachable():
        raise LabkitError(
            "the Docker daemon is not reachable",
            fix="start dockerd (systemctl start docker, or run `dockerd &` as root)",
        )
    old = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}} {{.Comment}}", tag],
        capture_output=True,
        text=True,
        check=False,
    )
    old_id = ""
    if old.returncode == 0:
        old_id, _, comment = old.stdout.strip().partition(" ")
        if comment == message:
            return tag
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    imp = subprocess.run(
        [
            "docker",
            "import",
            "--change",
            'CMD ["/bin/sh"]',
            "--message",
            message,
            "-",
            tag,
        ],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    tar.stdout.close()
    tar_rc = tar.wait()
    if tar_rc != 0 or imp.returncode != 0:
        raise LabkitError(
            f"docker import of {name} failed: {imp.stderr.strip() or f'tar exit {tar_rc}'}",
            fix="check `docker info` and free disk space, then retry",
        )
    if old_id:  # the previous import is now an untagged leftover; drop it (best effort)
        subprocess.run(["docker", "rmi", old_id], capture_output=True, check=False)
    return tag


def docker_server_version() -> str | None:
    """The Docker daemon's version, or None if the CLI is missing or no daemon answers."""
    import subprocess

    try:
        res = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def docker_reachable() -> bool:
    """True if a Docker daemon answers the docker CLI."""
    return docker_server_version() is not None


def stale_builds() -> list[Path]:
    """Temp dirs of image builds (``.tmp-*`` in IMAGES_DIR) that no build is working in now:
    left by a build that crashed or was killed. A build in progress holds its image's lock."""
    if not paths.IMAGES_DIR.is_dir():
        return []
    return [p for p in sorted(paths.IMAGES_DIR.glob(TMP_PREFIX + "*")) if not _build_running(p)]


def dir_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Apparent size in bytes and number of non-directory entries under ``path``.

    Apparent size (``st_size``), not disk blocks, because that is what an image archive
    carries. A hard-linked file is counted once, as tar would store it once.
    """
    seen: set[tuple[int, int]] = set()
    total = files = 0
    for root, dirs, names in os.walk(path):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            st = os.lstat(os.path.join(root, name))
            files += 1
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total, files


# -- busybox ---------------------------------------------------------------------------------

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


def _build_busybox(rootfs: Path) -> str:
    """One static binary + applet symlinks + the handful of /etc files programs expect."""
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


# -- debian ----------------------------------------------------------------------------------


def _build_debian(rootfs: Path) -> str:
    """debootstrap a minimal bookworm from the host's Debian mirror, then drop apt caches."""
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


def host_debian_mirror() -> str:
    """The first Debian mirror the host's apt uses for the target suite, else deb.debian.org.

    Reading it from apt keeps the build on whatever mirror or proxy the host can reach.
    """
    for uri, suites in _apt_sources():
        if SUITE in suites and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


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


# -- shared plumbing -------------------------------------------------------------------------

_BUILDERS = {"busybox": _build_busybox, "debian": _build_debian}


_saved_sigterm: list = []


def _exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit during a build so ``except``/``finally`` remove the temp
    dir (the default action would kill us mid-build). Only the main thread may do this."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    _saved_sigterm.append(signal.signal(signal.SIGTERM, handler))


def _restore_sigterm() -> None:
    import signal

    if _saved_sigterm:
        signal.signal(signal.SIGTERM, _saved_sigterm.pop())


def _check_name(name: str) -> None:
    if name not in KNOWN:
        raise LabkitError(
            f"unknown image '{name}' (known: {', '.join(KNOWN)})",
            fix=f"use one of: {', '.join(KNOWN)}",
        )


def _read_meta(d: Path) -> dict | None:
    """image.json of a complete image, or None if missing, unreadable or rootfs absent."""
    try:
        meta = json.loads((d / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "created" not in meta or not (d / "rootfs").is_dir():
        return None
    return meta


def _write_meta(d: Path, name: str, source: str) -> None:
    from datetime import UTC, datetime

    size, files = dir_size(d / "rootfs")
    meta = {
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="microseconds"),
        "source": source,
        "size_bytes": size,
        "files": files,
    }
    tmp = d / (META + ".part")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, d / META)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """rename(2) the finished build over ``final``; an old or half-made one is moved aside
    first (a directory cannot be renamed over a non-empty one) and then deleted."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f"{TMP_PREFIX}old-{final.name}-{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        remove_tree(old)


def _lock_path(name: str) -> Path:
    return paths.IMAGES_DIR / f".lock-{name}"


def _build_running(tmp: Path) -> bool:
    """True if an image build holds the lock for this .tmp-[old-]<name>-<pid> dir right now."""
    import fcntl
    import re

    for name in KNOWN:
        if re.fullmatch(rf"{re.escape(TMP_PREFIX)}(old-)?{name}-\d+", tmp.name):
            lock = _lock_path(name)
            if not lock.exists():
                return False
            with open(lock) as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _remove_stale_tmp(name: str) -> None:
    for pattern in (f"{TMP_PREFIX}{name}-*", f"{TMP_PREFIX}old-{name}-*"):
        for p in paths.IMAGES_DIR.glob(pattern):
            remove_tree(p)
