"""The iptables rules of labkit's networks, laid out as Docker lays out its own.

Forwarding between interfaces is the host acting as a router. Docker sets the FORWARD
policy to DROP and then accepts only what belongs to its bridges; labkit does the same in
chains of its own, jumped to first, so its bridges work beside Docker's, and a host whose
policy is ACCEPT is not made a router for anything else (every rule names a labkit bridge)::

    filter FORWARD      -j LABKIT-FORWARD                  (position 1)
    LABKIT-FORWARD      -j LABKIT-ISOLATION-1               networks may not reach each other
                        -o BR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT   replies
                        -i BR ! -o BR -j ACCEPT             out to the world
                        -i BR -o BR -j ACCEPT               container to container
                        -o BR -j DROP                       nothing else comes in
    LABKIT-ISOLATION-1  -i BR ! -o BR -j LABKIT-ISOLATION-2
    LABKIT-ISOLATION-2  -o BR -j DROP                       (every labkit bridge)
                        -o docker0 -j DROP, -o br-+ -j DROP (Docker's bridges)
    nat POSTROUTING     -j LABKIT-POSTROUTING
    LABKIT-POSTROUTING  -s SUBNET ! -o BR -j MASQUERADE     leave with the host's address
    nat PREROUTING      -m addrtype --dst-type LOCAL -j LABKIT         published ports
    nat OUTPUT          ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j LABKIT
    LABKIT              -i BR -j RETURN                     (Docker's DOCKER chain; the
                                                            per-port rules: ``portrules``)

Each rule is one exact spec: it is added with ``-A`` and removed with ``-D`` and the same
words, so removing a network removes exactly what adding it added. The current rules are
read once (``iptables -S``) and only missing ones are added: this runs when a network is
made, never on a container's start.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import NamedTuple

from labkit.errors import LabkitError

FORWARD = "LABKIT-FORWARD"
ISOLATION_1 = "LABKIT-ISOLATION-1"
ISOLATION_2 = "LABKIT-ISOLATION-2"
POSTROUTING = "LABKIT-POSTROUTING"
#: Published ports (``-p 8080:80``, see ``portrules``): Docker's nat chain DOCKER, and the
#: same again for containers run with the userland proxy off (made on first use).
PORTS = "LABKIT"
HAIRPIN = "LABKIT-HAIRPIN"
CHAINS = (("filter", FORWARD), ("filter", ISOLATION_1), ("filter", ISOLATION_2),
          ("nat", POSTROUTING), ("nat", PORTS))  # fmt: skip
HAIRPIN_CHAINS = (("nat", HAIRPIN),)

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class Rule(NamedTuple):
    """``iptables -t TABLE -A CHAIN SPEC...``, spelled as ``iptables -S`` prints it."""

    table: str
    chain: str
    spec: str

    def line(self) -> str:
        return f"-A {self.chain} {self.spec}"


#: Where a packet is for this host: PREROUTING and OUTPUT look for published ports there.
LOCAL = "-m addrtype --dst-type LOCAL"
#: The jumps into labkit's chains, each inserted at position 1. OUTPUT skips 127.0.0.0/8, as
#: Docker's does: a loopback address cannot be routed out to a bridge (the userland proxy
#: answers there); the hairpin chain, for containers without the proxy, takes it too.
JUMPS = (
    Rule("filter", "FORWARD", f"-j {FORWARD}"),
    Rule("nat", "POSTROUTING", f"-j {POSTROUTING}"),
    Rule("filter", FORWARD, f"-j {ISOLATION_1}"),
    Rule("nat", "PREROUTING", f"{LOCAL} -j {PORTS}"),
    Rule("nat", "OUTPUT", f"! -d 127.0.0.0/8 {LOCAL} -j {PORTS}"),
)
HAIRPIN_JUMPS = (
    Rule("nat", "PREROUTING", f"{LOCAL} -j {HAIRPIN}"),
    Rule("nat", "OUTPUT", f"{LOCAL} -j {HAIRPIN}"),
)

#: Docker's bridges, for LABKIT-ISOLATION-2. Docker's own isolation only looks at traffic
#: that starts on its bridges, and labkit's egress rule (``-i BR ! -o BR -j ACCEPT``) would
#: let a labkit container open connections into Docker's networks; these two keep labkit's
#: containers out of Docker's, as Docker keeps its networks apart. (The other way, Docker's
#: egress rule accepts the packet in FORWARD, but LABKIT-FORWARD runs first and its
#: ``-o BR -j DROP`` turns away anything new that does not start on BR itself.)
FOREIGN = (Rule("filter", ISOLATION_2, "-o docker0 -j DROP"),
           Rule("filter", ISOLATION_2, "-o br-+ -j DROP"))  # fmt: skip


def network_rules(bridge: str, subnet: str) -> list[Rule]:
    """Every rule one network adds, in order."""
    replies = "-m conntrack --ctstate RELATED,ESTABLISHED"
    return [
        Rule("filter", ISOLATION_1, f"-i {bridge} ! -o {bridge} -j {ISOLATION_2}"),
        Rule("filter", ISOLATION_2, f"-o {bridge} -j DROP"),
        Rule("filter", FORWARD, f"-o {bridge} {replies} -j ACCEPT"),
        Rule("filter", FORWARD, f"-i {bridge} ! -o {bridge} -j ACCEPT"),
        Rule("filter", FORWARD, f"-i {bridge} -o {bridge} -j ACCEPT"),
        Rule("filter", FORWARD, f"-o {bridge} -j DROP"),
        Rule("nat", POSTROUTING, f"-s {subnet} ! -o {bridge} -j MASQUERADE"),
        Rule("nat", PORTS, f"-i {bridge} -j RETURN"),  # its containers reach ports by proxy
    ]


def iptables(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``iptables -w -t TABLE ARGS`` (``-w``: wait for the xtables lock, which Docker
    and other labkits take too). A failure raises a one-line LabkitError."""
    argv = ["iptables", "-w", "-t", table, *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise LabkitError("iptables is not installed", fix="apt-get install iptables") from None
    if check and done.returncode != 0:
        raise LabkitError(
            f"{shlex.join(argv)}: {done.stderr.strip()}", fix="check this host with {doctor}"
        )
    return done


def listing(table: str) -> list[str]:
    """``iptables -S`` of one table: ``-N CHAIN`` and ``-A CHAIN SPEC`` lines."""
    return iptables(table, "-S").stdout.splitlines()


def ensure_base(hairpin: bool = False) -> None:
    """labkit's chains, the jumps into them and the rules against Docker's bridges (with
    ``hairpin``, the chain for ports published without the userland proxy too)."""
    chains = CHAINS + (HAIRPIN_CHAINS if hairpin else ())
    jumps = JUMPS + (HAIRPIN_JUMPS if hairpin else ())
    for table in ("filter", "nat"):
        have = listing(table)
        for t, chain in chains:
            if t == table and f"-N {chain}" not in have:
                iptables(table, "-N", chain)
        for jump in jumps:
            if jump.table == table and jump.line() not in have:
                iptables(table, "-I", jump.chain, "1", *shlex.split(jump.spec))
        _add_missing([r for r in FOREIGN if r.table == table], have)


def add_network(bridge: str, subnet: str) -> None:
    """Add one network's rules (the ones not there already). Call ``ensure_base`` first."""
    rules = network_rules(bridge, subnet)
    for table in ("filter", "nat"):
        _add_missing([r for r in rules if r.table == table], listing(table))


def _add_missing(rules: list[Rule], have: list[str]) -> None:
    for rule in rules:
        if rule.line() not in have:
            iptables(rule.table, "-A", rule.chain, *shlex.split(rule.spec))


def remove_network(bridge: str, subnet: str) -> None:
    """Delete exactly the rules ``add_network`` adds, every copy of each; absent ones are fine."""
    rules = network_rules(bridge, subnet)
    for table in ("filter", "nat"):
        have = listing(table)
        for rule in rules:
            for _ in range(have.count(rule.line())) if rule.table == table else ():
                iptables(table, "-D", rule.chain, *shlex.split(rule.spec), check=False)


def is_ours(chain: str) -> bool:
    """``LABKIT`` or ``LABKIT-*``: a chain labkit made."""
    return chain == PORTS or chain.startswith("LABKIT-")


def labkit_rules() -> list[tuple[str, str]]:
    """Every line of ``iptables -S`` that is labkit's: its chains, the rules in them and
    the jumps to them, as (table, line)."""
    return [
        (table, line)
        for table in ("filter", "nat")
        for line in listing(table)
        if is_ours(line.split()[1]) or _jumps_to_ours(line.split())
    ]


def _jumps_to_ours(words: list[str]) -> bool:
    return any(w == "-j" and is_ours(t) for w, t in zip(words, words[1:], strict=False))


def bridges_in_rules(rules: list[tuple[str, str]] | None = None) -> set[str]:
    """The labkit bridges some rule still names (``-i``/``-o`` labkit0 or lkbr-...)."""
    found = set()
    for _, line in labkit_rules() if rules is None else rules:
        words = line.split()
        for flag, name in zip(words, words[1:], strict=False):
            if flag in ("-i", "-o") and (name == "labkit0" or name.startswith("lkbr-")):
                found.add(name)
    return found


def delete_line(table: str, line: str) -> None:
    """Undo one ``-A CHAIN SPEC`` line of ``iptables -S`` (``-D CHAIN SPEC``)."""
    words = shlex.split(line)
    if words[:1] == ["-A"]:
        iptables(table, "-D", *words[1:], check=False)


def remove_hairpin() -> None:
    """Remove the hairpin chain and the jumps to it (``portrules``: once it is empty)."""
    for jump in HAIRPIN_JUMPS:
        iptables(jump.table, "-D", jump.chain, *shlex.split(jump.spec), check=False)
    iptables("nat", "-X", HAIRPIN, check=False)


def remove_base() -> None:
    """Remove the jumps into labkit's chains, then the chains (flushed first)."""
    for jump in JUMPS + HAIRPIN_JUMPS:
        spec = shlex.split(jump.spec)
        while iptables(jump.table, "-D", jump.chain, *spec, check=False).returncode == 0:
            pass
    for table, chain in CHAINS + HAIRPIN_CHAINS:
        if iptables(table, "-F", chain, check=False).returncode == 0:
            iptables(table, "-X", chain, check=False)


# -- ip_forward -------------------------------------------------------------------------------


def enable_forwarding(orig: Path) -> None:
    """Turn on IPv4 forwarding if it is off, and note the old value in ``orig`` (once), so
    ``reset`` puts back what labkit changed and nothing else. Docker does the same."""
    if IP_FORWARD.read_text().strip() != "0":
        return
    if not orig.exists():
        orig.parent.mkdir(parents=True, exist_ok=True)
        orig.write_text("0\n")
    IP_FORWARD.write_text("1\n")


def restore_forwarding(orig: Path) -> bool:
    """Put ip_forward back as ``orig`` recorded it; False if labkit had changed nothing."""
    try:
        value = orig.read_text().strip()
    except FileNotFoundError:
        return False
    IP_FORWARD.write_text(value + "\n")
    orig.unlink()
    return True
