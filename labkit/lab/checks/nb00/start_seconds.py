"""00-start-seconds: how long does it take to start a program and see it end?

The learner's function times real programs in a fresh child: ``sh`` that leaves a mark and
sleeps, then ``true``. The child itself looks at what is left: a program still running after the
function returned means it never waited; no mark means it never ran the program; a time far
below the sleep means it measured CPU time, not time passed.
"""

from __future__ import annotations

from labkit.lab.checks.common import failed, not_a_number, run_function
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

SLEEP = 0.3

HARNESS = f"""
import shutil, tempfile
def _running_children():
    me = str(os.getpid())
    kids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{{pid}}/stat").read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            kids.append(int(pid))
    return kids
_dir = tempfile.mkdtemp(prefix="labkit-check-")
try:
    _mark = os.path.join(_dir, "ran")
    _v = start_seconds(["sh", "-c", f"echo ran > {{_mark}}; exec sleep {SLEEP}"])
    report(sleep=_v, kind=type(_v).__name__, ran=os.path.exists(_mark),
           running=bool(_running_children()))
    if type(_v) in (int, float):
        report(true=start_seconds(["true"]))
finally:
    shutil.rmtree(_dir)
"""


@define(
    "00-start-seconds",
    kind="function",
    name="start_seconds",
    title=t("How long does a start take?", "시작하는 데 얼마나 걸릴까?"),
    instructions=t(
        "Complete `start_seconds(argv)`: start the program `argv` (a list such as "
        '`["true"]`), wait until it has exited, and return the **wall-clock seconds** that '
        "passed, as a float. That is what a start costs a user: the time from asking for a "
        "program until it is done.\n\n"
        "Useful: `time.perf_counter()` reads a clock for measuring intervals; "
        "`subprocess.run(argv)` starts a program and waits for it. The checker times "
        f"`sleep {SLEEP}` and `true` with your function in a fresh process.",
        '`start_seconds(argv)`를 완성하세요: 프로그램 `argv`(`["true"]` 같은 리스트)를 '
        "시작하고, 끝날 때까지 기다린 뒤, 그동안 흐른 **실제 시간(초)** 을 float로 반환합니다. "
        "사용자가 치르는 시작 비용이 바로 이것입니다: 프로그램을 요청한 순간부터 끝날 "
        "때까지의 시간.\n\n"
        "도움말: `time.perf_counter()`는 시간 간격을 재는 시계이고, `subprocess.run(argv)`는 "
        f"프로그램을 시작하고 끝날 때까지 기다립니다. 검사기는 새 프로세스에서 `sleep {SLEEP}` 및 "
        "`true` 명령의 시간을 작성한 함수로 잽니다.",
    ),
)
def check_start_seconds(source: str) -> Verdict:
    run = run_function(source, HARNESS)
    verdict = failed(run)
    if verdict:
        return verdict
    v, kind = run.value("sleep"), run.value("kind")
    verdict = not_a_number(v, kind, t("the seconds, as a float", "초 단위의 float"))
    if verdict:
        return verdict
    said = t(
        f"your function says `sleep {SLEEP}` took {v:.4g} s",
        f"작성한 함수에 따르면 `sleep {SLEEP}` 명령이 {v:.4g}초 걸렸습니다",
    )
    if run.value("running"):
        return wrong(
            "no-wait",
            t(
                f"your function returned while the program was still running ({said['en']})",
                f"프로그램이 아직 실행 중인데 함수가 반환했습니다 ({said['ko']})",
            ),
            t(
                "wait for it to exit before you read the clock again: subprocess.run() waits, "
                "subprocess.Popen() does not until you call .wait()",
                "시계를 다시 읽기 전에 프로그램이 끝나기를 기다리세요. subprocess.run()은 "
                "기다리지만 subprocess.Popen()은 .wait()를 호출해야 기다립니다",
            ),
        )
    if not run.value("ran"):
        return wrong(
            "did-not-run",
            t(
                f"the program never ran ({said['en']})",
                f"프로그램이 실행되지 않았습니다 ({said['ko']})",
            ),
            t(
                "pass the list to subprocess.run(argv) as it is; with shell=True a list runs "
                "only its first word",
                "리스트를 그대로 subprocess.run(argv)에 넘기세요. shell=True와 리스트를 함께 "
                "쓰면 첫 단어만 실행됩니다",
            ),
        )
    if v >= SLEEP * 100:
        return wrong(
            "milliseconds",
            t(f"that looks like milliseconds ({said['en']})", f"밀리초로 보입니다 ({said['ko']})"),
            t("return seconds (0.3, not 300)", "초 단위로 반환하세요 (300이 아니라 0.3)"),
        )
    if v < SLEEP * 0.9:
        return wrong(
            "cpu-time",
            t(
                f"that is less than the sleep itself ({said['en']}): this measures the CPU time "
                "of your own process, not the time that passed",
                f"sleep 시간보다 짧습니다 ({said['ko']}). 흐른 시간이 아니라 이 프로세스가 쓴 "
                "CPU 시간을 잰 것입니다",
            ),
            t(
                "time.process_time() counts only CPU work; a waiting program uses none. Read "
                "time.perf_counter() before and after",
                "time.process_time()은 CPU를 쓴 시간만 셉니다. 기다리는 동안은 CPU를 쓰지 "
                "않습니다. 앞뒤로 time.perf_counter()를 읽으세요",
            ),
        )
    if v > SLEEP + 5:
        return wrong(
            "too-long",
            t(f"that is far too long ({said['en']})", f"너무 깁니다 ({said['ko']})"),
            t(
                "run the program once, and sleep nowhere yourself",
                "프로그램은 한 번만 실행하고, 직접 sleep 하지 마세요",
            ),
        )
    true_s = run.value("true")
    if isinstance(true_s, (int, float)) and true_s >= v * 0.9:
        return wrong(
            "ignores-argv",
            t(
                f"`true` took as long as `sleep {SLEEP}` ({true_s:.3f} s): is `argv` what runs?",
                f"`true` 명령도 `sleep {SLEEP}`만큼 걸렸습니다 ({true_s:.3f}초). "
                "`argv`를 실행하나요?",
            ),
            t("start exactly the argv you are given", "받은 argv를 그대로 실행하세요"),
        )
    ms = f"{true_s * 1000:.1f}" if isinstance(true_s, (int, float)) else "?"
    return right(
        t(
            f"`sleep {SLEEP}` took {v:.2f} s and `true` {ms} ms: wall-clock time from start "
            "to exit, which is what a start costs",
            f"`sleep {SLEEP}` 명령은 {v:.2f}초, `true` 명령은 {ms}ms: 시작부터 종료까지 흐른 실제 "
            "시간이고, 이것이 시작 비용입니다",
        )
    )
