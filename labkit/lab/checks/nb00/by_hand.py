"""00-by-hand: a process that sees the busybox image as ``/`` and still runs on the host's kernel.

The learner's cell runs as root in a fresh child. The checker reads what the kernel shows: which
directory is that process's ``/`` afterwards (``os.stat("/")``), which ``os-release`` it printed,
and which kernel release. An audit hook notes a file of the image read through the host's path,
which prints the right text without any change of ``/``.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from labkit.lab.checks.common import failed, run_code
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

PRELUDE = """
import sys as _sys
_opened = []
def _note(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith(BUSYBOX):
        _opened.append(args[0])
_sys.addaudithook(_note)
"""

HARNESS = """
_root = os.stat("/")
report(root=[_root.st_dev, _root.st_ino], opened_via_host=_opened)
"""


def _pretty_name(os_release: str) -> str:
    found = re.search(r'^PRETTY_NAME="?([^"\n]*)', os_release, re.M)
    return found[1] if found else ""


@define(
    "00-by-hand",
    kind="code",
    title=t("A container by hand: its files, the host's kernel", "손으로 만드는 컨테이너"),
    instructions=t(
        "Write a cell that makes **its own process** see the busybox image as `/`, then "
        "prints the `/etc/os-release` it now sees and the kernel release (`os.uname().release`)."
        "\n\nThe cell runs as root in a fresh child process (`%%labkit_child`), so the "
        "notebook itself is not affected. `BUSYBOX` holds the image's directory. The system "
        "call you need is `os.chroot(path)`: after it, every path that starts with `/` starts "
        "at `path`. (Notebook 01 looks at what chroot does and does not isolate.)",
        "**이 셀의 프로세스**가 busybox 이미지를 `/`로 보도록 만든 다음, 그 상태에서 보이는 "
        "`/etc/os-release`와 커널 릴리스(`os.uname().release`)를 출력하는 셀을 작성하세요."
        "\n\n이 셀은 새 자식 프로세스에서 root로 실행되므로(`%%labkit_child`) 노트북 자체에는 "
        "영향이 없습니다. `BUSYBOX`에 이미지 디렉터리 경로가 들어 있습니다. 필요한 시스템 "
        "콜은 `os.chroot(path)`입니다: 호출한 뒤에는 `/`로 시작하는 모든 경로가 `path`에서 "
        "시작합니다. (chroot가 무엇을 격리하고 무엇을 격리하지 못하는지는 노트북 01에서 "
        "다룹니다.)",
    ),
)
def check_by_hand(source: str) -> Verdict:
    from labkit.images.store import image_rootfs

    busybox = image_rootfs("busybox")
    run = run_code(source, HARNESS, PRELUDE, {"BUSYBOX": str(busybox)})
    wrong_root = t(
        "chroot into BUSYBOX itself, the directory with bin/ and etc/; inside, paths are "
        "then /etc/os-release, /bin/sh",
        "BUSYBOX 디렉터리 자체(bin/, etc/가 있는 곳)로 chroot 하세요. 그러면 안에서는 "
        "경로가 /etc/os-release, /bin/sh 가 됩니다",
    )
    names = t(
        "your cell can use os, subprocess, Path and BUSYBOX; import anything else it needs",
        "셀에서는 os, subprocess, Path, BUSYBOX를 쓸 수 있습니다. 그 밖의 것은 import 하세요",
    )
    verdict = failed(
        run, {"FileNotFoundError": ("wrong-root", wrong_root), "NameError": ("name", names)}
    )
    if verdict:
        return verdict
    image = _pretty_name((busybox / "etc/os-release").read_text())
    host = _pretty_name(Path("/etc/os-release").read_text())
    release = platform.release()
    out = run.stdout
    root = run.value("root")
    stat = os.stat(busybox)
    if image not in out and host and host in out:
        return wrong(
            "host-files",
            t(
                f"it printed the host's os-release ({host}): that process still had the "
                "host's files as its /",
                f"호스트의 os-release({host})가 출력되었습니다. 그 프로세스의 /는 여전히 "
                "호스트의 파일이었습니다",
            ),
            t(
                "call os.chroot(BUSYBOX) (and os.chdir('/')) *before* you read /etc/os-release",
                "/etc/os-release를 읽기 *전에* os.chroot(BUSYBOX)(와 os.chdir('/'))를 호출하세요",
            ),
        )
    if image not in out:
        return wrong(
            "no-os-release",
            t(
                f"the image's os-release ({image}) is not in what the cell printed",
                f"셀의 출력에 이미지의 os-release({image})가 없습니다",
            ),
            t("print the text of /etc/os-release", "/etc/os-release의 내용을 출력하세요"),
        )
    if root is not None and root != [stat.st_dev, stat.st_ino] and run.value("opened_via_host"):
        return wrong(
            "read-through-host",
            t(
                "it read the image's file through the host's path: the process's / never changed",
                "호스트 경로로 이미지의 파일을 읽었습니다. 프로세스의 /는 바뀌지 않았습니다",
            ),
            t(
                "os.chroot(BUSYBOX) first; then open('/etc/os-release') is the image's file",
                "먼저 os.chroot(BUSYBOX)를 호출하세요. 그러면 open('/etc/os-release')는 "
                "이미지의 파일입니다",
            ),
        )
    if release not in out:
        return wrong(
            "no-release",
            t(
                "the kernel release is missing from the output",
                "출력에 커널 릴리스가 없습니다",
            ),
            t(
                "print os.uname().release too: that is the question, whose kernel is it?",
                "os.uname().release도 출력하세요. 이 커널이 누구의 것인지가 핵심 질문입니다",
            ),
        )
    return right(
        t(
            f"the process read the image's files ({image}) and ran on the host's kernel "
            f"({release}): a container is the host's kernel plus files of its own.",
            f"프로세스는 이미지의 파일({image})을 읽었고 호스트의 커널({release}) 위에서 "
            "실행되었습니다: 컨테이너는 호스트의 커널에 자기만의 파일을 더한 것입니다.",
        ),
        value={"os_release": image, "release": release},
    )
