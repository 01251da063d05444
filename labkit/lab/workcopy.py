"""The learner's working copies of the notebooks, so that ``git pull`` never meets their edits.

The tracked notebooks in ``notebooks/`` are the pristine lab. A learner works in ``work/`` at
the root of the checkout (git-ignored), which holds a copy of each: JupyterLab opens those. A
new lab version (``git pull``) changes only ``notebooks/``; ``labkit lab init`` then adds copies
of new notebooks and never touches existing ones, and ``labkit lab restore 02a`` replaces one
copy with the pristine notebook, keeping the learner's old copy in ``work/backup/``.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from labkit.errors import LabkitError

WORK = "work"
BACKUP = "backup"


def repo_root() -> Path:
    """The checkout this labkit was imported from (an editable install, as the lab VM has)."""
    return Path(__file__).resolve().parents[2]


#: A step's notebook: its number, a letter when the step is split in two (``02a``, ``02b``),
#: then its name; sorted by name, they come in the order of the lab.
NOTEBOOK = re.compile(r"(\d\d[a-z]?)_\w+\.ipynb")


def pristine(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "notebooks").glob("*.ipynb") if NOTEBOOK.fullmatch(p.name))


def find(step: str, repo: Path) -> Path:
    """The pristine notebook named by ``step``: ``01``, ``1``, ``02a``, ``2a``, ``01_chroot``
    or a file name. A number that names a step split in two (``02``) names both: ask for one."""
    name = Path(step).name.removesuffix(".ipynb")
    number = re.fullmatch(r"(\d+)([a-z]?)", name)
    if number:
        name = f"{int(number[1]):02d}{number[2]}"
    matches = [p for p in pristine(repo) if p.stem == name or p.stem.split("_", 1)[0] == name]
    if len(matches) != 1:
        parts = [p.stem for p in pristine(repo) if p.stem.split("_", 1)[0][:2] == name]
        known = ", ".join(parts or [p.stem for p in pristine(repo)])
        raise LabkitError(f"no notebook {step!r}", fix=f"name one of: {known}")
    return matches[0]


def init(repo: Path) -> list[Path]:
    """Copy every pristine notebook that has no working copy yet; return the new copies."""
    work = repo / WORK
    work.mkdir(exist_ok=True)
    made = []
    for notebook in pristine(repo):
        copy = work / notebook.name
        if not copy.exists():
            shutil.copy2(notebook, copy)
            made.append(copy)
    return made


def restore(step: str, repo: Path) -> tuple[Path, Path | None]:
    """Replace the working copy of ``step`` with the pristine notebook.

    Returns the copy and the backup of the learner's old one (``None`` if there was none).
    """
    notebook = find(step, repo)
    copy = repo / WORK / notebook.name
    copy.parent.mkdir(exist_ok=True)
    backup = None
    if copy.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = repo / WORK / BACKUP / f"{notebook.stem}.{stamp}.ipynb"
        backup.parent.mkdir(exist_ok=True)
        n = 1
        while backup.exists():
            n += 1
            backup = backup.with_name(f"{notebook.stem}.{stamp}-{n}.ipynb")
        shutil.copy2(copy, backup)
    tmp = copy.with_name(f".{copy.name}.restoring")
    shutil.copy2(notebook, tmp)
    tmp.replace(copy)  # atomic: JupyterLab never sees half a notebook
    return copy, backup


def main(action: str, step: str | None, repo: Path | None = None) -> int:
    """``labkit lab init | restore STEP | ls``: what the CLI runs."""
    repo = repo or repo_root()
    if not (repo / "notebooks").is_dir():
        raise LabkitError(f"{repo} has no notebooks/ directory", fix="pass the lab checkout")
    if action == "init":
        made = init(repo)
        for copy in made:
            print(f"created {copy}")
        print(f"{len(made)} new working copies in {repo / WORK}")
    elif action == "restore":
        if not step:
            raise LabkitError("which notebook?", fix="name it, e.g. labkit lab restore 02a")
        copy, backup = restore(step, repo)
        if backup:
            print(f"your copy is kept as {backup}")
        print(f"restored {copy} (reload it in JupyterLab: File > Reload Notebook from Disk)")
    else:
        for notebook in pristine(repo):
            copy = repo / WORK / notebook.name
            state = "missing" if not copy.exists() else "changed" if _edited(copy, notebook) else ""
            print(f"{notebook.stem:<24} {state or 'as shipped'}")
    return 0


def _edited(copy: Path, notebook: Path) -> bool:
    return copy.read_bytes() != notebook.read_bytes()
