"""The learner's answer, as a checker needs it: was it left as it came (a skip), and what is the
source of a function typed into a notebook cell (it is checked in another process, so it travels
as text)."""

from __future__ import annotations

import ast
import contextlib
import inspect
import textwrap
from collections.abc import Callable
from typing import Any, Literal

Kind = Literal["function", "code", "value"]


def _empty_body(body: list[ast.stmt]) -> bool:
    """Only a docstring, ``...``, ``pass``, ``return ...`` or ``return None``."""
    for node in body:
        if isinstance(node, ast.Pass):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Return) and (
            node.value is None
            or (isinstance(node.value, ast.Constant) and node.value.value in (None, ...))
        ):
            continue
        return False
    return True


def is_placeholder(answer: Any, kind: Kind) -> bool:
    """True if the learner left the exercise as it came (a skip, not a wrong answer)."""
    if answer is None or answer is ...:
        return True
    if kind == "value":
        return isinstance(answer, dict) and all(v is ... for v in answer.values())
    if kind == "function" and not isinstance(answer, str):
        try:
            answer = function_source(answer)
        except ValueError:
            return False
    if not isinstance(answer, str):
        return False
    try:
        tree = ast.parse(textwrap.dedent(answer))
    except SyntaxError:
        return False
    if kind == "function":
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        return bool(defs) and _empty_body(defs[-1].body)
    return _empty_body(tree.body)


def _shape(code: Any) -> tuple:
    """What a function's code is made of, beyond the bytes (which the interpreter may rewrite)."""
    consts = tuple(c for c in code.co_consts if not hasattr(c, "co_code"))
    return code.co_argcount, code.co_varnames, code.co_names, consts


def _same_function(source: str, func: Callable) -> bool:
    scope: dict[str, Any] = {}
    try:
        exec(compile(source, "<answer>", "exec"), scope)
    except Exception:
        return False
    other = getattr(scope.get(func.__name__), "__code__", None)
    return other is not None and _shape(other) == _shape(func.__code__)


def function_source(func: Callable) -> str:
    """The source of a function the learner defined in a cell.

    ``inspect.getsource`` reads it back through linecache, which a kernel may not keep per
    cell; the text of the cell being run (IPython's ``In[-1]``) is the fallback. Either is used
    only if it compiles to the very function we were given.
    """
    candidates = []
    with contextlib.suppress(OSError, TypeError):
        candidates.append(textwrap.dedent(inspect.getsource(func)))
    try:
        from IPython import get_ipython

        cell = get_ipython().transform_cell(get_ipython().user_ns["In"][-1])
        for node in ast.parse(cell).body:
            if isinstance(node, ast.FunctionDef) and node.name == func.__name__:
                candidates.append(textwrap.dedent(ast.get_source_segment(cell, node) or ""))
    except (ImportError, AttributeError, KeyError, IndexError, SyntaxError):
        pass  # not in IPython, or no such cell
    for source in candidates:
        if _same_function(source, func):
            return source
    raise ValueError(f"cannot find the source of {func.__name__}")
