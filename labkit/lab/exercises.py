"""Exercises: the learner writes one step, a checker runs it against the real kernel and answers
in the learner's terms.

An exercise has an id (``"02a-uid-map"``: notebook number, then a name), instructions in English
and Korean, a checker and a reference solution. Checkers live in ``labkit.lab.checks.nbNN``,
solutions in ``labkit.lab.solutions.nbNN`` (out of the learner's way, loaded only when needed).
Three kinds of answer:

* ``function``: the learner completes ``def name(...)``; the checker runs its source in a fresh
  child process (``labkit.lab.child``) on real inputs, so a hang or a crash costs nothing;
* ``code``: a ``%%labkit_child --exercise ID`` cell, run as root in a fresh child process;
* ``value``: a plain value (a dict of choices, a number).

``check(id, answer)`` never raises. A right answer gets one line on why it works. A wrong one
gets what is wrong, a hint, and the notebook goes on with the reference solution. An answer
left as the placeholder (``...``, ``None``, a body of ``return ...``) is a skip: the reference
solution is used and the learner is told so. See docs/exercises.md for the whole pattern.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labkit.errors import LabkitError
from labkit.lab.answers import Kind, function_source, is_placeholder
from labkit.lab.i18n import Text, label, pick, t


@dataclass(frozen=True)
class Verdict:
    """A checker's answer. ``reason`` is a short key ("ok", "follows-symlinks") for tests."""

    ok: bool
    reason: str
    message: Text
    hint: Text | None = None
    value: Any = None


def right(message: Text, value: Any = None) -> Verdict:
    return Verdict(True, "ok", message, None, value)


def wrong(reason: str, message: Text, hint: Text) -> Verdict:
    return Verdict(False, reason, message, hint)


@dataclass(frozen=True)
class Exercise:
    id: str
    kind: Kind
    name: str  # the function's or variable's name in the notebook ("" for code)
    title: Text
    instructions: Text
    checker: Callable[[Any], Verdict]


_REGISTRY: dict[str, Exercise] = {}
_quiet = False  # True while the reference runs behind a wrong answer: show nothing of it


def echo() -> bool:
    """Whether a checker should show the output of the code it runs (``child.run(echo=...)``)."""
    return not _quiet


def define(id: str, kind: Kind, title: Text, instructions: Text, name: str = "") -> Callable:
    """Register the decorated function as the checker of exercise ``id``."""

    def register(checker: Callable[[Any], Verdict]) -> Callable[[Any], Verdict]:
        _REGISTRY[id] = Exercise(id, kind, name, title, instructions, checker)
        return checker

    return register


def _notebook(id: str) -> str:
    return "nb" + id.split("-", 1)[0]


def get(id: str) -> Exercise:
    """The exercise ``id``; its notebook's checkers are imported on first use."""
    if id not in _REGISTRY:
        module = f"labkit.lab.checks.{_notebook(id)}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a checker module that is there but broken: say so
                raise
    if id not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none loaded"
        raise KeyError(f"no exercise {id!r} (known: {known})")
    return _REGISTRY[id]


def all_ids(notebook: str) -> list[str]:
    """Every exercise id of notebook ``notebook`` ("00")."""
    importlib.import_module(f"labkit.lab.checks.nb{notebook}")
    return sorted(i for i in _REGISTRY if i.startswith(f"{notebook}-"))


def _solutions(id: str) -> Any:
    return importlib.import_module(f"labkit.lab.solutions.{_notebook(id)}")


def solution(id: str) -> Any:
    """The reference answer: a function, a value, or (code) the source of a cell."""
    ex = get(id)
    module = _solutions(id)
    return module.CODE[id] if ex.kind == "code" else getattr(module, ex.name)


def solution_source(id: str) -> str:
    """The reference answer as the text of a cell (what the "solved" notebook holds)."""
    ex, answer = get(id), solution(id)
    if ex.kind == "function":
        return textwrap.dedent(inspect.getsource(answer))
    if ex.kind == "value":
        return f"{ex.name} = {answer!r}\n"
    return answer


def solution_file(id: str) -> str:
    return f"labkit/lab/solutions/{_notebook(id)}.py"


# -- checking ------------------------------------------------------------------------------------


def evaluate(id: str, answer: Any) -> Verdict:
    """Run the checker of ``id`` on ``answer`` (functions as their source). Never raises."""
    ex = get(id)
    if ex.kind == "function" and callable(answer):
        try:
            answer = function_source(answer)
        except ValueError:
            return wrong(
                "no-source",
                t(
                    f"cannot read the source of {ex.name}()",
                    f"{ex.name}() 함수의 소스 코드를 읽을 수 없습니다",
                ),
                t(
                    f"define {ex.name} in the same cell as the check",
                    f"{ex.name} 함수를 확인하는 셀 안에서 정의하세요",
                ),
            )
    try:
        return ex.checker(answer)
    except Exception as exc:  # a checker's own bug must not stop the learner's notebook
        from labkit.cli import WORDS

        why = exc.render(WORDS) if isinstance(exc, LabkitError) else repr(exc)
        return wrong(
            "checker-error",
            t(f"the checker could not run: {why}", f"검사기를 실행하지 못했습니다: {why}"),
            t("skip it for now; labkit doctor may say why", "일단 건너뛰세요. labkit doctor 확인"),
        )


def check(id: str, answer: Any) -> Any:
    """Check the learner's answer, print the feedback, and return what the notebook goes on
    with: their answer if it passed, else the reference solution's."""
    ex = get(id)
    head = f"{id} · {pick(ex.title)}"
    if is_placeholder(answer, ex.kind):
        verdict = evaluate(id, solution(id))
        print(f"⏭ {head}: {label('skipped', where=solution_file(id))}")
        print(f"  {'✓' if verdict.ok else '✗'} {pick(verdict.message)}")
        return _reference_value(ex, verdict)
    verdict = evaluate(id, answer)
    if verdict.ok:
        print(f"✓ {head}: {pick(verdict.message)}")
        return verdict.value if ex.kind == "code" else answer
    print(f"✗ {head}: {pick(verdict.message)}")
    if verdict.hint:
        print(f"  {label('hint')}: {pick(verdict.hint)}")
    print(f"  {label('using_reference')}")
    if ex.kind != "code":
        return _reference_value(ex, verdict)
    global _quiet
    _quiet = True
    try:
        return _reference_value(ex, evaluate(id, solution(id)))
    finally:
        _quiet = False


def _reference_value(ex: Exercise, verdict: Verdict) -> Any:
    return verdict.value if ex.kind == "code" else solution(ex.id)


def show(id: str) -> None:
    """Display the instructions of exercise ``id`` in the learner's language."""
    ex = get(id)
    other = t('한국어로 보기: `lab.language("ko")`', 'In English: `lab.language("en")`')
    text = f"#### ✍️ {pick(ex.title)} (`{id}`)\n\n{pick(ex.instructions)}\n\n*{pick(other)}*"
    try:
        from IPython.display import Markdown, display

        display(Markdown(text))
    except ImportError:
        print(text)
