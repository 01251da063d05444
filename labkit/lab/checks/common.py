"""What every checker needs: run the learner's answer in a fresh child, and turn a crash or a
hang into feedback in the learner's terms (never a traceback)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from labkit.lab import child
from labkit.lab.exercises import Verdict, echo, wrong
from labkit.lab.i18n import Text, t


def run_function(
    source: str,
    harness: str,
    values: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    sandbox: Iterable[str] = (),
) -> child.ChildRun:
    """Define the learner's function in a fresh child and run the checker's ``harness``
    (which calls it and ``report``-s what it returned). Output is not shown. ``sandbox``:
    scratch namespaces for answers that would change the host (``{"net"}`` for firewall rules)."""
    return child.run(
        source, harness=harness, values=values, timeout=timeout, echo=False, sandbox=sandbox
    )


def run_code(
    source: str,
    harness: str = "",
    prelude: str = "",
    values: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
    sandbox: Iterable[str] = (),
) -> child.ChildRun:
    """Run a learner's cell as root in a fresh child, its output shown as it comes (unless the
    reference is running quietly behind a wrong answer)."""
    return child.run(
        source,
        harness=harness,
        prelude=prelude,
        values=values,
        timeout=timeout,
        echo=echo(),
        sandbox=sandbox,
    )


def failed(
    run: child.ChildRun, by_type: Mapping[str, tuple[str, Text]] | None = None
) -> Verdict | None:
    """A verdict for a run that crashed or hung (``None`` if it did neither).

    ``by_type`` maps an exception type name to ``(reason, hint)`` for the mistakes a checker
    expects; any other error gets the error itself, which names the learner's line.
    """
    if run.timed_out:
        return wrong(
            "timeout",
            t(
                f"your code did not finish within {run.seconds:.0f} s, so it was stopped",
                f"코드가 {run.seconds:.0f}초 안에 끝나지 않아 중단했습니다",
            ),
            t(
                "look for a loop that never ends, or a program that waits for input",
                "끝나지 않는 반복문이나 입력을 기다리는 프로그램이 있는지 확인하세요",
            ),
        )
    if run.error is None:
        return None
    text = child.format_error(run.error)
    kind = run.error.get("type", "")
    if kind == "SyntaxError":
        return wrong(
            "syntax",
            t(
                f"Python cannot read your code:\n{text}",
                f"파이썬이 코드를 읽지 못했습니다:\n{text}",
            ),
            t("fix the line shown", "표시된 줄을 고치세요"),
        )
    reason, hint = (by_type or {}).get(
        kind,
        (
            "raised",
            t(
                "the line shown is yours: what did it get that it did not expect?",
                "표시된 줄은 작성한 코드입니다. 예상하지 못한 값이 들어오지 않았는지 확인하세요",
            ),
        ),
    )
    return wrong(
        reason, t(f"your code raised an error:\n{text}", f"코드에서 오류가 났습니다:\n{text}"), hint
    )


def not_a_number(value: Any, kind: str, what: Text) -> Verdict | None:
    """A verdict if a function returned something other than a number (None: it did)."""
    if kind in ("int", "float"):
        return None
    if kind == "NoneType":
        return wrong(
            "returned-none",
            t("your function returned None", "함수가 None을 반환했습니다"),
            t("end it with `return` and the number", "마지막에 `return`으로 숫자를 돌려주세요"),
        )
    return wrong(
        "not-a-number",
        t(
            f"your function returned {value!r} (a {kind})",
            f"함수가 {value!r}({kind})를 반환했습니다",
        ),
        t(f"return just a number: {what['en']}", f"숫자 하나만 반환하세요: {what['ko']}"),
    )
