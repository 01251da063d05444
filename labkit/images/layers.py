"""A layer is a tar archive of changes: unpacking one safely, and packing one back.

A layer holds the files one build step added or changed, plus *whiteouts* for what it
deleted: an empty ``.wh.NAME`` means "NAME is gone", ``.wh..wh..opq`` in a directory means
"nothing of this directory from the layers below". labkit keeps each layer unpacked once, in
the form overlayfs reads as a lower directory: a whiteout becomes a character device 0/0
named NAME, an opaque directory gets the xattr ``trusted.overlay.opaque=y``.

A layer comes from the network, so every name in it is hostile until proven otherwise
(CVE-2007-4559, CVE-2014-6407, CVE-2014-9356, CVE-2021-32760). ``tarfile.extractall`` is not
used: its filters had bypasses (CVE-2025-4517 and others) and its ``data`` filter drops what
real images need (setuid bits, absolute symlinks). Instead every path is walked one component
at a time with directory file descriptors and ``O_NOFOLLOW``, so the kernel itself refuses to
follow a symlink on the way. The policy:

* names are relative paths of plain components: ``..``, absolute names, names longer than
  PATH_MAX, and names through a symlink or a file earlier in the archive are refused;
* a symlink's target may be anything (it is resolved later, inside the container, where "/"
  is the image's root); it is never followed while unpacking;
* a hardlink names a file or symlink already unpacked in this layer, and is made without
  following anything;
* a later entry wins over an earlier one of the same name, as in Docker (dir over dir merges);
* whiteouts become overlayfs's whatever their order in the archive, and never hide a file of
  their own layer; a bare ``.wh.`` or ``.wh..`` is refused, aufs's ``.wh..wh.*`` ignored;
* owners, modes (setuid and setgid too: /usr/bin/passwd needs them) and mtimes are kept.
  That is safe because the layer store is mode 0700, so no host user can reach a setuid
  file in it (CVE-2021-41091);
* character and block devices are skipped (counted in ``LayerStats``): a container gets its
  own /dev, and a disk device in an image is an attack. FIFOs are kept;
* xattrs (PAX ``SCHILY.xattr.*``): ``security.capability`` (``ping`` needs it) and ``user.*``
  are kept; the rest is dropped (counted). ``trusted.overlay.*``/``user.overlay.*`` are
  overlayfs's own control data (opaque, redirect, metacopy): an image must not steer the
  overlay. Other ``trusted.*``/``security.*`` names belong to the host's policy;
* ``max_bytes`` (uncompressed) and ``max_entries`` stop decompression bombs (CVE-2017-14992).

Any refusal is a LabkitError naming the entry and the rule, and ``dest`` is removed.
The byte streams (decompression, the diff id, the caps) are in ``layer_streams``; the walk
with file descriptors is in ``layer_extract``.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import stat
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from labkit.errors import LabkitError
from labkit.images.layer_extract import (
    DIR_FLAGS,
    OPAQUE,
    OPAQUE_XATTR,
    WHITEOUT,
    Extractor,
    LayerStats,
    is_whiteout,
    refuse,
)
from labkit.images.layer_streams import HOSTILE, Hashing, HashingWriter, decompressed
from labkit.kernel.mounts import remove_tree

__all__ = ["LayerStats", "is_whiteout", "pack", "unpack"]

MAX_BYTES, MAX_ENTRIES = 64 << 30, 2_000_000


def unpack(
    source: BinaryIO,
    dest: Path,
    *,
    media_type: str = "",
    max_bytes: int = MAX_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> LayerStats:
    """Unpack the layer in ``source`` (gzip, zstd or plain tar) into ``dest``, which must not
    exist, as an overlayfs lower directory. See the module's docstring for the policy."""
    dest = Path(dest)
    if os.path.lexists(dest):
        raise LabkitError(f"{dest} already exists", fix="unpack into a new directory")
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.mkdir(dest, 0o700)  # 0700 while unpacking; the root entry's mode (or 0755) at the end
    stats = LayerStats()
    try:
        with contextlib.ExitStack() as stack:
            stream = Hashing(decompressed(source, media_type, stack), max_bytes)
            root = os.open(dest, DIR_FLAGS)
            stack.callback(os.close, root)
            extractor = Extractor(root, stats)
            stack.callback(extractor.forget)
            tar = stack.enter_context(
                tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape")
            )
            for count, member in enumerate(tar, 1):
                if count > max_entries:
                    raise LabkitError(
                        f"layer has more than {max_entries} entries: a decompression bomb?",
                        fix="if the image is genuine, pass a larger max_entries",
                    )
                try:
                    extractor.entry(tar, member)
                except (OSError, OverflowError, ValueError) as exc:
                    raise _explain(member.name, exc) from exc
            while stream.read(1 << 20):  # the end-of-archive padding is part of the diff id
                pass
            extractor.finish()
            stats.diff_id, stats.tar_size = f"sha256:{stream.sha.hexdigest()}", stream.count
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        remove_tree(dest)
        raise LabkitError(f"layer is not a valid (compressed) tar: {exc}", fix=HOSTILE) from exc
    except BaseException:
        remove_tree(dest)
        raise
    return stats


def _explain(entry: str, exc: Exception) -> LabkitError:
    """Whose fault: a full disk or a missing privilege is not the image's."""
    err = getattr(exc, "errno", None)
    if err in (errno.ENOSPC, errno.EDQUOT):
        return LabkitError(f"no space left to unpack {entry!r}", fix="free some disk space")
    if err in (errno.EPERM, errno.EACCES) and os.geteuid() != 0:
        return LabkitError(f"unpacking {entry!r} needs root", fix="run labkit as root")
    return refuse(entry, getattr(exc, "strerror", None) or str(exc))


def _header(name: str, st: os.stat_result, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, st.st_uid, st.st_gid
    info.mtime = st.st_mtime_ns // 1_000_000_000  # whole seconds, as Docker writes them
    return info


def _xattrs(fd: int) -> dict[str, str]:
    """The xattrs ``unpack`` would keep, as PAX records."""
    kept = {}
    for name in os.listxattr(fd):
        if name == "security.capability" or (
            name.startswith("user.") and not name.startswith("user.overlay.")
        ):
            kept[f"SCHILY.xattr.{name}"] = os.getxattr(fd, name).decode("utf-8", "surrogateescape")
    return kept


def pack(diff: Path, out: BinaryIO) -> str:
    """Write the layer directory ``diff`` (overlayfs whiteouts) to ``out`` as an uncompressed
    tar with Docker's whiteouts, parents first and names in byte order (as Go's filepath.Walk);
    return its diff id.

    A device 0/0 becomes an empty ``.wh.NAME``, an opaque directory gets ``.wh..wh..opq``;
    hardlinks stay links; owners are numbers only (no user names of this host); only the
    xattrs ``unpack`` keeps are written. ``diff`` may be the upper dir of a container that
    still runs, so everything is read through directory fds and ``O_NOFOLLOW``: a name swapped
    for a symlink to a host file meanwhile is never followed (CVE-2018-15664, ``docker cp``)."""
    sink = HashingWriter(out)
    root = os.open(diff, DIR_FLAGS)
    try:
        with tarfile.open(
            fileobj=sink,  # type: ignore[arg-type]
            mode="w|",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
        ) as tar:
            _pack_dir(tar, root, "", {})
    finally:
        os.close(root)
    return f"sha256:{sink.sha.hexdigest()}"


_KINDS = {stat.S_ISLNK: tarfile.SYMTYPE, stat.S_ISCHR: tarfile.CHRTYPE,
          stat.S_ISBLK: tarfile.BLKTYPE, stat.S_ISFIFO: tarfile.FIFOTYPE}  # fmt: skip


def _pack_dir(tar: tarfile.TarFile, fd: int, rel: str, seen: dict[tuple[int, int], str]) -> None:
    for name in sorted(os.listdir(fd), key=os.fsencode):
        path = f"{rel}/{name}" if rel else name
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        perm = stat.S_IMODE(st.st_mode)
        if is_whiteout(st):
            tar.addfile(_header(f"{rel}/{WHITEOUT}{name}".lstrip("/"), st, tarfile.REGTYPE, 0o600))
        elif stat.S_ISDIR(st.st_mode):
            sub = os.open(name, DIR_FLAGS, dir_fd=fd)
            try:
                st = os.fstat(sub)
                info = _header(path, st, tarfile.DIRTYPE, stat.S_IMODE(st.st_mode))
                info.pax_headers.update(_xattrs(sub))
                tar.addfile(info)
                if _opaque(sub):
                    tar.addfile(_header(f"{path}/{OPAQUE}", st, tarfile.REGTYPE, perm & 0o777))
                _pack_dir(tar, sub, path, seen)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            with open(
                os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd), "rb"
            ) as f:
                st = os.fstat(f.fileno())
                info = _header(path, st, tarfile.REGTYPE, stat.S_IMODE(st.st_mode))
                first = seen.setdefault((st.st_dev, st.st_ino), path) if st.st_nlink > 1 else path
                if first != path:
                    info.type, info.linkname = tarfile.LNKTYPE, first
                    tar.addfile(info)
                    continue
                info.pax_headers.update(_xattrs(f.fileno()))
                info.size = st.st_size
                tar.addfile(info, f)
        elif not stat.S_ISSOCK(st.st_mode):  # a socket belongs to a running program
            kind = next(k for test, k in _KINDS.items() if test(st.st_mode))
            info = _header(path, st, kind, perm)
            if kind == tarfile.SYMTYPE:
                info.linkname = os.readlink(name, dir_fd=fd)
            elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            tar.addfile(info)


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False
