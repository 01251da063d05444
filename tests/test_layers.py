"""The layering in labkit/__init__.py, checked on the source: lower layers never import higher.

Bottom up: errors/paths, kernel, images, runtime, then the front ends (cli, doctor, reset,
lab). Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labkit"
FRONT_ENDS = ("labkit.cli", "labkit.doctor", "labkit.reset", "labkit.lab")
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_module(name: str) -> bool:
    return name in MODULES


def _imports(name: str) -> set[str]:
    """Absolute names of everything module ``name`` imports (submodules resolved)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if _is_module(sub) else source)
    return found


def _in(name: str, *layers: str) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def _labkit(imports: set[str]) -> set[str]:
    return {i for i in imports if _in(i, "labkit")}


def _third_party(imports: set[str]) -> set[str]:
    return {i for i in imports if i.split(".")[0] not in STDLIB and not _in(i, "labkit")}


def test_the_package_has_the_expected_layers() -> None:
    for name in (
        "labkit.errors",
        "labkit.paths",
        "labkit.kernel.syscalls",
        "labkit.kernel.namespaces",
        "labkit.kernel.rootfs",
        "labkit.images.base",
        "labkit.runtime.spec",
        "labkit.runtime.helper",
        "labkit.runtime.spawn",
        "labkit.cli",
    ):
        assert name in MODULES, name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_labkit_import_exists(name: str) -> None:
    for imported in _labkit(_imports(name)):
        assert _is_module(imported), f"{name} imports {imported}, which is not a module"


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if n in ("labkit.errors", "labkit.paths"))
)
def test_errors_and_paths_use_only_the_stdlib(name: str) -> None:
    imports = _imports(name)
    assert _labkit(imports) == set()
    assert _third_party(imports) == set()


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, "labkit.kernel")))
def test_kernel_imports_only_stdlib_errors_and_paths(name: str) -> None:
    imports = _imports(name)
    assert _third_party(imports) == set(), f"{name} needs a third-party package"
    wrong = {
        i for i in _labkit(imports) if not _in(i, "labkit.errors", "labkit.paths", "labkit.kernel")
    }
    assert wrong == set(), f"{name} imports a higher layer: {sorted(wrong)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, "labkit.images")))
def test_images_import_no_runtime_or_front_end(name: str) -> None:
    wrong = {i for i in _labkit(_imports(name)) if _in(i, "labkit.runtime", *FRONT_ENDS)}
    assert wrong == set(), f"{name} imports a higher layer: {sorted(wrong)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, "labkit.runtime")))
def test_runtime_imports_no_front_end(name: str) -> None:
    wrong = {i for i in _labkit(_imports(name)) if _in(i, *FRONT_ENDS)}
    assert wrong == set(), f"{name} imports a front end: {sorted(wrong)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not _in(n, *FRONT_ENDS)))
def test_nothing_below_the_front_ends_imports_one(name: str) -> None:
    wrong = {i for i in _labkit(_imports(name)) if _in(i, *FRONT_ENDS)}
    assert wrong == set(), f"{name} imports a front end: {sorted(wrong)}"


def test_the_helper_and_supervisor_need_only_the_stdlib() -> None:
    """The helper is a fresh interpreter per container: third-party imports cost start-up."""
    for name in ("labkit.runtime.helper", "labkit.runtime.spawn", "labkit.runtime.spec"):
        assert _third_party(_imports(name)) == set(), name


def test_the_import_resolver_itself() -> None:
    """The checks above are only as good as _imports: it must see lazy and relative imports."""
    imports = _imports("labkit.cli")
    assert "labkit.errors" in imports
    assert "labkit.runtime.spawn" in imports  # imported inside _cmd_run
    assert "labkit.kernel.namespaces" in imports
    assert "argparse" in imports
    assert {"labkit.kernel.syscalls"} <= _imports("labkit.kernel.rootfs")
