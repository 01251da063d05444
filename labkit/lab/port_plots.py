"""A picture of a published port: the ways a connection to HOST:PORT takes to the container,
drawn from the kernel's own rules and counters.

``draw(ns, port)`` reads one network namespace (a scratch router, or the host: ``None``) with
``iptables-save -c``, ``ss`` and ``sysctl`` (``port_state``), finds the DNAT rule for ``port``
and everything on its way, and draws three rows, one per way in:

* **from outside**: nat PREROUTING, its jump to the chain with the DNAT rule (``LABKIT``, or
  Docker's ``DOCKER``), the DNAT rule, the filter FORWARD rule that accepts the rewritten
  packet, the bridge, the container;
* **from the host itself**, to one of its own addresses: nat OUTPUT and its jump to the same
  DNAT rule, then (for 127.0.0.1) the bridge's ``route_localnet`` and the MASQUERADE of
  127.0.0.0/8: hairpin NAT. A host's own packets never pass FORWARD;
* **through a userland proxy**: a process listening on the port (docker-proxy, labkit's
  supervisor, or busybox nc) that opens a connection of its own to the container.

Each box shows the rule as ``iptables -S`` writes it and the packets it has taken; a piece
that is not there is drawn grey and dashed. Replies take the same way back: conntrack undoes
each rewrite (the dashed arrow).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from labkit.lab import net_state, port_state

UP_FACE, UP_EDGE, DOWN_FACE, DOWN_EDGE = "#deebf7", "#3182bd", "#f0f0f0", "#969696"
NAT_FACE, NAT_EDGE, BRIDGE = "#fdf1e4", "#e6550d", "#31a354"


@dataclass
class Box:
    """One piece on a connection's way: what it is, the rule (or state) that makes it, and how
    many packets it has taken (None: no counter)."""

    title: str
    text: str = ""
    packets: int | None = None
    present: bool = True


def read(ns: str | None, port: int) -> dict[str, Box]:
    """The pieces of port ``port``'s publication in namespace ``ns`` (None: the host's)."""
    nat, filt = port_state.rules(ns, "nat"), port_state.rules(ns, "filter")
    dnat = [r for r in nat if r.option("-j") == "DNAT" and r.option("--dport") == str(port)]
    pre = port_state.reachable(nat, "PREROUTING")
    rule = next((r for r in dnat if r.chain in pre), next(iter(dnat), None))
    to = rule.option("--to-destination") if rule else ""
    address, _, to_port = (to or "").partition(":")
    boxes = {
        "dnat": Box(f"nat {rule.chain}" if rule else "DNAT", _spec(rule), _n(rule), bool(rule)),
        "prerouting": _jump(nat, "PREROUTING", rule),
        "output": _jump(nat, "OUTPUT", rule),
    }
    accepts = port_state.reachable(filt, "FORWARD")
    forward = next(
        (r for r in filt if r.chain in accepts and r.option("-j") == "ACCEPT"
         and r.option("-d") == f"{address}/32" and r.option("--dport") in (to_port, None)),
        None,
    )  # fmt: skip
    boxes["forward"] = Box(f"filter {forward.chain}" if forward else "filter FORWARD",
                           _spec(forward), _n(forward), bool(forward))  # fmt: skip
    route = net_state.route_to(ns or "host", address) if address else None
    bridge = (route or {}).get("dev", "")
    localnet = net_state.sysctl(ns or "host", f"net.ipv4.conf.{bridge}.route_localnet")
    hairpin = next((r for r in nat if "127.0.0.0/8" in r.words()[:2] and "MASQUERADE" in r.spec
                    and r.option("-o") == bridge), None)  # fmt: skip
    skipped = "! -d 127.0.0.0/8" in boxes["output"].text  # Docker's jump: not for 127.0.0.1
    masquerade = _spec(hairpin) or "no MASQUERADE of 127.0.0.0/8"
    boxes["hairpin"] = Box(
        "127.0.0.1: hairpin NAT",
        "the OUTPUT jump leaves 127.0.0.0/8 out"
        if skipped
        else f"{bridge} route_localnet={localnet or '?'}\n{masquerade}",
        None if skipped else _n(hairpin),
        not skipped and boxes["output"].present and localnet == "1" and bool(hairpin),
    )
    listening = port_state.listeners(ns, port)
    boxes["proxy"] = Box(
        "userland proxy",
        "\n".join(f"{prog} (pid {pid}) listens on {at}" for at, prog, pid in listening[:2])
        + "\nand connects to the container itself"
        if listening
        else "nothing listens on the port",
        None,
        bool(listening),
    )
    gateway = (route or {}).get("prefsrc", "")
    boxes["bridge"] = Box(f"bridge {bridge}" if bridge else "bridge", gateway, None, bool(bridge))
    boxes["container"] = Box("container", f"{to}\n(the DNAT rule's\n--to-destination)" if to
                             else "?", None, bool(to))  # fmt: skip
    return boxes


def _spec(rule: port_state.Rule | None) -> str:
    return f"-A {rule.chain} {rule.spec}" if rule else ""


def _n(rule: port_state.Rule | None) -> int | None:
    return rule.packets if rule else None


def _jump(nat: list[port_state.Rule], hook: str, dnat: port_state.Rule | None) -> Box:
    """The rule in nat ``hook`` that leads to ``dnat`` (the rule itself if it is there)."""
    found = None
    if dnat is not None:
        for rule in nat:
            target = rule.option("-j") or ""
            if rule.chain == hook and (
                rule == dnat or dnat.chain in port_state.reachable(nat, target) - {hook}
            ):
                found = rule
                break
    return Box(f"nat {hook}", _spec(found) or "nothing leads to the DNAT rule", _n(found),
               bool(found))  # fmt: skip


# -- the picture ---------------------------------------------------------------------------------

#: Where each box goes: (column, row, rows tall). Rows: 2 outside, 1 the host, 0 the proxy.
PLACES = {
    "prerouting": (1, 2, 1), "output": (1, 1, 1), "dnat": (2, 1, 2), "forward": (3, 2, 1),
    "hairpin": (3, 1, 1), "proxy": (2, 0, 1), "bridge": (4, 0, 3), "container": (5, 0, 3),
}  # fmt: skip
SOURCES = {
    2: "a client outside\n→ HOST:{port}",
    1: "a process on the host\n→ one of its own\naddresses:{port}",
    0: "a process on the host\n→ 127.0.0.1:{port}",
}
#: (from, to, label): each arrow; "top" leaves the tall DNAT box at row 1's top (its own
#: address: no FORWARD, no hairpin NAT), straight to the bridge.
ARROWS = [("src2", "prerouting", ""), ("prerouting", "dnat", ""), ("dnat", "forward", ""),
          ("forward", "bridge", ""), ("src1", "output", ""), ("output", "dnat", ""),
          ("top", "bridge", "its own address"), ("dnat", "hairpin", ""),
          ("hairpin", "bridge", ""), ("src0", "proxy", ""),
          ("proxy", "bridge", "a new connection"), ("bridge", "container", "")]  # fmt: skip
COL_W, ROW_H, BOX_W, BOX_H = 3.4, 1.9, 3.0, 1.45
HAIRPIN_H = 1.0  # lower than the others: the way to its own address passes above it


def _rect(key: str) -> tuple[float, float, float, float]:
    """x, y, width, height of a box (``srcN``: the source of row N)."""
    col, row, rows = (0, int(key[3]), 1) if key.startswith("src") else PLACES[key]
    height = HAIRPIN_H if key == "hairpin" else BOX_H + (rows - 1) * ROW_H
    return col * COL_W, row * ROW_H, BOX_W, height


def draw(ns: str | None, port: int, title: str = "", path: str | None = None) -> Any:
    """Read port ``port``'s publication in ``ns`` (None: the host) and draw its ways in."""
    return draw_boxes(read(ns, port), port, title=title, path=path)


def _style(key: str, box: Box) -> tuple[str, str]:
    if not box.present:
        return DOWN_FACE, DOWN_EDGE
    if key.startswith("src"):
        return "#f7f7f7", "#636363"
    if key == "bridge":
        return BRIDGE, BRIDGE
    if key in ("dnat", "prerouting", "output", "hairpin"):
        return NAT_FACE, NAT_EDGE
    return UP_FACE, UP_EDGE


def draw_boxes(boxes: dict[str, Box], port: int, title: str = "", path: str | None = None) -> Any:
    """Draw pieces already read (``read``), as ``draw`` does."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(14, 5.8))
    shapes = {f"src{row}": Box(text.format(port=port)) for row, text in SOURCES.items()}
    shapes.update(boxes)
    for key, box in shapes.items():
        x, y, w, h = _rect(key)
        face, edge = _style(key, box)
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor=face, edgecolor=edge, linewidth=1.5,
                                    linestyle="-" if box.present else "--"))  # fmt: skip
        color = "white" if key == "bridge" and box.present else "black"
        if key.startswith("src"):
            ax.text(x + w / 2, y + h / 2, box.title, ha="center", va="center", fontsize=8.5)
            continue
        head = box.title + (f"  [{box.packets} pkts]" if box.packets is not None else "")
        ax.text(x + w / 2, y + h - 0.2, head, ha="center", va="center",
                fontsize=8.5 if len(head) < 30 else 7.5, weight="bold", color=color)  # fmt: skip
        rule = "-A " in box.text
        body = "\n".join(textwrap.fill(line, 38 if rule else 36) for line in box.text.splitlines())
        ax.text(x + w / 2, y + (h - 0.3) / 2, body, ha="center", va="center",
                fontsize=6.5 if rule else 7.5, color=color,
                family="monospace" if rule else None)  # fmt: skip
    for a, b, label in ARROWS:
        (xb, yb, _, hb) = _rect(b)
        if a == "top":  # out of the DNAT box, above the hairpin box
            xa, ya, wa, ha = _rect("dnat")
            start = end = ROW_H + BOX_H - 0.25
            live = shapes["output"].present and shapes["dnat"].present
        else:
            xa, ya, wa, ha = _rect(a)
            start, end = ya + ha / 2, yb + hb / 2
            if b in ("dnat", "bridge", "container"):  # into a tall box: at the source's height
                end = min(max(start, yb + 0.2), yb + hb - 0.2)
            if a == "dnat":  # out of the tall box: at the target's height
                start = end
            live = shapes[a].present and shapes[b].present
        ax.add_patch(FancyArrowPatch((xa + wa, start), (xb, end), arrowstyle="-|>",
                                     mutation_scale=12, linewidth=1.6,
                                     color="#444444" if live else DOWN_EDGE))  # fmt: skip
        if label:
            mid = (xa + wa + xb) / 2
            ax.text(mid, (start + end) / 2 + 0.12, label, ha="center", fontsize=7,
                    color="#444444", style="italic")  # fmt: skip
    y = 3 * ROW_H - 0.2
    ax.annotate("", xy=(0.6 * COL_W, y), xytext=(5.5 * COL_W, y),
                arrowprops=dict(arrowstyle="-|>", linestyle="--", color="#756bb1"))  # fmt: skip
    ax.text(3 * COL_W, y + 0.15, "replies come back the same way: conntrack undoes each rewrite",
            ha="center", fontsize=8, color="#756bb1")  # fmt: skip
    ax.set_xlim(-0.1, 5 * COL_W + BOX_W + 0.1)
    ax.set_ylim(-0.1, 3 * ROW_H + 0.2)
    ax.set_axis_off()
    ax.set_title(title or f"The ways to a published port ({port})", fontsize=10)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig
