"""The layering in ``labkit.LAYERS``, checked on the source: lower layers never import higher.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from labkit import LAYERS

PACKAGE = Path(__file__).resolve().parent.parent / "labkit"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
#: Layers that must start fast and run anywhere: the helper is a fresh process per container.
STDLIB_ONLY = ("base", "kernel", "runtime")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _in(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_of(name: str) -> int:
    """The index in LAYERS of the layer a labkit module belongs to (the package itself,
    "labkit", is base; every other entry also covers the modules below it)."""

    def covers(entry: str) -> bool:
        return name == entry or (entry != "labkit" and name.startswith(entry + "."))

    found = [i for i, (_, entries) in enumerate(LAYERS) if any(map(covers, entries))]
    assert len(found) == 1, f"{name} is in {len(found)} layers of labkit.LAYERS"
    return found[0]


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
                found.add(sub if sub in MODULES else source)
    return found


def _labkit(imports: set[str]) -> set[str]:
    return {i for i in imports if _in(i, "labkit")}


def _third_party(imports: set[str]) -> set[str]:
    return {i for i in imports if i.split(".")[0] not in STDLIB and not _in(i, "labkit")}


def test_every_module_is_in_exactly_one_layer() -> None:
    for name in MODULES:
        layer_of(name)


def test_the_layers_hold_the_modules_later_steps_plug_into() -> None:
    expected = {
        "kernel": ["syscalls", "procfs", "mounts", "namespaces", "rootfs", "process", "stage",
                   "cgroups"],
        "runtime": ["spec", "helper", "container", "supervisor", "records", "stdio"],
    }  # fmt: skip
    for layer, modules in expected.items():
        for module in modules:
            name = f"labkit.{layer}.{module}"
            assert name in MODULES, name
            assert LAYERS[layer_of(name)][0] == layer


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_labkit_import_exists(name: str) -> None:
    for imported in _labkit(_imports(name)):
        assert imported in MODULES, f"{name} imports {imported}, which is not a module"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_higher_layer(name: str) -> None:
    mine = layer_of(name)
    above = {i for i in _labkit(_imports(name)) if layer_of(i) > mine}
    assert above == set(), f"{name} ({LAYERS[mine][0]}) imports a higher layer: {sorted(above)}"


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if LAYERS[layer_of(n)][0] in STDLIB_ONLY)
)
def test_base_kernel_and_runtime_use_only_the_stdlib(name: str) -> None:
    """The helper starts per container, and the kernel layer is what learners read: no
    third-party imports there. (pyroute2 belongs to the networking service.)"""
    assert _third_party(_imports(name)) == set(), f"{name} needs a third-party package"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, "labkit.images")))
def test_images_know_nothing_of_docker(name: str) -> None:
    """labkit.docker imports the images, not the reverse."""
    assert not {i for i in _imports(name) if _in(i, "labkit.docker")}


def _runs_docker(node: ast.AST) -> bool:
    """A list or tuple literal that starts with "docker": an argv for the docker CLI."""
    return (
        isinstance(node, ast.List | ast.Tuple)
        and bool(node.elts)
        and isinstance(node.elts[0], ast.Constant)
        and node.elts[0].value == "docker"
    )


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "labkit.docker"))
def test_only_labkit_docker_runs_the_docker_cli(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    lines = sorted(node.lineno for node in ast.walk(tree) if _runs_docker(node))
    assert lines == [], f"{name} builds a docker command line (use labkit.docker): {lines}"


def test_the_import_resolver_itself() -> None:
    """The checks above are only as good as _imports: it must see lazy and relative imports."""
    imports = _imports("labkit.cli")
    assert "labkit.errors" in imports
    assert "labkit.runtime.supervisor" in imports  # imported inside _cmd_run
    assert "labkit.kernel.namespaces" in imports
    assert "argparse" in imports
    assert {"labkit.kernel.syscalls"} <= _imports("labkit.kernel.rootfs")
    assert layer_of("labkit.kernel.cgroups") == layer_of("labkit.kernel.syscalls") == 1
    assert layer_of("labkit") == 0 and layer_of("labkit.lab.compare") == 4
