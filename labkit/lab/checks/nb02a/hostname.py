"""02a-hostname: by hand, a UTS namespace of its own and a hostname in it; the host's is untouched.

The learner's cell runs as root in a fresh child that starts in a *scratch* UTS namespace (a
copy of the host's), so a cell that sets the hostname without a namespace of its own renames
only that copy, never this machine. The checker reads what the kernel shows afterwards: which of
the cell's namespaces are new (``/proc/self/ns``), the hostname the cell's process now has, and,
after ``setns`` back into the namespace the cell started in, the hostname there.
"""

from __future__ import annotations

from labkit.lab.checks.common import failed, run_code
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

HOSTNAME = "labkit-nb02a"

PRELUDE = """
_kinds = ("uts", "pid", "mnt", "ipc", "net", "cgroup", "user")
_start_ns = {k: os.readlink(f"/proc/self/ns/{k}") for k in _kinds}
_start_name = os.uname().nodename
_start_uts = os.open("/proc/self/ns/uts", os.O_RDONLY)
"""

HARNESS = """
from labkit.kernel import syscalls as _sc
_now = {k: os.readlink(f"/proc/self/ns/{k}") for k in _kinds}
report(new=[k for k in _kinds if _now[k] != _start_ns[k]], name=os.uname().nodename,
       start_name=_start_name, uts=_now["uts"])
_sc.setns(_start_uts, _sc.CLONE_NEWUTS)  # back where the cell started: what does it say now?
report(start_name_after=os.uname().nodename)
"""

HOW = t(
    'first `namespaces.unshare({"uts"})` (a UTS namespace of its own, starting as a copy of '
    "the host's names), then `syscalls.sethostname(HOSTNAME)`",
    '먼저 `namespaces.unshare({"uts"})`로 자기만의 UTS namespace를 만들고(처음에는 호스트 '
    "이름의 복사본입니다), 그다음 `syscalls.sethostname(HOSTNAME)`을 호출하세요",
)


@define(
    "02a-hostname",
    kind="code",
    title=t("A hostname of its own, by hand", "손으로 만드는 자기만의 hostname"),
    instructions=t(
        "Write a cell that gives **its own process** a UTS namespace and sets the hostname "
        "`HOSTNAME` (`labkit-nb02a`) in it. Print the hostname (`os.uname().nodename`) "
        "before and after.\n\n"
        "The cell runs as root in a fresh child process (`%%labkit_child`). Two primitives "
        "of labkit do the work: `namespaces.unshare(kinds)` (from `labkit.kernel`) calls "
        "unshare(2) with the clone flags of the kinds you name, and "
        "`syscalls.sethostname(name)` calls sethostname(2), which changes the hostname of "
        "the caller's UTS namespace, whichever that is. So the order matters.\n\n"
        "Safety net: for this check the cell starts in a scratch copy of the host's UTS "
        "namespace, so a mistake cannot rename this machine; the checker tells you what it "
        "would have done.",
        "**이 셀의 프로세스**에 자기만의 UTS namespace를 만들어 주고, 그 안에서 hostname을 "
        "`HOSTNAME`(`labkit-nb02a`)으로 설정하는 셀을 작성하세요. 설정 전과 후의 hostname"
        "(`os.uname().nodename`)을 출력합니다.\n\n"
        "이 셀은 새 자식 프로세스에서 root로 실행됩니다(`%%labkit_child`). labkit의 기본 "
        "함수 두 개가 일을 합니다: `labkit.kernel`의 `namespaces.unshare(kinds)`는 지정한 "
        "종류의 clone 플래그로 unshare(2)를 호출하고, `syscalls.sethostname(name)`은 "
        "sethostname(2)를 호출해서 *호출한 프로세스가 속한* UTS namespace의 hostname을 "
        "바꿉니다. 그래서 순서가 중요합니다.\n\n"
        "안전장치: 이 검사에서는 셀이 호스트 UTS namespace의 임시 복사본에서 시작하므로, "
        "실수해도 이 컴퓨터의 이름은 바뀌지 않습니다. 무슨 일이 일어났을지는 검사기가 "
        "알려 줍니다.",
    ),
)
def check_hostname(source: str) -> Verdict:
    run = run_code(source, HARNESS, PRELUDE, {"HOSTNAME": HOSTNAME}, sandbox={"uts"})
    names = t(
        "your cell can use os, subprocess, Path and HOSTNAME; import the rest: "
        "`from labkit.kernel import namespaces, syscalls`",
        "셀에서는 os, subprocess, Path, HOSTNAME을 쓸 수 있습니다. 나머지는 import 하세요: "
        "`from labkit.kernel import namespaces, syscalls`",
    )
    verdict = failed(run, {"NameError": ("name", names), "ImportError": ("name", names)})
    if verdict:
        return verdict
    new = run.value("new") or []
    name, start = run.value("name"), run.value("start_name")
    after = run.value("start_name_after")
    if name is None or after is None:
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
    renamed = t(
        f"the namespace your cell started in was renamed from `{start}` to `{after}`",
        f"셀이 시작한 namespace의 이름이 `{start}`에서 `{after}`(으)로 바뀌었습니다",
    )
    if after != start and "uts" in new:
        return wrong(
            "before-unshare",
            t(
                f"{renamed['en']}: the hostname was set before the new UTS namespace existed. "
                "On the host, that renames the machine",
                f"{renamed['ko']}: 새 UTS namespace가 생기기 전에 hostname을 설정했습니다. "
                "호스트에서라면 이 컴퓨터의 이름이 바뀝니다",
            ),
            t(
                "unshare first, then set the hostname",
                "먼저 unshare 하고, 그다음 hostname을 설정하세요",
            ),
        )
    if after != start:
        others = [k for k in new if k != "uts"]
        if others:
            return wrong(
                "wrong-kind",
                t(
                    f"{renamed['en']}. Your process got a new {', '.join(others)} namespace, "
                    "but the hostname is not kept there",
                    f"{renamed['ko']}. 프로세스가 새 {', '.join(others)} namespace를 "
                    "받았지만, hostname은 그곳에 있지 않습니다",
                ),
                t(
                    'the hostname belongs to the UTS namespace: namespaces.unshare({"uts"})',
                    'hostname은 UTS namespace에 속합니다: namespaces.unshare({"uts"})',
                ),
            )
        return wrong(
            "no-unshare",
            t(
                f"{renamed['en']}: your process never left it. On the host, every program "
                "would now see the new name",
                f"{renamed['ko']}: 프로세스가 그 namespace를 떠나지 않았습니다. 호스트에서라면 "
                "모든 프로그램이 새 이름을 보게 됩니다",
            ),
            HOW,
        )
    if "uts" not in new:
        if HOSTNAME in run.stdout:
            return wrong(
                "other-process",
                t(
                    f"your cell's own process is still in the UTS namespace it started in "
                    f"(hostname `{name}`): the new name was set in another process",
                    f"셀의 프로세스는 여전히 처음 UTS namespace에 있습니다 (hostname "
                    f"`{name}`). 새 이름은 다른 프로세스에서 설정되었습니다",
                ),
                t(
                    "do it in the cell's own process, with labkit's primitives: " + HOW["en"],
                    "셀 자신의 프로세스에서 labkit의 기본 함수로 하세요: " + HOW["ko"],
                ),
            )
        return wrong(
            "nothing", t("the hostname did not change", "hostname이 바뀌지 않았습니다"), HOW
        )
    if name == start:
        return wrong(
            "no-hostname",
            t(
                f"your process has a UTS namespace of its own, but its hostname is still "
                f"`{name}`, the copy of the host's",
                f"프로세스에 자기만의 UTS namespace가 생겼지만, hostname은 여전히 호스트의 "
                f"복사본인 `{name}`입니다",
            ),
            t(
                "now set it: syscalls.sethostname(HOSTNAME)",
                "이제 설정하세요: syscalls.sethostname(HOSTNAME)",
            ),
        )
    return right(
        t(
            f"your process is `{name}` in {run.value('uts')}, and the namespace it started in "
            f"still says `{after}`: one kernel, two hostnames.",
            f"프로세스의 hostname은 {run.value('uts')} 안에서 `{name}`이고, 처음 namespace는 "
            f"여전히 `{after}`입니다: 커널은 하나, hostname은 둘.",
        ),
        value={"hostname": name, "uts": run.value("uts"), "start": after},
    )
