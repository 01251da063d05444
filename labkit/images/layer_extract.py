"""Creating a layer's entries inside one directory without ever leaving it.

Every path is opened one component at a time from a file descriptor of the layer's root,
with ``O_NOFOLLOW``: the kernel itself refuses to follow a symlink on the way, so no name in
the archive, however crafted, reaches a file outside (the policy is in ``labkit.images.layers``).
Leaves are made with ``O_CREAT|O_EXCL|O_NOFOLLOW``, ``mkdirat``, ``symlinkat``, ``linkat``
without ``AT_SYMLINK_FOLLOW`` and ``mknodat``: the ``dir_fd=`` forms of the ``os`` functions.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass

from labkit.errors import LabkitError
from labkit.images.layer_streams import HOSTILE
from labkit.kernel.overlay import OPAQUE_XATTR

WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"
PATH_MAX, NAME_MAX = 4096, 255
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class LayerStats:
    diff_id: str = ""  # sha256 of the uncompressed tar: what the image config lists
    files: int = 0  # entries made: files, directories, links, FIFOs
    size: int = 0  # bytes of file content
    tar_size: int = 0  # bytes of the uncompressed tar
    whiteouts: int = 0
    opaque_dirs: int = 0
    devices_skipped: int = 0
    xattrs_dropped: int = 0


def is_whiteout(st: os.stat_result) -> bool:
    """overlayfs's mark for "deleted": a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def refuse(entry: str, rule: str) -> LabkitError:
    if len(entry) > 120:  # one line, even for a name made to be long
        entry = f"{entry[:80]}...{entry[-30:]}"
    if len(rule) > 200:
        rule = f"{rule[:160]}...{rule[-30:]}"
    return LabkitError(f"refusing layer entry {entry!r}: {rule}", fix=HOSTILE)


def parts_of(name: str, entry: str) -> list[str]:
    """A member name as components inside the layer, or a refusal if it could leave it."""
    if name.startswith("/"):
        raise refuse(entry, f"absolute name {name!r}")
    if len(os.fsencode(name)) >= PATH_MAX:
        raise refuse(entry, f"name longer than PATH_MAX ({PATH_MAX} bytes)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse(entry, f"'..' in {name!r} would climb out of the layer")
    if any(len(os.fsencode(p)) > NAME_MAX for p in parts):
        raise refuse(entry, f"a component longer than NAME_MAX ({NAME_MAX} bytes)")
    return parts


class Extractor:
    """Creates entries relative to the layer's root fd, never by path from "/"."""

    def __init__(self, root: int, stats: LayerStats) -> None:
        self.root, self.stats = root, stats
        self.as_root = os.geteuid() == 0  # else owners are the caller's, as in rootless tools
        self.dir_times: dict[tuple[str, ...], int] = {}  # set last: children change them
        self.root_mode = 0o755
        # the last parent walked to: a tar lists a directory's entries together, so this
        # saves most of the walks. Dropped whenever a directory is removed.
        self.cache: tuple[tuple[str, ...], int] | None = None

    def forget(self) -> None:
        if self.cache:
            os.close(self.cache[1])
            self.cache = None

    def parent(self, parts: list[str], entry: str, create: bool = True) -> int:
        """An fd of the directory holding ``parts[-1]``, opened one component at a time with
        O_NOFOLLOW: a symlink or a file on the way is refused, never followed."""
        key = tuple(parts[:-1])
        if self.cache and self.cache[0] == key:
            return os.dup(self.cache[1])
        fd = os.dup(self.root)
        try:
            for part in parts[:-1]:
                try:
                    child = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise refuse(entry, f"{'/'.join(parts)!r} is not unpacked (yet)") from None
                    os.mkdir(part, 0o755, dir_fd=fd)  # a parent with no entry: 0755, as Docker
                    child = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    if not (create and is_whiteout(st)):
                        why = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                        raise refuse(entry, f"{part!r} on its path is {why}") from exc
                    # deleted below, made again here: that is an opaque directory
                    os.unlink(part, dir_fd=fd)
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, DIR_FLAGS, dir_fd=fd)
                    os.setxattr(child, OPAQUE_XATTR, b"y")
                os.close(fd)
                fd = child
            self.forget()
            self.cache = (key, os.dup(fd))
            return fd
        except BaseException:
            os.close(fd)
            raise

    def entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = parts_of(m.name, m.name)
        if not parts:  # "./": the layer's root directory itself
            if not m.isdir():
                raise refuse(m.name, "the root of a layer must be a directory")
            self.meta(self.root, m)
            self.root_mode = m.mode & 0o7777
            self.dir_times[()] = _ns(m)
            return
        if parts[-1].startswith(WHITEOUT):
            return self.whiteout(parts, m)
        if m.ischr() or m.isblk():  # policy: no device nodes from images
            self.stats.devices_skipped += 1
            return
        fd = self.parent(parts, m.name)
        try:
            leaf = parts[-1]
            self.make_room(fd, leaf, m.isdir())
            if m.isreg():
                self.file(fd, leaf, tar, m)
            elif m.isdir():
                with contextlib.suppress(FileExistsError):  # dir over dir: merge
                    os.mkdir(leaf, 0o700, dir_fd=fd)
                sub = os.open(leaf, DIR_FLAGS, dir_fd=fd)
                try:
                    self.meta(sub, m)
                finally:
                    os.close(sub)
                self.dir_times[tuple(parts)] = _ns(m)
            elif m.issym():
                os.symlink(m.linkname, leaf, dir_fd=fd)
                self.meta_at(fd, leaf, m, symlink=True)
            elif m.islnk():
                self.hardlink(fd, leaf, m)
            elif m.isfifo():
                os.mkfifo(leaf, 0o600, dir_fd=fd)
                self.meta_at(fd, leaf, m)
            else:
                raise refuse(m.name, f"unknown tar entry type {m.type!r}")
            self.stats.files += 1
        finally:
            os.close(fd)

    def make_room(self, fd: int, leaf: str, new_is_dir: bool) -> None:
        """Later entries win (as in Docker): remove what is there, unless dir meets dir."""
        try:
            st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(leaf, dir_fd=fd)
        elif not new_is_dir:
            self.forget()
            shutil.rmtree(leaf, dir_fd=fd)  # fd-based: never follows a symlink inside

    def file(self, fd: int, leaf: str, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        out = os.open(leaf, _NEW_FILE, 0o600, dir_fd=fd)
        with open(out, "wb", closefd=True) as sink:
            shutil.copyfileobj(tar.extractfile(m), sink, 1 << 20)  # type: ignore[misc]
            sink.flush()
            self.meta(out, m)
        self.stats.size += m.size

    def hardlink(self, fd: int, leaf: str, m: tarfile.TarInfo) -> None:
        """linkname counts from the layer's root, not from the link's directory."""
        target = parts_of(m.linkname, m.name)
        if not target:
            raise refuse(m.name, "a hardlink to the layer's root")
        tfd = self.parent(target, m.name, create=False)
        try:
            try:
                st = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise refuse(m.name, f"hardlink to {m.linkname!r}, not unpacked (yet)") from None
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise refuse(m.name, f"hardlink to {m.linkname!r}, not a file or symlink")
            os.link(target[-1], leaf, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def whiteout(self, parts: list[str], m: tarfile.TarInfo) -> None:
        name = parts[-1][len(WHITEOUT) :]
        if parts[-1] != OPAQUE and name.startswith(WHITEOUT):
            return  # aufs bookkeeping (.wh..wh.plnk): means nothing to overlayfs
        if parts[-1] != OPAQUE and name in ("", ".", ".."):
            raise refuse(m.name, "a whiteout must name a file")
        fd = self.parent(parts, m.name)
        try:
            if parts[-1] == OPAQUE:  # an xattr on the dir: applies whatever the tar's order
                os.setxattr(fd, OPAQUE_XATTR, b"y")
                self.stats.opaque_dirs += 1
                return
            with contextlib.suppress(FileNotFoundError):
                if not is_whiteout(os.stat(name, dir_fd=fd, follow_symlinks=False)):
                    return  # a whiteout hides lower layers only, never its own layer's file
                os.unlink(name, dir_fd=fd)
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=fd)
            if self.as_root:
                os.chown(name, m.uid, m.gid, dir_fd=fd, follow_symlinks=False)
            self.stats.whiteouts += 1
        finally:
            os.close(fd)

    def meta(self, fd: int, m: tarfile.TarInfo) -> None:
        """Owner first (chown clears setuid and file capabilities), then mode, xattrs, mtime."""
        if self.as_root:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)
        for key, value in m.pax_headers.items():
            name = key.removeprefix("SCHILY.xattr.")
            if name == key:
                continue
            keep = name == "security.capability" or name.startswith("user.")
            if not keep or name.startswith("user.overlay."):
                self.stats.xattrs_dropped += 1
                continue
            os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
        if not m.isdir():
            os.utime(fd, ns=(_ns(m), _ns(m)))

    def meta_at(self, fd: int, leaf: str, m: tarfile.TarInfo, symlink: bool = False) -> None:
        if self.as_root:
            os.chown(leaf, m.uid, m.gid, dir_fd=fd, follow_symlinks=False)
        if not symlink:  # a symlink's own mode means nothing on Linux
            os.chmod(leaf, m.mode & 0o7777, dir_fd=fd, follow_symlinks=False)
        os.utime(leaf, ns=(_ns(m), _ns(m)), dir_fd=fd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory mtimes last: creating a child changes its directory's mtime."""
        if () not in self.dir_times:
            os.fchmod(self.root, self.root_mode)
        for parts, ns in self.dir_times.items():
            try:
                fd = self.parent([*parts, "."], "/".join(parts), create=False)
            except (LabkitError, OSError):
                continue  # replaced by a later entry
            try:
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)


def _ns(m: tarfile.TarInfo) -> int:
    return round(m.mtime * 1_000_000_000)
