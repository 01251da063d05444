"""01-escape: the classic chroot escape, written by the learner.

The learner's cell starts *inside* a chroot: a prelude makes a fresh copy of the busybox image
the process's root directory (``os.chroot(ROOTFS)``, ``os.chdir("/")``), as labkit's
``chroot_into`` does. The checker then asks the kernel where the process's root directory and
working directory are (``os.stat("/")``, ``os.stat(".")``): each time the learner's code opens
a file or starts a program (an audit hook), and once more at the end. The last answer tells the
typical mistakes apart:

* root still the image's top: ``..`` was never going to pass it (no chroot into a subdirectory);
* root a subdirectory of the image with the working directory inside it: they changed into
  the new root (the habit exercise 01-run-chrooted taught), so ``..`` stopped there;
* root a subdirectory, working directory outside the image: they climbed out but did not
  finish with ``chroot(".")``;
* root a directory above the image but not the host's ``/``: they did not climb far enough.
"""

from __future__ import annotations

import os
from pathlib import Path

from labkit.lab.checks.common import failed, run_code
from labkit.lab.child import LEARNER_FILE, ChildRun
from labkit.lab.evidence import os_release_name
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t
from labkit.lab.scratch import temporary_copy

PRELUDE = f"""
import sys as _sys

def _where():
    try:
        _r, _c = os.stat("/"), os.stat(".")
    except OSError:
        return
    report(root=[_r.st_dev, _r.st_ino], cwd=[_c.st_dev, _c.st_ino])

_busy = []
def _note(event, args):
    if _busy or event not in ("open", "os.exec", "os.posix_spawn", "os.system",
                              "subprocess.Popen"):
        return
    _busy.append(event)
    try:
        frame = _sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != {LEARNER_FILE!r}:
            frame = frame.f_back
        if frame is not None:  # the learner's own code opens or starts something
            _where()
    finally:
        _busy.clear()

_sys.addaudithook(_note)
os.chroot(ROOTFS)  # what labkit's chroot_into does: the learner starts inside the image
os.chdir("/")
"""

HARNESS = "_where()\n"

Stat = tuple[int, int]


def _stat(path: str | Path) -> Stat:
    st = os.stat(path)
    return st.st_dev, st.st_ino


@define(
    "01-escape",
    kind="code",
    title=t("Escape from a chroot", "chroot 탈출"),
    instructions=t(
        "Your cell starts as a process **inside a chroot**: before your code runs, "
        "`os.chroot(ROOTFS)` and `os.chdir('/')` have been called, as labkit's `chroot_into` "
        "does, so `/` is the image (a fresh copy of busybox). You are root in there. Get out:"
        "\n\n1. make a directory below where you are (`os.makedirs('hideout', exist_ok=True)`) "
        "and `os.chroot` into it, **without** changing into it;"
        "\n2. climb: `os.chdir('..')`, many times;"
        "\n3. `os.chroot('.')`: make the directory you arrived at your root;"
        "\n\nthen print the first line of `/etc/os-release`. If it is the host's, you are out. "
        "`os`, `subprocess` and `Path` are imported; the image has no Python library to "
        "import anything else from.",
        "이 셀은 **chroot 안에 있는** 프로세스로 시작합니다: 코드가 실행되기 전에 labkit의 "
        "`chroot_into`처럼 `os.chroot(ROOTFS)`와 `os.chdir('/')`가 이미 호출되었으므로 `/`는 "
        "이미지(busybox의 새 복사본)입니다. 그 안에서 당신은 root입니다. 빠져나가 보세요:"
        "\n\n1. 지금 위치 아래에 디렉터리를 만들고(`os.makedirs('hideout', exist_ok=True)`) "
        "그 안으로 들어가지 **않은 채** `os.chroot` 합니다;"
        "\n2. 올라갑니다: `os.chdir('..')`를 여러 번;"
        "\n3. `os.chroot('.')`: 도착한 디렉터리를 루트로 만듭니다;"
        "\n\n그런 다음 `/etc/os-release`의 첫 줄을 출력하세요. 호스트의 것이라면 탈출한 "
        "것입니다. `os`, `subprocess`, `Path`는 import 되어 있고, 이미지에는 파이썬 "
        "라이브러리가 없어서 다른 것은 import 할 수 없습니다.",
    ),
)
def check_escape(source: str) -> Verdict:
    host = Path("/etc/os-release").read_text()
    name_lines = [line for line in host.splitlines() if line.startswith("NAME=")]
    names = {n for n in (os_release_name(host), *map(os_release_name, name_lines)) if n}
    with temporary_copy("busybox") as rootfs:
        run = run_code(source, HARNESS, PRELUDE, {"ROOTFS": str(rootfs)})
        places = _places(rootfs)  # after the run: with the directories the learner made
    return _judge(run, places, names, len(rootfs.parents))


def _places(rootfs: Path) -> dict[Stat, tuple[str, str]]:
    """Every directory the process could end up with as its root: (kind, where)."""
    places = {_stat(parent): ("above", str(parent)) for parent in rootfs.parents}
    places[_stat("/")] = ("host", "/")
    for top, dirs, _files in os.walk(rootfs):
        for name in dirs:
            path = Path(top, name)
            if not path.is_symlink():
                places[_stat(path)] = ("inside", "/" + str(path.relative_to(rootfs)))
    places[_stat(rootfs)] = ("image", "/")
    return places


def _judge(
    run: ChildRun, places: dict[Stat, tuple[str, str]], host_names: set[str], depth: int
) -> Verdict:
    root, cwd = run.value("root"), run.value("cwd")
    if root is None:
        return failed(run, _BY_TYPE) or wrong(
            "still-inside",
            t(
                "nothing in your cell got out of the image",
                "셀의 코드가 이미지 밖으로 나가지 못했습니다",
            ),
            _CLIMB_HINT,
        )
    kind, where = places.get(tuple(root), ("elsewhere", "?"))
    cwd_kind = places.get(tuple(cwd), ("elsewhere", "?"))[0] if cwd else "elsewhere"
    if kind == "host":
        if any(name in run.stdout for name in host_names):
            shown = sorted(host_names, key=len)[-1]
            return right(
                t(
                    f"your process's / is the host's again: /etc/os-release says {shown}, "
                    f"from an image {depth} directories below it. Root inside a chroot can "
                    "always climb out: chroot alone is not a security boundary.",
                    f"프로세스의 /가 다시 호스트의 /가 되었습니다: /etc/os-release에 {shown}가 "
                    f"보입니다. 이미지는 그보다 {depth}단계 아래 디렉터리였습니다. chroot 안의 "
                    "root는 언제든 빠져나올 수 있습니다: chroot만으로는 보안 경계가 되지 "
                    "않습니다.",
                ),
                value={"os_release": shown},
            )
        return failed(run, _BY_TYPE) or wrong(
            "no-print",
            t(
                "your process's / is the host's, but the host's os-release is not in what "
                "the cell printed",
                "프로세스의 /는 호스트의 것이지만, 셀의 출력에 호스트의 os-release가 없습니다",
            ),
            t(
                "print it: print(open('/etc/os-release').readline())",
                "출력하세요: print(open('/etc/os-release').readline())",
            ),
        )
    if kind == "image":
        return wrong(
            "stopped-at-root",
            t(
                "your root directory is still the image's top: every `..` stopped there",
                "루트 디렉터리가 여전히 이미지의 최상위입니다: 모든 `..`가 거기서 멈췄습니다",
            ),
            _CLIMB_HINT,
        )
    if kind == "inside" and cwd_kind in ("inside", "image"):
        return wrong(
            "entered-hideout",
            t(
                f"your root directory is now {where} in the image and your working directory "
                "is inside it, so every `..` stopped at that root",
                f"루트 디렉터리는 이제 이미지 안의 {where}이고 작업 디렉터리도 그 안에 있어서, "
                "모든 `..`가 그 루트에서 멈췄습니다",
            ),
            t(
                "do not change into the new root: after os.chroot('hideout') stay where you "
                "are and climb with os.chdir('..'). (In 01-run-chrooted, os.chdir('/') closed "
                "exactly this gap.)",
                "새 루트 안으로 들어가지 마세요: os.chroot('hideout') 다음에는 그 자리에서 "
                "os.chdir('..')로 올라가세요. (01-run-chrooted에서 os.chdir('/')가 막았던 "
                "틈이 바로 이것입니다.)",
            ),
        )
    if kind == "inside":
        return wrong(
            "no-final-chroot",
            t(
                "you climbed out (your working directory is outside the image), but your root "
                f"directory is still {where} in the image: every path that starts with / "
                "still starts there",
                "밖으로 올라가기는 했지만(작업 디렉터리는 이미지 바깥), 루트 디렉터리는 여전히 "
                f"이미지 안의 {where}입니다: /로 시작하는 모든 경로가 아직 거기서 시작합니다",
            ),
            t(
                "finish with os.chroot('.'): make the directory you climbed to your root",
                "마지막에 os.chroot('.')를 호출해 올라온 디렉터리를 루트로 만드세요",
            ),
        )
    if kind == "above":
        return wrong(
            "not-far-enough",
            t(
                f"you got out of the image, but your root is {where}, not the host's /",
                f"이미지 밖으로 나오기는 했지만 루트가 호스트의 /가 아니라 {where}입니다",
            ),
            t(
                "climb further: os.chdir('..') many times (100 is plenty); at the host's / "
                "`..` is / again, so extra steps do no harm",
                "더 올라가세요: os.chdir('..')를 여러 번(100번이면 충분). 호스트의 /에서는 "
                "`..`도 /이므로 더 올라가도 문제가 없습니다",
            ),
        )
    return failed(run, _BY_TYPE) or wrong(
        "elsewhere",
        t(
            "your root directory ended up neither in the image nor at the host's /",
            "루트 디렉터리가 이미지 안도 호스트의 /도 아닌 곳이 되었습니다",
        ),
        _CLIMB_HINT,
    )


_CLIMB_HINT = t(
    "the kernel stops `..` only where it meets your root directory. First "
    "os.makedirs('hideout', exist_ok=True) and os.chroot('hideout') without changing into "
    "it: your working directory is then outside your root, and `..` from there never stops; "
    "climb, then os.chroot('.')",
    "커널은 `..`를 루트 디렉터리를 만날 때만 멈춥니다. 먼저 os.makedirs('hideout', "
    "exist_ok=True)와 os.chroot('hideout')를 하되 그 안으로 들어가지 마세요: 그러면 작업 "
    "디렉터리가 루트 바깥에 있게 되고, 거기서의 `..`는 멈추지 않습니다. 올라간 뒤 "
    "os.chroot('.')",
)

_BY_TYPE = {
    "FileNotFoundError": (
        "no-hideout",
        t(
            "a path your code used does not exist in the image: create the directory you "
            "chroot into first, os.makedirs('hideout', exist_ok=True)",
            "코드가 쓴 경로가 이미지에 없습니다: chroot 할 디렉터리를 먼저 만드세요, "
            "os.makedirs('hideout', exist_ok=True)",
        ),
    ),
    "ModuleNotFoundError": (
        "import",
        t(
            "inside the chroot there is no Python library to import from: use os, "
            "subprocess and Path, imported already",
            "chroot 안에는 import 할 파이썬 라이브러리가 없습니다: 이미 import 된 os, "
            "subprocess, Path를 쓰세요",
        ),
    ),
    "NameError": (
        "name",
        t(
            "your cell can use os, subprocess and Path; inside the chroot the image is /",
            "셀에서는 os, subprocess, Path를 쓸 수 있습니다. chroot 안에서 이미지는 /입니다",
        ),
    ),
}
