"""A stage: one named step of turning a process into a container, and the fix when it fails.

The helper process (``labkit.runtime.helper``) is a short list of stages. Each kernel module
declares its own, right above the code that does the work::

    @stage("mount /proc", fix="...")
    def mount_proc(root: Path) -> None: ...

so an error can say *which* step the kernel refused and what to do about it, and a later lab
step (cgroups, overlay, network, hardening) adds a stage of its own instead of growing one big
function. A fix may name settings and commands as ``{placeholders}`` (see ``labkit.errors``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def stage(name: str, fix: str) -> Callable[[F], F]:
    """Mark a function as a stage with the name and fix an error message will show."""

    def mark(func: F) -> F:
        func.__stage__ = (name, fix)  # type: ignore[attr-defined]
        return func

    return mark


class Stage:
    """A stage bound to its arguments, ready to run: ``Stage(rootfs.mount_proc, root)``."""

    __slots__ = ("func", "args", "name", "fix")

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func = func
        self.args = args
        self.name, self.fix = getattr(func, "__stage__", (func.__name__, ""))

    def run(self) -> Any:
        return self.func(*self.args)

    def __repr__(self) -> str:
        return f"Stage({self.name!r})"
