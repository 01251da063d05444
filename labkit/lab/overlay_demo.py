"""overlayfs by hand, for notebook 04: a lower and an upper directory, and what the kernel leaves
in each after a write and a delete through the merged view.

The mount itself happens in a fresh child process in a scratch mount namespace
(``labkit.lab.child`` with ``sandbox={"mnt"}``): the notebook's kernel never mounts, and when
the child ends its namespace goes, and the overlay with it. What stays is what overlayfs wrote
into the upper directory on the real filesystem, which the notebook then reads from the host:
a copied-up file, and a *whiteout* (a character device 0/0) for each file deleted.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.lab import child

#: What the lower layer holds at first (the "image"): name -> content.
LOWER_FILES = {"hello.txt": "hello from the lower layer\n", "notes.txt": "remember me\n"}


@dataclass(frozen=True)
class Layers:
    """The four directories of an overlay mount, made by ``make``."""

    lower: Path
    upper: Path
    work: Path
    merged: Path

    def values(self) -> dict[str, str]:
        """For a child process: ``LOWER``, ``UPPER``, ``WORK``, ``MERGED`` as strings."""
        return {k.upper(): str(getattr(self, k)) for k in ("lower", "upper", "work", "merged")}


def make(root: str | os.PathLike[str]) -> Layers:
    """``lower/`` (with ``LOWER_FILES``), and empty ``upper/``, ``work/``, ``merged/`` in root."""
    root = Path(root)
    layers = Layers(root / "lower", root / "upper", root / "work", root / "merged")
    for path in (layers.lower, layers.upper, layers.work, layers.merged):
        path.mkdir(parents=True)
    for name, text in LOWER_FILES.items():
        (layers.lower / name).write_text(text)
    return layers


def options(lowers: Sequence[str | os.PathLike[str]], upper: str, work: str) -> str:
    """The mount options of an overlay: ``lowerdir=TOP:...:BOTTOM,upperdir=...,workdir=...``."""
    return f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"


_MOUNT = """
from labkit.kernel import syscalls
syscalls.mount("overlay", MERGED, "overlay", 0, OPTIONS)
"""

_SHELL = """
for _command in COMMANDS:
    print("$", _command, flush=True)
    _done = subprocess.run(["bash", "-c", _command], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    print(_done.stdout, end="", flush=True)
"""


def shell(
    layers: Layers, commands: Sequence[str], lowers: Sequence[str | os.PathLike[str]] = ()
) -> child.ChildRun:
    """Mount the overlay (lower dirs ``lowers``, top first; default ``layers.lower``) on
    ``layers.merged`` in a scratch mount namespace and run ``commands`` there with bash, each
    printed as a terminal prints it, in the directory that holds the four (so ``merged/x`` is
    a path a command can use). The mount goes when the child does."""
    values = {
        **layers.values(),
        "OPTIONS": options(lowers or [layers.lower], str(layers.upper), str(layers.work)),
        "COMMANDS": list(commands),
    }
    run = child.run(
        _SHELL,
        prelude=_MOUNT,
        values=values,
        sandbox={"mnt"},
        timeout=60,
        cwd=str(layers.merged.parent),
    )
    if not run.ok:
        raise RuntimeError(run.explain() or f"the overlay child failed: {run.stderr.strip()}")
    return run


# -- what a layer holds -------------------------------------------------------------------------


def kind(path: str | os.PathLike[str]) -> str:
    """What overlayfs makes of one entry: ``file``, ``dir``, ``opaque dir``, ``symlink``,
    ``whiteout`` (a character device 0/0: "deleted in a lower layer"), ``other``, or ``missing``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return "whiteout"
    if stat.S_ISDIR(st.st_mode):
        try:
            opaque = os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
        except OSError:
            opaque = False
        return "opaque dir" if opaque else "dir"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def entries(root: str | os.PathLike[str], under: str = "") -> list[tuple[str, str]]:
    """``(path relative to root, kind)`` for everything below ``root/under``, sorted; a Docker
    layer's own whiteout files (``.wh.NAME``) are shown as whiteouts of ``NAME``."""
    base = Path(root, under)
    found = []
    for dirpath, dirs, files in os.walk(base):
        for name in dirs + files:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            what = kind(path)
            if name.startswith(".wh.") and what == "file":
                rel = str(Path(rel).with_name(name[4:]))
                what = "opaque dir" if name == ".wh..wh..opq" else "whiteout"
            found.append((rel, what))
    return sorted(found)


def tree_digest(root: str | os.PathLike[str]) -> str:
    """One hash of every name, type, mode and content below ``root``: equal before and after
    means nothing in it changed."""
    digest = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest.update(f"{os.path.relpath(path, root)}\0{st.st_mode}\0{st.st_rdev}\0".encode())
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
            elif stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode())
    return digest.hexdigest()[:16]


# -- a prediction, against what the kernel did ----------------------------------------------------

#: The words a prediction about one file in one layer may use.
CHOICES = ("unchanged", "deleted", "missing", "a changed copy", "a whiteout")


def outcome(lower: Sequence[tuple[str, str]], upper: Sequence[tuple[str, str]]) -> dict[str, str]:
    """What became of each of ``LOWER_FILES`` in each layer, in the words of ``CHOICES``, from
    the layers' ``entries`` after the write and the delete."""
    low, up = dict(lower), dict(upper)
    seen = {}
    for name in LOWER_FILES:
        seen[f"{name} in LOWER"] = "unchanged" if low.get(name) == "file" else "deleted"
        seen[f"{name} in UPPER"] = {"file": "a changed copy", "whiteout": "a whiteout"}.get(
            up.get(name, ""), "missing"
        )
    return seen


def compare(guess: dict, seen: dict[str, str]) -> int:
    """Print each guess next to what the kernel did; return how many were right."""
    right = 0
    for key, actual in seen.items():
        said = guess.get(key, ...) if isinstance(guess, dict) else ...
        mark = "·" if said is ... else ("✓" if said == actual else "✗")
        right += said == actual
        print(
            f"{mark} {key:<20} you: {'(no guess)' if said is ... else said!s:<16} kernel: {actual}"
        )
    return right
