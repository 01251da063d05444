"""A picture of network namespaces and the cables between them, drawn from the kernel's state.

``draw(namespaces)`` reads each namespace in a subprocess (``net_state.snapshot``: ``ip -j -d
addr`` there, veth ends paired by their indexes and nsids) and draws what the kernel showed:

* a namespace as a box (a scratch one by its name, a container's, the host's);
* each interface in it as a chip: its name and IPv4 address, grey and dashed while it is DOWN;
* a bridge as a bar, its ports (veth ends plugged into it) above it;
* a veth pair as a line between its two ends, the virtual cable that crosses from box to box;
* a namespace's default route and (``nat=True``) its MASQUERADE rules, as notes.

The namespace with a bridge (the host, or the router that plays it) is in the middle, the ones
whose cables reach a bridge's port above it, the others below. In the host's namespace only the
links that belong to the picture are drawn (veth ends whose peers are in it, their bridges, and
``keep``: names or globs). ``python -m labkit.lab.net_plots -o topo.png [NAMESPACE...]`` draws
to a file; with no namespace named, the host and every running labkit container.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

from labkit.lab.net_state import Link, Namespace, snapshot

U = 3.0  # one column, in drawing units
CHIP_W, CHIP_H = 2.5, 0.8
UP_FACE, UP_EDGE, DOWN_FACE, DOWN_EDGE = "#deebf7", "#3182bd", "#f0f0f0", "#969696"
BRIDGE, CABLE = "#31a354", "#444444"


def shown_links(ns: Namespace, keep: Iterable[str] = ()) -> list[Link]:
    """The links of ``ns`` the picture shows: all but ``lo``; in the host's, only its part."""
    links = [x for x in ns.links if x.kind != "loopback"]
    if ns.kind != "host":
        return links
    cabled = [x for x in links if x.peer is not None]
    bridges = {x.master for x in cabled if x.master}
    kept = [x for x in links if any(fnmatch.fnmatchcase(x.ifname, k) for k in keep)]
    return [x for x in links if x in cabled or x.ifname in bridges or x in kept]


def layout(spaces: Sequence[Namespace], keep: Iterable[str] = ()) -> dict[str, Any]:
    """Where each namespace goes: ``hub`` (middle), ``top`` and ``bottom`` (lists), and the
    links each one shows."""
    keep = list(keep)
    links = {ns.label: shown_links(ns, keep) for ns in spaces}
    hub = max(
        spaces,
        key=lambda ns: (
            any(x.kind == "bridge" for x in links[ns.label]),
            sum(x.peer is not None for x in links[ns.label]),
        ),
    )
    bridges = [x.ifname for x in links[hub.label] if x.kind == "bridge"]
    top, bottom = [], []
    for ns in spaces:
        if ns is hub:
            continue
        ends = [hub.link(x.peer[1]) for x in links[ns.label] if x.peer and x.peer[0] == hub.label]
        masters = [e.master for e in ends if e and e.master]
        if masters or not ends:
            top.append((bridges.index(masters[0]) if masters else len(bridges), ns))
        else:
            bottom.append(ns)
    top = [ns for _, ns in sorted(top, key=lambda pair: pair[0])]
    return {"hub": hub, "top": top, "bottom": bottom, "links": links}


def draw(
    namespaces: Iterable[Any],
    path: str | None = None,
    title: str = "",
    keep: Iterable[str] = (),
    nat: bool = False,
) -> Any:
    """Read ``namespaces`` (``"host"``, netns names, PIDs, or ``(label, one of those)``) from
    the kernel and draw them; saved to ``path`` if given. Returns the matplotlib figure."""
    return draw_state(snapshot(namespaces, nat=nat), path=path, title=title, keep=keep)


def draw_state(
    spaces: Sequence[Namespace], path: str | None = None, title: str = "", keep: Iterable[str] = ()
) -> Any:
    """Draw a snapshot already read (``net_state.snapshot``, or one a checker sent back)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    plan = layout(spaces, keep)
    hub, links = plan["hub"], plan["links"]
    at: dict[tuple[str, str], tuple[float, float]] = {}  # (ns, ifname) -> chip centre
    boxes: list[tuple[Namespace, float, float, float, float]] = []  # ns, x, y, width, height

    def row(namespaces: list[Namespace], y: float, chip_y: float) -> float:
        x = 0.0
        for ns in namespaces:
            width = max(1, len(links[ns.label])) * U
            boxes.append((ns, x + 0.1, y, width - 0.2, 1.9))
            for i, link in enumerate(links[ns.label]):
                at[(ns.label, link.ifname)] = (x + (i + 0.5) * U, y + chip_y)
            x += width
        return x

    bottom_h = 2.6 if plan["bottom"] else 0.0
    bridged = any(x.kind == "bridge" for x in links[hub.label])
    hub_y, hub_h = bottom_h, (3.9 if plan["bottom"] or hub.nat else 3.0) if bridged else 2.0
    top_y = hub_y + hub_h + 0.9
    height = top_y + 2.1 if plan["top"] else hub_y + hub_h + 0.2
    free = max(row(plan["top"], top_y, 0.55), row(plan["bottom"], 0.0, 1.35))
    width = max(free, 2 * U)  # hub chips with nothing to line up with go right of the rows
    bars: list[tuple[Link, float, float]] = []
    for link in links[hub.label]:
        if link.kind == "bridge":
            continue
        peer = at.get(link.peer) if link.peer else None
        if peer is None:
            at[(hub.label, link.ifname)] = (free + U / 2, hub_y + hub_h - 1.15)
            free += U
        elif link.master:
            at[(hub.label, link.ifname)] = (peer[0], hub_y + hub_h - 1.15)
        else:
            at[(hub.label, link.ifname)] = (peer[0], hub_y + 0.75)
    for link in links[hub.label]:
        if link.kind != "bridge":
            continue
        ports = [at[(hub.label, p.ifname)][0] for p in links[hub.label] if p.master == link.ifname]
        if not ports:
            ports, free = [free + U / 2], free + U
        bars.append((link, min(ports) - CHIP_W / 2, max(ports) + CHIP_W / 2))
    width = max(width, free)
    boxes.append((hub, 0.1, hub_y, width - 0.2, hub_h))

    fig, ax = plt.subplots(figsize=(width * 0.8, (height + 0.2) * 0.8))
    for ns, x, y, w, h in boxes:
        centre = ns is hub
        ax.add_patch(
            FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.15",
                           facecolor="#fdf1e4" if centre else "#f7f7f7",
                           edgecolor="#e6550d" if centre else "#636363", linewidth=1.5)
        )  # fmt: skip
        label_y = y + h - 0.3 if (ns is hub or ns in plan["top"]) else y + 0.3
        size = 9 if len(ns.label) <= 22 * w / U else 7.5  # a long name in a narrow box: smaller
        ax.text(x + 0.15, label_y, ns.label, fontsize=size, weight="bold", va="center")
        notes = [f"default via {ns.default_gateway()}"] if ns.default_gateway() else []
        if ns in plan["top"]:  # under the name
            for i, note in enumerate(notes):
                ax.text(x + 0.15, label_y - 0.3 * (i + 1), note, fontsize=7, color="#444444",
                        va="center")  # fmt: skip
            continue
        bridges = [x.ifname for x in links[ns.label] if x.kind == "bridge"]
        notes += [r for r in ns.nat if not bridges or any(b in r.split() for b in bridges)]
        for i, note in enumerate(reversed(notes)):  # in the bottom right corner
            ax.text(x + w - 0.15, y + 0.25 + 0.3 * i, note, fontsize=7, color="#444444",
                    ha="right", va="center")  # fmt: skip
    for link, left, right in bars:
        y = hub_y + hub_h - 2.35
        ax.add_patch(FancyBboxPatch((left, y), right - left, 0.5, boxstyle="round,pad=0.02",
                                    facecolor=BRIDGE if link.up else DOWN_FACE,
                                    edgecolor=BRIDGE if link.up else DOWN_EDGE))  # fmt: skip
        gap = "  " if right - left > 4 else "\n"  # a narrow bar gets two lines
        text = f"bridge {link.ifname}{gap}{' '.join(link.addresses)}".rstrip()
        text += "" if link.up else "  (DOWN)"
        ax.text((left + right) / 2, y + 0.25, text, ha="center", va="center", fontsize=7.5,
                color="white" if link.up else "black", linespacing=1.1)  # fmt: skip
        for port in (p for p in links[hub.label] if p.master == link.ifname):
            px, py = at[(hub.label, port.ifname)]
            ax.plot([px, px], [py - CHIP_H / 2, y + 0.5], color=BRIDGE, linewidth=2, zorder=1)
    for ns in [hub, *plan["top"], *plan["bottom"]]:
        for link in links[ns.label]:
            if link.kind == "bridge" and ns is hub:
                continue
            _chip(ax, at[(ns.label, link.ifname)], link)
            other = at.get(link.peer) if link.peer else None
            if other and (ns.label, link.ifname) < link.peer:  # each cable once
                x0, y0 = at[(ns.label, link.ifname)]
                ax.plot([x0, other[0]], [y0, other[1]], color=CABLE, linewidth=2.5, zorder=0)
                ax.text((x0 + other[0]) / 2 + 0.08, (y0 + other[1]) / 2, "veth", fontsize=7,
                        color=CABLE, va="center")  # fmt: skip
    ax.set_xlim(0, width)
    ax.set_ylim(-0.1, height)
    ax.set_axis_off()
    ax.set_title(title or "Network namespaces and the veth pairs between them", fontsize=10)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


def _chip(ax: Any, centre: tuple[float, float], link: Link) -> None:
    from matplotlib.patches import FancyBboxPatch

    x, y = centre
    ax.add_patch(
        FancyBboxPatch((x - CHIP_W / 2, y - CHIP_H / 2), CHIP_W, CHIP_H,
                       boxstyle="round,pad=0.02,rounding_size=0.1",
                       facecolor=UP_FACE if link.up else DOWN_FACE,
                       edgecolor=UP_EDGE if link.up else DOWN_EDGE,
                       linestyle="-" if link.up else "--", linewidth=1.5, zorder=2)
    )  # fmt: skip
    address = ", ".join(link.addresses) or (
        f"port of {link.master}" if link.master else "no address"
    )
    state = "" if link.up else "  DOWN"
    ax.text(x, y + 0.15, f"{link.ifname}{state}", ha="center", va="center", fontsize=8,
            weight="bold", zorder=3)  # fmt: skip
    ax.text(x, y - 0.17, address, ha="center", va="center", fontsize=7.5, zorder=3)


def _running_containers() -> list[tuple[str, int]]:
    """(name, PID) of every running labkit container."""
    from labkit.runtime import records

    found = []
    for directory in records.directories():
        record = records.load(directory)
        if record is not None and record.is_running() and record.pid:
            found.append((f"container {record.name}", record.pid))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.lab.net_plots",
        description="Draw network namespaces, their links and the veth pairs between them.",
    )
    parser.add_argument("-o", "--output", default="topology.png", help="the picture (PNG, SVG)")
    parser.add_argument(
        "--keep", action="append", default=["labkit0", "lkbr-*"], help="host links to show (a glob)"
    )
    parser.add_argument("--nat", action="store_true", help="note each one's MASQUERADE rules")
    parser.add_argument(
        "namespaces", nargs="*", help="host, a netns name or a PID (default: the host and "
        "every running labkit container)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    wanted: list[Any] = [int(n) if n.isdigit() else n for n in args.namespaces]
    if not wanted:
        wanted = ["host", *_running_containers()]
    draw(wanted, path=args.output, keep=args.keep, nat=args.nat)
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
