"""The helper is a list of stages, each with a name and a fix; below the front ends, no text
names a CLI flag or command (a fix names a setting as a {placeholder} instead)."""

from __future__ import annotations

import ast
import itertools
import os
import re
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.kernel.namespaces import KINDS
from labkit.runtime import helper
from labkit.runtime.spec import ContainerSpec

PACKAGE = Path(__file__).resolve().parent.parent / "labkit"
FRONT_ENDS = ("cli.py", "cli_images.py", "doctor.py", "reset.py", "lab")
BELOW_THE_FRONT_ENDS = [
    p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in FRONT_ENDS
]


def _cli_words() -> re.Pattern[str]:
    """labkit's own flags ("--rootfs", "-t"), read from its parser, and its commands."""
    from labkit.cli import build_parser

    parser = build_parser()
    flags = {o for a in parser._actions for o in a.option_strings}
    for sub in parser._subparsers._group_actions[0].choices.values():  # type: ignore[union-attr]
        flags |= {o for a in sub._actions for o in a.option_strings}
    # -c (Docker's short --cpu-shares) is also the shell's `sh -c`, and -u (--user) is also
    # `ulimit -u` and `login -u USER`: fixes do show those
    flags -= {"-h", "--help", "-c", "-u"}
    alternatives = "|".join(re.escape(f) for f in sorted(flags, key=len, reverse=True))
    return re.compile(
        rf"(?<![\w-])({alternatives})(?![\w-])"
        r"|\blabkit (run|doctor|reset|images|ns|pull|push|login|rmi|load|save|tag)\b"
    )


CLI_WORDS = _cli_words()


def _specs() -> list[ContainerSpec]:
    specs = []
    for kinds in (set(), {"mnt"}, {"mnt", "pid"}, set(KINDS), set(KINDS) - {"user"}):
        for tty, escape in itertools.product((False, True), repeat=2):
            if tty and "mnt" not in kinds:
                continue
            isolation = "pivot_root" if "mnt" in kinds else "chroot"
            specs.append(
                ContainerSpec(
                    rootfs="/r",
                    argv=["true"],
                    namespaces=sorted(kinds),
                    isolation=isolation,
                    tty=tty,
                    try_escape=escape,
                )
            )
    return specs


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: f"{','.join(s.namespaces) or 'none'}")
def test_every_stage_has_a_name_and_a_fix(spec: ContainerSpec) -> None:
    read_end, write_end = os.pipe()
    try:
        stages = helper.stages(spec, helper.Reporter(write_end))
    finally:
        os.close(read_end)
        os.close(write_end)
    names = [s.name for s in stages]
    assert len(names) == len(set(names)), f"two stages share a name: {names}"
    for stage in stages:
        assert stage.name and stage.fix, f"{stage.func.__qualname__} has no name or fix"
    assert names[-1] == "exec" and "wait for the supervisor" in names


def _error_texts(path: Path) -> list[tuple[int, str]]:
    """The literal text of every LabkitError(...) and @stage(...) call in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if func not in ("LabkitError", "stage"):
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            for part in ast.walk(arg):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    found.append((part.lineno, part.value))
    return found


@pytest.mark.parametrize("path", BELOW_THE_FRONT_ENDS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_cli_words_below_the_front_ends(path: Path) -> None:
    bad = [(line, text) for line, text in _error_texts(path) if CLI_WORDS.search(text)]
    assert bad == [], f"name the setting as a {{placeholder}} instead: {bad}"


def test_the_scan_sees_what_it_should() -> None:
    assert CLI_WORDS.search("pass it to --rootfs") and CLI_WORDS.search("run labkit doctor")
    assert CLI_WORDS.search("leave out -t") and CLI_WORDS.search("add mnt to --ns")
    assert not CLI_WORDS.search("a comma-separated list") and not CLI_WORDS.search("{rootfs}")
    assert not CLI_WORDS.search("sh -c 'id'") and not CLI_WORDS.search("ulimit -u")
    assert _error_texts(PACKAGE / "runtime" / "spec.py"), "spec.py raises LabkitErrors"


def test_a_fix_is_worded_by_each_front_end() -> None:
    err = LabkitError("rootfs 'x' is not an absolute path", fix="give {rootfs} an absolute path")
    assert str(err) == "rootfs 'x' is not an absolute path (fix: give rootfs an absolute path)"
    assert err.render({"rootfs": "--rootfs"}).endswith("(fix: give --rootfs an absolute path)")
    assert err.render({"rootfs": '"Rootfs"'}).endswith('(fix: give "Rootfs" an absolute path)')
    assert LabkitError("a {brace} in a problem").render({"brace": "x"}) == "a {brace} in a problem"
