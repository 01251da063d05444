"""labkit.kernel.overlay on the real kernel, and its diff against the real ``docker diff``.

Every mount happens in a fresh python process that first moves into a mount namespace of its
own (``Lab.py``): the host's mount table never sees the overlay, and the namespace (with its
mounts) is gone when that process exits. The process also unmounts in ``finally``.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.images.layers import unpack
from labkit.kernel import overlay

PRELUDE = """
import os, json, time
from pathlib import Path
from labkit.kernel import overlay, syscalls
syscalls.unshare(syscalls.CLONE_NEWNS)
syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
"""


def in_namespace(lab, body: str, **values) -> dict:
    """Run ``body`` in a child in its own mount namespace; ``values`` become variables."""
    assigns = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    return lab.py(PRELUDE + assigns + body, timeout=120)


def make_dirs(tmp: Path, *names: str) -> list[str]:
    for name in names:
        (tmp / name).mkdir(parents=True)
    return [str(tmp / n) for n in names]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A one-layer image: etc/f, and a directory d with two files."""
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/f").write_text("lower\n")
    (lower / "d").mkdir()
    (lower / "d/one").write_text("1")
    (lower / "d/two").write_text("2")
    return lower


def test_copy_up_whiteout_and_opaque_dir(lab, tmp_path: Path, image: Path) -> None:
    merged, upper, work = make_dirs(tmp_path, "merged", "upper", "work")
    before = {p: p.read_bytes() for p in image.rglob("*") if p.is_file()}
    got = in_namespace(
        lab,
        """
try:
    overlay.mount(merged, [lower], upper, work)
    mountinfo = [l for l in open("/proc/self/mountinfo") if f" {merged} " in l]
    with open(f"{merged}/etc/f", "a") as f:
        f.write("container\\n")
    seen = Path(f"{merged}/etc/f").read_text()
    os.unlink(f"{merged}/d/one")
    os.unlink(f"{merged}/d/two")
    os.rmdir(f"{merged}/d")
    os.mkdir(f"{merged}/d")
    Path(f"{merged}/d/three").write_text("3")
    emit(seen=seen, d=sorted(os.listdir(f"{merged}/d")), mountinfo=mountinfo)
finally:
    syscalls.umount_detach(merged)
""",
        merged=merged,
        upper=upper,
        work=work,
        lower=str(image),
    )
    assert got["seen"] == "lower\ncontainer\n"
    assert got["d"] == ["three"]
    assert "overlay" in got["mountinfo"][0] and f"lowerdir={image}" in got["mountinfo"][0]
    up = Path(upper)
    assert (up / "etc/f").read_text() == "lower\ncontainer\n"  # the copy, changed
    assert {p: p.read_bytes() for p in image.rglob("*") if p.is_file()} == before  # untouched
    assert overlay.is_opaque(up / "d") and sorted(os.listdir(up / "d")) == ["three"]
    assert not overlay.is_whiteout(up / "etc/f") and not os.path.ismount(merged)


def test_delete_leaves_a_whiteout(lab, tmp_path: Path, image: Path) -> None:
    merged, upper, work = make_dirs(tmp_path, "merged", "upper", "work")
    got = in_namespace(
        lab,
        """
try:
    overlay.mount(merged, [lower], upper, work)
    os.unlink(f"{merged}/etc/f")
    emit(left=os.listdir(f"{merged}/etc"))
finally:
    syscalls.umount_detach(merged)
""",
        merged=merged,
        upper=upper,
        work=work,
        lower=str(image),
    )
    assert got["left"] == []
    st = os.lstat(Path(upper) / "etc/f")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert overlay.is_whiteout(Path(upper) / "etc/f")
    assert (image / "etc/f").read_text() == "lower\n"
    assert overlay.diff(upper, [image]) == [("C", "/etc"), ("D", "/etc/f")]


def test_two_containers_on_one_image_keep_their_changes_apart(
    lab, tmp_path: Path, image: Path
) -> None:
    dirs = make_dirs(tmp_path, "m1", "u1", "w1", "m2", "u2", "w2")
    got = in_namespace(
        lab,
        """
m1, u1, w1, m2, u2, w2 = dirs
try:
    overlay.mount(m1, [lower], u1, w1)
    overlay.mount(m2, [lower], u2, w2)
    Path(f"{m1}/etc/f").write_text("one\\n")
    Path(f"{m2}/etc/mine").write_text("two\\n")
    os.unlink(f"{m2}/d/one")
    emit(
        one=[Path(f"{m1}/etc/f").read_text(), sorted(os.listdir(f"{m1}/etc")),
             sorted(os.listdir(f"{m1}/d"))],
        two=[Path(f"{m2}/etc/f").read_text(), sorted(os.listdir(f"{m2}/etc")),
             sorted(os.listdir(f"{m2}/d"))],
    )
finally:
    syscalls.umount_detach(m1)
    syscalls.umount_detach(m2)
""",
        dirs=dirs,
        lower=str(image),
    )
    assert got["one"] == ["one\n", ["f"], ["one", "two"]]
    assert got["two"] == ["lower\n", ["f", "mine"], ["two"]]
    assert overlay.diff(dirs[1], [image]) == [("C", "/etc"), ("C", "/etc/f")]
    assert overlay.diff(dirs[4], [image]) == [
        ("C", "/d"),
        ("D", "/d/one"),
        ("C", "/etc"),
        ("A", "/etc/mine"),
    ]
    assert (image / "etc/f").read_text() == "lower\n" and (image / "d/one").exists()


def test_many_long_lowers_stay_under_the_page_limit(lab, tmp_path: Path) -> None:
    """200 layers at paths as long as labkit's (<64 hex>/diff): the absolute form is far over
    one page; mount() still fits, and the top layer wins."""
    count, lowers = 200, []
    for i in range(count):
        layer = tmp_path / "layers" / f"{i:064x}" / "diff"
        layer.mkdir(parents=True)
        (layer / f"file{i}").write_text(str(i))
        (layer / "common").write_text(str(i))
        lowers.append(str(layer))
    lowers.reverse()  # top first: layer 199 is on top
    merged, upper, work = make_dirs(tmp_path, "merged", "upper", "work")
    data = overlay.options(lowers, upper, work)
    assert len(data) > 4 * overlay.PAGE_LIMIT and not overlay.fits(data)
    cwd = os.getcwd()
    got = in_namespace(
        lab,
        """
started = time.monotonic()
cwd = os.getcwd()
try:
    overlay.mount(merged, lowers, upper, work)
    took = time.monotonic() - started
    line = next(l for l in open("/proc/self/mountinfo") if f" {merged} " in l)
    emit(files=len(os.listdir(merged)), common=Path(f"{merged}/common").read_text(),
         bottom=Path(f"{merged}/file0").read_text(), took=took, same_cwd=os.getcwd() == cwd,
         options=line.split(" - ")[1])
finally:
    syscalls.umount_detach(merged)
""",
        merged=merged,
        upper=upper,
        work=work,
        lowers=lowers,
    )
    assert got["files"] == count + 1 and got["common"] == "199" and got["bottom"] == "0"
    assert got["same_cwd"] and os.getcwd() == cwd
    print(f"mounted {count} lowers in {got['took'] * 1000:.1f} ms: {got['options'][:80]}...")


def test_many_lowers_from_pid_1_of_a_new_pid_namespace(lab, tmp_path: Path) -> None:
    """The runtime's helper mounts as PID 1 of the container's PID namespace while /proc is
    still the host's: the short names must be its own fds, not those of the host's PID 1."""
    lowers = []
    for i in range(100):
        layer = tmp_path / "layers" / f"{i:064x}" / "diff"
        layer.mkdir(parents=True)
        (layer / f"file{i}").write_text(str(i))
        lowers.append(str(layer))
    merged, upper, work = make_dirs(tmp_path, "merged", "upper", "work")
    got = in_namespace(
        lab,
        """
syscalls.unshare(syscalls.CLONE_NEWPID)
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    try:
        overlay.mount(merged, lowers, upper, work)
        os.write(w, json.dumps([os.getpid(), len(os.listdir(merged))]).encode())
        syscalls.umount_detach(merged)
    finally:
        os._exit(0)
os.close(w)
answer = os.read(r, 1000)
os.waitpid(child, 0)
emit(answer=json.loads(answer) if answer else None)
""",
        merged=merged,
        upper=upper,
        work=work,
        lowers=lowers,
    )
    assert got["answer"] == [1, 100]


def test_too_many_lowers_and_bad_paths_are_refused(tmp_path: Path) -> None:
    """Refused before any mount is tried, so this runs in the test process itself."""
    with pytest.raises(LabkitError, match="at most 500"):
        overlay.mount(tmp_path, [tmp_path] * 501, tmp_path, tmp_path)
    with pytest.raises(LabkitError, match="':' and ','"):
        overlay.options([tmp_path / "a:b"], tmp_path, tmp_path)
    with pytest.raises(LabkitError, match="at least one"):
        overlay.mount(tmp_path, [], tmp_path, tmp_path)


def test_diff_follows_the_lowers_rules(tmp_path: Path) -> None:
    """Whiteouts and opaque dirs in the *lower* layers hide what is below them."""
    top, bottom, upper = (tmp_path / n for n in ("top", "bottom", "upper"))
    for d in (top / "gone", bottom / "gone", bottom / "o", top / "o", upper / "o"):
        d.mkdir(parents=True)
    (bottom / "gone/x").write_text("x")
    os.rmdir(top / "gone")
    os.mknod(top / "gone", stat.S_IFCHR, os.makedev(0, 0))  # top deletes /gone
    (bottom / "o/hidden").write_text("h")
    (top / "o/shown").write_text("s")
    os.setxattr(top / "o", "trusted.overlay.opaque", b"y")  # top hides bottom's o/hidden
    os.setxattr(upper / "o", "trusted.overlay.opaque", b"y")  # the container empties /o
    (upper / "gone").mkdir()  # and makes /gone again
    assert overlay.diff(upper, [top, bottom]) == [("A", "/gone"), ("C", "/o"), ("D", "/o/shown")]


# -- against Docker -----------------------------------------------------------------------------

CHANGES = """set -e
echo x >> /etc/passwd
rm /bin/ls
mkdir -p /new/deep && touch /new/deep/f
mkdir -p /usr/share/a/b && touch /usr/share/a/b/f
rm -rf /usr/sbin && mkdir /usr/sbin && touch /usr/sbin/x
rm -rf /var
chmod 700 /tmp
ln -s /etc/passwd /lnk
"""


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _busybox_layer(tmp: Path) -> Path:
    """labkit/busybox's one layer from ``docker save``, unpacked by labkit."""
    save = tmp / "save"
    save.mkdir()
    with subprocess.Popen(["docker", "save", "labkit/busybox:latest"], stdout=subprocess.PIPE) as p:
        subprocess.run(["tar", "-C", str(save), "-x"], stdin=p.stdout, check=True)
    (layer,) = json.loads((save / "manifest.json").read_text())[0]["Layers"]
    with open(save / layer, "rb") as src:
        unpack(src, tmp / "layer" / "diff")
    return tmp / "layer" / "diff"


def test_diff_matches_docker_diff(lab, tmp_path: Path) -> None:
    """The same changes made by `docker run` on labkit/busybox and by a shell chrooted into
    labkit's overlay of the same layer: ``docker diff`` and ``overlay.diff`` list the same
    changes; and ``overlay.diff`` of Docker's own upper and lower dirs says the same too.
    (Docker 20.10 prints the top level in random order, so the lists are compared sorted.)"""
    name = f"labkit-test-overlay-{os.getpid()}"
    try:
        _docker("run", "--name", name, "labkit/busybox:latest", "sh", "-c", CHANGES)
        docker_says = sorted(
            (line[0], line[2:]) for line in _docker("diff", name).splitlines() if line
        )
        data = json.loads(_docker("inspect", name))[0]["GraphDriver"]["Data"]
        on_dockers_dirs = overlay.diff(data["UpperDir"], data["LowerDir"].split(":"))
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
    assert sorted(on_dockers_dirs) == docker_says

    layer = _busybox_layer(tmp_path)
    merged, upper, work = make_dirs(tmp_path, "merged", "upper", "work")
    got = in_namespace(
        lab,
        """
import subprocess
try:
    overlay.mount(merged, [lower], upper, work)
    done = subprocess.run(["chroot", merged, "/bin/sh", "-c", changes], capture_output=True,
                          text=True)
    emit(rc=done.returncode, err=done.stderr)
finally:
    syscalls.umount_detach(merged)
""",
        merged=merged,
        upper=upper,
        work=work,
        lower=str(layer),
        changes=CHANGES,
    )
    assert got["rc"] == 0, got["err"]
    started = time.monotonic()
    ours = overlay.diff(upper, [layer])
    took = time.monotonic() - started
    assert sorted(ours) == docker_says
    assert ours[:3] == [("C", "/bin"), ("D", "/bin/ls"), ("C", "/etc")]  # parents first
    assert ("D", "/var") in ours and ("C", "/usr/sbin") in ours and ("A", "/usr/sbin/x") in ours
    print(f"{len(ours)} changes, same as docker diff; diff() took {took * 1000:.1f} ms")


def test_unpacked_layer_round_trips_through_pack(tmp_path: Path) -> None:
    """An upper dir is a layer: pack() of it, unpacked again, gives the same diff."""
    from labkit.images.layers import pack

    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/f").write_text("f")
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc/f", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "new").write_text("n")
    out = io.BytesIO()
    pack(upper, out)
    out.seek(0)
    unpack(out, tmp_path / "again")
    assert overlay.diff(tmp_path / "again", [lower]) == overlay.diff(upper, [lower])
    assert overlay.diff(upper, [lower]) == [("C", "/etc"), ("D", "/etc/f"), ("A", "/new")]
