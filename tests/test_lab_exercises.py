"""Every exercise's checker, fed typical wrong answers and right ones (tests/lab_answers.py).

The checkers run the answers for real (in fresh child processes, as root, against the real
kernel and files), so these tests are as slow as a learner's check: well under a second each.
"""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from lab_answers import ANSWERS

from labkit.lab import exercises, i18n
from labkit.lab.i18n import pick

CHECKS = Path(__file__).resolve().parent.parent / "labkit/lab/checks"
NOTEBOOKS = sorted(p.name.removeprefix("nb") for p in CHECKS.glob("nb[0-9][0-9]*"))
ALL_IDS = [i for nb in NOTEBOOKS for i in exercises.all_ids(nb)]
CASES = [(i, n, a) for i in ANSWERS for n, a in enumerate(ANSWERS[i])]
HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    """English unless a test says otherwise, whatever the machine's saved choice."""
    monkeypatch.setattr(i18n, "_chosen", None)
    monkeypatch.setenv(i18n.ENV, "en")


def test_every_exercise_has_three_wrong_answers_and_a_right_one() -> None:
    assert ALL_IDS, "no exercises found"
    for ex_id in ALL_IDS:
        reasons = [a.reason for a in ANSWERS.get(ex_id, [])]
        wrong = [r for r in reasons if r != "ok"]
        assert len(wrong) >= 3, f"{ex_id}: {len(wrong)} wrong answers in tests/lab_answers.py"
        assert "ok" in reasons or exercises.solution(ex_id), ex_id
    assert set(ANSWERS) <= set(ALL_IDS), "answers for exercises that do not exist"


@pytest.mark.parametrize("ex_id", ALL_IDS)
def test_exercise_text_exists_in_both_languages(ex_id: str) -> None:
    ex = exercises.get(ex_id)
    for text in (ex.title, ex.instructions):
        assert text["en"] and HANGUL.search(text["ko"]), f"{ex_id}: missing Korean text"
    assert re.fullmatch(r"\d\d[a-z]?-[a-z0-9-]+", ex_id)  # 02a-...: a step split in two


@pytest.mark.parametrize(("ex_id", "n", "answer"), CASES, ids=[f"{i}-{n}" for i, n, _ in CASES])
def test_checker_on_a_learners_answer(ex_id: str, n: int, answer) -> None:
    verdict = exercises.evaluate(ex_id, answer.source)
    assert verdict.reason == answer.reason, (
        f"{ex_id} answer {n}: expected {answer.reason}, got {verdict.reason}: "
        f"{pick(verdict.message)}"
    )
    assert verdict.ok == (answer.reason == "ok")
    for lang in ("en", "ko"):
        message = pick(verdict.message, lang)
        assert message and "Traceback" not in message and "_child.py" not in message
        if not verdict.ok:
            assert verdict.hint and pick(verdict.hint, lang), f"{ex_id} {n}: no hint"
    assert HANGUL.search(verdict.message["ko"])
    if not verdict.ok:
        assert HANGUL.search(verdict.hint["ko"])


@pytest.mark.parametrize("ex_id", ALL_IDS)
def test_reference_solution_passes(ex_id: str) -> None:
    verdict = exercises.evaluate(ex_id, exercises.solution(ex_id))
    assert verdict.ok, pick(verdict.message)
    assert exercises.solution_source(ex_id).strip()


@pytest.mark.parametrize("ex_id", ALL_IDS)
def test_a_skip_goes_on_with_the_reference(ex_id: str) -> None:
    ex = exercises.get(ex_id)
    placeholder = {
        "function": f"def {ex.name}(*args):\n    # your code here\n    return ...\n",
        "code": "# Your turn: ...\n...\n",
        "value": ...,
    }[ex.kind]
    out = io.StringIO()
    with redirect_stdout(out):
        value = exercises.check(ex_id, placeholder)
    assert "skipped" in out.getvalue() and exercises.solution_file(ex_id) in out.getvalue()
    assert "✓" in out.getvalue(), out.getvalue()
    if ex.kind != "code":
        assert value is exercises.solution(ex_id)


def test_a_wrong_answer_gets_the_hint_and_the_notebook_gets_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = ANSWERS["00-image-size"][0]
    for lang, word in (("en", "hint"), ("ko", "힌트")):
        monkeypatch.setenv(i18n.ENV, lang)
        out = io.StringIO()
        with redirect_stdout(out):
            value = exercises.check("00-image-size", wrong.source)
        verdict = exercises.evaluate("00-image-size", wrong.source)
        assert "✗ 00-image-size" in out.getvalue()
        assert f"{word}: {verdict.hint[lang]}" in out.getvalue()
        assert value is exercises.solution("00-image-size")


def test_a_right_function_is_what_the_notebook_goes_on_with(tmp_path: Path) -> None:
    import importlib.util

    module_file = tmp_path / "learner_cell.py"
    module_file.write_text(
        "import os\nfrom pathlib import Path\n\n" + ANSWERS["00-image-size"][-1].source
    )
    spec = importlib.util.spec_from_file_location("learner_cell", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    with redirect_stdout(out):
        value = exercises.check("00-image-size", module.image_size)
    assert value is module.image_size, out.getvalue()
    assert out.getvalue().startswith("✓ 00-image-size")


def test_a_function_without_source_is_told_where_to_define_it() -> None:
    namespace: dict = {}
    exec(ANSWERS["00-image-size"][-1].source, {"os": __import__("os"), "Path": Path}, namespace)
    verdict = exercises.evaluate("00-image-size", namespace["image_size"])
    assert verdict.reason == "no-source" and "same cell" in pick(verdict.hint)


def test_placeholders_are_recognised() -> None:
    for answer, kind in [
        (None, "value"),
        (..., "value"),
        ({"a": ..., "b": ...}, "value"),
        ("def f(x):\n    '''doc'''\n    # your code here\n    return ...\n", "function"),
        ("def f(x):\n    pass\n", "function"),
        ("# only a comment\n...\n", "code"),
        ("", "code"),
    ]:
        assert exercises.is_placeholder(answer, kind), answer
    for answer, kind in [
        ({"a": 1, "b": ...}, "value"),
        ("def f(x):\n    return x\n", "function"),
        ("print(1)\n", "code"),
        ("os.chroot(\n", "code"),  # a syntax error is an answer, and the checker says so
    ]:
        assert not exercises.is_placeholder(answer, kind), answer


def test_unknown_exercise_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="00-image-size"):
        exercises.get("00-no-such-thing")


def test_a_value_exercise(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third kind (no notebook uses it yet): a value, checked, with a skip and a hint."""
    from types import SimpleNamespace

    from labkit.lab.exercises import right, wrong

    def checker(answer: dict) -> exercises.Verdict:
        missing = [k for k, v in answer.items() if v is ...]
        if missing:
            return wrong(
                "unanswered",
                i18n.t(f"no answer for {missing}", "답 없음"),
                i18n.t("fill it in", "채우세요"),
            )
        if answer["hostname"] != "uts":
            return wrong(
                "wrong-kind", i18n.t("not that one", "아닙니다"), i18n.t("uname(2)", "uname(2)")
            )
        return right(i18n.t("uts holds the hostname", "uts가 호스트 이름을 가집니다"))

    exercises.define(
        "99-kind", "value", i18n.t("Which kind?", "어떤 종류?"), i18n.t("…", "…"), name="kinds"
    )(checker)
    reference = {"hostname": "uts", "processes": "pid"}
    monkeypatch.setattr(exercises, "_solutions", lambda _id: SimpleNamespace(kinds=reference))
    try:
        with redirect_stdout(io.StringIO()) as out:
            assert exercises.check("99-kind", {"hostname": ..., "processes": ...}) is reference
            assert exercises.check("99-kind", {"hostname": "net", "processes": "pid"}) is reference
            mine = {"hostname": "uts", "processes": "pid"}
            assert exercises.check("99-kind", mine) is mine
        printed = out.getvalue()
        assert "⏭ 99-kind" in printed and "hint: uname(2)" in printed and "✓ 99-kind" in printed
        assert exercises.solution_source("99-kind") == f"kinds = {reference!r}\n"
    finally:
        exercises._REGISTRY.pop("99-kind")
