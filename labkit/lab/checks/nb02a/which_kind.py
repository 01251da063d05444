"""02a-which-kind: which namespace kind isolates which thing? Each answer is tried for real.

For every item the learner names a kind. In a fresh child, one process per item gets a new
namespace of *only* that kind, does the thing (sets a hostname, mounts a tmpfs, lists the
network interfaces...), and the checker looks from the namespace it came from whether the
thing stayed hidden. The child starts in scratch UTS, IPC and mount namespaces, so a wrong
answer renames, mounts or creates nothing on the host.
"""

from __future__ import annotations

from labkit.kernel.namespaces import KINDS
from labkit.lab import child
from labkit.lab.checks.common import failed
from labkit.lab.checks.nb02a.probes import HARNESS, ITEMS, PRELUDE, evidence
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

HINTS = {
    "hostname": t(
        "uname(2) reads the hostname from the UTS namespace",
        "uname(2)은 hostname을 UTS namespace에서 읽습니다",
    ),
    "processes": t(
        "process numbers are what the PID namespace gives out afresh",
        "프로세스 번호를 새로 매기는 것이 PID namespace입니다",
    ),
    "shared_memory": t(
        "System V IPC objects and POSIX message queues have a kind of their own: IPC",
        "System V IPC 객체와 POSIX 메시지 큐에는 자기만의 종류가 있습니다: IPC",
    ),
    "interfaces": t(
        "devices, addresses and routes belong to the network namespace",
        "장치, 주소, 라우트는 네트워크 namespace에 속합니다",
    ),
    "root": t(
        "who uid 0 is on the host is written in the user namespace's uid_map",
        "uid 0이 호스트에서 누구인지는 user namespace의 uid_map에 적혀 있습니다",
    ),
    "mounts": t(
        "the mount table has a kind of its own, the oldest one (CLONE_NEWNS)",
        "마운트 테이블에는 자기만의 종류가 있습니다. 가장 오래된 종류(CLONE_NEWNS)입니다",
    ),
}


def _kind_of(value: object) -> str | None:
    """The kind a learner named ("uts", "mount", "network namespace"...), or None."""
    if not isinstance(value, str):
        return None
    word = value.strip().lower().removesuffix("namespace").strip().removeprefix("clone_new")
    word = {"mount": "mnt", "ns": "mnt", "network": "net", "users": "user"}.get(word, word)
    return word if word in KINDS else None


@define(
    "02a-which-kind",
    kind="value",
    name="isolates",
    title=t("Which namespace hides what?", "어떤 namespace가 무엇을 숨길까?"),
    instructions=t(
        "Fill in the dict `isolates`: for each thing, the one namespace kind that keeps it "
        "apart (`uts`, `pid`, `mnt`, `ipc`, `net`, `user` or `cgroup`).\n\n"
        + "\n".join(f"- `{k}`: {v[0]['en']}" for k, v in ITEMS.items())
        + "\n\nThe checker tries every answer for real: for each thing, a fresh process gets "
        "a new namespace of **only** the kind you named, does that thing, and the checker "
        "looks from outside whether it stayed hidden.",
        "딕셔너리 `isolates`를 채우세요: 각 항목마다 그것을 격리하는 namespace 종류 하나"
        "(`uts`, `pid`, `mnt`, `ipc`, `net`, `user`, `cgroup` 중 하나)를 적습니다.\n\n"
        + "\n".join(f"- `{k}`: {v[0]['ko']}" for k, v in ITEMS.items())
        + "\n\n검사기는 모든 답을 실제로 시험합니다: 항목마다 새 프로세스가 **적어 준 "
        "종류의** namespace 하나만 새로 받아서 그 일을 하고, 검사기는 바깥에서 그것이 "
        "숨겨졌는지 확인합니다.",
    ),
)
def check_which_kind(answer: dict) -> Verdict:
    if not isinstance(answer, dict) or set(answer) != set(ITEMS):
        return wrong(
            "keys",
            t(
                f"`isolates` needs exactly these keys: {', '.join(ITEMS)}",
                f"`isolates`에는 정확히 다음 키가 있어야 합니다: {', '.join(ITEMS)}",
            ),
            t(
                "keep the dict as it was given and fill in the values",
                "주어진 딕셔너리에 값만 채우세요",
            ),
        )
    open_ = [k for k, v in answer.items() if v is ...]
    if open_:
        return wrong(
            "unanswered",
            t(
                f"no answer yet for {', '.join(open_)}",
                f"아직 답하지 않은 항목: {', '.join(open_)}",
            ),
            t(
                'replace every `...` with a kind, e.g. "uts"',
                '모든 `...`를 종류 이름(예: "uts")으로 바꾸세요',
            ),
        )
    kinds = {k: _kind_of(v) for k, v in answer.items()}
    unknown = [f"{k}={answer[k]!r}" for k, v in kinds.items() if v is None]
    if unknown:
        return wrong(
            "not-a-kind",
            t(
                f"not a namespace kind: {', '.join(unknown)}",
                f"namespace 종류가 아닙니다: {', '.join(unknown)}",
            ),
            t(
                "the kinds are the names in /proc/self/ns: " + ", ".join(KINDS),
                "종류는 /proc/self/ns에 있는 이름입니다: " + ", ".join(KINDS),
            ),
        )
    run = child.run(
        "",
        harness=HARNESS,
        prelude=PRELUDE,
        values={"ANSWER": kinds},
        sandbox={"uts", "ipc", "mnt"},
        echo=False,
    )
    verdict = failed(run)
    if verdict:
        return verdict
    results = {item: run.value(item) or {"hidden": False, "error": "no answer"} for item in ITEMS}
    missed = [item for item in ITEMS if not results[item]["hidden"]]
    if missed:
        first = missed[0]
        others = t(
            f" (also not hidden: {', '.join(missed[1:])})" if missed[1:] else "",
            f" (역시 숨겨지지 않음: {', '.join(missed[1:])})" if missed[1:] else "",
        )
        said = evidence(first, kinds[first], results[first])
        return wrong(
            first,
            t(f"{first}: {said['en']}{others['en']}", f"{first}: {said['ko']}{others['ko']}"),
            HINTS[first],
        )
    return right(
        t(
            "each answer tried for real: with only that kind new, each thing stayed hidden "
            f"from the outside ({', '.join(f'{k}={v}' for k, v in kinds.items())}).",
            "모든 답을 실제로 시험했습니다: 그 종류만 새로 만들어도 각 항목이 바깥에서 "
            f"숨겨졌습니다 ({', '.join(f'{k}={v}' for k, v in kinds.items())}).",
        )
    )
