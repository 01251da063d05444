"""What ``labkit reset`` removes of networking: every leftover, found from the host's
state (links, rules) and from ``NET_DIR``, in the order it must go.

``find`` lists (kind, name, detail, ref) tuples, ``remove(kind, ref)`` removes one:

* ``net-lease``: a lease whose taker and container are gone (or are being removed now);
* ``net-leases``: the leases folder of a network that is not defined any more;
* ``net-link``: a host end ``lkv*`` of a veth whose container holds no lease (on one of
  this NET_DIR's bridges, or on none);
* ``network``: a network no live container uses: its bridge, rules, leases, definition
  (reset removes everything labkit made; ``bridge`` is defined again on first use);
* ``net-bridge``: a bridge ``labkit0``/``lkbr-*`` no network here defines, with no ports;
* ``net-rule``: a rule naming only labkit bridges that are gone or going;
* ``net-port``: a rule of a published port that leads to an address of a network here that
  no lease holds (a stale lease's port rules go with the lease: ``ipam.reclaim``);
* ``net-chains``: the ``LABKIT-*`` chains and the jumps to them, once no rule needs them;
* ``net-forward``: ip_forward, put back if labkit turned it on.

Networks are shared by every labkit on the host (and tests use NET_DIRs of their own), so
nothing a live container uses is listed, and neither is a bridge with ports plugged in.
``remove_default_if_unused`` is the test suite's end-of-session tidy-up.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.network import bridge, firewall, host, ipam, netdir, store
from labkit.network.model import BRIDGE_PREFIX, DEFAULT, DEFAULT_BRIDGE, VETH_PREFIX

Item = tuple[str, str, str, dict[str, Any]]


def _links(match: Callable[[str], bool]) -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if match(n))


def _master(link: str) -> str | None:
    """The bridge a link is plugged into, or None."""
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{link}/master"))
    except OSError:
        return None


def find(going: Iterable[str] = ()) -> list[Item]:
    """Every leftover, in removal order. ``going``: ids of containers about to be removed
    (reset kills them first), whose leases count as gone already."""
    going = frozenset(going)
    out: list[Item] = []
    networks = store.list_all()
    live: set[str] = set()  # ids of containers holding a lease
    kept: set[str] = set()  # bridges of networks in use
    leased: set[str] = set()  # every address with a lease, live or not
    for network in networks:
        for lease in ipam.leases(network):
            leased.add(lease.address)
            if lease.is_live() and lease.container_id not in going:
                live.add(lease.container_id)
                kept.add(network.bridge)
                continue
            ref = {"network_id": network.id, "address": lease.address,
                   "force": lease.container_id in going}  # fmt: skip
            detail = f"address of {lease.name} on network {network.name}: its holder is gone"
            out.append(("net-lease", lease.address, detail, ref))
    ids = {n.id for n in networks}
    leases_root = netdir.root() / "leases"
    for folder in sorted(leases_root.iterdir()) if leases_root.is_dir() else []:
        if folder.name not in ids and not ipam.holders(folder.name):
            detail = "leases of a network that is gone"
            out.append(("net-leases", folder.name[:12], detail, {"path": str(folder)}))
    defined = {n.bridge for n in networks}
    for name in _links(lambda n: n.startswith(VETH_PREFIX)):
        if any(cid.startswith(name[len(VETH_PREFIX) :]) for cid in live):
            continue
        if _master(name) in defined | {None}:  # on a bridge of another NET_DIR: not ours
            out.append(("net-link", name, "veth of a container that is gone", {"name": name}))
    going_bridges = set()
    for network in networks:
        if network.bridge not in kept:
            ref = {"name": network.name, "going": sorted(going)}
            out.append(("network", network.name, f"{network.subnet} on {network.bridge}", ref))
            if not bridge.is_foreign(network.bridge):  # teardown leaves a namesake alone
                going_bridges.add(network.bridge)
    for name in _links(lambda n: n == DEFAULT_BRIDGE or n.startswith(BRIDGE_PREFIX)):
        if bridge.is_foreign(name):
            kept.add(name)  # another NET_DIR's network made it (tests use their own)
        elif name not in defined and not bridge.ports(name):
            out.append(("net-bridge", name, "bridge of no network", {"name": name}))
            going_bridges.add(name)
    out += _rules(kept, defined, going_bridges)
    subnets = [ipaddress.IPv4Network(n.subnet) for n in networks]
    return out + _port_rules(subnets, leased)


def _port_rules(subnets: list[ipaddress.IPv4Network], leased: set[str]) -> list[Item]:
    """Published ports' rules (``portrules``) leading to an address of these subnets that
    no lease holds: whoever published them died and lost its lease."""
    try:
        rules = firewall.labkit_rules()
    except LabkitError:
        return []
    out: list[Item] = []
    for table, line in rules:
        words = line.split()
        if "--to-destination" in words:  # DNAT, in LABKIT or LABKIT-HAIRPIN
            address = words[words.index("--to-destination") + 1].rsplit(":", 1)[0]
        elif "--dport" in words and "-d" in words:  # ACCEPT and hairpin MASQUERADE
            address = words[words.index("-d") + 1]
        else:
            continue
        ip = ipaddress.ip_interface(address).ip
        if any(ip in subnet for subnet in subnets) and str(ip) not in leased:
            ref = {"table": table, "line": line}
            out.append(
                ("net-port", line, f"{table} rule of a port published by a gone container", ref)
            )
    return out


def _rules(kept: set[str], defined: set[str], going: set[str]) -> list[Item]:
    """The rules of bridges that are gone, then the chains if nothing else needs them."""
    out: list[Item] = []
    try:
        rules = firewall.labkit_rules()
    except LabkitError:
        return out  # no iptables on this host: nothing of labkit's in it either

    def gone(name: str) -> bool:
        return name in going or not bridge.exists(name)

    for table, line in rules:
        named = firewall.bridges_in_rules([(table, line)])
        if named and not named & defined and all(map(gone, named)):
            ref = {"table": table, "line": line}
            out.append(("net-rule", line, f"{table} rule of a bridge that is gone", ref))
    chains_go = all(map(gone, firewall.bridges_in_rules(rules))) and not kept
    if rules and chains_go:
        out.append(("net-chains", "LABKIT-*", "iptables chains and the jumps to them", {}))
    if host.forward_orig().exists() and chains_go:
        out.append(("net-forward", "ip_forward", "labkit turned it on: put it back", {}))
    return out


def remove(kind: str, ref: dict[str, Any]) -> None:
    """Remove one leftover that ``find`` listed."""
    if kind == "net-lease":
        ipam.reclaim(ref["network_id"], ref["address"], force=ref.get("force", False))
    elif kind == "net-leases":
        with netdir.lock():  # and the rules of ports its leases still record
            ipam.drop_all(Path(ref["path"]).name)
    elif kind == "net-link":
        from labkit.kernel import netdev

        netdev.delete_link(ref["name"])
    elif kind == "network":
        network = store.find(ref["name"])
        if network is not None:
            store.destroy(network, ignore=frozenset(ref.get("going", ())))
    elif kind == "net-bridge":
        bridge.delete(ref["name"])
        netdir.ready_marker(ref["name"]).unlink(missing_ok=True)
    elif kind in ("net-rule", "net-port"):
        firewall.delete_line(ref["table"], ref["line"])
    elif kind == "net-chains":
        if not host.remove_base_if_unused():
            raise LabkitError("labkit's iptables chains still hold rules of a live network")
    elif kind == "net-forward":
        firewall.restore_forwarding(host.forward_orig())
    else:
        raise KeyError(kind)


def remove_default_if_unused() -> bool:
    """Remove the default network (``labkit0`` and its rules) and labkit's chains when no
    container holds an address on it and no user network exists. True if labkit's
    networking is gone from the host (False: something here, or another NET_DIR, uses it)."""
    if any(n.name != DEFAULT for n in store.list_all()):
        return False
    network = store.find(DEFAULT)
    if network is not None:
        try:
            store.destroy(network)
        except LabkitError:
            return False  # a container is on it
    return host.remove_base_if_unused()
