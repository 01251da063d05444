"""Container networking built by hand for notebook 05, in scratch network namespaces.

A *world* (``ip netns add``): two "containers" ``labkit-nb05-a`` and ``-b`` (``eth0``, 10.55.0.2
and .3/24); a "router" that plays the host, with a bridge ``lkn5br0`` (10.55.0.1/24, as docker0
is 172.17.0.1/16), the containers' veth ends plugged in, and forwarding setting and iptables
tables of its own; an "outside" at 198.51.100.1 (TEST-NET-2: no real host has it), joined to the
router's uplink ``lkn5up``. No link joins a world to the host's namespace, so no packet of it
can leave the machine, and the host's tables are never touched. The router starts as a fresh
host (no forwarding; ``docker=True``: FORWARD as Docker leaves a host's, policy DROP and
bridge-to-bridge accepted); the containers have no default route. ``nat_steps`` adds the rest.

Namespaces are ``labkit-nb05-*``, links ``lkn5*``. A guard process removes a world once the
process that made it is gone, however it ended; ``remove_all`` removes the notebook's own.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from labkit.lab import netns_guard

PREFIX = "labkit-nb05"


@dataclass(frozen=True)
class World:
    """The names and addresses of one world (nothing is made until ``build``)."""

    prefix: str = PREFIX
    containers: tuple[str, ...] = ("a", "b")
    subnet: str = "10.55.0.0/24"
    gateway: str = "10.55.0.1"  # the bridge's address: the containers' way out
    bridge: str = "lkn5br0"
    uplink: str = "lkn5up"  # the router's end of the cable to the outside
    uplink_address: str = "198.51.100.2"
    outside_address: str = "198.51.100.1"

    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    @property
    def outside(self) -> str:
        return f"{self.prefix}-outside"

    def ns(self, container: str) -> str:
        return f"{self.prefix}-{container}"

    def address(self, container: str) -> str:
        return f"10.55.0.{2 + self.containers.index(container)}"

    def host_end(self, container: str) -> str:
        return f"lkn5{container}"  # the router's end, as Docker's vethXXXX on the host

    def namespaces(self) -> list[str]:
        return [self.ns(c) for c in self.containers] + [self.router, self.outside]

    def values(self) -> dict[str, str]:
        """The names a learner's cell gets (also as $NAME in ``sh``)."""
        first = self.containers[0]
        return dict(
            ROUTER=self.router, A=self.ns(first), OUTSIDE=self.outside, BRIDGE=self.bridge,
            UPLINK=self.uplink, SUBNET=self.subnet, GATEWAY=self.gateway,
            ADDR_A=self.address(first), OUTSIDE_ADDR=self.outside_address,
        )  # fmt: skip


# -- the commands, part by part ------------------------------------------------------------------


def steps(world: World, part: str) -> list[str]:
    """The commands of one part of the build: ``namespaces``, ``bridge``, a container's name,
    ``uplink``, ``router`` (its forwarding setting) or ``docker-filter`` (its FORWARD chain)."""
    r, br = world.router, world.bridge
    if part == "namespaces":
        return [f"ip netns add {name}" for name in world.namespaces()]
    if part == "bridge":
        return [
            f"ip -n {r} link add {br} type bridge",
            f"ip -n {r} addr add {world.gateway}/24 dev {br}",
            f"ip -n {r} link set {br} up",
        ]
    if part in world.containers:
        ns, end = world.ns(part), world.host_end(part)
        return [
            f"ip -n {r} link add {end} type veth peer name eth0 netns {ns}",
            f"ip -n {r} link set {end} master {br} up",
            f"ip -n {ns} addr add {world.address(part)}/24 dev eth0",
            f"ip -n {ns} link set eth0 up",
            f"ip -n {ns} link set lo up",
        ]
    if part == "uplink":
        return [
            f"ip -n {r} link add {world.uplink} type veth peer name eth0 netns {world.outside}",
            f"ip -n {r} addr add {world.uplink_address}/24 dev {world.uplink}",
            f"ip -n {r} link set {world.uplink} up",
            f"ip -n {world.outside} addr add {world.outside_address}/24 dev eth0",
            f"ip -n {world.outside} link set eth0 up",
        ]
    if part == "router":  # a new namespace copies the host's setting: start from a fresh host's
        return [f"ip netns exec {r} sysctl -w net.ipv4.ip_forward=0"]
    if part == "docker-filter":  # what Docker does to the filter table of a host it runs on
        return [
            f"ip netns exec {r} iptables -P FORWARD DROP",
            f"ip netns exec {r} iptables -A FORWARD -i {br} -o {br} -j ACCEPT",
        ]
    raise ValueError(f"no part {part!r}")


def nat_steps(world: World) -> list[str]:
    """What lets container a reach the outside, as Docker sets it up for docker0."""
    r, br, a = world.router, world.bridge, world.ns(world.containers[0])
    return [
        f"ip -n {a} route add default via {world.gateway}",
        f"ip netns exec {r} sysctl -w net.ipv4.ip_forward=1",
        f"ip netns exec {r} iptables -A FORWARD -i {br} ! -o {br} -j ACCEPT",
        f"ip netns exec {r} iptables -A FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED"
        " -j ACCEPT",
        f"ip netns exec {r} iptables -t nat -A POSTROUTING -s {world.subnet} ! -o {br}"
        " -j MASQUERADE",
    ]


def run(commands: list[str], echo: bool = True) -> None:
    """Run each command with bash; with ``echo`` print it and its output as a terminal does."""
    if echo:
        from labkit.lab.teach import terminal

        for command in commands:
            terminal(command)
        return
    for command in commands:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"`{command}` exited {done.returncode}: {done.stderr.strip()}")


# -- making and removing worlds ------------------------------------------------------------------


def start(world: World) -> World:
    """Make ready to build ``world``: remove a world of the same names left from an earlier run,
    and start its guard. ``build`` calls it; a notebook that builds part by part calls it first."""
    remove(world)
    netns_guard.guard(world.prefix, world.namespaces())
    return world


def build(world: World | None = None, echo: bool = False, docker: bool = False) -> World:
    """Build a whole world (an earlier one of the same names is removed first); with
    ``docker``, the router's FORWARD chain as Docker leaves a host's."""
    world = start(world or World())
    parts = ["namespaces", "bridge", *world.containers, "uplink", "router"]
    try:
        for part in parts + (["docker-filter"] if docker else []):
            run(steps(world, part), echo=echo)
    except BaseException:
        remove(world)
        raise
    return world


def remove(world: World) -> list[str]:
    """Delete a world's namespaces (their links go with them); returns the names deleted."""
    return sorted(set(netns_guard.release(world.prefix) + netns_guard.delete(world.namespaces())))


@contextlib.contextmanager
def empty_namespaces(*names: str, create: bool = True) -> Iterator[list[str]]:
    """Fresh, empty network namespaces ``labkit-nb05-<name>`` for a ``with`` block (earlier ones
    of the same names are removed first, and these are removed after it). With ``create``
    False the block makes them itself (``ip netns add``, shown to the learner)."""
    full = [f"{PREFIX}-{n}" for n in names]
    key = "+".join(full)
    netns_guard.release(key)
    netns_guard.delete(full)
    netns_guard.guard(key, full)
    try:
        if create:
            run([f"ip netns add {name}" for name in full], echo=False)
        yield full
    finally:
        netns_guard.release(key)


def existing(prefix: str = PREFIX) -> list[str]:
    """The network namespaces whose names start with ``prefix-``."""
    return netns_guard.existing(prefix)


def remove_all() -> list[str]:
    """Remove everything this process made, and the notebook's own world: every
    ``labkit-nb05-*`` namespace but another process's check (``labkit-nb05-x<pid>-*``)."""
    gone = netns_guard.release_all(PREFIX)
    others = netns_guard.others_checks(PREFIX)
    gone += netns_guard.delete([n for n in existing() if n not in others])
    return sorted(set(gone))


def check_world() -> World:
    """A world of this process's own for one check (``labkit-nb05-x<pid>-*``), with one
    container: built, with a guard; ``remove`` it when done."""
    return build(World(prefix=f"{PREFIX}-x{os.getpid()}", containers=("a",)), docker=True)
