"""One error type for everything a user can get wrong, so every front end prints one clear line.

Modules below the front ends describe a fix without knowing who will read it: the CLI says
``--rootfs``, a daemon would say ``"Rootfs"`` in its JSON. So a fix names a setting or a command
as a placeholder in braces, ``"pass an absolute path as {rootfs}"``, and each front end fills in
its own words with ``render``. Unknown placeholders become the bare word (``rootfs``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class LabkitError(Exception):
    """A problem the user can fix: ``problem`` says what is wrong, ``fix`` what to do."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def render(self, words: Mapping[str, str] | None = None) -> str:
        """``problem (fix: fix)``, with the fix's placeholders in the words of a front end."""
        if not self.fix:
            return self.problem
        fix = _PLACEHOLDER.sub(lambda m: (words or {}).get(m.group(1), m.group(1)), self.fix)
        return f"{self.problem} (fix: {fix})"

    def __str__(self) -> str:
        return self.render()
