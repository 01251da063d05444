"""What the images on this host are and what they cost: ``images``, ``system df -v``, ``rmi``.

An image's SIZE is the sum of its unpacked layers, as Docker counts it (apparent bytes of
every non-directory, a hard-linked file once). Layers are shared, so the sizes of all
images add up to more than the disk holds: ``system df -v`` splits each image's size into
SHARED (layers some other image also has) and UNIQUE (what ``rmi`` would give back), and
the total counts each layer once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.images import baseimage, library, store, tags, unpacked
from labkit.images.reference import Reference, parse


@dataclass
class Row:
    """One line of ``labkit images``; ``layers`` are diff ids (empty for a base image,
    whose directory ``size`` is not shared with anything)."""

    repository: str
    tag: str
    id: str
    created: str
    size: int
    layers: tuple[str, ...] = ()
    reference: str = ""
    base: bool = False


def rows() -> list[Row]:
    """Every image: the store's, then the built base images no stored image shadows."""
    out = []
    for entry in library.entries():
        ref = library.ref_of(entry)
        if ref:
            name = parse(ref)
            repo = Reference(name.domain, name.path, None, None).familiar
            tag = name.tag or "<none>"
        else:
            repo, tag = "<none>", "<none>"
        cfg = library.config(entry)
        diffs = tuple(cfg.get("rootfs", {}).get("diff_ids", []))
        size = sum(unpacked.size(d) for d in set(diffs))
        out.append(Row(repo, tag, library.image_id(entry), cfg.get("created", ""), size, diffs,
                       ref))  # fmt: skip
    taken = {r.reference for r in out}
    for image in store.list_images():
        ref = str(parse(image["name"]))
        if image["name"] in store.KNOWN and ref not in taken:
            out.append(Row(image["name"], "latest", baseimage.image_id(image["name"]),
                           image["created"], image["size_bytes"], (), ref, True))  # fmt: skip
    return out


def containers_using(image_ids: set[str]) -> tuple[list[str], list[str]]:
    """Names of (running, stopped) containers of the images ``image_ids``: the image their
    record names (by reference or id), or a layer of those images among their overlay lower
    dirs. Records are read as files: a service does not import the runtime."""
    from labkit.kernel.procfs import ProcessRef

    layers = {
        str(unpacked.diff_dir(d))
        for e in library.entries()
        if library.image_id(e) in image_ids
        for d in library.diff_ids(e)
    }
    running: list[str] = []
    stopped: list[str] = []
    top = paths.STATE_DIR / "containers"
    for record_file in sorted(top.glob("*/record.json")) if top.is_dir() else []:
        try:
            record = json.loads(record_file.read_text())
            cfg = record.get("config") or {}
            named = _image_id_of(cfg.get("image")) in image_ids or bool(
                layers & set(map(str, cfg.get("lowers") or []))
            )
            process = record.get("process")
            alive = bool(process) and ProcessRef(*process).is_alive()
        except (OSError, ValueError, TypeError):
            continue
        if named:
            (running if alive else stopped).append(record.get("name") or record_file.parent.name)
    return running, stopped


def _image_id_of(name: object) -> str:
    """The id of the image a container record names ("" if none is found)."""
    if not isinstance(name, str) or not name:
        return ""
    try:
        entry = library.find(name)
        if entry is not None:
            return library.image_id(entry)
        base = baseimage.name_of(name)
        return baseimage.image_id(base) if base in baseimage.built() else ""
    except (LabkitError, OSError):
        return ""


def rmi(names: list[str], force: bool = False) -> list[str]:
    """Untag each name and delete what no image needs any more; Docker's lines. An image a
    running container uses is refused even with ``force`` (its layers are mounted)."""
    out: list[str] = []
    for name in names:
        entry = library.find(name)
        if entry is None:
            if baseimage.name_of(name) in baseimage.built():
                raise LabkitError(
                    f"{name} is a base image built on this host, not a stored one",
                    fix="remove base images with: {reset_images}",
                )
            raise library.no_such_image(name)
        image_id, diffs = library.image_id(entry), library.diff_ids(entry)
        running, stopped = containers_using({image_id})
        if running or (stopped and not force):
            what = "running" if running else "stopped"
            raise LabkitError(
                f"conflict: unable to remove {name} - image is being used by {what} container "
                f"{(running or stopped)[0]}",
                fix="remove that container first" + ("" if running else ", or use {rmi_force}"),
            )
        out += tags.untag(name, force=force)
        gone = collect() or set()
        if image_id in gone:
            out.append(f"Deleted: {image_id}")
            out += [f"Deleted: {d}" for d in diffs if d in gone]
    return out


def referenced() -> tuple[set[str], set[str]]:
    """Every blob digest and diff id some index entry needs."""
    digests: set[str] = set()
    diffs: set[str] = set()
    for e in library.entries():
        doc = library.manifest(e)
        digests |= {e["digest"], doc["config"]["digest"]}
        digests |= {layer["digest"] for layer in doc.get("layers", [])}
        diffs |= set(library.diff_ids(e))
    return digests, diffs


@contextlib.contextmanager
def _alone() -> Iterator[bool]:
    """Yield True holding the store to ourselves, False if a pull or load is running."""
    if not paths.OCI_DIR.is_dir():
        yield True
        return
    with open(paths.OCI_DIR / ".busy", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        with library.flock(".lock", fcntl.LOCK_EX):
            yield True


def _garbage() -> tuple[set[str], list[Path]]:
    """Digests and diff ids no image names; temp files and dirs of killed pulls and loads."""
    store = library.blobs()
    digests, diffs = referenced()
    gone = {d for d in store.digests() if d not in digests}
    gone |= {d for d in unpacked.present() if d not in diffs}
    temps = [*store.stale_parts(), *unpacked.temp_dirs()]
    if paths.OCI_DIR.is_dir():
        temps += sorted(paths.OCI_DIR.glob("*" + library.TMP_SUFFIX))
    return gone, temps


def garbage() -> list[str]:
    """What ``collect`` would delete now, as paths (for ``labkit reset --dry-run``)."""
    with _alone() as alone:
        if not alone or not (paths.OCI_DIR.is_dir() or paths.LAYERS_DIR.is_dir()):
            return []
        gone, temps = _garbage()
    store = library.blobs()
    found = [str(store.path(d)) for d in gone if store.has(d)]
    found += [str(unpacked.layer_root(d)) for d in gone if unpacked.has(d)]
    return sorted(found) + [str(t) for t in temps]


def collect() -> set[str] | None:
    """Delete blobs and layers no image names, and temp files of killed pulls; return the
    digests and diff ids deleted. None (nothing done) while a pull or load runs: it may be
    about to name them; the next rmi or reset collects them."""
    from labkit.kernel.mounts import remove_tree

    with _alone() as alone:
        if not alone:
            return None
        gone, temps = _garbage()
        for digest in gone:
            library.blobs().remove(digest)
            unpacked.remove(digest)
        for temp in temps:
            remove_tree(temp)
        return gone


@dataclass
class Usage:
    row: Row
    shared: int
    unique: int
    containers: int


def disk_usage() -> tuple[list[Usage], int]:
    """Per image: size, shared and unique bytes, containers; and the total, each layer
    counted once (base images are directories of their own)."""
    all_rows = rows()
    users: dict[str, int] = {}
    for r in all_rows:
        for d in set(r.layers):
            users[d] = users.get(d, 0) + 1
    out = []
    for r in all_rows:
        shared = sum(unpacked.size(d) for d in set(r.layers) if users[d] > 1)
        running, stopped = containers_using({r.id})
        out.append(Usage(r, shared, r.size - shared, len(running) + len(stopped)))
    total = sum(unpacked.size(d) for d in users) + sum(r.size for r in all_rows if r.base)
    return out, total


def reclaimable(images: list[Usage], total: int) -> int:
    """Bytes ``rmi`` of every image no container uses would free: the total less what the
    images in use need (a layer they share with unused images stays)."""
    used = [u.row for u in images if u.containers]
    kept = {d for r in used for d in r.layers}
    return total - sum(unpacked.size(d) for d in kept) - sum(r.size for r in used if r.base)
