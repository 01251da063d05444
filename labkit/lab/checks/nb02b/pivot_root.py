"""02b-pivot-root: by hand, pivot_root into an image, with both preconditions met and the old root
gone, so that the chroot escape ends inside the image.

The learner's cell runs as root in a fresh child that starts in a *scratch* mount namespace
with ``/`` shared (as systemd makes it) and a copy of the busybox image on a tmpfs (``IMAGE``),
so no mistake can pivot this machine's root or write into the real image. While the cell runs,
``syscalls.pivot_root`` notes the state of the mounts at the moment of the call (is new_root a
mount point? is a mount on the way shared?), which tells the two EINVALs apart. Afterwards the
checker looks at the kernel: which directory is ``/``, which mounts the process can still see,
which mount namespace it is in, and where the classic chroot escape ends.
"""

from __future__ import annotations

import os
import tempfile

from labkit.lab.checks.common import failed, run_code
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

PRELUDE = """
from labkit.kernel import procfs as _pf, syscalls as _sc
_sc.mount("labkit-check", SCRATCH, "tmpfs", 0, "mode=755")
os.mkdir(IMAGE)
subprocess.run(["cp", "-a", BUSYBOX + "/.", IMAGE], check=True)
_sc.mount(None, "/", None, _sc.MS_REC | _sc.MS_SHARED)  # as systemd does at boot
_image = os.stat(IMAGE)
_start_mnt = os.readlink("/proc/self/ns/mnt")
_proc = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY)  # still readable after a pivot
_host_root = [[m.fstype, m.source, m.root] for m in _pf.mountinfo() if m.target == "/"]

def _table():
    fd = os.open("mountinfo", os.O_RDONLY, dir_fd=_proc)
    try:
        return _pf.parse_mountinfo(os.read(fd, 1 << 20).decode(errors="replace"))
    finally:
        os.close(fd)

def _pivot_watched(new_root, put_old, _real=_sc.pivot_root):
    table, new = _table(), os.path.realpath(new_root)
    def _under(m, path):
        return m.target == "/" or path == m.target or path.startswith(m.target + "/")
    parent = [m for m in table if m.target != new and _under(m, os.path.dirname(new))]
    on_path = [m for m in table if m.target == "/"][-1:] + parent[-1:]
    report(pivot={"mount_point": any(m.target == new for m in table),
                  "shared": any(m.propagation.startswith("shared") for m in on_path)})
    return _real(new_root, put_old)
_sc.pivot_root = _pivot_watched
"""

HARNESS = """
from labkit.kernel import rootfs as _rf
_now, _root = _table(), os.stat("/")
report(root_is_image=(_root.st_dev, _root.st_ino) == (_image.st_dev, _image.st_ino),
       new_ns=os.readlink("ns/mnt", dir_fd=_proc) != _start_mnt,
       pivoted=any(m.target == "/" for m in _now),
       old=[m.target for m in _now if [m.fstype, m.source, m.root] in _host_root],
       mounts=len(_now), inside=open("/etc/os-release").readline().strip())
# The escape only from the image (a scratch copy): from the host's own "/" it would make
# its hideout in the host's /tmp, and there is nothing to escape from anyway.
if (_root.st_dev, _root.st_ino) == (_image.st_dev, _image.st_ino):
    os.chdir("/")
    try:
        _rf.chroot_escape()
        report(escaped_to=open("/etc/os-release").readline().strip())
    except OSError as _e:
        report(escape_error=str(_e))
"""

PRECONDITIONS = t(
    'the order is: unshare({"mnt"}); make `/` private (MS_REC | MS_PRIVATE); bind IMAGE onto '
    'itself (MS_BIND | MS_REC); chdir(IMAGE); pivot_root(".", "."); umount2(".", '
    'MNT_DETACH); chdir("/")',
    '순서: unshare({"mnt"}); `/`를 private로 (MS_REC | MS_PRIVATE); IMAGE를 자기 자신에 '
    'bind (MS_BIND | MS_REC); chdir(IMAGE); pivot_root(".", "."); umount2(".", '
    'MNT_DETACH); chdir("/")',
)


@define(
    "02b-pivot-root",
    kind="code",
    title=t("pivot_root by hand", "손으로 하는 pivot_root"),
    instructions=t(
        "Write a cell that makes the image in `IMAGE` the root **mount** of a mount namespace "
        "of its own process, with nothing of the host's left in that namespace, then prints "
        "`/etc/os-release`. Meet both preconditions you have just seen fail, and detach the "
        "old root when you are done.\n\n"
        "Primitives (`from labkit.kernel import namespaces, syscalls`):\n\n"
        '- `namespaces.unshare({"mnt"})`: a mount namespace of its own (a copy);\n'
        "- `syscalls.mount(source, target, fstype, flags)`: mount(2). With `syscalls.MS_BIND` "
        "it mounts a directory somewhere else (or onto itself); with source and fstype `None` "
        "and `syscalls.MS_PRIVATE` it changes the propagation of the mount at target "
        "(`| syscalls.MS_REC`: and of every mount below it);\n"
        "- `syscalls.pivot_root(new_root, put_old)`: after `os.chdir(new_root)`, "
        '`pivot_root(".", ".")` makes it the root mount and stacks the old root on '
        "top of it;\n"
        "- `syscalls.umount2(path, syscalls.MNT_DETACH)`: detach a mount.\n\n"
        "For this check the cell starts in a scratch mount namespace where `/` is shared, as on "
        "a systemd host, and `IMAGE` is a throwaway copy of the busybox image. Afterwards the "
        "checker tries the chroot escape from notebook 01 in your process.",
        "`IMAGE`에 있는 이미지를 이 셀의 프로세스가 가진 자기만의 마운트 namespace의 루트 "
        "**마운트**로 만들고, 그 namespace에 호스트의 것이 아무것도 남지 않게 한 뒤 "
        "`/etc/os-release`를 출력하는 셀을 작성하세요. 방금 실패하는 것을 본 두 전제 조건을 "
        "모두 만족시키고, 끝나면 옛 루트를 떼어 내세요.\n\n"
        "기본 함수(`from labkit.kernel import namespaces, syscalls`):\n\n"
        '- `namespaces.unshare({"mnt"})`: 자기만의 마운트 namespace(복사본);\n'
        "- `syscalls.mount(source, target, fstype, flags)`: mount(2). `syscalls.MS_BIND`를 "
        "주면 디렉터리를 다른 곳(또는 자기 자신)에 마운트하고, source와 fstype을 `None`으로 "
        "하고 `syscalls.MS_PRIVATE`를 주면 target에 있는 마운트의 전파 방식을 바꿉니다 "
        "(`| syscalls.MS_REC`: 그 아래의 모든 마운트도);\n"
        "- `syscalls.pivot_root(new_root, put_old)`: `os.chdir(new_root)` 다음에 "
        '`pivot_root(".", ".")`를 호출하면 그곳이 루트 마운트가 되고, 옛 루트는 그 '
        "위에 얹힙니다;\n"
        "- `syscalls.umount2(path, syscalls.MNT_DETACH)`: 마운트를 떼어 냅니다.\n\n"
        "이 검사에서 셀은 systemd 호스트처럼 `/`가 shared인 임시 마운트 namespace에서 "
        "시작하고, `IMAGE`는 busybox 이미지의 일회용 복사본입니다. 실행이 끝나면 검사기가 "
        "노트북 01의 chroot 탈출을 그 프로세스에서 시도합니다.",
    ),
)
def check_pivot_root(source: str) -> Verdict:
    from labkit.images.store import image_rootfs

    scratch = tempfile.mkdtemp(prefix="labkit-check-")
    values = {"BUSYBOX": image_rootfs("busybox"), "SCRATCH": scratch, "IMAGE": f"{scratch}/rootfs"}
    try:
        run = run_code(source, HARNESS, PRELUDE, values, sandbox={"mnt"})
    finally:
        os.rmdir(scratch)
    pivots = [r["pivot"] for r in run.reports if "pivot" in r]
    if run.error and pivots and run.error.get("errname") in ("EINVAL", "EBUSY"):
        if not pivots[-1]["mount_point"]:
            return wrong(
                "not-a-mount-point",
                t(
                    f"pivot_root failed ({run.error['errname']}): IMAGE was a plain directory "
                    "when you called it, not a mount point. pivot_root swaps *mounts*",
                    f"pivot_root가 실패했습니다({run.error['errname']}): 호출할 때 IMAGE는 "
                    "마운트 지점이 아니라 평범한 디렉터리였습니다. pivot_root는 *마운트*를 "
                    "바꿉니다",
                ),
                t(
                    "bind-mount IMAGE onto itself first: syscalls.mount(IMAGE, IMAGE, None, "
                    "syscalls.MS_BIND | syscalls.MS_REC)",
                    "먼저 IMAGE를 자기 자신에 bind 마운트하세요: syscalls.mount(IMAGE, IMAGE, "
                    "None, syscalls.MS_BIND | syscalls.MS_REC)",
                ),
            )
        if pivots[-1]["shared"]:
            return wrong(
                "shared",
                t(
                    f"pivot_root failed ({run.error['errname']}): the mounts on the way were "
                    "still shared, and the kernel will not send a root swap to their peers "
                    "in other namespaces",
                    f"pivot_root가 실패했습니다({run.error['errname']}): 경로의 마운트가 "
                    "여전히 shared였습니다. 커널은 루트 교체를 다른 namespace의 peer에게 "
                    "전달하지 않습니다",
                ),
                t(
                    'after unshare, make / private: syscalls.mount(None, "/", None, '
                    "syscalls.MS_REC | syscalls.MS_PRIVATE)",
                    'unshare 다음에 /를 private로: syscalls.mount(None, "/", None, '
                    "syscalls.MS_REC | syscalls.MS_PRIVATE)",
                ),
            )
    names = t(
        "your cell can use os, subprocess, Path and IMAGE; import the rest: "
        "`from labkit.kernel import namespaces, syscalls`",
        "셀에서는 os, subprocess, Path, IMAGE를 쓸 수 있습니다. 나머지는 import 하세요: "
        "`from labkit.kernel import namespaces, syscalls`",
    )
    verdict = failed(run, {"NameError": ("name", names), "ImportError": ("name", names)})
    if verdict:
        return verdict
    if run.value("root_is_image") is None:
        return wrong(
            "no-report",
            t(
                "the checker could not look at your process afterwards (did it exec or exit?)",
                "검사기가 실행 후의 프로세스를 살펴보지 못했습니다 (exec 하거나 종료했나요?)",
            ),
            t(
                "end the cell with a print, not an exec or exit",
                "셀을 exec나 exit 대신 print로 끝내세요",
            ),
        )
    escaped = run.value("escaped_to") or run.value("escape_error") or "?"
    inside = run.value("inside") or "?"
    if not run.value("root_is_image"):
        return wrong(
            "not-in-image",
            t(
                f"your process's / is not the image: it reads `{inside}`",
                f"프로세스의 /가 이미지가 아닙니다: `{inside}`을(를) 읽습니다",
            ),
            PRECONDITIONS,
        )
    if not run.value("pivoted"):
        return wrong(
            "chroot",
            t(
                f"/ is the image, but only as chroot makes it: no mount is at /, and the "
                f'escape (chroot into a subdirectory, climb .., chroot(".")) reached '
                f"`{escaped}`",
                f"/가 이미지이긴 하지만 chroot 방식일 뿐입니다: /에 마운트가 없고, 탈출"
                f'(하위 디렉터리로 chroot, ..로 올라가기, chroot("."))이 `{escaped}`에 '
                "닿았습니다",
            ),
            t(
                "use pivot_root: " + PRECONDITIONS["en"],
                "pivot_root를 쓰세요: " + PRECONDITIONS["ko"],
            ),
        )
    if not run.value("new_ns"):
        return wrong(
            "no-namespace",
            t(
                "the pivot happened in the mount namespace your cell started in. Here that was "
                "a scratch copy; on this machine it would have been the host's, and every "
                "process on the host would have lost its /",
                "pivot이 셀이 시작한 마운트 namespace에서 일어났습니다. 여기서는 임시 "
                "복사본이었지만, 이 컴퓨터에서라면 호스트의 namespace였고 호스트의 모든 "
                "프로세스가 /를 잃었을 것입니다",
            ),
            t('start with namespaces.unshare({"mnt"})', 'namespaces.unshare({"mnt"})로 시작하세요'),
        )
    old = run.value("old") or []
    if old:
        return wrong(
            "old-root",
            t(
                f"the host's root is still mounted at {old[0]} in your namespace"
                + (
                    f", and the chroot escape reached it: `{escaped}`"
                    if escaped != inside
                    else f": every file of the host is one path away ({old[0]}/etc/...)"
                ),
                f"호스트의 루트가 namespace 안의 {old[0]}에 아직 마운트되어 있습니다. "
                + (
                    f"chroot 탈출이 그곳에 닿았습니다: `{escaped}`"
                    if escaped != inside
                    else f"호스트의 모든 파일이 경로 하나 거리에 있습니다 ({old[0]}/etc/...)"
                ),
            ),
            t(
                'after pivot_root(".", "."), detach the old root: syscalls.umount2(".", '
                "syscalls.MNT_DETACH)",
                'pivot_root(".", ".") 다음에 옛 루트를 떼어 내세요: syscalls.umount2(".", '
                "syscalls.MNT_DETACH)",
            ),
        )
    if escaped != inside:
        return wrong(
            "escaped",
            t(f"the chroot escape reached `{escaped}`", f"chroot 탈출이 `{escaped}`에 닿았습니다"),
            PRECONDITIONS,
        )
    return right(
        t(
            f"/ is the image's own root mount ({run.value('mounts')} mount(s) visible, none of "
            f"the host's), and the chroot escape ended where it started: `{escaped}`.",
            f"/는 이미지 자신의 루트 마운트이고(보이는 마운트 {run.value('mounts')}개, 호스트의 "
            f"것은 없음), chroot 탈출은 제자리에서 끝났습니다: `{escaped}`.",
        ),
        value={"os_release": inside},
    )
