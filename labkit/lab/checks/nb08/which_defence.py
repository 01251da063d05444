"""08-which-defence: for four break-outs, the one defence that stops each on its own.

The answer is a dict ``{probe: defence}``. The checker plants a canary and runs every probe
twice in a fresh container: with every defence off (it must go through, or the question is
moot) and with only the learner's defence on. A probe that still goes through shows the
choice was wrong; the commonest confusions get their own reason and hint.
"""

from __future__ import annotations

from typing import Any

from labkit.lab import escapes
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import Text, t

PROBES = ("device", "core_pattern", "shocker", "keyring")
DEFENCES = escapes.DEFENCES

#: Other words a learner may use for a defence.
ALIASES = {
    "capabilities": ("capability", "caps", "cap", "cap-add", "cap_add"),
    "seccomp": ("seccomp filter", "syscall filter", "filter"),
    "masks": ("mask", "masked", "masked paths", "read-only paths", "systempaths", "paths"),
    "devices": ("device", "device controller", "device cgroup", "cgroup", "device-cgroup-rule"),
}

#: (probe, the wrong defence) -> (reason, hint): the confusions the lesson is about.
CONFUSIONS: dict[tuple[str, str], tuple[str, Text]] = {
    ("shocker", "seccomp"): (
        "seccomp-follows-caps",
        t(
            "Docker's seccomp profile allows open_by_handle_at to a container that holds "
            "CAP_DAC_READ_SEARCH, and with every capability on, it does. Which defence takes "
            "that capability away?",
            "Docker의 seccomp 프로파일은 CAP_DAC_READ_SEARCH를 가진 컨테이너에게 "
            "open_by_handle_at을 허용합니다. 모든 capability가 켜져 있으면 그 조건이 "
            "맞습니다. 그 capability를 빼앗는 방어는 무엇일까요?",
        ),
    ),
    ("device", "capabilities"): (
        "mknod-is-allowed",
        t(
            "CAP_MKNOD is one of the 14 capabilities a container keeps, so making the node "
            "works. What decides whether a device node may be *opened*?",
            "CAP_MKNOD는 컨테이너가 가지는 14개 capability 중 하나라서 노드를 만드는 것은 "
            "됩니다. 장치 노드를 *여는* 것을 허락할지 정하는 것은 무엇일까요?",
        ),
    ),
    ("core_pattern", "capabilities"): (
        "root-owns-the-file",
        t(
            "writing a file in /proc/sys needs no capability: only uid 0, and root in the "
            "container is uid 0. What makes /proc/sys read-only inside a container?",
            "/proc/sys의 파일에 쓰는 데에는 capability가 필요 없고 uid 0이면 됩니다. 컨테이너의 "
            "root는 uid 0입니다. 컨테이너 안에서 /proc/sys를 읽기 전용으로 만드는 것은?",
        ),
    ),
    ("keyring", "capabilities"): (
        "no-capability-needed",
        t(
            "keyctl needs no capability at all, so none can be taken away to stop it. Which "
            "defence looks at the system call itself?",
            "keyctl에는 capability가 전혀 필요 없으므로 capability를 빼서 막을 수 없습니다. "
            "시스템 콜 자체를 보는 방어는 무엇일까요?",
        ),
    ),
}

GENERIC = t(
    "read the probe: does it make a device node and open it, write a file in /proc, use a "
    "power of root, or only make a system call?",
    "프로브를 읽어 보세요: 장치 노드를 만들어 여는지, /proc의 파일에 쓰는지, root의 권한을 "
    "쓰는지, 아니면 시스템 콜 하나만 호출하는지?",
)


def normalize(word: Any) -> str | None:
    """The defence a word names ("caps" is capabilities), or None."""
    if not isinstance(word, str):
        return None
    word = word.strip().lower().replace("_", " ").removeprefix("the ")
    for name in DEFENCES:
        if word == name or word in ALIASES[name]:
            return name
    return None


def _shape(answer: Any) -> Verdict | None:
    if not isinstance(answer, dict) or set(answer) != set(PROBES):
        return wrong(
            "not-a-dict",
            t(
                f"the answer should be a dict with the keys {', '.join(PROBES)}; got {answer!r}",
                f"답은 {', '.join(PROBES)} 키를 가진 dict여야 합니다. 받은 값: {answer!r}",
            ),
            t(
                "keep the dict from the cell and fill in its values",
                "셀의 dict를 두고 값만 채우세요",
            ),
        )
    left = [k for k in PROBES if answer[k] is ... or answer[k] is None]
    if left:
        return wrong(
            "unanswered",
            t(f"no answer yet for {', '.join(left)}", f"아직 답하지 않은 항목: {', '.join(left)}"),
            t(
                f"give each probe one of: {', '.join(DEFENCES)}",
                f"각 프로브에 다음 중 하나를 적으세요: {', '.join(DEFENCES)}",
            ),
        )
    unknown = [f"{k}: {answer[k]!r}" for k in PROBES if normalize(answer[k]) is None]
    if unknown:
        return wrong(
            "unknown-defence",
            t(
                f"not the name of a defence: {', '.join(unknown)}",
                f"방어의 이름이 아닙니다: {', '.join(unknown)}",
            ),
            t(
                f"use one of these words: {', '.join(DEFENCES)}",
                f"다음 단어 중 하나를 쓰세요: {', '.join(DEFENCES)}",
            ),
        )
    return None


@define(
    "08-which-defence",
    kind="value",
    name="stopped_by",
    title=t("Which defence stops which break-out?", "어떤 방어가 어떤 탈출을 막을까?"),
    instructions=t(
        "Four break-outs, each of which works in a container with every defence off. For "
        "each, name **the one defence that stops it on its own** (with the three others "
        "off): `capabilities`, `seccomp`, `masks` or `devices`.\n\n"
        "- `device`: `mknod /dev/lk-fuse c 10 229`, then open that new device node;\n"
        "- `core_pattern`: open `/proc/sys/kernel/core_pattern` for writing (the kernel runs "
        "the program named there, as root on the host, whenever a process dumps core);\n"
        "- `shocker`: `open_by_handle_at(2)` with a handle to a file on the host's disk, "
        "outside the container's root;\n"
        "- `keyring`: `keyctl(2)`, a look at the kernel's keyring, shared by the whole host.\n\n"
        "The checker runs each probe in a fresh container with only the defence you named "
        "on, and once with every defence off.",
        "모든 방어가 꺼진 컨테이너에서는 성공하는 탈출 네 가지가 있습니다. 각각에 대해 "
        "**혼자서(나머지 셋은 꺼진 채로) 그것을 막는 방어 하나**를 적으세요: "
        "`capabilities`, `seccomp`, `masks`, `devices`.\n\n"
        "- `device`: `mknod /dev/lk-fuse c 10 229`로 장치 노드를 만든 뒤 그것을 엽니다;\n"
        "- `core_pattern`: `/proc/sys/kernel/core_pattern`을 쓰기용으로 엽니다 (프로세스가 "
        "코어를 덤프할 때마다 커널이 여기 적힌 프로그램을 호스트의 root로 실행합니다);\n"
        "- `shocker`: 컨테이너의 루트 바깥, 호스트 디스크의 파일을 가리키는 핸들로 "
        "`open_by_handle_at(2)`을 호출합니다;\n"
        "- `keyring`: `keyctl(2)`로 호스트 전체가 함께 쓰는 커널의 키링을 봅니다.\n\n"
        "검사기는 각 프로브를 새 컨테이너에서 적은 방어 하나만 켠 채로, 그리고 모든 방어를 끈 "
        "채로 한 번씩 실행합니다.",
    ),
)
def check_which_defence(answer: Any) -> Verdict:
    verdict = _shape(answer)
    if verdict:
        return verdict
    chosen = {k: normalize(answer[k]) or "" for k in PROBES}
    with escapes.plant_canary() as canary:
        probes = escapes.probes(canary)
        runs = [(probes[k], escapes.ALL_OFF, "labkit") for k in PROBES]
        runs += [(probes[k], escapes.flags(chosen[k]), "labkit") for k in PROBES]
        done = escapes.attempt_all(runs)
    off = dict(zip(PROBES, done[: len(PROBES)], strict=True))
    alone = dict(zip(PROBES, done[len(PROBES) :], strict=True))
    broken = [k for k in PROBES if not off[k].escaped]
    if broken:
        return wrong(
            "probe-does-not-work",
            t(
                f"with every defence off, {broken[0]} did not go through here: "
                f"{(off[broken[0]].stderr or off[broken[0]].stdout).strip()}",
                f"모든 방어를 끈 상태에서도 {broken[0]}이(가) 성공하지 못했습니다: "
                f"{(off[broken[0]].stderr or off[broken[0]].stdout).strip()}",
            ),
            t("run labkit doctor in a terminal", "터미널에서 labkit doctor를 실행해 보세요"),
        )
    missed = [k for k in PROBES if alone[k].escaped]
    if missed:
        first = missed[0]
        reason, hint = CONFUSIONS.get((first, chosen[first]), ("not-stopped", GENERIC))
        lines = [f"{k} with only {chosen[k]} on: went through" for k in missed]
        lines_ko = [f"{k}: {chosen[k]}만 켰을 때 성공했습니다(막지 못함)" for k in missed]
        return wrong(reason, t("; ".join(lines), "; ".join(lines_ko)), hint)
    said = ", ".join(f"{k}: {chosen[k]} ({alone[k].said})" for k in PROBES)
    return right(
        t(
            f"each went through with every defence off, and was stopped by the one you named: "
            f"{said}",
            f"모두 방어를 다 끄면 성공했고, 적은 방어 하나만으로 막혔습니다: {said}",
        )
    )
