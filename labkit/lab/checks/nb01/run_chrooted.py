"""01-run-chrooted: run a command inside an image by hand, as a chroot-only runtime does.

The learner's cell runs as root in a fresh child, with ``ROOTFS`` a fresh copy of the busybox
image and ``COMMAND`` a small shell probe that prints what the program sees: the first line of
``/etc/os-release``, its working directory (``pwd``) and the files there (``ls``). The program
is the image's own ``sh``, so its output is the kernel's answer to "where is this process?":

* the host's os-release: it never ran chrooted;
* the image's os-release but an empty ``pwd`` and the host's files in ``ls``: chrooted, with
  its working directory left outside the new root (chroot does not move it);
* ``FileNotFoundError``: chrooted somewhere without ``bin/sh``, or a host path used inside.

It does not matter how the program is started (``subprocess.run``, ``os.execvp``, ``chroot(8)``).
"""

from __future__ import annotations

import os

from labkit.lab.checks.common import failed, run_code
from labkit.lab.child import ChildRun
from labkit.lab.evidence import os_release_name
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t
from labkit.lab.scratch import temporary_copy

#: The program the learner runs: it says what it sees, one fact per line.
COMMAND = ["sh", "-c", "head -n 1 /etc/os-release; echo cwd: $(pwd); echo files here: $(ls)"]


def _probe(stdout: str) -> dict[str, str] | None:
    """What COMMAND printed, from its last run in the output (None: it never ran)."""
    lines = stdout.splitlines()
    at = max((i for i, line in enumerate(lines) if line.startswith("cwd:")), default=None)
    if at is None:
        return None
    files = next((ln for ln in lines[at + 1 :] if ln.startswith("files here:")), "files here:")
    return {
        "os": lines[at - 1] if at else "",
        "cwd": lines[at].removeprefix("cwd:").strip(),
        "files": files.removeprefix("files here:").strip(),
    }


@define(
    "01-run-chrooted",
    kind="code",
    title=t("Run a command inside the image, by hand", "이미지 안에서 명령 실행하기 (손으로)"),
    instructions=t(
        "Do by hand what a chroot-only runtime does before it starts a container's program:"
        "\n\n1. make `ROOTFS` this process's root directory (`os.chroot`);"
        "\n2. make sure its working directory is inside that root too (`os.chdir`);"
        "\n3. run the program `COMMAND`, a list `['sh', '-c', '...']` that prints the first "
        "line of `/etc/os-release`, its working directory and the files in it. "
        "`subprocess.run(COMMAND)` runs it and waits; `os.execvp(COMMAND[0], COMMAND)` "
        "replaces this process with it, as a runtime does."
        "\n\n`ROOTFS` is a fresh copy of the busybox image, made for the check; `os`, "
        "`subprocess` and `Path` are imported. After the chroot every path is the image's: "
        "`sh` is busybox's `/bin/sh`, and the host's Python library is out of reach, so "
        "import nothing new.",
        "chroot만 쓰는 런타임이 컨테이너의 프로그램을 시작하기 전에 하는 일을 손으로 해 보세요:"
        "\n\n1. `ROOTFS`를 이 프로세스의 루트 디렉터리로 만듭니다 (`os.chroot`);"
        "\n2. 작업 디렉터리도 그 루트 안에 있도록 합니다 (`os.chdir`);"
        "\n3. 프로그램 `COMMAND`를 실행합니다. `COMMAND`는 `['sh', '-c', '...']` 형태의 "
        "리스트로, `/etc/os-release`의 첫 줄, 작업 디렉터리, 그 안의 파일들을 출력합니다. "
        "`subprocess.run(COMMAND)`는 실행하고 끝날 때까지 기다리고, "
        "`os.execvp(COMMAND[0], COMMAND)`는 런타임처럼 이 프로세스를 그 프로그램으로 "
        "바꿉니다."
        "\n\n`ROOTFS`는 검사를 위해 새로 만든 busybox 이미지의 복사본입니다. `os`, "
        "`subprocess`, `Path`는 이미 import 되어 있습니다. chroot 뒤에는 모든 경로가 이미지의 "
        "경로입니다: `sh`는 busybox의 `/bin/sh`이고, 호스트의 파이썬 라이브러리에는 닿지 "
        "않으므로 새로 import 하지 마세요.",
    ),
)
def check_run_chrooted(source: str) -> Verdict:
    with temporary_copy("busybox") as rootfs:
        first_line = (rootfs / "etc/os-release").read_text().splitlines()[0]
        entries = len(os.listdir(rootfs))
        run = run_code(source, values={"ROOTFS": str(rootfs), "COMMAND": COMMAND})
    return _judge(run, str(rootfs), first_line, entries)


def _judge(run: ChildRun, rootfs: str, first_line: str, entries: int) -> Verdict:
    image = os_release_name(first_line)
    error = run.error or {}
    if error.get("type") == "FileNotFoundError" and error.get("filename") == rootfs:
        return wrong(
            "host-path",
            t(
                f"your code looked for {rootfs} after the chroot, and inside the image there "
                "is no such directory: that is a path of the host",
                f"chroot 뒤에 {rootfs}를 찾았는데, 이미지 안에는 그런 디렉터리가 없습니다: "
                "그것은 호스트의 경로입니다",
            ),
            t(
                "inside the chroot the image's top directory is `/`: use os.chdir('/') after "
                "os.chroot(ROOTFS), and run COMMAND as it is",
                "chroot 안에서는 이미지의 최상위 디렉터리가 `/`입니다: os.chroot(ROOTFS) 다음에 "
                "os.chdir('/')를 쓰고, COMMAND는 그대로 실행하세요",
            ),
        )
    verdict = failed(
        run,
        {
            "FileNotFoundError": (
                "wrong-root",
                t(
                    "chroot into ROOTFS itself, the directory that holds bin/ and etc/: "
                    "COMMAND's `sh` must be found as /bin/sh inside it",
                    "bin/과 etc/가 들어 있는 ROOTFS 디렉터리 자체로 chroot 하세요: COMMAND의 "
                    "`sh`가 그 안에서 /bin/sh로 보여야 합니다",
                ),
            ),
            "ModuleNotFoundError": (
                "import",
                t(
                    "after the chroot there is no Python library to import from (the image "
                    "has none): use os, subprocess and Path, imported before it",
                    "chroot 뒤에는 import 할 파이썬 라이브러리가 없습니다 (이미지에 없음): "
                    "chroot 전에 import 된 os, subprocess, Path를 쓰세요",
                ),
            ),
            "NameError": (
                "name",
                t(
                    "your cell can use ROOTFS, COMMAND, os, subprocess and Path",
                    "셀에서는 ROOTFS, COMMAND, os, subprocess, Path를 쓸 수 있습니다",
                ),
            ),
        },
    )
    if verdict:
        return verdict
    seen = _probe(run.stdout)
    if seen is None:
        return wrong(
            "did-not-run",
            t(
                "COMMAND's output is not there: the program never ran",
                "COMMAND의 출력이 없습니다: 프로그램이 실행되지 않았습니다",
            ),
            t(
                "after the chroot, run it: subprocess.run(COMMAND); what it prints is the check",
                "chroot 다음에 실행하세요: subprocess.run(COMMAND). 그 출력으로 검사합니다",
            ),
        )
    if seen["os"] != first_line:
        theirs = os_release_name(seen["os"]) or "?"
        return wrong(
            "not-chrooted",
            t(
                f"COMMAND read the host's os-release ({theirs}), not the image's "
                f"({image}): it ran with the host's files as its /",
                f"COMMAND가 이미지의 os-release({image})가 아니라 호스트의 것"
                f"({theirs})을 읽었습니다: 호스트의 파일을 /로 두고 실행되었습니다",
            ),
            t(
                "call os.chroot(ROOTFS) before you start COMMAND: the program, and every path "
                "it opens, is looked up from the root directory of the process",
                "COMMAND를 시작하기 전에 os.chroot(ROOTFS)를 호출하세요: 프로그램과 그것이 여는 "
                "모든 경로는 프로세스의 루트 디렉터리에서부터 찾습니다",
            ),
        )
    if not seen["cwd"].startswith("/"):
        return wrong(
            "cwd-outside",
            t(
                "COMMAND saw the image's os-release, but its working directory was outside "
                f"the image: `pwd` printed nothing and `ls` listed the host's files "
                f"({_short(seen['files'])})",
                "COMMAND는 이미지의 os-release를 보았지만 작업 디렉터리는 이미지 바깥이었습니다: "
                f"`pwd`는 아무것도 출력하지 않았고 `ls`는 호스트의 파일({_short(seen['files'])})"
                "을 보여 주었습니다",
            ),
            t(
                "chroot changes where `/` starts, not the working directory: call "
                "os.chdir('/') right after os.chroot(ROOTFS). (A working directory outside "
                "the root is where the chroot escape begins.)",
                "chroot는 `/`가 시작하는 곳만 바꾸고 작업 디렉터리는 그대로 둡니다: "
                "os.chroot(ROOTFS) 바로 다음에 os.chdir('/')를 호출하세요. (루트 바깥의 작업 "
                "디렉터리가 바로 chroot 탈출의 출발점입니다.)",
            ),
        )
    return right(
        t(
            f"COMMAND ran busybox's sh with the image as its / ({image}) and its working "
            f"directory inside it (`pwd`: {seen['cwd']}); / held the image's {entries} "
            "entries. chroot, chdir, exec: that is all a chroot-only runtime does.",
            f"COMMAND는 이미지를 /로 두고({image}) 작업 디렉터리도 그 안에 둔 채(`pwd`: "
            f"{seen['cwd']}) busybox의 sh로 실행되었습니다. /에는 이미지의 항목 {entries}개가 "
            "있었습니다. chroot, chdir, exec: chroot만 쓰는 런타임이 하는 일은 이것이 "
            "전부입니다.",
        ),
        value={"os_release": image, "cwd": seen["cwd"]},
    )


def _short(files: str, n: int = 4) -> str:
    names = files.split()
    return " ".join(names[:n]) + (" ..." if len(names) > n else "") if names else "-"
