"""03-cpus-used: how much CPU did a cgroup get, from the kernel's counters, not a stopwatch?

The learner's function gets two readings of a cgroup's counters, as ``labkit stats --json``
gives them (``Stats.as_dict()``: ``cpu_usage_us``, ``cpu_periods``, ``cpu_throttled_periods``
...), and returns the CPUs used on average over the quota periods between them. The checker
calls it in a fresh child on three pairs of readings whose numbers are chosen so that each
usual mistake gives a value of its own: totals instead of differences, per throttled period,
microseconds left unconverted, user time only, throttled time, upside down, and a division
by zero when no period passed (an idle or paused cgroup).
"""

from __future__ import annotations

import math

from labkit.kernel.cgroups.limits import CPU_PERIOD
from labkit.kernel.cgroups.stats import Stats
from labkit.lab.checks.common import failed, not_a_number, run_function
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t


def _reading(usage: float, user: float, periods: int, throttled: int, waited: float) -> dict:
    return Stats(
        cpu_usage_us=int(usage * 1e6),
        cpu_user_us=int(user * 1e6),
        cpu_system_us=int((usage - user) * 1e6),
        cpu_periods=periods,
        cpu_throttled_periods=throttled,
        cpu_throttled_us=int(waited * 1e6),
        pids=3,
    ).as_dict()


#: name: (before, after, CPUs used). busy: 2.5 s of CPU time over 50 periods (5 s) = 0.5.
CASES = {
    "busy": (_reading(7.0, 6.5, 100, 60, 3.0), _reading(9.5, 8.8, 150, 100, 5.0), 0.5),
    "two-cpus": (_reading(1.0, 0.9, 20, 0, 0.0), _reading(8.5, 7.9, 70, 10, 0.3), 1.5),
    "idle": (_reading(9.5, 8.8, 150, 100, 5.0), _reading(9.5, 8.8, 150, 100, 5.0), 0.0),
}

HARNESS = """
_out = {}
for _name, (_a, _b, _) in CASES.items():
    try:
        _v = cpus_used(dict(_a), dict(_b))
        _out[_name] = {"value": _v if type(_v) in (int, float) else repr(_v),
                       "kind": type(_v).__name__}
    except Exception as _e:
        _out[_name] = {"error": type(_e).__name__, "message": str(_e)}
report(cases=_out)
"""


def _delta(key: str) -> float:
    before, after, _ = CASES["busy"]
    return after[key] - before[key]


def _mistakes() -> dict[str, float]:
    """What each usual mistake returns for the busy case."""
    used, periods = _delta("cpu_usage_us"), _delta("cpu_periods")
    before, after, _ = CASES["busy"]
    span = periods * CPU_PERIOD
    return {
        "totals": after["cpu_usage_us"] / (after["cpu_periods"] * CPU_PERIOD),
        "per-throttled": used / (_delta("cpu_throttled_periods") * CPU_PERIOD),
        "user-only": _delta("cpu_user_us") / span,
        "throttled-time": _delta("cpu_throttled_us") / span,
        "upside-down": span / used,
        "seconds": used / 1e6,
    }


@define(
    "03-cpus-used",
    kind="function",
    name="cpus_used",
    title=t("CPUs used, from the kernel's counters", "커널의 카운터로 계산한 CPU 사용량"),
    instructions=t(
        "Complete `cpus_used(before, after)`. Each argument is one reading of a cgroup's "
        "counters, a dict as `labkit stats --json` prints it. Three keys matter:"
        "\n\n- `cpu_usage_us`: CPU time all its processes used so far, on all CPUs, in "
        "microseconds (v1: `cpuacct.usage`, v2: `usage_usec` in `cpu.stat`);"
        "\n- `cpu_periods`: quota periods that passed while it had work (`nr_periods`);"
        "\n- `cpu_throttled_periods`: periods in which it used up its quota and had to wait "
        "(`nr_throttled`)."
        f"\n\nA period lasts `PERIOD_US` microseconds ({CPU_PERIOD}). Return how many CPUs it "
        "used on average over the periods **between** the two readings: `0.5` is half a CPU, "
        "`2.0` two whole CPUs. If no period passed, it used nothing: return `0.0`.",
        "`cpus_used(before, after)`를 완성하세요. 두 인자는 각각 cgroup 카운터를 한 번 읽은 "
        "값으로, `labkit stats --json`이 출력하는 딕셔너리입니다. 중요한 키는 셋입니다:"
        "\n\n- `cpu_usage_us`: 그 cgroup의 모든 프로세스가 지금까지 모든 CPU에서 쓴 CPU 시간, "
        "마이크로초 단위 (v1: `cpuacct.usage`, v2: `cpu.stat`의 `usage_usec`);"
        "\n- `cpu_periods`: 할 일이 있는 동안 지나간 할당량 주기의 수 (`nr_periods`);"
        "\n- `cpu_throttled_periods`: 할당량을 다 써서 기다려야 했던 주기의 수 "
        "(`nr_throttled`)."
        f"\n\n한 주기는 `PERIOD_US` 마이크로초({CPU_PERIOD})입니다. 두 번의 읽기 **사이**의 "
        "주기 동안 평균 몇 개의 CPU를 썼는지 반환하세요: `0.5`는 CPU 절반, `2.0`은 CPU 두 "
        "개입니다. 주기가 하나도 지나지 않았다면 쓴 것이 없으므로 `0.0`을 반환하세요.",
    ),
)
def check_cpus_used(source: str) -> Verdict:
    run = run_function(source, HARNESS, {"CASES": CASES, "PERIOD_US": CPU_PERIOD})
    verdict = failed(run)
    if verdict:
        return verdict
    got = run.value("cases") or {}
    busy = got.get("busy", {})
    if "error" in busy:
        return _raised(busy)
    verdict = not_a_number(busy.get("value"), busy.get("kind", ""), _WHAT)
    if verdict:
        return verdict
    value = busy["value"]
    if not _close(value, CASES["busy"][2]):
        return _mistake(value)
    wide = got.get("two-cpus", {})
    if "error" in wide or not _close(wide.get("value"), CASES["two-cpus"][2]):
        return wrong(
            "one-cpu",
            t(
                f"right for half a CPU, but for a cgroup that used 1.5 CPUs yours says "
                f"{wide.get('value', wide.get('error'))}",
                f"CPU 절반일 때는 맞지만, CPU 1.5개를 쓴 cgroup에 대해서는 "
                f"{wide.get('value', wide.get('error'))}라고 합니다",
            ),
            t(
                "do not cap or divide by the number of CPUs: a cgroup's processes can run on "
                "several CPUs at once, so its CPU time can grow faster than time passes",
                "1로 자르거나 CPU 수로 나누지 마세요: cgroup의 프로세스들은 여러 CPU에서 동시에 "
                "돌 수 있어서, CPU 시간이 흐른 시간보다 빨리 늘 수 있습니다",
            ),
        )
    idle = got.get("idle", {})
    if "error" in idle or not _close(idle.get("value"), 0.0):
        return wrong(
            "no-periods",
            t(
                "right while it was busy, but when no period passed between the readings "
                f"yours {_said(idle)}",
                f"바쁠 때는 맞지만, 두 읽기 사이에 주기가 하나도 없을 때 {_said(idle, 'ko')}",
            ),
            t(
                "no period passed means it used nothing: return 0.0 when the periods did not "
                "change (a paused or idle cgroup)",
                "주기가 지나지 않았다면 쓴 것이 없습니다: 주기 수가 그대로면 0.0을 반환하세요 "
                "(일시 정지했거나 할 일이 없는 cgroup)",
            ),
        )
    return right(
        t(
            "2.5 s of CPU time over 50 periods of 100 ms is 0.5 CPUs, and 7.5 s over 50 "
            "periods is 1.5: counted by the kernel per period, so a busy host or a slow "
            "notebook cannot blur it as a stopwatch would.",
            "100 ms 주기 50번 동안 CPU 시간 2.5초는 CPU 0.5개, 7.5초는 1.5개입니다: 커널이 "
            "주기마다 센 값이므로, 스톱워치와 달리 바쁜 호스트나 느린 노트북 때문에 흐려지지 "
            "않습니다.",
        )
    )


_WHAT = t("the CPUs used, e.g. 0.5", "사용한 CPU 수, 예: 0.5")


def _close(value: object, expected: float) -> bool:
    return isinstance(value, int | float) and math.isclose(value, expected, abs_tol=1e-6)


def _said(case: dict, lang: str = "en") -> str:
    if "error" in case:
        return f"raised {case['error']}" if lang == "en" else f"{case['error']} 오류가 났습니다"
    value = case.get("value")
    return f"returned {value}" if lang == "en" else f"{value}을(를) 반환했습니다"


def _raised(case: dict) -> Verdict:
    return wrong(
        "raised",
        t(
            f"your function raised {case['error']}: {case['message']}",
            f"함수에서 {case['error']} 오류가 났습니다: {case['message']}",
        ),
        t(
            "read the counters with before['cpu_usage_us'], after['cpu_periods'] ...",
            "카운터는 before['cpu_usage_us'], after['cpu_periods']처럼 읽습니다",
        ),
    )


def _mistake(value: float) -> Verdict:
    said = t(
        f"for 2.5 s of CPU time over 50 periods of 100 ms yours says {value:.4g}, not 0.5",
        f"100 ms 주기 50번 동안 CPU 시간 2.5초에 대해 {value:.4g}라고 합니다 (정답은 0.5)",
    )
    found = next((k for k, v in _mistakes().items() if _close(value, v)), None)
    if found is None and value > 0:
        ratio = math.log10(value / CASES["busy"][2])
        found = "units" if abs(ratio - round(ratio)) < 1e-6 else None
    hint = _HINTS.get(found or "", _HINTS["other"])
    return wrong(found or "other", said, hint)


_HINTS = {
    "totals": t(
        "those are the totals since the cgroup was made: subtract before from after, for "
        "both the CPU time and the periods",
        "그것은 cgroup이 생긴 뒤의 누적값입니다: CPU 시간과 주기 모두 after에서 before를 빼세요",
    ),
    "per-throttled": t(
        "divide by all the periods that passed (cpu_periods), not only the throttled ones",
        "제한된 주기만이 아니라 지나간 모든 주기(cpu_periods)로 나누세요",
    ),
    "user-only": t(
        "cpu_usage_us is the whole CPU time (user + system); cpu_user_us is only part of it",
        "cpu_usage_us가 전체 CPU 시간(user + system)입니다. cpu_user_us는 그 일부일 뿐입니다",
    ),
    "throttled-time": t(
        "cpu_throttled_us is the time it spent waiting, not running: use cpu_usage_us",
        "cpu_throttled_us는 실행한 시간이 아니라 기다린 시간입니다: cpu_usage_us를 쓰세요",
    ),
    "upside-down": t(
        "CPUs used = CPU time used / time the periods lasted, not the other way round",
        "사용한 CPU = 사용한 CPU 시간 / 주기들이 이어진 시간입니다. 거꾸로가 아닙니다",
    ),
    "seconds": t(
        "that is the CPU time in seconds; divide it by the time the periods lasted "
        "(periods x PERIOD_US microseconds)",
        "그것은 CPU 시간(초)입니다. 주기들이 이어진 시간(주기 수 x PERIOD_US 마이크로초)으로 "
        "나누세요",
    ),
    "units": t(
        "off by a power of ten: CPU time and PERIOD_US are both in microseconds, and 0.5 "
        "means half a CPU (not 50 %)",
        "10의 거듭제곱만큼 차이 납니다: CPU 시간과 PERIOD_US는 둘 다 마이크로초이고, 0.5는 "
        "CPU 절반을 뜻합니다 (50 %가 아님)",
    ),
    "other": t(
        "(after - before) of cpu_usage_us, divided by (after - before) of cpu_periods times "
        "PERIOD_US",
        "cpu_usage_us의 (after - before)를 cpu_periods의 (after - before) x PERIOD_US로 나누세요",
    ),
}
