"""A network on the host: its bridge and its iptables rules, made once, removed once.

``ensure`` runs before every container start, so its common case must cost nothing: when
the bridge exists and the marker ``NET_DIR/ready/<bridge>`` says its rules were made after
it, it returns after a ``stat`` and one small read, with no pyroute2 import and no iptables
process. (A first version checked every rule with ``iptables -C`` on every start: about 30
processes per container.) Otherwise, under the network lock, it makes whatever is missing
(the bridge, labkit's chains, this network's rules, ip_forward) and then writes the marker.
A reboot removes the bridge, so the marker alone is never trusted.
"""

from __future__ import annotations

import os
from pathlib import Path

from labkit.network import bridge, firewall, netdir
from labkit.network.model import Network


def ensure(network: Network) -> None:
    """Make ``network``'s bridge and rules exist (the fast path: they do)."""
    if _ready(network):
        return
    with netdir.lock():
        if not _ready(network):  # another start may have made it while we waited
            make(network)


def _ready(network: Network) -> bool:
    """The bridge is there, and the marker names this network (not an older one that had
    the same bridge name: ``labkit0`` after the default network was defined again)."""
    if not os.path.exists(f"/sys/class/net/{network.bridge}"):
        return False
    try:
        return netdir.ready_marker(network.bridge).read_text().strip() == network.id
    except FileNotFoundError:
        return False


def make(network: Network) -> None:
    """The slow path, under the lock: everything that is missing, then the marker."""
    bridge.create(network.bridge, network.gateway, network.prefix)
    firewall.ensure_base()
    firewall.add_network(network.bridge, network.subnet)
    firewall.enable_forwarding(forward_orig())
    marker = netdir.ready_marker(network.bridge)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(network.id + "\n")


def teardown(network: Network) -> None:
    """Undo ``make`` for one network: marker first (so no start trusts it any more), then
    the rules, then the bridge. Call under the lock. labkit's chains stay while any rule
    for a labkit bridge is left (``remove_base_if_unused``).

    Only what this network made goes: every NET_DIR calls its default network's bridge
    ``labkit0``, and most rules name only the bridge, so a network defined here whose
    bridge another NET_DIR made (the bridge's alias names it) leaves bridge and rules
    alone."""
    marker = netdir.ready_marker(network.bridge)
    try:
        made_here = marker.read_text().strip() == network.id
    except FileNotFoundError:
        made_here = False
    marker.unlink(missing_ok=True)
    if not made_here and bridge.is_foreign(network.bridge):
        return  # a namesake another NET_DIR made (its alias says so): not ours to touch
    firewall.remove_network(network.bridge, network.subnet)
    bridge.delete(network.bridge)


def remove_base_if_unused() -> bool:
    """Remove labkit's chains and put ip_forward back, if no rule names a labkit bridge any
    more. The chains are host-wide, shared with every other NET_DIR on this host (tests
    use their own): the rules on the host, not this NET_DIR's definitions, decide."""
    rules = firewall.labkit_rules()
    if firewall.bridges_in_rules(rules):
        return False
    if rules:
        firewall.remove_base()
    firewall.restore_forwarding(forward_orig())
    return True


def forward_orig() -> Path:
    """Where ip_forward's value before labkit changed it is kept (only if it did)."""
    return netdir.root() / "ip_forward.orig"
