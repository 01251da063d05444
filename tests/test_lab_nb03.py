"""Notebook 03's checkers (cgroups), fed right answers and typical wrong ones, and the lab helpers
the notebook stands on (where a process's cgroups are, what labkit's driver writes).

The by-hand checker runs each answer for real, as root, in a cgroup under labkit's parent:
every test also checks that nothing of it is left and that the test process is where it was.
``NB03_ANSWERS`` is in tests/lab_answers.py's format; that file adds them to its ``ANSWERS`` for
the suite-wide checks (tests/test_lab_exercises.py) and the notebook's "wrong answer" run.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import pytest

from labkit.kernel import cgroups
from labkit.lab import cgroup_demo, cgroup_files, exercises, i18n
from labkit.lab.i18n import pick

pytestmark = pytest.mark.usefixtures("needs_root")

HANGUL = re.compile(r"[\uac00-\ud7a3]")


class Answer(NamedTuple):
    """As in tests/lab_answers.py, which takes NB03_ANSWERS from here (so not imported from
    there: the two modules would import each other)."""

    reason: str  # "ok", or the reason key the checker must give
    source: str  # the learner's cell


_MKDIR = "os.mkdir(CGROUP)\n"
_LIMIT = 'Path(CGROUP, "pids.max").write_text(str(LIMIT))\n'
_JOIN = 'Path(CGROUP, "cgroup.procs").write_text(str(os.getpid()))\n'
_TEN = """\
for i in range(10):
    try:
        subprocess.Popen(["sleep", "30"])
        print(i, "started")
    except OSError as e:
        print(i, "refused", e.errno)
"""

NB03_ANSWERS: dict[str, list[Answer]] = {
    "03-pids-by-hand": [
        Answer("no-cgroup", _LIMIT + _JOIN + _TEN),
        Answer("not-joined", _MKDIR + _LIMIT + _TEN),
        Answer("no-limit", _MKDIR + _JOIN + _TEN),
        Answer(
            "other-limit", _MKDIR + 'Path(CGROUP, "pids.max").write_text("50")\n' + _JOIN + _TEN
        ),
        Answer(
            "no-effect",  # each program ends before the next starts: never more than two at once
            _MKDIR + _LIMIT + _JOIN + 'for i in range(10):\n    subprocess.run(["true"])\n',
        ),
        Answer(
            "moved-notebook",
            _MKDIR + _LIMIT + 'Path(CGROUP, "cgroup.procs").write_text(str(os.getppid()))\n' + _TEN,
        ),
        Answer("not-text", _MKDIR + 'Path(CGROUP, "pids.max").write_text(LIMIT)\n' + _JOIN + _TEN),
        Answer("name", "os.mkdir(cgroup)\n" + _LIMIT + _JOIN + _TEN),
        Answer(
            "ok",  # no try: the cell stops at the first refusal, which is the effect
            _MKDIR
            + _LIMIT
            + _JOIN
            + 'for i in range(10):\n    subprocess.Popen(["sleep", "30"])\n',
        ),
        Answer(
            "ok",  # join first, limit second, and let a shell do the starting
            _MKDIR
            + _JOIN
            + _LIMIT
            + 'subprocess.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done"])\n',
        ),
    ],
    "03-cpus-used": [
        Answer(
            "totals",
            "def cpus_used(before, after):\n"
            '    return after["cpu_usage_us"] / (after["cpu_periods"] * PERIOD_US)\n',
        ),
        Answer(
            "per-throttled",
            "def cpus_used(before, after):\n"
            '    used = after["cpu_usage_us"] - before["cpu_usage_us"]\n'
            '    return used / ((after["cpu_throttled_periods"] - before["cpu_throttled_periods"])'
            " * PERIOD_US)\n",
        ),
        Answer(
            "units",
            "def cpus_used(before, after):\n"
            '    return (after["cpu_usage_us"] - before["cpu_usage_us"]) / '
            '(after["cpu_periods"] - before["cpu_periods"])\n',
        ),
        Answer(
            "user-only",
            "def cpus_used(before, after):\n"
            '    used = after["cpu_user_us"] - before["cpu_user_us"]\n'
            '    return used / ((after["cpu_periods"] - before["cpu_periods"]) * PERIOD_US)\n',
        ),
        Answer(
            "upside-down",
            "def cpus_used(before, after):\n"
            '    periods = after["cpu_periods"] - before["cpu_periods"]\n'
            '    return periods * PERIOD_US / (after["cpu_usage_us"] - before["cpu_usage_us"])\n',
        ),
        Answer(
            "seconds",
            "def cpus_used(before, after):\n"
            '    return (after["cpu_usage_us"] - before["cpu_usage_us"]) / 1e6\n',
        ),
        Answer(
            "no-periods",
            "def cpus_used(before, after):\n"
            '    used = after["cpu_usage_us"] - before["cpu_usage_us"]\n'
            '    return used / ((after["cpu_periods"] - before["cpu_periods"]) * PERIOD_US)\n',
        ),
        Answer(
            "one-cpu",
            "def cpus_used(before, after):\n"
            '    periods = after["cpu_periods"] - before["cpu_periods"]\n'
            '    used = after["cpu_usage_us"] - before["cpu_usage_us"]\n'
            "    return min(1.0, used / (periods * PERIOD_US)) if periods else 0.0\n",
        ),
        Answer("raised", 'def cpus_used(before, after):\n    return after["usage"]\n'),
        Answer(
            "returned-none",
            "def cpus_used(before, after):\n"
            '    used = after["cpu_usage_us"] - before["cpu_usage_us"]\n',
        ),
        Answer(
            "ok",  # max(periods, 1): an idle reading divides 0 by one period
            "def cpus_used(before, after):\n"
            '    periods = max(after["cpu_periods"] - before["cpu_periods"], 1)\n'
            '    return (after["cpu_usage_us"] - before["cpu_usage_us"]) / periods / 100_000\n',
        ),
    ],
}

CASES = [(i, n, a) for i, answers in NB03_ANSWERS.items() for n, a in enumerate(answers)]


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "_chosen", None)
    monkeypatch.setenv(i18n.ENV, "en")


def _by_hand_leftovers() -> list[str]:
    parent = cgroups.detect()
    root = cgroups.v2_root(parent) if parent.kind == "unified" else parent.v1_path("pids")
    labkit = root / cgroups.PARENT
    return sorted(p.name for p in labkit.glob("nb03-*")) if labkit.is_dir() else []


@pytest.mark.parametrize(("ex_id", "n", "answer"), CASES, ids=[f"{i}-{n}" for i, n, _ in CASES])
def test_checker_on_a_learners_answer(ex_id: str, n: int, answer: Answer) -> None:
    home = cgroup_demo.cgroup_dirs(os.getpid())
    verdict = exercises.evaluate(ex_id, answer.source)
    assert verdict.reason == answer.reason, pick(verdict.message)
    assert verdict.ok == (answer.reason == "ok")
    for lang in ("en", "ko"):
        message = pick(verdict.message, lang)
        assert message and "Traceback" not in message and "_child.py" not in message
        if not verdict.ok:
            assert verdict.hint and pick(verdict.hint, lang)
    assert HANGUL.search(verdict.message["ko"])
    if not verdict.ok:
        assert HANGUL.search(verdict.hint["ko"])
    assert cgroup_demo.cgroup_dirs(os.getpid()) == home, "the test process was left elsewhere"
    assert _by_hand_leftovers() == []


def test_every_nb03_exercise_has_three_wrong_answers() -> None:
    for ex_id in exercises.all_ids("03"):
        wrong = [a for a in NB03_ANSWERS[ex_id] if a.reason != "ok"]
        assert len(wrong) >= 3, ex_id


@pytest.mark.parametrize("ex_id", ["03-pids-by-hand", "03-cpus-used"])
def test_the_reference_passes_and_says_why_in_both_languages(ex_id: str) -> None:
    ex = exercises.get(ex_id)
    assert ex.title["en"] and HANGUL.search(ex.title["ko"]) and HANGUL.search(ex.instructions["ko"])
    verdict = exercises.evaluate(ex_id, exercises.solution(ex_id))
    assert verdict.ok, pick(verdict.message)
    assert re.search(r"\d", pick(verdict.message, "en")) and HANGUL.search(verdict.message["ko"])


def test_the_by_hand_reference_gives_the_notebook_its_numbers() -> None:
    verdict = exercises.evaluate("03-pids-by-hand", exercises.solution("03-pids-by-hand"))
    assert verdict.value["limit"] == 5 and verdict.value["started"] == 4
    assert verdict.value["refused"] >= 1


def test_a_wrong_answer_is_told_in_korean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(i18n.ENV, "ko")
    wrong = NB03_ANSWERS["03-pids-by-hand"][1]
    verdict = exercises.evaluate("03-pids-by-hand", wrong.source)
    assert verdict.reason == "not-joined"
    assert "cgroup.procs" in pick(verdict.hint) and HANGUL.search(pick(verdict.hint))


# -- the helpers the notebook stands on ---------------------------------------------------------


def test_where_a_process_is_per_controller() -> None:
    dirs = cgroup_demo.cgroup_dirs(os.getpid())
    for controller in ("memory", "cpu", "pids"):
        assert (dirs[controller] / "cgroup.procs").exists()
        assert str(os.getpid()) in (dirs[controller] / "cgroup.procs").read_text().split()


def test_what_labkits_driver_writes_on_either_version() -> None:
    flags = ["--memory", "64m", "--cpus", "0.5", "--pids-limit", "50"]
    two = {w.file: w.value for w in cgroup_files.driver_writes(flags, v2_files=True)}
    assert two == {
        "memory.max": str(64 * 2**20),
        "memory.swap.max": str(64 * 2**20),  # Docker's default: as much swap again
        "cpu.max": "50000 100000",
        "pids.max": "50",
    }
    one = {w.file: w.value for w in cgroup_files.driver_writes(flags, v2_files=False)}
    assert one["memory.limit_in_bytes"] == str(64 * 2**20)
    assert one["cpu.cfs_quota_us"] == "50000" and one["cpu.cfs_period_us"] == "100000"
    assert one["pids.max"] == "50"
    assert cgroup_files.meaning("cpu.max", "50000 100000").startswith("0.5 CPUs")
    assert cgroup_files.meaning("memory.max", str(64 * 2**20)) == "64 MiB"
    table = cgroup_files.version_table([["--cpu-shares", "512"]])
    assert "cpu.shares = 512" in table and "cpu.weight = 20" in table


def test_a_box_is_gone_with_its_cgroups_even_when_the_cell_fails() -> None:
    with pytest.raises(RuntimeError), cgroup_demo.started(script="true", name="nb03-test") as box:
        group, pid = box.group, box.pid
        assert group.paths()
        raise RuntimeError("the cell failed")
    assert group.paths() == [] and not os.path.exists(f"/proc/{pid}")


def test_a_paused_box_is_stopped_too() -> None:
    with cgroup_demo.started(script="sleep 60", name="nb03-test", wait=False) as box:
        box.group.freeze(True)
        group = box.group
    assert group.paths() == []


def test_a_cgroup_made_inside_the_learners_is_removed_too() -> None:
    nested = _MKDIR + "os.mkdir(CGROUP + '/inner')\n" + _LIMIT
    nested += "Path(CGROUP, 'inner', 'cgroup.procs').write_text(str(os.getpid()))\n" + _TEN
    exercises.evaluate("03-pids-by-hand", nested)
    assert _by_hand_leftovers() == []


def test_the_docker_container_goes_with_its_block() -> None:
    from labkit import docker

    if not docker.reachable():
        pytest.skip("no Docker daemon here")
    with cgroup_demo.docker_box(["--pids-limit", "50"], name="labkit-nb03-test") as pid:
        assert cgroup_files.read_files(cgroup_files.driver_writes(["--pids-limit", "50"]), pid) == {
            "pids.max": "50"
        }
    assert docker.run("inspect", "labkit-nb03-test", check=False).returncode != 0
