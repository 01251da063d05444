"""The iptables rules of one container's published ports, laid out as Docker lays out its own.

Publishing ``-p 8081:80`` for a container at C (10.200.0.2) on bridge BR adds, per port::

    nat LABKIT          ! -i BR -p tcp -m tcp --dport 8081 -j DNAT --to-destination C:80
    LABKIT-FORWARD      -d C/32 ! -i BR -o BR -p tcp -m tcp --dport 80 -j ACCEPT
    LABKIT-POSTROUTING  -s C/32 -d C/32 -p tcp -m tcp --dport 80 -j MASQUERADE

* **DNAT** rewrites the destination of a packet for this host's port 8081 to the container's
  port 80. The chain is jumped to from PREROUTING (packets from elsewhere) and OUTPUT (the
  host's own, but not to 127.0.0.0/8: see ``firewall``), only for the host's own addresses;
  with a host IP (``-p 127.0.0.1:8081:80``) the rule names it (``-d 127.0.0.1/32``). The
  network's ``-i BR -j RETURN`` comes first: its containers reach published ports through the
  userland proxy, as under Docker.
* **ACCEPT** lets the rewritten packet through FORWARD. It goes before the bridge's
  ``-o BR -j DROP`` (which turns away everything else that is new), so it is inserted there.
* **MASQUERADE** (hairpin): when a container reaches its own published port, the reply must
  come back through the host to be un-NATed, so the source becomes the bridge's address.

Without the userland proxy (Docker's ``--userland-proxy=false``, here per container) the DNAT
goes in ``LABKIT-HAIRPIN`` instead, jumped to for *every* local address, 127.0.0.0/8 too, and
without ``! -i BR``: the host's loopback and the containers reach the port by NAT alone. For
that the bridge gets ``route_localnet=1`` (else the kernel drops a packet from 127.0.0.1 that
leaves by a real interface as a "martian"), ``-s 127.0.0.0/8 -o BR -j MASQUERADE`` (the
container could not answer 127.0.0.1), and the container's bridge port ``hairpin_mode`` (with
br_netfilter a packet DNATed back to the port it came from is switched, not routed, back).
Those three belong to the bridge, and go when its last such port goes.

Every change happens under the network lock: the insert position, and "the last port of this
bridge", must not change under our feet.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
from pathlib import Path

from labkit.network import firewall, netdir
from labkit.network.firewall import FORWARD, HAIRPIN, PORTS, POSTROUTING, Rule, iptables
from labkit.network.model import Attachment
from labkit.network.ports import Published

DEFAULT_LOCALNET = Path("/proc/sys/net/ipv4/conf/default/route_localnet")


def rules(att: Attachment) -> list[Rule]:
    """The rules of ``att``'s published ports, in the order they are added."""
    out, bridge, address = [], att.bridge, att.address
    for port in map(Published.of, att.ports):
        match = f"-p {port.proto} -m {port.proto}"
        on = "" if port.host_ip == "0.0.0.0" else f"-d {port.host_ip}/32 "
        to = f"-j DNAT --to-destination {address}:{port.container_port}"
        if att.userland_proxy:
            dnat = Rule("nat", PORTS, f"{on}! -i {bridge} {match} --dport {port.host_port} {to}")
        else:
            dnat = Rule("nat", HAIRPIN, f"{on}{match} --dport {port.host_port} {to}")
        into = f"-d {address}/32 ! -i {bridge} -o {bridge}"
        accept = Rule("filter", FORWARD, f"{into} {match} --dport {port.container_port} -j ACCEPT")
        to_self = f"-s {address}/32 -d {address}/32 {match} --dport {port.container_port}"
        out += [dnat, accept, Rule("nat", POSTROUTING, f"{to_self} -j MASQUERADE")]
    return out


def _loopback_masquerade(bridge: str) -> Rule:
    return Rule("nat", POSTROUTING, f"-s 127.0.0.0/8 -o {bridge} -j MASQUERADE")


def _localnet(bridge: str) -> Path:
    """The bridge's own route_localnet (labkit's interface: never the host-wide setting)."""
    return Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet")


def add(att: Attachment) -> None:
    """Publish ``att``'s ports (its veth is plugged in: hairpin mode is set on its port)."""
    if not att.ports:
        return
    with netdir.lock():
        hairpin = not att.userland_proxy
        # The chains, and the network's RETURN: a network made before ports existed has
        # neither (host.ensure trusts its marker), and publishing is the slow path anyway.
        firewall.ensure_base(hairpin=hairpin)
        shared = [Rule("nat", PORTS, f"-i {att.bridge} -j RETURN")]
        _append(shared + ([_loopback_masquerade(att.bridge)] if hairpin else []), missing=True)
        if hairpin:
            _localnet(att.bridge).write_text("1\n")
            Path(f"/sys/class/net/{att.host_ifname}/brport/hairpin_mode").write_text("1\n")
        mine = rules(att)
        _append([r for r in mine if r.table == "nat"])
        for rule in mine:
            if rule.table == "filter":
                _insert_before_drop(rule, att.bridge)


def _append(wanted: list[Rule], missing: bool = False) -> None:
    """``-A`` each rule (with ``missing``: each one that is not there yet)."""
    have = {t: firewall.listing(t) for t in {r.table for r in wanted}} if missing else {}
    for rule in wanted:
        if not missing or rule.line() not in have[rule.table]:
            iptables(rule.table, "-A", rule.chain, *shlex.split(rule.spec))


def _insert_before_drop(rule: Rule, bridge: str) -> None:
    """Insert ``rule`` just before ``-o BR -j DROP`` in LABKIT-FORWARD, and check it landed
    there: another labkit on this host (another NET_DIR) may remove a rule above meanwhile,
    which moves every position after it."""
    drop = f"-A {FORWARD} -o {bridge} -j DROP"
    for _ in range(5):
        listed = iptables("filter", "-S", FORWARD).stdout.splitlines()
        chain = [line for line in listed if line.startswith("-A ")]
        if drop not in chain:  # no drop rule for this bridge: nothing to be before
            iptables("filter", "-A", FORWARD, *shlex.split(rule.spec))
            return
        at = chain.index(drop)
        if rule.line() in chain[:at]:
            return
        if rule.line() in chain:  # it landed after the drop: take it out, try again
            iptables("filter", "-D", FORWARD, *shlex.split(rule.spec), check=False)
            continue
        iptables("filter", "-I", FORWARD, str(at + 1), *shlex.split(rule.spec))
    raise OSError(f"could not place a rule before {drop!r}: the chain kept changing")


def remove(att: Attachment, locked: bool = False) -> None:
    """Withdraw ``att``'s ports: every copy of each of its rules (a missing one is fine, so
    this can be repeated, and run after a crash), then the bridge's hairpin settings if
    this was its last port without the proxy. ``locked``: the caller holds the lock."""
    if not att.ports:
        return
    with contextlib.nullcontext() if locked else netdir.lock():
        mine = rules(att)
        for table in ("filter", "nat"):
            have = firewall.listing(table)
            for rule in (r for r in mine if r.table == table):
                for _ in range(have.count(rule.line())):
                    iptables(table, "-D", rule.chain, *shlex.split(rule.spec), check=False)
        if att.userland_proxy:
            return
        left = _hairpin_targets()
        subnet = ipaddress.ip_interface(f"{att.address}/{att.prefix}").network
        if not [target for target in left if target in subnet]:  # the bridge's last one
            firewall.delete_line("nat", _loopback_masquerade(att.bridge).line())
            with contextlib.suppress(FileNotFoundError):  # the bridge is gone: so is this
                _localnet(att.bridge).write_text(DEFAULT_LOCALNET.read_text())
        if not left:
            firewall.remove_hairpin()  # made on first use, gone after the last


def _hairpin_targets() -> list[ipaddress.IPv4Address]:
    """Where the LABKIT-HAIRPIN rules that are left lead: one address per rule."""
    found = []
    for line in firewall.listing("nat"):
        words = line.split()
        if words[:2] == ["-A", HAIRPIN] and "--to-destination" in words:
            target = words[words.index("--to-destination") + 1].rsplit(":", 1)[0]
            found.append(ipaddress.IPv4Address(target))
    return found
