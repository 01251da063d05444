"""labkit.images.layers against hostile layers, and a round trip of real Docker layers.

Every hostile tarball is built here with tarfile, named after its trick (and CVE where there
is one). Each must be refused (LabkitError, the target removed) or contained (unpacked, with
nothing written outside). Canary files sit beside the target (in tmp_path) and in a directory
elsewhere; they are snapshotted (content, mode, owner, mtime, xattrs) before and compared after.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.images.layers import pack, unpack

Member = tuple[tarfile.TarInfo, bytes | None]


def reg(name: str, data: bytes = b"x", mode: int = 0o644, **kw) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_600_000_000
    for key, value in kw.items():
        setattr(info, key, value)
    return info, data


def entry(name: str, kind: bytes, linkname: str = "", mode: int = 0o755, **kw) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 1_600_000_000
    for key, value in kw.items():
        setattr(info, key, value)
    return info, None


def dir_(name: str, **kw) -> Member:
    return entry(name, tarfile.DIRTYPE, **kw)


def sym(name: str, target: str, **kw) -> Member:
    return entry(name, tarfile.SYMTYPE, target, mode=0o777, **kw)


def link(name: str, target: str) -> Member:
    return entry(name, tarfile.LNKTYPE, target)


def tar_bytes(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Everything about every path below ``roots`` that a write would change."""
    seen: dict[str, tuple] = {}
    for root in roots:
        for top, dirs, files in os.walk(root):
            for path in [top, *(os.path.join(top, n) for n in dirs + files)]:
                st = os.lstat(path)
                body = (
                    Path(path).read_bytes()
                    if stat.S_ISREG(st.st_mode)
                    else os.readlink(path)
                    if stat.S_ISLNK(st.st_mode)
                    else None
                )
                xattrs = tuple(sorted(os.listxattr(path, follow_symlinks=False)))
                seen[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, body, xattrs)
    return seen


class World:
    """dest, with canaries beside it (tmp_path/beside) and elsewhere (/var/tmp/...)."""

    def __init__(self, tmp: Path, outside: Path) -> None:
        self.dest, self.beside, self.outside = tmp / "diff", tmp / "beside", outside
        for place in (self.beside, self.outside):
            (place / "sub").mkdir(parents=True)
            (place / "canary").write_text("canary\n")
            (place / "sub" / "canary").write_text("deeper\n")
            os.symlink("canary", place / "alias")
        self.before = snapshot(self.beside, self.outside)

    def unchanged(self) -> None:
        assert snapshot(self.beside, self.outside) == self.before

    def unpack(self, data: bytes, **kw):
        return unpack(io.BytesIO(data), self.dest, **kw)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    outside = Path(tempfile.mkdtemp(prefix="labkit-test-outside-", dir="/var/tmp"))
    try:
        yield World(tmp_path, outside)
    finally:
        shutil.rmtree(outside)


# Each case: the members; a refusal is expected to mention ``why``.
REFUSED: dict[str, Callable[[World], list[Member]]] = {
    "dotdot_CVE-2007-4559": lambda w: [reg("../beside/canary", b"pwned")],
    "dotdot_inside_path": lambda w: [dir_("a"), reg("a/../../beside/canary", b"pwned")],
    "absolute_CVE-2014-6407": lambda w: [reg(f"{w.outside}/canary", b"pwned")],
    "symlink_parent_absolute_CVE-2014-9356": lambda w: [
        sym("etc", str(w.outside)),
        reg("etc/canary", b"pwned"),
    ],
    "symlink_parent_relative": lambda w: [sym("etc", "../beside"), reg("etc/canary", b"pwned")],
    "symlink_parent_up_up_up": lambda w: [
        sym("etc", "../../../../../../../.."),
        reg(f"etc{w.outside}/canary", b"pwned"),
    ],
    "symlink_parent_deeper": lambda w: [
        dir_("usr"),
        sym("usr/lib", str(w.outside)),
        reg("usr/lib/sub/canary", b"pwned"),
    ],
    "whiteout_through_symlink_CVE-2021-32760": lambda w: [
        sym("etc", str(w.outside)),
        reg("etc/.wh.canary", b""),
    ],
    "opaque_through_symlink": lambda w: [sym("etc", str(w.outside)), reg("etc/.wh..wh..opq", b"")],
    "dev_symlink_CVE-2026-41579": lambda w: [sym("dev", str(w.outside)), reg("dev/canary", b"!")],
    "hardlink_dotdot_CVE-2014-6407": lambda w: [link("x", "../beside/canary")],
    "hardlink_absolute": lambda w: [link("x", f"{w.outside}/canary")],
    "hardlink_through_symlink_cpython-151558": lambda w: [
        sym("etc", str(w.outside)),
        link("x", "etc/canary"),
    ],
    "hardlink_not_yet_extracted": lambda w: [link("x", "later"), reg("later")],
    "hardlink_to_directory": lambda w: [dir_("d"), link("x", "d")],
    "file_as_parent": lambda w: [reg("a"), reg("a/b")],
    "bare_whiteout": lambda w: [reg(".wh.", b"")],
    "whiteout_of_dotdot": lambda w: [reg(".wh..", b"")],
    "name_over_NAME_MAX": lambda w: [reg("n" * 300)],
    "name_over_PATH_MAX": lambda w: [reg("/".join(["d" * 200] * 25))],
    "root_not_a_directory": lambda w: [sym(".", str(w.outside))],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_layer_is_refused(world: World, case: str) -> None:
    data = tar_bytes(*REFUSED[case](world))
    with pytest.raises(LabkitError, match="refusing layer entry") as caught:
        world.unpack(data)
    assert "do not use it" in caught.value.render()
    assert not os.path.lexists(world.dest), "a refused layer must leave nothing behind"
    world.unchanged()


def test_symlink_then_file_does_not_write_through(world: World) -> None:
    world.unpack(tar_bytes(sym("f", f"{world.outside}/canary"), reg("f", b"mine")))
    assert (world.dest / "f").read_bytes() == b"mine" and not (world.dest / "f").is_symlink()
    world.unchanged()


def test_symlink_then_dir_replaces_the_symlink(world: World) -> None:
    world.unpack(tar_bytes(sym("d", str(world.outside)), dir_("d"), reg("d/canary", b"mine")))
    assert (world.dest / "d").is_dir() and not (world.dest / "d").is_symlink()
    assert (world.dest / "d" / "canary").read_bytes() == b"mine"
    world.unchanged()


def test_hardlink_to_a_symlink_links_the_symlink_not_its_target(world: World) -> None:
    world.unpack(tar_bytes(sym("evil", f"{world.outside}/canary"), link("x", "evil")))
    x = os.lstat(world.dest / "x")
    assert stat.S_ISLNK(x.st_mode) and x.st_nlink == 2
    assert os.readlink(world.dest / "x") == f"{world.outside}/canary"  # kept, never followed
    world.unchanged()


def test_later_entries_win_as_in_docker(world: World) -> None:
    stats = world.unpack(
        tar_bytes(
            reg("f", b"one"),
            reg("f", b"two"),  # duplicate: the later one
            reg("a", b"file"),
            dir_("a"),
            reg("a/b", b"in a dir"),  # file, then dir
            dir_("c"),
            reg("c/x"),
            sym("c/y", "/etc/shadow"),
            reg("c", b"now a file"),  # dir→file
            dir_("m", mode=0o700),
            reg("m/one"),
            dir_("m", mode=0o750),
            reg("m/two"),  # dir+dir
        )  # fmt: skip
    )
    d = world.dest
    assert (d / "f").read_bytes() == b"two" and (d / "a" / "b").read_bytes() == b"in a dir"
    assert (d / "c").read_bytes() == b"now a file"
    assert sorted(os.listdir(d / "m")) == ["one", "two"]
    assert stat.S_IMODE(os.lstat(d / "m").st_mode) == 0o750
    assert stats.files == 13  # entries made, replaced ones included
    world.unchanged()


def test_metadata_setuid_owners_mtimes_xattrs(world: World) -> None:
    caps = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # v2, effective, cap_net_raw
    xattrs = {
        "SCHILY.xattr.security.capability": caps.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.note": "kept",
        "SCHILY.xattr.trusted.overlay.opaque": "y",  # would steer overlayfs: dropped
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.user.overlay.opaque": "y",
        "SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0",
    }
    stats = world.unpack(
        tar_bytes(
            dir_("./", mode=0o755, mtime=1_500_000_000),
            dir_("bin", mode=0o2775, uid=0, gid=50, mtime=1_500_000_001),
            reg("bin/su", mode=0o4755, uid=0, gid=0),
            reg("bin/ping", mode=0o755, pax_headers=xattrs),
            reg("home", b"owned", mode=0o600, uid=1234, gid=5678, mtime=1_234_567_890),
            sym("lnk", "/nowhere", uid=42, gid=43),
            entry("pipe", tarfile.FIFOTYPE, mode=0o620),
        )
    )
    d = world.dest
    assert stat.S_IMODE(os.stat(d / "bin/su").st_mode) == 0o4755  # setuid kept (policy)
    assert stat.S_IMODE(os.stat(d / "bin").st_mode) == 0o2775
    assert (os.stat(d / "bin").st_gid, os.stat(d / "bin").st_mtime) == (50, 1_500_000_001)
    assert os.stat(d).st_mtime == 1_500_000_000
    home = os.stat(d / "home")
    assert (home.st_uid, home.st_gid, home.st_mtime, stat.S_IMODE(home.st_mode)) == (
        1234,
        5678,
        1_234_567_890,
        0o600,
    )
    lnk = os.lstat(d / "lnk")
    assert (lnk.st_uid, lnk.st_gid) == (42, 43) and os.readlink(d / "lnk") == "/nowhere"
    assert stat.S_ISFIFO(os.lstat(d / "pipe").st_mode)
    assert stat.S_IMODE(os.lstat(d / "pipe").st_mode) == 0o620
    names = sorted(os.listxattr(d / "bin/ping"))
    assert names == ["security.capability", "user.note"]
    assert os.getxattr(d / "bin/ping", "security.capability") == caps
    assert stats.xattrs_dropped == 4
    world.unchanged()


def test_device_nodes_are_skipped_and_counted(world: World) -> None:
    stats = world.unpack(
        tar_bytes(
            dir_("dev"),
            entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
            entry("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1),
            entry("dev/fake-whiteout", tarfile.CHRTYPE, devmajor=0, devminor=0),
        )
    )
    assert stats.devices_skipped == 3 and os.listdir(world.dest / "dev") == []
    world.unchanged()


def test_whiteouts_become_overlay_whiteouts(world: World) -> None:
    stats = world.unpack(
        tar_bytes(
            reg(".wh.gone", b""),
            dir_("d"),
            reg("d/keep"),
            reg("d/.wh..wh..opq", b""),  # after a sibling: order must not matter
            reg("x", b"mine"),
            reg(".wh.x", b""),  # a whiteout hides lower layers only, never its own layer
            reg(".wh.y", b""),
            dir_("y"),
            reg("y/z"),  # later wins: y is a directory now
            reg(".wh..wh.plnk", b""),  # aufs bookkeeping: ignored
            dir_("e"),
            reg("e/.wh.sub", b""),
            reg("e/sub/new"),  # deleted, then made again in this layer: opaque
        )
    )
    d = world.dest
    gone = os.lstat(d / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(d / "d", "trusted.overlay.opaque") == b"y"
    assert (d / "d" / "keep").exists() and not os.path.lexists(d / "d" / ".wh..wh..opq")
    assert (d / "x").read_bytes() == b"mine"
    assert (d / "y" / "z").is_file()
    assert os.getxattr(d / "e" / "sub", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(d)) == ["d", "e", "gone", "x", "y"]
    assert (stats.whiteouts, stats.opaque_dirs) == (3, 1)
    world.unchanged()


def test_long_names_with_pax_and_gnu_headers(world: World) -> None:
    deep = "/".join(["p" * 200] * 10)  # 2009 bytes: beyond ustar's 255
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        if world.dest.exists():
            shutil.rmtree(world.dest)
        members = [reg(f"{deep}/file", b"deep"), sym("s", "t" * 1000), link("h", f"{deep}/file")]
        world.unpack(tar_bytes(*members, fmt=fmt))
        assert (world.dest / deep / "file").read_bytes() == b"deep"
        assert os.readlink(world.dest / "s") == "t" * 1000
        assert os.stat(world.dest / "h").st_nlink == 2
    world.unchanged()


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("codec", ["plain", "gzip", "zstd"])
def test_compression_is_detected_and_diff_id_is_of_the_plain_tar(world: World, codec: str) -> None:
    import hashlib

    plain = tar_bytes(dir_("etc"), reg("etc/hostname", b"labkit\n"))
    data = {"plain": plain, "gzip": gzip.compress(plain), "zstd": _zstd(plain)}[codec]
    stats = world.unpack(data)
    assert stats.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert stats.tar_size == len(plain)
    assert (world.dest / "etc/hostname").read_text() == "labkit\n"


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_decompression_bomb_is_stopped_by_the_cap(world: World, codec: str) -> None:
    bomb = tar_bytes(reg("zeros", bytes(64 << 20)))  # 64 MiB of zeros
    data = gzip.compress(bomb) if codec == "gzip" else _zstd(bomb)
    assert len(data) < 1 << 20
    with pytest.raises(LabkitError, match="decompression bomb"):
        world.unpack(data, max_bytes=8 << 20)
    assert not os.path.lexists(world.dest)
    many = tar_bytes(*(reg(f"f{i}", b"") for i in range(200)))
    with pytest.raises(LabkitError, match="more than 100 entries"):
        world.unpack(many, max_entries=100)
    assert not os.path.lexists(world.dest)
    world.unchanged()


@pytest.mark.parametrize("damage", ["truncated_gzip", "garbage", "truncated_tar"])
def test_damaged_archives_are_refused_and_cleaned_up(world: World, damage: str) -> None:
    plain = tar_bytes(dir_("etc"), reg("etc/big", os.urandom(100_000)))
    data = {
        "truncated_gzip": gzip.compress(plain)[:5000],
        "garbage": os.urandom(4096),
        "truncated_tar": plain[:20_000],
    }[damage]
    with pytest.raises(LabkitError):
        world.unpack(data)
    assert not os.path.lexists(world.dest)
    world.unchanged()


def test_existing_dest_is_refused(world: World) -> None:
    world.dest.mkdir()
    with pytest.raises(LabkitError, match="already exists"):
        world.unpack(tar_bytes(reg("f")))
    assert os.listdir(world.dest) == []


# -- real layers, from Docker -----------------------------------------------------------------


def _docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, check=True, timeout=120, **kw)


def _save(image: str, into: Path) -> tuple[list[Path], list[str]]:
    """``docker save``: the layer tars (bottom first) and the config's diff ids."""
    into.mkdir()
    with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as saving:
        subprocess.run(["tar", "-C", str(into), "-x"], stdin=saving.stdout, check=True)
    assert saving.returncode == 0
    manifest = json.loads((into / "manifest.json").read_text())[0]
    config = json.loads((into / manifest["Config"]).read_text())
    return [into / p for p in manifest["Layers"]], config["rootfs"]["diff_ids"]


def tree(root: Path) -> dict[str, tuple]:
    """A layer as what matters to a container: type, mode, owner, mtime, content, xattrs."""
    found = {}
    for path, facts in snapshot(root).items():
        mode, uid, gid, mtime_ns, body, _ = facts
        xattrs = {n: os.getxattr(path, n, follow_symlinks=False) for n in facts[5]}
        rdev = os.lstat(path).st_rdev
        mtime = None if path == str(root) else mtime_ns // 10**9
        found[os.path.relpath(path, root)] = (mode, uid, gid, mtime, body, xattrs, rdev)
    return found


def test_docker_layer_round_trip(tmp_path: Path) -> None:
    """``docker save labkit/busybox``: unpack measures the diff id the config promises; pack
    then unpack gives the same tree, and pack is deterministic. The bytes differ from the
    original tar (GNU tar wrote it, with user names and its own order), so the trees are
    compared, not the bytes."""
    tars, diff_ids = _save("labkit/busybox:latest", tmp_path / "save")
    started = time.monotonic()
    with open(tars[0], "rb") as src:
        stats = unpack(src, tmp_path / "one")
    took = time.monotonic() - started
    assert stats.diff_id == diff_ids[0]
    assert stats.files > 100 and (tmp_path / "one/bin/busybox").is_file()
    packed = io.BytesIO()
    packed_id = pack(tmp_path / "one", packed)
    packed.seek(0)
    again = unpack(packed, tmp_path / "two")
    assert again.diff_id == packed_id and again.files == stats.files
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    assert pack(tmp_path / "two", io.BytesIO()) == packed_id
    print(f"unpacked {stats.files} entries ({stats.tar_size} bytes) in {took:.2f}s")


def test_docker_committed_layer_whiteouts_round_trip(tmp_path: Path) -> None:
    """A layer Docker itself wrote (``docker commit``) with a deleted file and a directory
    deleted and made again: its whiteouts become overlay whiteouts, and pack writes them
    back as Docker's ``.wh.`` names."""
    name = f"labkit-test-layers-{os.getpid()}"
    script = "rm /bin/ls; rm -rf /usr/sbin; mkdir /usr/sbin; echo hi > /usr/sbin/x"
    try:
        _docker("run", "--name", name, "labkit/busybox:latest", "sh", "-c", script)
        _docker("commit", name, f"{name}:1")
        tars, diff_ids = _save(f"{name}:1", tmp_path / "save")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", f"{name}:1"], capture_output=True)
    with open(tars[-1], "rb") as src:
        stats = unpack(src, tmp_path / "top")
    assert stats.diff_id == diff_ids[-1] and (stats.whiteouts, stats.opaque_dirs) == (1, 1)
    top = tmp_path / "top"
    assert stat.S_ISCHR(os.lstat(top / "bin/ls").st_mode) and os.lstat(top / "bin/ls").st_rdev == 0
    assert os.getxattr(top / "usr/sbin", "trusted.overlay.opaque") == b"y"
    out = io.BytesIO()
    pack(top, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = tar.getnames()
    with tarfile.open(tars[-1]) as tar:
        docker_names = tar.getnames()
    assert sorted(n.rstrip("/") for n in names) == sorted(n.rstrip("/") for n in docker_names)


def test_pack_writes_docker_whiteouts_and_never_follows_symlinks(world: World, tmp_path: Path):
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc/a").write_text("a")
    os.setxattr(layer / "etc/a", "user.note", b"kept")
    os.setxattr(layer / "etc/a", "trusted.overlay.origin", b"host data")
    os.link(layer / "etc/a", layer / "etc/b")
    os.mknod(layer / "gone", stat.S_IFCHR, os.makedev(0, 0))
    (layer / "o").mkdir()
    (layer / "o/f").write_text("f")
    os.setxattr(layer / "o", "trusted.overlay.opaque", b"y")
    os.symlink(world.outside, layer / "out")
    os.mkfifo(layer / "p")
    os.mknod(layer / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    out = io.BytesIO()
    diff_id = pack(layer, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        got = [(m.name, m.type, m.linkname, m.size) for m in tar.getmembers()]
        xattrs = tar.getmember("etc/a").pax_headers
    assert got == [
        ("etc", tarfile.DIRTYPE, "", 0),
        ("etc/a", tarfile.REGTYPE, "", 1),
        ("etc/b", tarfile.LNKTYPE, "etc/a", 0),
        (".wh.gone", tarfile.REGTYPE, "", 0),  # in the place of "gone", as Docker writes it
        ("null", tarfile.CHRTYPE, "", 0),
        ("o", tarfile.DIRTYPE, "", 0),
        ("o/.wh..wh..opq", tarfile.REGTYPE, "", 0),
        ("o/f", tarfile.REGTYPE, "", 1),
        ("out", tarfile.SYMTYPE, str(world.outside), 0),
        ("p", tarfile.FIFOTYPE, "", 0),
    ]
    assert xattrs == {"SCHILY.xattr.user.note": "kept"}
    out.seek(0)
    stats = unpack(out, tmp_path / "again")
    assert stats.diff_id == diff_id and (stats.whiteouts, stats.opaque_dirs) == (1, 1)
    assert stats.devices_skipped == 1  # /dev/null by policy
    world.unchanged()
