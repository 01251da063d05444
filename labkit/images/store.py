"""Where base images live and when one counts as built, so every caller agrees on both.

An image is a plain directory, ``IMAGES_DIR/<name>``, holding ``rootfs`` (what a container
pivots into) and ``image.json`` (its metadata). It is *complete* only when ``image.json``
sits beside ``rootfs``: a build writes it last, into a temp dir ``.tmp-<name>-<pid>`` that is
renamed into place in one step. A crash therefore leaves at most a ``.tmp-*`` dir (removed by
the next build or by ``labkit reset``), never a half-made image that looks finished.

How a rootfs is made is each builder's business (``busybox.py``, ``debian.py``); this module
only locks, dispatches, records and swaps. Layers and the OCI image layout grow here next.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from labkit import paths
from labkit.errors import LabkitError
from labkit.kernel.mounts import remove_tree

KNOWN = ("busybox", "debian")
TMP_PREFIX = ".tmp-"
META = "image.json"
#: /etc/hosts of every image: loopback only, nothing of the host that built it.
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


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
            source = _build_rootfs(name, tmp / "rootfs")
            _write_meta(tmp, name, source)
            _swap_into_place(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        finally:
            _restore_sigterm()
        return final / "rootfs"


def image_meta(name: str) -> dict[str, Any]:
    """``image.json`` of a built image, or a LabkitError telling the user how to build it."""
    meta = _read_meta(image_dir(name))
    if meta is None:
        raise LabkitError(f"image '{name}' is not built", fix=f"build it: {{images_build}} {name}")
    return meta


def image_rootfs(name: str) -> Path:
    """The rootfs of a built image, or a LabkitError telling the user how to build it."""
    image_meta(name)
    return image_dir(name) / "rootfs"


def list_images() -> list[dict[str, Any]]:
    """The complete images on disk, with their size, file count and build time."""
    out: list[dict[str, Any]] = []
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


# -- building ---------------------------------------------------------------------------------


def _build_rootfs(name: str, rootfs: Path) -> str:
    """Make ``rootfs`` with the image's builder; return the one-line source for image.json.

    The builders are imported here, not at the top, so looking an image up stays cheap.
    """
    if name == "busybox":
        from labkit.images import busybox

        return busybox.build_rootfs(rootfs)
    from labkit.images import debian

    return debian.build_rootfs(rootfs)


_saved_sigterm: list[Any] = []


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


def _read_meta(d: Path) -> dict[str, Any] | None:
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


# -- locks and stale builds -------------------------------------------------------------------


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
