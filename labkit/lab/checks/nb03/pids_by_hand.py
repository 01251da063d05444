"""03-pids-by-hand: a pids limit written by hand, before labkit's ``--pids-limit`` does it.

The learner's cell runs as root in a fresh child with ``CGROUP``, the path of a cgroup under
labkit's parent that does not exist yet (the parent is ready: on v2 it hands the controllers
down), and ``LIMIT``. They make the directory, write ``pids.max``, move their own process in
(``cgroup.procs``) and start more programs than the limit allows. The checker then reads what
the kernel kept in that cgroup, before removing it:

* no directory: nothing was made (a write into it fails first);
* ``pids.max`` still ``max``, or another number: the limit was not written, or not LIMIT;
* refusals in ``pids.events`` (``max N``): the limit held a process of theirs. Right;
* no refusal, their process in ``cgroup.procs`` (the harness looks): too few programs, or
  programs that end at once; their process not in it: it never joined;
* the notebook's own process in it: they moved the wrong PID (it is moved back at once).
"""

from __future__ import annotations

import os

from labkit.kernel.cgroups.stats import read_keyed
from labkit.lab.cgroup_demo import scratch_cgroup
from labkit.lab.checks.common import failed, run_code
from labkit.lab.child import ChildRun
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

LIMIT = 5

HARNESS = """
try:
    _members = Path(CGROUP, "cgroup.procs").read_text().split()
    _current = int(Path(CGROUP, "pids.current").read_text())
except OSError:
    _members, _current = [], None
report(joined=str(os.getpid()) in _members, current=_current)
"""


@define(
    "03-pids-by-hand",
    kind="code",
    title=t("A pids limit, by hand", "pids 제한을 손으로 쓰기"),
    instructions=t(
        "Make a cgroup by hand and let it hold at most `LIMIT` processes:"
        "\n\n1. create the directory `CGROUP` (`os.mkdir`): the kernel fills it with control "
        "files at once;"
        "\n2. write `LIMIT` into its file `pids.max` (as text: `str(LIMIT)`);"
        "\n3. move **this** process into it: write its PID (`os.getpid()`) into its file "
        "`cgroup.procs`. From then on every process it starts is born in the cgroup;"
        "\n4. show the effect: try to start 10 programs that keep running, "
        '`subprocess.Popen(["sleep", "30"])`, each inside `try` / `except OSError as e`, and '
        "print which started and which the kernel refused (`e.errno`)."
        f"\n\n`CGROUP` is a path under labkit's own parent cgroup, made ready for you; `LIMIT` "
        f"is {LIMIT}. `os`, `subprocess` and `Path` are imported. Move only your own process: "
        "the notebook's must stay where it is. The check removes the cgroup afterwards.",
        "cgroup을 손으로 만들고, 그 안에 프로세스가 최대 `LIMIT`개까지만 있도록 제한하세요:"
        "\n\n1. 디렉터리 `CGROUP`을 만듭니다 (`os.mkdir`). 커널이 곧바로 제어 파일들을 "
        "채워 넣습니다;"
        "\n2. 그 안의 `pids.max` 파일에 `LIMIT`을 씁니다 (텍스트로: `str(LIMIT)`);"
        "\n3. **이** 프로세스를 그 안으로 옮깁니다: PID(`os.getpid()`)를 `cgroup.procs` 파일에 "
        "씁니다. 그 뒤로 이 프로세스가 시작하는 모든 프로세스는 그 cgroup 안에서 태어납니다;"
        "\n4. 효과를 보여 주세요: 계속 실행되는 프로그램 10개를 시작해 봅니다. "
        '`subprocess.Popen(["sleep", "30"])`을 하나씩 `try` / `except OSError as e` 안에서 '
        "실행하고, 어느 것이 시작되었고 어느 것을 커널이 거부했는지(`e.errno`) 출력하세요."
        "\n\n`CGROUP`은 labkit의 부모 cgroup 아래의 경로로, 미리 준비되어 있습니다. "
        f"`LIMIT`은 {LIMIT}입니다. `os`, `subprocess`, `Path`는 import 되어 있습니다. 자기 "
        "프로세스만 옮기세요: 노트북의 프로세스는 그대로 있어야 합니다. 검사가 끝나면 cgroup은 "
        "지워집니다.",
    ),
)
def check_pids_by_hand(source: str) -> Verdict:
    with scratch_cgroup(f"nb03-by-hand-{os.getpid()}") as scratch:
        run = run_code(source, HARNESS, values={"CGROUP": str(scratch.path), "LIMIT": LIMIT})
        made = scratch.path.is_dir()
        limit = (scratch.path / "pids.max").read_text().strip() if made else None
        refused = read_keyed(scratch.path / "pids.events").get("max", 0) if made else 0
    if scratch.intruded:
        return wrong(
            "moved-notebook",
            t(
                "the notebook's own process ended up in your cgroup: its limit would have held "
                "the notebook (it has been moved back)",
                "노트북 자신의 프로세스가 cgroup 안으로 들어갔습니다: 그 제한이 노트북을 "
                "묶었을 것입니다 (원래 자리로 되돌려 놓았습니다)",
            ),
            t(
                "write the PID of your cell's process, os.getpid(), into cgroup.procs: "
                "os.getppid() is the notebook",
                "셀 프로세스의 PID인 os.getpid()를 cgroup.procs에 쓰세요: os.getppid()는 "
                "노트북입니다",
            ),
        )
    return _judge(run, made, limit, refused, str(scratch.path))


def _judge(run: ChildRun, made: bool, limit: str | None, refused: int, path: str) -> Verdict:
    if not made:
        return failed(run, _BY_TYPE) or wrong(
            "no-cgroup",
            t(
                f"there is no cgroup at {path}: nothing made it",
                f"{path}에 cgroup이 없습니다: 아무것도 만들어지지 않았습니다",
            ),
            _MKDIR_HINT,
        )
    if limit != str(LIMIT):
        verdict = failed(run, _BY_TYPE)
        if verdict:
            return verdict
        if limit == "max":
            return wrong(
                "no-limit",
                t(
                    "the cgroup's pids.max still says max: it has no limit",
                    "cgroup의 pids.max가 여전히 max입니다: 제한이 없습니다",
                ),
                t(
                    "write it: Path(CGROUP, 'pids.max').write_text(str(LIMIT))",
                    "이렇게 쓰세요: Path(CGROUP, 'pids.max').write_text(str(LIMIT))",
                ),
            )
        return wrong(
            "other-limit",
            t(
                f"the cgroup's pids.max says {limit}, not LIMIT ({LIMIT})",
                f"cgroup의 pids.max가 LIMIT({LIMIT})이 아니라 {limit}입니다",
            ),
            t("write str(LIMIT) into pids.max", "pids.max에 str(LIMIT)을 쓰세요"),
        )
    if refused:
        stopped = (run.error or {}).get("type") == "BlockingIOError"
        note = (
            t(
                " Your cell stopped at the first refusal (BlockingIOError, errno EAGAIN); "
                "catch it with except OSError to go on.",
                " 셀은 첫 거부에서 멈췄습니다 (BlockingIOError, errno EAGAIN). except "
                "OSError로 잡으면 계속할 수 있습니다.",
            )
            if stopped
            else t("", "")
        )
        return right(
            t(
                f"with pids.max = {LIMIT} the kernel let your Python and {LIMIT - 1} more "
                f"processes into the cgroup, then refused {refused} forks (pids.events: max "
                f"{refused}). A process cannot leave that limit behind: its children are born "
                "in its cgroup." + note["en"],
                f"pids.max = {LIMIT}이므로 커널은 파이썬 프로세스와 {LIMIT - 1}개의 프로세스를 "
                f"cgroup에 들이고, 그다음 fork {refused}번을 거부했습니다 (pids.events: max "
                f"{refused}). 자식 프로세스는 부모의 cgroup에서 태어나므로 이 제한을 벗어날 수 "
                "없습니다." + note["ko"],
            ),
            value={"limit": LIMIT, "started": LIMIT - 1, "refused": refused},
        )
    verdict = failed(run, _BY_TYPE)
    if verdict:
        return verdict
    if not run.value("joined"):
        return wrong(
            "not-joined",
            t(
                "the limit was in place, but your process was not in the cgroup, so the "
                "programs it started were not either: no fork was refused",
                "제한은 있었지만 프로세스가 cgroup 안에 없었으므로, 그 프로세스가 시작한 "
                "프로그램도 밖에 있었습니다: 거부된 fork가 없습니다",
            ),
            t(
                "move it in before you start anything: "
                "Path(CGROUP, 'cgroup.procs').write_text(str(os.getpid()))",
                "무엇이든 시작하기 전에 옮기세요: "
                "Path(CGROUP, 'cgroup.procs').write_text(str(os.getpid()))",
            ),
        )
    return wrong(
        "no-effect",
        t(
            f"your process was in the cgroup under pids.max = {LIMIT}, but it never had more "
            f"than {LIMIT} processes at once, so the kernel refused nothing",
            f"프로세스는 pids.max = {LIMIT}인 cgroup 안에 있었지만, 동시에 {LIMIT}개보다 많은 "
            "프로세스를 가진 적이 없어서 커널이 거부할 것이 없었습니다",
        ),
        t(
            'start 10 programs that keep running, subprocess.Popen(["sleep", "30"]), without '
            "waiting for them: a program that has ended no longer counts",
            '계속 실행되는 프로그램 10개를 기다리지 말고 시작하세요: subprocess.Popen(["sleep", '
            '"30"]). 이미 끝난 프로그램은 세지 않습니다',
        ),
    )


_MKDIR_HINT = t(
    "a cgroup is a directory: os.mkdir(CGROUP) makes it, and the kernel puts pids.max and "
    "cgroup.procs in it",
    "cgroup은 디렉터리입니다: os.mkdir(CGROUP)으로 만들면 커널이 그 안에 pids.max와 "
    "cgroup.procs를 넣어 줍니다",
)

_BY_TYPE = {
    "FileNotFoundError": ("no-cgroup", _MKDIR_HINT),
    "TypeError": (
        "not-text",
        t(
            "cgroup files take text: write str(LIMIT) and str(os.getpid())",
            "cgroup 파일에는 텍스트를 씁니다: str(LIMIT), str(os.getpid())",
        ),
    ),
    "NameError": (
        "name",
        t(
            "your cell can use CGROUP, LIMIT, os, subprocess and Path",
            "셀에서는 CGROUP, LIMIT, os, subprocess, Path를 쓸 수 있습니다",
        ),
    ),
}
