"""One error type for everything a user can get wrong, so front ends print one clear line."""

from __future__ import annotations


class LabkitError(Exception):
    """A problem the user can fix: ``problem`` says what is wrong, ``fix`` what to do."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem} (fix: {self.fix})" if self.fix else self.problem
