"""Layers unpacked once, by their diff id, and shared by every image that has them.

A layer travels as an archive (a blob, maybe gzip'd) but a container needs it as a directory:
one overlayfs lower dir. ``LAYERS_DIR/<diffid-hex>/diff`` is that directory, named by the
sha256 of the *uncompressed* tar (the "diff id" the image config lists in ``rootfs.diff_ids``),
so two images with the same layer share one directory however each registry compressed it.
``layer.json`` beside ``diff`` records its size, so ``images`` and ``system df`` need no walk.

Unpacking goes into ``.tmp-<hex>-<pid>`` and is renamed into place only after the diff id
was checked: a killed pull leaves a temp dir (the next unpack of that layer or ``labkit
reset`` removes it), never a half layer that looks finished. A per-layer lock makes two pulls
that share a layer unpack it once; the loser finds it done.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.images.blobs import check_digest
from labkit.kernel.mounts import remove_tree
from labkit.kernel.namespaces import USERNS_HOST_BASE

TMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock-"
META = "layer.json"


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) mode 0700: setuid files in a layer must not be reachable
    by host users (CVE-2021-41091), so nobody but root may even walk in."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def open_to_userns_root(path: Path) -> None:
    """Mode 0710, group: the host gid that is root in a labkit user namespace.

    With ``--ns user`` the overlay is mounted, and its layers read, by the namespace's root,
    which is uid and gid USERNS_HOST_BASE on the host: it must be able to walk in. Docker's
    data directories are 0710 with the remapped root's group for the same reason (its fix
    for CVE-2021-41091). Host users, in neither, still cannot."""
    os.chown(path, 0, USERNS_HOST_BASE)
    os.chmod(path, 0o710)


def layer_root(diff_id: str) -> Path:
    return paths.LAYERS_DIR / check_digest(diff_id).removeprefix("sha256:")


def diff_dir(diff_id: str) -> Path:
    """The overlay lower dir of a layer (may not exist)."""
    return layer_root(diff_id) / "diff"


def has(diff_id: str) -> bool:
    return (layer_root(diff_id) / META).is_file()


def size(diff_id: str, key: str = "size") -> int:
    """Bytes in the unpacked layer (apparent size, hard links once: what Docker shows), or
    with ``key="tar_size"`` of its uncompressed tar (0 if unknown)."""
    try:
        return int(json.loads((layer_root(diff_id) / META).read_text())[key])
    except (OSError, ValueError, KeyError):
        return 0


def present() -> list[str]:
    """Diff ids of every complete layer on disk."""
    if not paths.LAYERS_DIR.is_dir():
        return []
    return [
        "sha256:" + p.name
        for p in sorted(paths.LAYERS_DIR.iterdir())
        if len(p.name) == 64 and (p / META).is_file()
    ]


def ensure(diff_id: str, blob: Path, media_type: str = "") -> Path:
    """Unpack the layer archive ``blob`` unless its diff id is already here; return its dir.

    The diff id ``layers.unpack`` measured must be the one the image config promised: a
    registry (or a tampered archive) cannot slip other files in under a known layer's name.
    """
    from labkit.images import layers
    from labkit.images.store import dir_size

    final = layer_root(diff_id)
    if has(diff_id):
        return final / "diff"
    ensure_dir(paths.LAYERS_DIR)
    open_to_userns_root(paths.LAYERS_DIR)
    with open(paths.LAYERS_DIR / f"{LOCK_PREFIX}{final.name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if has(diff_id):  # another pull unpacked it while we waited
            return final / "diff"
        for stale in paths.LAYERS_DIR.glob(f"{TMP_PREFIX}{final.name}-*"):
            remove_tree(stale)  # we hold the lock: nobody works in these any more
        tmp = paths.LAYERS_DIR / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
        try:
            tmp.mkdir(mode=0o700)
            open_to_userns_root(tmp)
            with open(blob, "rb") as source:
                stats = layers.unpack(source, tmp / "diff", media_type=media_type)
            if stats.diff_id != diff_id:
                raise LabkitError(
                    f"layer {blob.name[:12]} unpacks to {stats.diff_id[:19]}, but the image "
                    f"config says {diff_id[:19]}",
                    fix="the image is damaged or forged; remove it ({rmi}) and get it again",
                )
            total, files = dir_size(tmp / "diff")
            meta = {"diff_id": diff_id, "size": total, "files": files, "tar_size": stats.tar_size}
            (tmp / META).write_text(json.dumps(meta) + "\n")
            _rename_into_place(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
    return final / "diff"


def _rename_into_place(tmp: Path, final: Path) -> None:
    """rename(2) is atomic; if a layer appeared meanwhile (a lock file removed under a
    waiter), keep that one: same diff id, same files."""
    try:
        os.rename(tmp, final)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        remove_tree(tmp)


def remove(diff_id: str) -> None:
    """Delete an unpacked layer and its lock. Callers make sure no image needs it."""
    root = layer_root(diff_id)
    if root.exists():
        # Rename first: a half-deleted layer must never look complete to a reader.
        doomed = root.with_name(f"{TMP_PREFIX}{root.name}-rm{os.getpid()}")
        os.rename(root, doomed)
        remove_tree(doomed)
    (paths.LAYERS_DIR / f"{LOCK_PREFIX}{root.name}").unlink(missing_ok=True)


def temp_dirs() -> list[Path]:
    """``.tmp-*`` dirs: unpacks or removals that were killed (only safe to delete when no
    pull or load runs; the caller checks)."""
    if not paths.LAYERS_DIR.is_dir():
        return []
    return sorted(paths.LAYERS_DIR.glob(TMP_PREFIX + "*"))
