"""A network's state as the kernel holds it, read with ``ip``, for notebook 05's pictures and
checks: each namespace's links (kind, up or down, bridge, addresses), its routes, and which
veth end is the peer of which, across namespaces.

Every reading is a subprocess, so nothing here enters a namespace (the Jupyter kernel never
does): ``ip -n NAME ...`` for a named namespace (``/run/netns/NAME``, what ``ip netns add``
makes), ``nsenter --net=/proc/PID/ns/net ip ...`` for a process's (a container's), plain ``ip``
for the host's. A namespace is named by a ``Where``; ``where()`` makes one from what a cell has
at hand: ``"host"``, a netns name, a PID, or ``(label, one of those)``.

A veth end knows its peer only by numbers: the peer's interface index (``link_index``) and, if
the peer is in another namespace, that namespace's *nsid* as this one numbers it
(``link_netnsid``). ``snapshot`` reads every namespace asked for, then pairs the ends up: by
name where ``ip netns list-id`` knows the nsid, else by the two indexes pointing at each other.
A snapshot is plain data (``to_json``/``from_json``), so a checker's child can send one back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Where:
    """One network namespace: the host's, a named one, or a process's."""

    label: str
    name: str | None = None  # /run/netns/NAME
    pid: int | None = None  # /proc/PID/ns/net

    def ip(self, *args: str) -> list[str]:
        """The argv of ``ip ARGS`` run in this namespace."""
        if self.name:
            return ["ip", "-n", self.name, *args]
        return self.run("ip", *args)

    def run(self, *command: str) -> list[str]:
        """The argv of any command run in this namespace (iptables, sysctl, ping)."""
        if self.name:
            return ["ip", "netns", "exec", self.name, *command]
        if self.pid:
            return ["nsenter", f"--net=/proc/{self.pid}/ns/net", *command]
        return list(command)

    def path(self) -> str:
        if self.name:
            return f"/run/netns/{self.name}"
        return f"/proc/{self.pid or 'self'}/ns/net"


def where(spec: Any) -> Where:
    """A ``Where`` from ``"host"``, a netns name, a PID, a ``Where``, or ``(label, spec)``."""
    if isinstance(spec, Where):
        return spec
    if isinstance(spec, tuple):
        label, inner = spec
        return Where(label, where(inner).name, where(inner).pid)
    if isinstance(spec, int):
        return Where(f"pid {spec}", pid=spec)
    if spec in ("host", "", None):
        return Where("host")
    return Where(str(spec), name=str(spec))


@dataclass
class Link:
    """One network interface, as ``ip -d addr`` shows it."""

    ifname: str
    ifindex: int
    kind: str  # veth, bridge, loopback, or the link type (ether, ...)
    up: bool  # set up by someone (the UP flag); ``operstate`` says if it carries traffic
    operstate: str
    mac: str
    master: str | None = None  # the bridge it is a port of
    addresses: list[str] = field(default_factory=list)  # IPv4, "10.55.0.2/24"
    peer_index: int | None = None  # a veth's peer: its ifindex ...
    peer_nsid: int | None = None  # ... in the namespace this nsid names (None: the same one)
    peer: tuple[str, str] | None = None  # (namespace label, ifname), once paired up


@dataclass
class Namespace:
    label: str
    inode: int
    links: list[Link]
    routes: list[dict]  # ``ip -j route``: {"dst": "default", "gateway": ..., "dev": ...}
    nsids: dict[int, str] = field(default_factory=dict)  # nsid -> netns name (named ones)
    kind: str = "named"  # "host", "named" (ip netns) or "pid" (a process's: a container's)
    nat: list[str] = field(default_factory=list)  # its MASQUERADE rules, if asked for

    def link(self, ifname: str) -> Link | None:
        return next((x for x in self.links if x.ifname == ifname), None)

    def default_gateway(self) -> str | None:
        return next((r.get("gateway") for r in self.routes if r.get("dst") == "default"), None)


def _json(argv: Sequence[str]) -> Any:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return json.loads(done.stdout or "[]")


def _link(raw: dict) -> Link:
    info = raw.get("linkinfo") or {}
    kind = info.get("info_kind") or raw.get("link_type", "")
    return Link(
        ifname=raw["ifname"],
        ifindex=raw["ifindex"],
        kind=kind,
        up="UP" in raw.get("flags", []),
        operstate=raw.get("operstate", ""),
        mac=raw.get("address", ""),
        master=raw.get("master"),
        addresses=[
            f"{a['local']}/{a['prefixlen']}"
            for a in raw.get("addr_info", [])
            if a.get("family") == "inet"
        ],
        peer_index=raw.get("link_index") if kind == "veth" else None,
        peer_nsid=raw.get("link_netnsid") if kind == "veth" else None,
    )


def read(spec: Any, nat: bool = False) -> Namespace:
    """One namespace's links, addresses and main routing table (and with ``nat``, the
    MASQUERADE rules of its ``nat`` table, as ``iptables -t nat -S`` writes them)."""
    w = where(spec)
    links = [_link(raw) for raw in _json(w.ip("-j", "-d", "addr", "show"))]
    routes = _json(w.ip("-j", "route", "show"))
    nsids = {}
    with contextlib.suppress(RuntimeError, ValueError):
        nsids = {
            e["nsid"]: e["name"] for e in _json(w.ip("-j", "netns", "list-id")) if e.get("name")
        }
    kind = "named" if w.name else "pid" if w.pid else "host"
    found = Namespace(w.label, os.stat(w.path()).st_ino, links, routes, nsids, kind)
    if nat:
        rules = output(w, "iptables", "-w", "-t", "nat", "-S").stdout
        found.nat = [r for r in rules.splitlines() if "MASQUERADE" in r]
    return found


def snapshot(specs: Iterable[Any], nat: bool = False) -> list[Namespace]:
    """Read every namespace in ``specs``, then pair up the veth ends among them."""
    wheres = [where(s) for s in specs]
    spaces = [read(w, nat) for w in wheres]
    by_name = {w.name: ns for w, ns in zip(wheres, spaces, strict=True) if w.name}
    for ns in spaces:
        for link in ns.links:
            if link.kind == "veth" and link.peer_index is not None:
                link.peer = _find_peer(ns, link, spaces, by_name)
    return spaces


def _find_peer(
    ns: Namespace, link: Link, spaces: list[Namespace], by_name: dict[str, Namespace]
) -> tuple[str, str] | None:
    if link.peer_nsid is None:  # both ends in this namespace
        other = next((x for x in ns.links if x.ifindex == link.peer_index), None)
        return (ns.label, other.ifname) if other else None
    named = by_name.get(ns.nsids.get(link.peer_nsid, ""))
    candidates = [named] if named else [s for s in spaces if s is not ns]
    for other_ns in candidates:
        for other in other_ns.links:
            if other.ifindex == link.peer_index and other.peer_index == link.ifindex:
                return (other_ns.label, other.ifname)
    return None


def to_json(spaces: list[Namespace]) -> list[dict]:
    return [asdict(ns) for ns in spaces]


def from_json(data: list[dict]) -> list[Namespace]:
    spaces = []
    for raw in data:
        links = []
        for x in raw["links"]:
            link = Link(**{**x, "peer": tuple(x["peer"]) if x.get("peer") else None})
            links.append(link)
        nsids = {int(k): v for k, v in raw.get("nsids", {}).items()}
        rest = {k: raw[k] for k in ("kind", "nat") if k in raw}
        spaces.append(Namespace(raw["label"], raw["inode"], links, raw["routes"], nsids, **rest))
    return spaces


# -- single facts, for checkers ------------------------------------------------------------------


def output(spec: Any, *command: str, timeout: float = 10) -> subprocess.CompletedProcess:
    """Run ``command`` in a namespace; its result, whatever its exit status."""
    argv = where(spec).run(*command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def sysctl(spec: Any, key: str) -> str:
    """A per-namespace setting, e.g. ``net.ipv4.ip_forward``, read in that namespace."""
    done = output(spec, "cat", "/proc/sys/" + key.replace(".", "/"))
    return done.stdout.strip()


def pings(spec: Any, address: str, count: int = 1, wait: float = 1) -> subprocess.CompletedProcess:
    """``busybox ping -c COUNT -W WAIT ADDRESS`` from inside a namespace (exit 0: an answer
    came). busybox's ping, as in the lab's images: the same command on any machine."""
    command = ["busybox", "ping", "-c", str(count), "-W", f"{wait:g}", address]
    return output(spec, *command, timeout=wait * count + 5)


def route_to(spec: Any, address: str) -> dict | None:
    """``ip route get ADDRESS`` in a namespace: the route a packet would take, or None."""
    w = where(spec)
    done = subprocess.run(w.ip("-j", "route", "get", address), capture_output=True, text=True)
    if done.returncode != 0:
        return None
    found = json.loads(done.stdout or "[]")
    return found[0] if found else None


def neighbours(spec: Any) -> dict[str, str]:
    """``ip neigh`` in a namespace: IPv4 address -> the MAC address learned for it."""
    found = _json(where(spec).ip("-j", "-4", "neigh", "show"))
    return {n["dst"]: n["lladdr"] for n in found if n.get("lladdr")}


def ipv4(spec: Any, ifname: str = "eth0") -> str:
    """The first IPv4 address of a link in a namespace, without its prefix ("10.200.0.2")."""
    link = read(spec).link(ifname)
    return link.addresses[0].split("/")[0] if link and link.addresses else ""


def parse_ip_addr(text: str) -> dict[str, dict[str, Any]]:
    """What ``ip addr`` (iproute2's or busybox's) printed: ifname -> {"mac", "inet": [...]}."""
    found: dict[str, dict[str, Any]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^\d+: ([^:@\s]+)(?:@\S+)?:", line)
        words = line.split()
        if head:
            current = found.setdefault(head[1], {"mac": "", "inet": []})
        elif current is not None and words[:1] == ["link/ether"]:
            current["mac"] = words[1]
        elif current is not None and words[:1] == ["inet"]:
            current["inet"].append(words[1])
    return found


def docker_mac(address: str) -> str:
    """Docker's rule for a container's MAC: 02:42, then the four bytes of its IPv4 address."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in address.split("."))
