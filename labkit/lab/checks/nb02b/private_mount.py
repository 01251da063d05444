"""02b-private-mount: by hand, a mount table of its own, and a mount in it the host never sees.

The learner's cell runs as root in a fresh child that starts in a *scratch* mount namespace
whose mounts are made shared, as systemd makes the host's. A ``sleep`` started there before the
cell stays behind in it and stands for the host: afterwards the checker reads both mount tables
(``/proc/self/mountinfo`` and ``/proc/<sleep>/mountinfo``) and the propagation of ``/`` in each.
A mistake mounts into, or changes, only the scratch namespace, never this machine's.
"""

from __future__ import annotations

import os
import tempfile

from labkit.lab.checks.common import failed, run_code
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

PRELUDE = """
from labkit.kernel import syscalls as _sc
_sc.mount(None, "/", None, _sc.MS_REC | _sc.MS_SHARED)  # as systemd does at boot
_host = subprocess.Popen(["sleep", "120"])  # stays in this namespace: it stands for the host
_start_mnt = os.readlink("/proc/self/ns/mnt")
"""

HARNESS = """
from labkit.kernel import procfs as _pf
def _at(table, path):
    return [m for m in table if m.target == path]
_mine, _theirs = _pf.mountinfo("self"), _pf.mountinfo(_host.pid)
report(ns=os.readlink("/proc/self/ns/mnt"), new_ns=os.readlink("/proc/self/ns/mnt") != _start_mnt,
       mine=[[m.fstype, m.source, m.propagation] for m in _at(_mine, SPOT)],
       host=[[m.fstype, m.source] for m in _at(_theirs, SPOT)],
       host_root=_at(_theirs, "/")[-1].propagation)
"""

HOW = t(
    '`namespaces.unshare({"mnt"})`, then `syscalls.mount(None, "/", None, syscalls.MS_REC '
    "| syscalls.MS_PRIVATE)`, then mount the tmpfs",
    '`namespaces.unshare({"mnt"})`, 그다음 `syscalls.mount(None, "/", None, '
    "syscalls.MS_REC | syscalls.MS_PRIVATE)`, 그다음 tmpfs를 마운트하세요",
)


@define(
    "02b-private-mount",
    kind="code",
    title=t("A mount the host never sees, by hand", "호스트가 보지 못하는 마운트, 손으로"),
    instructions=t(
        "Write a cell that gives **its own process** a mount namespace and mounts a tmpfs "
        "named `labkit-mine` on the empty directory `SPOT` in it, so that the host does "
        "**not** get that mount. Print the line of `/proc/self/mounts` that shows it.\n\n"
        "Primitives (`from labkit.kernel import namespaces, syscalls`):\n\n"
        '- `namespaces.unshare({"mnt"})`: a mount namespace of its own, a copy of the '
        "host's mount table, propagation included;\n"
        "- `syscalls.mount(source, target, fstype, flags)`: mount(2). It mounts a filesystem "
        '(`syscalls.mount("labkit-mine", SPOT, "tmpfs")`), and it also changes the '
        "propagation of an existing mount: source and fstype `None`, the mount point as target, "
        "and `syscalls.MS_PRIVATE` (or `MS_SHARED`, `MS_SLAVE`) as flags, `| syscalls.MS_REC` "
        "for every mount below it too.\n\n"
        "For this check the cell starts where `/` is **shared**, as systemd makes it on the "
        "lab VM (whatever this machine has), in a scratch copy of the host's mount table: a "
        "mistake mounts nothing on this machine, and the checker says what it would have done.",
        "**이 셀의 프로세스**에 마운트 namespace를 만들어 주고, 그 안에서 빈 디렉터리 "
        "`SPOT`에 이름이 `labkit-mine`인 tmpfs를 마운트하되, 호스트에는 그 마운트가 "
        "**생기지 않게** 하는 셀을 작성하세요. 그 마운트가 보이는 `/proc/self/mounts`의 줄을 "
        "출력합니다.\n\n"
        "기본 함수(`from labkit.kernel import namespaces, syscalls`):\n\n"
        '- `namespaces.unshare({"mnt"})`: 자기만의 마운트 namespace. 호스트 마운트 '
        "테이블의 복사본이며, 전파 방식도 그대로 복사됩니다;\n"
        "- `syscalls.mount(source, target, fstype, flags)`: mount(2). 파일 시스템을 "
        '마운트하고(`syscalls.mount("labkit-mine", SPOT, "tmpfs")`), 이미 있는 마운트의 '
        "전파 방식도 바꿉니다: source와 fstype은 `None`, target은 마운트 지점, flags는 "
        "`syscalls.MS_PRIVATE`(또는 `MS_SHARED`, `MS_SLAVE`), 그 아래 모든 마운트까지 "
        "바꾸려면 `| syscalls.MS_REC`.\n\n"
        "이 검사에서는 셀이 호스트 마운트 테이블의 임시 복사본에서 시작하며, 그 안의 `/`는 "
        "실습 VM에서 systemd가 하는 것처럼 **shared**입니다 (이 컴퓨터가 어떻든). 실수해도 "
        "이 컴퓨터에는 아무것도 마운트되지 않고, 무슨 일이 일어났을지는 검사기가 알려 줍니다.",
    ),
)
def check_private_mount(source: str) -> Verdict:
    spot = tempfile.mkdtemp(prefix="labkit-check-")
    try:
        run = run_code(source, HARNESS, PRELUDE, {"SPOT": spot}, sandbox={"mnt"})
    finally:
        os.rmdir(spot)
    names = t(
        "your cell can use os, subprocess, Path and SPOT; import the rest: "
        "`from labkit.kernel import namespaces, syscalls`",
        "셀에서는 os, subprocess, Path, SPOT을 쓸 수 있습니다. 나머지는 import 하세요: "
        "`from labkit.kernel import namespaces, syscalls`",
    )
    verdict = failed(run, {"NameError": ("name", names), "ImportError": ("name", names)})
    if verdict:
        return verdict
    mine, host = run.value("mine") or [], run.value("host") or []
    new_ns, host_root = run.value("new_ns"), run.value("host_root")
    if not new_ns:
        if host:
            return wrong(
                "no-namespace",
                t(
                    "the tmpfs was mounted in the mount namespace your cell started in: on "
                    "this machine, that is the host's, and every program would see it",
                    "tmpfs가 셀이 시작한 마운트 namespace에 마운트되었습니다. 이 컴퓨터에서라면 "
                    "그것은 호스트의 namespace이고, 모든 프로그램이 그 마운트를 보게 됩니다",
                ),
                t("unshare a mount namespace first: " + HOW["en"], "먼저 " + HOW["ko"]),
            )
        return wrong(
            "nothing",
            t(
                f"your process has no mount at {os.path.basename(spot)} (SPOT) and no mount "
                "namespace of its own",
                f"프로세스에 SPOT({os.path.basename(spot)}) 마운트도, 자기만의 마운트 "
                "namespace도 없습니다",
            ),
            HOW,
        )
    if host:
        return wrong(
            "propagated",
            t(
                "your process has a mount namespace of its own, yet the host got the tmpfs "
                "too: its copy of `/` was still shared, so the mount event was passed on",
                "프로세스에 자기만의 마운트 namespace가 있는데도 호스트에 tmpfs가 생겼습니다. "
                "복사된 `/`가 여전히 shared여서 마운트 이벤트가 전달된 것입니다",
            ),
            t(
                'after unshare, before mounting: syscalls.mount(None, "/", None, '
                "syscalls.MS_REC | syscalls.MS_PRIVATE)",
                'unshare 다음, 마운트하기 전에: syscalls.mount(None, "/", None, '
                "syscalls.MS_REC | syscalls.MS_PRIVATE)",
            ),
        )
    if host_root != "shared":
        return wrong(
            "changed-host",
            t(
                f"the host's `/` is now {host_root}, not shared: the propagation was changed "
                "before the new namespace existed, so it changed the host's mounts, which "
                "systemd made shared on purpose",
                f"호스트의 `/`가 shared가 아니라 {host_root}이(가) 되었습니다. 새 namespace가 "
                "생기기 전에 전파 방식을 바꿔서 호스트의 마운트가 바뀌었습니다. systemd는 "
                "일부러 shared로 만들어 둡니다",
            ),
            t(
                "unshare first, then make `/` private: it is then your copy that changes",
                "먼저 unshare 하고, 그다음 `/`를 private로 바꾸세요. 그러면 바뀌는 것은 "
                "복사본입니다",
            ),
        )
    if not mine:
        return wrong(
            "no-mount",
            t(
                "your process has a private mount namespace, but nothing is mounted on SPOT",
                "프로세스에 private 마운트 namespace는 있지만, SPOT에 마운트된 것이 없습니다",
            ),
            t(
                'mount it: syscalls.mount("labkit-mine", SPOT, "tmpfs")',
                '마운트하세요: syscalls.mount("labkit-mine", SPOT, "tmpfs")',
            ),
        )
    fstype, source_, propagation = mine[-1]
    return right(
        t(
            f"`{source_}` ({fstype}, {propagation}) is mounted in {run.value('ns')} only; the "
            "namespace you started in, shared like a systemd host, never got it.",
            f"`{source_}`({fstype}, {propagation})는 {run.value('ns')}에만 마운트되었고, "
            "systemd 호스트처럼 shared였던 처음 namespace에는 생기지 않았습니다.",
        ),
        value={"ns": run.value("ns"), "mount": mine[-1]},
    )
