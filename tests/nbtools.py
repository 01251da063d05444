"""Reading, varying and running the lab's notebooks in tests.

A notebook follows three conventions (docs/exercises.md) that make it testable in pieces:

* the cell(s) tagged ``setup`` are all a section needs from before it;
* a section starts at a markdown cell whose first line is a ``## `` heading;
* an exercise's answer cell is tagged ``exercise``. Its id is in the cell: ``lab.check("ID", ...)``
  (function and value exercises: the answer is the lines above that statement) or
  ``%%labkit_child --exercise ID`` (code exercises: the answer is the cell after that line).

From those, the learner variants: ``with_answer`` pastes another answer into one exercise cell,
``solved`` pastes every reference solution, ``section`` cuts out setup + one section.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

from labkit.lab import exercises, workcopy

NOTEBOOKS = workcopy.pristine(Path(__file__).resolve().parent.parent)
_CHECK = re.compile(r"""lab\.check\(\s*["']([\w-]+)["']""")
_MAGIC = re.compile(r"^%%labkit_child\b.*--exercise[ =]([\w-]+)")


def load(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_id(cell: nbformat.NotebookNode) -> str | None:
    """The id of the exercise a cell answers (``None`` for other cells)."""
    if cell.cell_type != "code":
        return None
    found = _MAGIC.match(cell.source) or _CHECK.search(cell.source)
    return found[1] if found else None


def exercise_cells(nb: nbformat.NotebookNode) -> dict[str, int]:
    """Exercise id -> index of its answer cell (the cells tagged ``exercise``)."""
    return {exercise_id(c): i for i, c in enumerate(nb.cells) if "exercise" in tags(c)}


def with_answer(nb: nbformat.NotebookNode, ex_id: str, answer: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose answer to ``ex_id`` is ``answer`` (the text of the learner's part)."""
    nb = copy.deepcopy(nb)
    cell = nb.cells[exercise_cells(nb)[ex_id]]
    lines = cell.source.splitlines()
    if lines[0].startswith("%%labkit_child"):
        cell.source = lines[0] + "\n" + answer.rstrip("\n")
    else:
        at = next(i for i, line in enumerate(lines) if _CHECK.search(line))
        cell.source = answer.rstrip("\n") + "\n\n\n" + "\n".join(lines[at:])
    return nb


def solved(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A learner who solved every exercise: the reference solutions pasted in."""
    for ex_id in exercise_cells(nb):
        nb = with_answer(nb, ex_id, exercises.solution_source(ex_id))
    return nb


def sections(nb: nbformat.NotebookNode) -> list[tuple[str, list[int]]]:
    """(heading, cell indices) of each ``## `` section that has code, setup cells excluded."""
    found: list[tuple[str, list[int]]] = [("(before the first section)", [])]
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            found.append((cell.source.splitlines()[0][3:], []))
        if "setup" not in tags(cell):
            found[-1][1].append(i)
    return [(title, cells) for title, cells in found if _has_code(nb, cells)]


def _has_code(nb: nbformat.NotebookNode, cells: list[int]) -> bool:
    return any(nb.cells[i].cell_type == "code" and nb.cells[i].source.strip() for i in cells)


def section(nb: nbformat.NotebookNode, cells: list[int]) -> nbformat.NotebookNode:
    """Setup cells plus ``cells``: what "restart the kernel, run Setup, run this section" runs."""
    nb = copy.deepcopy(nb)
    setup = [i for i, c in enumerate(nb.cells) if "setup" in tags(c)]
    nb.cells = [nb.cells[i] for i in sorted(set(setup) | set(cells))]
    return nb


def run(nb: nbformat.NotebookNode, cwd: Path, env: dict[str, str] | None = None):
    """Execute ``nb`` in a fresh kernel of this interpreter (as nbval does); return it with its
    outputs. A cell that raises fails with the cell and its error."""
    km = KernelManager(
        kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager()
    )
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute(env=env) if env else client.execute()
    finally:
        # nbclient leaves a kernel manager it was given alone: shut its kernel down and close
        # its zmq context, or every run keeps ~20 descriptors open in the test process
        if client.kc is not None:
            client.kc.stop_channels()
            client.kc.context.destroy(linger=0)
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        km.context.destroy(linger=0)
    return nb


def text_of(cell: nbformat.NotebookNode) -> str:
    """Everything a cell printed (streams, text results, errors)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
        elif "text/plain" in out.get("data", {}):
            parts.append(out.data["text/plain"])
    return "".join(parts)
