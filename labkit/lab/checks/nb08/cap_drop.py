"""08-cap-drop: a container that must mount (``--cap-add SYS_ADMIN``) should still not reach the
host's disk. The learner names the capabilities to drop.

The checker plants a canary and runs two containers with ``--cap-add SYS_ADMIN`` and the
learner's ``--cap-drop`` list: the disk probe (mknod of the host's disk, mount it, read the
canary), which must be stopped, and the job the container exists for (mount a tmpfs), which
must still work. labkit's own error answers a name that is not a capability.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from labkit.lab import escapes
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

ADD = ("--cap-add", "SYS_ADMIN")
#: What the container is for: a scratch filesystem of its own (and what it kept, for the message).
JOB = (
    "mkdir -p /tmp/m && mount -t tmpfs scratch /tmp/m && echo mounted; "
    "grep CapEff /proc/self/status"
)


def _names(answer: Any) -> list[str] | None:
    if isinstance(answer, (list, tuple, set)) and all(isinstance(n, str) for n in answer):
        return list(answer)
    return None


@define(
    "08-cap-drop",
    kind="value",
    name="cap_drop",
    title=t(
        "A container that mounts, and the host's disk", "마운트하는 컨테이너와 호스트의 디스크"
    ),
    instructions=t(
        "A build tool in a container mounts a scratch tmpfs for itself, so its container is "
        "started with `--cap-add SYS_ADMIN`. You saw what that opens: the disk probe reads "
        "the canary again. Set `cap_drop` to the list of capabilities to drop "
        '(`--cap-drop`, e.g. `["NET_RAW"]`) so that\n\n'
        "- the disk probe is **stopped**, and\n"
        "- `mount -t tmpfs scratch /tmp/m` in the container **still works**.\n\n"
        "Read the probe's steps: which one needs a capability other than SYS_ADMIN? "
        "`man 7 capabilities` says what each capability allows. The checker runs both "
        "containers with `--cap-add SYS_ADMIN` and your drops.",
        "어떤 빌드 도구는 컨테이너 안에서 스스로 쓸 tmpfs를 마운트합니다. 그래서 그 컨테이너는 "
        "`--cap-add SYS_ADMIN`으로 시작됩니다. 그것이 무엇을 여는지 보았습니다: 디스크 프로브가 "
        "다시 canary를 읽습니다. `cap_drop`에 뺄 capability의 리스트(`--cap-drop`, 예: "
        '`["NET_RAW"]`)를 넣어서\n\n'
        "- 디스크 프로브는 **막히고**,\n"
        "- 컨테이너 안의 `mount -t tmpfs scratch /tmp/m`은 **계속 동작**하게 하세요.\n\n"
        "프로브의 단계를 읽어 보세요: SYS_ADMIN 말고 다른 capability가 필요한 단계는? "
        "`man 7 capabilities`에 capability마다 무엇을 허용하는지 나와 있습니다. 검사기는 "
        "`--cap-add SYS_ADMIN`과 적은 drop으로 두 컨테이너를 실행합니다.",
    ),
)
def check_cap_drop(answer: Any) -> Verdict:
    names = _names(answer)
    if names is None:
        return wrong(
            "not-a-list",
            t(
                f"cap_drop should be a list of names; got {answer!r}",
                f"cap_drop은 이름의 리스트여야 합니다: {answer!r}",
            ),
            t('write it like ["NET_RAW", "CHOWN"]', '["NET_RAW", "CHOWN"]처럼 쓰세요'),
        )
    drops = tuple(f for name in names for f in ("--cap-drop", name))
    with escapes.plant_canary() as canary:
        probe = escapes.probes(canary)["disk"]
        disk = escapes.attempt(probe, *ADD, *drops, show=False)
    job = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "run", *ADD, *drops, "--", "sh", "-c", JOB],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if disk.returncode == 125 and "unknown capability" in disk.stderr:
        said = disk.stderr.strip().splitlines()[-1]
        return wrong(
            "unknown-capability",
            t(f"labkit refused the list: {said}", f"labkit이 리스트를 거부했습니다: {said}"),
            t(
                "use the names of `man 7 capabilities` without CAP_ (MKNOD, NET_RAW, ...)",
                "`man 7 capabilities`의 이름을 CAP_ 없이 쓰세요 (MKNOD, NET_RAW, ...)",
            ),
        )
    if "mounted" not in job.stdout:
        said = (
            (job.stderr or job.stdout).strip().splitlines()[0] if job.stderr or job.stdout else ""
        )
        return wrong(
            "breaks-the-command",
            t(
                f"the container can no longer do its job: mount -t tmpfs said {said!r}",
                f"컨테이너가 제 할 일을 못 합니다: mount -t tmpfs의 결과 {said!r}",
            ),
            t(
                "mount needs SYS_ADMIN: keep it, and drop what only the probe needs",
                "mount에는 SYS_ADMIN이 필요합니다. 그것은 두고, 프로브에만 필요한 것을 빼세요",
            ),
        )
    if disk.escaped and any(n.strip().upper().removeprefix("CAP_") == "SYS_ADMIN" for n in names):
        return wrong(
            "add-wins",
            t(
                "the probe still read the canary, and the tmpfs mount still works: "
                "--cap-add SYS_ADMIN is on the same command line, and an added capability "
                "stays even when it is also dropped (Docker's rule, and labkit's)",
                "프로브는 여전히 canary를 읽었고 tmpfs 마운트도 여전히 됩니다. 같은 명령에 "
                "--cap-add SYS_ADMIN이 있고, 추가한 capability는 drop해도 남습니다 "
                "(Docker의 규칙이고 labkit도 같습니다)",
            ),
            t(
                "the container needs SYS_ADMIN for its job anyway: find the capability only "
                "the probe needs",
                "컨테이너는 어차피 일하는 데 SYS_ADMIN이 필요합니다. 프로브에만 필요한 "
                "capability를 찾으세요",
            ),
        )
    if disk.escaped:
        return wrong(
            "still-escapes",
            t(
                f"with --cap-drop {' '.join(names) or '(nothing)'} the probe still read the canary",
                f"--cap-drop {' '.join(names) or '(없음)'}으로도 프로브가 canary를 읽었습니다",
            ),
            t(
                "the probe first makes a block device node for the host's disk: which "
                "capability does making a device node need?",
                "프로브는 먼저 호스트 디스크의 블록 장치 노드를 만듭니다. 장치 노드를 만드는 데 "
                "필요한 capability는 무엇일까요?",
            ),
        )
    kept = escapes.cap_names(job.stdout)
    return right(
        t(
            f"the probe was stopped ({disk.said}: {disk.stderr.strip().splitlines()[0]}) and "
            f"the tmpfs mount works; what the container keeps ({len(kept)}): {', '.join(kept)}",
            f"프로브는 막혔고({disk.said}: {disk.stderr.strip().splitlines()[0]}) tmpfs 마운트는 "
            f"동작합니다. 컨테이너에 남은 capability ({len(kept)}개): {', '.join(kept)}",
        ),
    )
