"""A picture of an overlay's layer stack for notebook 04, drawn from the real directories.

``layer_stack`` reads each layer's directory (``overlay_demo.entries``: files, directories and
whiteouts) below one subdirectory, puts the layers in a stack, top first as overlayfs lists
them, and adds the merged view on top: for each name, what the topmost layer that has it says.
A file is a box in its layer's row; a whiteout is a crossed box; the merged row shows each name
in the colour of the layer it comes from, or nothing where a whiteout hid it. Nothing is drawn
that the directories do not hold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from labkit.lab.overlay_demo import entries

Layer = tuple[str, "str | os.PathLike[str]"]  # (label, directory)
COLOURS = ["#3182bd", "#31a354", "#e6550d", "#756bb1", "#636363", "#9ecae1", "#a1d99b"]
WHITEOUT = "#222222"


def merged_view(stack: Sequence[dict[str, str]]) -> dict[str, int | None]:
    """name -> index of the layer (in ``stack``, top first) whose entry is seen; ``None`` where
    the topmost entry is a whiteout (the name is hidden)."""
    seen: dict[str, int | None] = {}
    for i, layer in enumerate(stack):
        for name, what in layer.items():
            if name not in seen:
                seen[name] = None if what == "whiteout" else i
    return seen


def read_stack(layers: Sequence[Layer], under: str = "") -> list[dict[str, str]]:
    """Each layer's entries below ``under`` (directories left out): ``{path: kind}``."""
    return [
        {name: what for name, what in entries(path, under) if what not in ("dir", "opaque dir")}
        for _, path in layers
    ]


def layer_stack(layers: Sequence[Layer], under: str = "", title: str = "") -> Any:
    """Draw ``layers`` (``(label, directory)``, top first) and their merged view."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    stack = read_stack(layers, under)
    view = merged_view(stack)
    names = sorted(view)
    rows = len(layers) + 1
    width = max(len(names), 1)
    fig, ax = plt.subplots(figsize=(min(2.0 + 1.6 * width, 14), 0.9 * rows + 1.2))
    colour = {i: COLOURS[i % len(COLOURS)] for i in range(len(layers))}

    def box(x: int, y: int, face: str, text: str, crossed: bool = False) -> None:
        ax.add_patch(Rectangle((x + 0.05, y + 0.1), 0.9, 0.8, facecolor=face, edgecolor="black"))
        ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=8, color="white")
        if crossed:
            ax.plot([x + 0.1, x + 0.9], [y + 0.15, y + 0.85], color="white", linewidth=1.5)

    for row, layer in enumerate(stack):  # row 0 is the top layer: drawn just under the merged row
        y = rows - 2 - row
        if not layer:
            where = f"/{under}" if under else "/"
            ax.text(0.1, y + 0.5, f"(nothing under {where})", va="center", fontsize=8, color="grey")
        for col, name in enumerate(names):
            what = layer.get(name)
            if what == "whiteout":
                box(col, y, WHITEOUT, f"{os.path.basename(name)}\n(whiteout)", crossed=True)
            elif what:
                box(col, y, colour[row], os.path.basename(name))
    for col, name in enumerate(names):
        source = view[name]
        if source is not None:
            box(col, rows - 1, colour[source], os.path.basename(name))
    labels = [label for label, _ in layers][::-1] + ["merged view (what a process sees)"]
    ax.set_yticks([y + 0.5 for y in range(rows)], labels)
    ax.axhline(rows - 1, color="black", linewidth=2)
    ax.set_xticks([c + 0.5 for c in range(width)], names or [""], rotation=20, fontsize=8)
    ax.set_xlim(0, width)
    ax.set_ylim(0, rows)
    ax.set_title(title or "The layer stack, top first" + (f": /{under}" if under else ""))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig
