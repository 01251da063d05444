"""A container's own writable layer: the files it changes, beside its record.

Every container of an image runs on an overlay: the image's layers are the read-only lower
directories (shared by every container of the image, never written), and the container
writes into ``upper/`` in its own directory, ``STATE_DIR/containers/<id>/``::

    containers/<id>/record.json
                    init/     the mount points the image lacks (proc, sys, dev): Docker's
                              "-init" layer, a lower of the container, so `diff` never shows it
                    upper/    what the container changed: new files, copied-up files,
                              whiteouts for deleted ones (what `labkit diff` reads)
                    work/     overlayfs's scratch space (same filesystem as upper/)
                    merged/   the mount point: the helper mounts the overlay here *inside the
                              container's mount namespace*, so the host never sees that mount
                              and a crash cannot leave one behind

The directories go when the record goes (``records.remove``), as ``docker rm`` removes a
container's layer. Without a mount namespace there is no overlay (it would be a mount on the
host), so the container runs on a flattened copy of the image instead (``flatten``).

``find`` reads one file through the layers as overlayfs would show it (top layer first,
whiteouts and opaque directories hide what is below), which lets the supervisor read the
image's /etc/passwd before the container exists.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.errors import LabkitError
from labkit.kernel import overlay
from labkit.kernel.mounts import copy_tree
from labkit.kernel.namespaces import USERNS_HOST_BASE
from labkit.kernel.overlay import is_opaque, is_whiteout
from labkit.kernel.rootfs import MOUNT_POINTS
from labkit.runtime import image_config
from labkit.runtime.spec import ContainerSpec

#: The files a container on a network gets from labkit, bound over the image's (Docker's).
ETC_FILES = ("etc/hosts", "etc/resolv.conf", "etc/hostname")

if TYPE_CHECKING:
    from labkit.runtime.records import Record


def root_of(spec: ContainerSpec, record: Record) -> ContainerSpec:
    """The spec with its root settled in the container's directory, and its user resolved
    in that root (the image's /etc/passwd, not the host's):

    * an image with a mount namespace: a writable layer of its own over the image's layers
      (``prepare``); ``rootfs`` becomes the overlay's mount point, mounted by the helper;
    * an image without one: a throwaway flattened copy (``flatten``): nothing else would
      keep the container from changing its image;
    * a directory of yours: used as it is.
    """
    layers = [Path(p) for p in spec.layers()]
    if spec.runs_on_a_copy:
        from labkit.kernel.mounts import mounts_under

        for lower in layers:
            mounted = mounts_under(lower)
            if mounted:  # copying a mounted /proc would never end
                raise LabkitError(
                    f"something is mounted inside image {spec.image}: {', '.join(mounted)}",
                    fix=f"unmount it (umount {mounted[0]}), then try again",
                )
        copy = record.directory / "rootfs"
        flatten(layers, copy)
        spec = dataclasses.replace(spec, rootfs=str(copy), lowers=[], layer=str(record.directory))
        layers = [copy]
    elif layers:
        owner = USERNS_HOST_BASE if "user" in spec.namespaces else 0
        files = ETC_FILES if spec.network_mode() not in ("host", "none") else ()
        merged, layers = prepare(record.directory, layers, owner, files)
        lowers = [str(p) for p in layers]
        spec = dataclasses.replace(
            spec, rootfs=str(merged), lowers=lowers, layer=str(record.directory)
        )
    else:
        layers = [Path(spec.rootfs)]
    who = image_config.identity(
        spec.user, read_text(layers, "etc/passwd"), read_text(layers, "etc/group")
    )
    spec = dataclasses.replace(spec, identity=dataclasses.asdict(who))
    record.config = dataclasses.asdict(spec)  # `diff` finds the layers here
    record.save()
    return spec


def changes(record: Record) -> list[tuple[str, str]]:
    """What a container changed, as ``docker diff`` lists it: ("A"dded, "C"hanged or
    "D"eleted, path), read from its upper layer against the layers below it."""
    config = record.config
    if not config.get("layer") or not config.get("lowers"):
        raise LabkitError(
            f"container {record.name} has no layer of its own: it runs on {config['rootfs']}",
            fix="run an image with a mount namespace (add mnt to {ns})",
        )
    upper = Path(config["layer"]) / "upper"
    return overlay.diff(upper, [Path(p) for p in config["lowers"]])


def find(lowers: list[Path], relpath: str) -> Path | None:
    """The entry ``relpath`` names in the union of ``lowers`` (top first), or None.

    Layer by layer from the top, each directory on the way down is checked: a whiteout, or a
    file where a directory should be, ends the search (nothing below shows through); an opaque
    directory means this layer is the last one that counts.
    """
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    for lower in lowers:
        here, last_layer = Path(lower), is_opaque(Path(lower))
        for depth, part in enumerate(parts):
            here = here / part
            if is_whiteout(here):
                return None
            if not os.path.lexists(here):
                break  # this layer has nothing here: look below (unless it hides them)
            if depth == len(parts) - 1:
                return here
            if here.is_symlink() or not here.is_dir():
                return None  # a file shadows the directory of every lower layer
            last_layer = last_layer or is_opaque(here)
        else:
            return Path(lower)  # relpath was "/"
        if last_layer:
            return None
    return None


def read_text(lowers: list[Path], relpath: str) -> str | None:
    """The text of a regular file as the container will see it, or None if there is none."""
    found = find(lowers, relpath)
    if found is None or found.is_symlink() or not found.is_file():
        return None
    return found.read_text(errors="replace")


def prepare(
    directory: Path, lowers: list[Path], owner: int = 0, files: tuple[str, ...] = ()
) -> tuple[Path, list[Path]]:
    """Make ``upper/``, ``work/`` and the mount point ``merged/`` in the container's
    ``directory``, and ``init/`` if the image lacks a mount point or one of ``files`` (empty
    files for the network's /etc files to be bound over). Returns the mount point and the
    lower directories to mount, top first.

    The directory is mode 0700 (setuid files copied up must not be reachable by host users,
    CVE-2021-41091), owned by ``owner``: with a user namespace, the host uid of the
    container's root, which mounts the overlay and must reach and write its layer.
    """
    directory.chmod(0o700)
    for name in ("upper", "work", "merged"):
        (directory / name).mkdir(mode=0o755)
        os.chown(directory / name, owner, owner)
    os.chown(directory, owner, owner)
    missing = [n for n in MOUNT_POINTS if find(lowers, n) is None]
    absent = [f for f in files if find(lowers, f) is None and _may_add(lowers, f)]
    if missing or absent:
        init = directory / "init"
        init.mkdir(mode=0o755)
        for name in missing:
            (init / name).mkdir(mode=0o755)
        for name in absent:
            (init / name).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            (init / name).touch(mode=0o644)
        lowers = [init, *lowers]
    return directory / "merged", lowers


def _may_add(lowers: list[Path], relpath: str) -> bool:
    """A file may be added below a directory the image has as a real directory, or lacks; an
    image whose /etc is a symlink keeps it (the bind stage then leaves those files alone)."""
    parent = find(lowers, os.path.dirname(relpath))
    return parent is None or (parent.is_dir() and not parent.is_symlink())


def flatten(lowers: list[Path], dest: Path) -> None:
    """One directory holding what the overlay of ``lowers`` would show (for a container
    without a mount namespace): the bottom layer copied, then each layer above applied."""
    copy_tree(lowers[-1], dest)
    for layer in reversed(lowers[:-1]):
        _apply(Path(layer), dest)


def _apply(layer: Path, dest: Path) -> None:
    """Lay ``layer`` over ``dest``: whiteouts delete, opaque dirs replace, the rest is copied."""
    from labkit.kernel.mounts import remove_tree

    for top, dirs, files in os.walk(layer):
        rel = Path(top).relative_to(layer)
        for name in [*dirs, *files]:
            source, target = Path(top) / name, dest / rel / name
            if is_whiteout(source) or (is_opaque(source) and source.is_dir()):
                if os.path.lexists(target):
                    remove_tree(target)
                if is_whiteout(source):
                    continue
            if source.is_dir() and not source.is_symlink():
                if os.path.lexists(target) and not target.is_dir():
                    target.unlink()
                target.mkdir(exist_ok=True)
                st = os.lstat(source)
                os.chown(target, st.st_uid, st.st_gid)
                os.chmod(target, stat.S_IMODE(st.st_mode))
            else:
                if os.path.lexists(target):
                    remove_tree(target)
                _copy_one(source, target)


def _copy_one(source: Path, target: Path) -> None:
    """Copy one non-directory entry with its metadata (device nodes made, never read)."""
    from labkit.kernel.mounts import _copy_entry

    _copy_entry(str(source), str(target))
    if not source.is_symlink():
        st = os.lstat(source)
        os.chown(target, st.st_uid, st.st_gid)
