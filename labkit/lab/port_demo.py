"""Publishing a port (``-p 8081:80``) built by hand for notebook 06, in scratch network namespaces.

A *world* (``ip netns add``), notebook 05's as it ended, with a web server in the container:

* ``labkit-nb06-web``, the "container": ``eth0`` 10.66.0.2/24 on the router's bridge, and
  busybox httpd on port 80, whose page ``/cgi-bin/who`` says where each request came from
  (files under ``/run/labkit-nb06/www``). It has no default route yet;
* ``labkit-nb06-router`` plays the host: bridge ``lkn6br0`` (10.66.0.1/24, its gateway) with the
  container's veth end ``lkn6web`` plugged in, forwarding on, the FORWARD chain as Docker
  leaves a host's (policy DROP) and MASQUERADE for the subnet; uplink ``lkn6up`` 198.51.100.2;
* ``labkit-nb06-outside``, a client at 198.51.100.1 (TEST-NET-2: no real host has it).

No link joins a world to the host's namespace, and the host's tables are never touched.
``steps(world, "publish")`` is what publishing adds (Docker's layout: a nat chain of its own,
here ``LABKIT``, jumped to from PREROUTING, with the DNAT rule; an ACCEPT in FORWARD; and the
container's way back); ``"localhost"`` what the router's own 127.0.0.1 needs on top (hairpin
NAT); ``"proxy"`` a userland proxy instead (busybox nc, as docker-proxy).

Namespaces are ``labkit-nb06-*``, links ``lkn6*``. A guard process kills what runs in a world
and removes it once the process that made it is gone, however it ended.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from labkit.lab import netns_guard
from labkit.lab.net_demo import run

PREFIX = "labkit-nb06"
WHO = "/cgi-bin/who"
#: The page: busybox httpd runs it for every request of /cgi-bin/who (REMOTE_ADDR is
#: "[::ffff:A.B.C.D]": httpd listens on an IPv6 socket that takes IPv4 too).
_SCRIPT = """\
#!/bin/sh
echo "Content-Type: text/plain"
echo
from=${{REMOTE_ADDR#"[::ffff:"}}
echo "web ({address}) answers: you came from ${{from%"]"}} port $REMOTE_PORT"
"""


@dataclass(frozen=True)
class World:
    """The names and addresses of one world (nothing is made until ``build``)."""

    prefix: str = PREFIX
    subnet: str = "10.66.0.0/24"
    gateway: str = "10.66.0.1"  # the bridge's address
    address: str = "10.66.0.2"  # the container's
    bridge: str = "lkn6br0"
    port_link: str = "lkn6web"  # the router's end of the container's cable
    uplink: str = "lkn6up"
    uplink_address: str = "198.51.100.2"  # the router's own address, as a host's eth0
    outside_address: str = "198.51.100.1"
    host_port: int = 8081
    container_port: int = 80
    chain: str = "LABKIT"  # Docker's is DOCKER

    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    @property
    def web(self) -> str:
        return f"{self.prefix}-web"

    @property
    def outside(self) -> str:
        return f"{self.prefix}-outside"

    @property
    def www(self) -> Path:
        return Path("/run", self.prefix, "www")

    def namespaces(self) -> list[str]:
        return [self.web, self.router, self.outside]

    def url(self, host: str, port: int | None = None, path: str = WHO) -> str:
        return f"http://{host}:{port or self.host_port}{path}"

    def values(self) -> dict[str, object]:
        """The names a learner's cell gets (also as $NAME in ``sh``)."""
        return dict(
            ROUTER=self.router, WEB=self.web, OUTSIDE=self.outside, BRIDGE=self.bridge,
            UPLINK=self.uplink, GATEWAY=self.gateway, WEB_ADDR=self.address,
            ROUTER_ADDR=self.uplink_address, OUTSIDE_ADDR=self.outside_address,
            HOST_PORT=str(self.host_port), WEB_PORT=str(self.container_port),
        )  # fmt: skip


def steps(world: World, part: str) -> list[str]:
    """The commands of one part: ``namespaces``, ``bridge``, ``web``, ``uplink``, ``router``,
    ``server``, then ``publish``, ``localhost``, ``docker-output`` or ``proxy``."""
    r, br, web = world.router, world.bridge, world.web
    ipt, nat = f"ip netns exec {r} iptables", f"ip netns exec {r} iptables -t nat"
    dport = f"-p tcp -m tcp --dport {world.host_port}"
    if part == "namespaces":
        return [f"ip netns add {name}" for name in world.namespaces()]
    if part == "bridge":
        return [f"ip -n {r} link add {br} type bridge",
                f"ip -n {r} addr add {world.gateway}/24 dev {br}",
                f"ip -n {r} link set {br} up", f"ip -n {r} link set lo up"]  # fmt: skip
    if part == "web":
        return [f"ip -n {r} link add {world.port_link} type veth peer name eth0 netns {web}",
                f"ip -n {r} link set {world.port_link} master {br} up",
                f"ip -n {web} addr add {world.address}/24 dev eth0",
                f"ip -n {web} link set eth0 up", f"ip -n {web} link set lo up"]  # fmt: skip
    if part == "uplink":
        out = world.outside
        return [f"ip -n {r} link add {world.uplink} type veth peer name eth0 netns {out}",
                f"ip -n {r} addr add {world.uplink_address}/24 dev {world.uplink}",
                f"ip -n {r} link set {world.uplink} up",
                f"ip -n {out} addr add {world.outside_address}/24 dev eth0",
                f"ip -n {out} link set eth0 up", f"ip -n {out} link set lo up"]  # fmt: skip
    if part == "router":  # notebook 05's host: forwarding, Docker's FORWARD chain, MASQUERADE
        return [f"ip netns exec {r} sysctl -w net.ipv4.ip_forward=1",
                f"{ipt} -P FORWARD DROP",
                f"{ipt} -A FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                f"{ipt} -A FORWARD -i {br} ! -o {br} -j ACCEPT",
                f"{ipt} -A FORWARD -i {br} -o {br} -j ACCEPT",
                f"{nat} -A POSTROUTING -s {world.subnet} ! -o {br} -j MASQUERADE"]  # fmt: skip
    if part == "server":
        return [f"ip netns exec {web} busybox httpd -p {world.container_port} -h {world.www}"]
    if part == "publish":  # what -p 8081:80 adds, as Docker adds it
        to = f"{world.address}:{world.container_port}"
        return [f"ip -n {web} route add default via {world.gateway}",
                f"{nat} -N {world.chain}",
                f"{nat} -A PREROUTING -m addrtype --dst-type LOCAL -j {world.chain}",
                f"{nat} -A {world.chain} ! -i {br} {dport} -j DNAT --to-destination {to}",
                f"{ipt} -A FORWARD -d {world.address}/32 ! -i {br} -o {br} -p tcp -m tcp "
                f"--dport {world.container_port} -j ACCEPT"]  # fmt: skip
    if part == "localhost":  # the router's own connections, 127.0.0.1 too: hairpin NAT
        return [f"{nat} -A OUTPUT -m addrtype --dst-type LOCAL -j {world.chain}",
                f"ip netns exec {r} sysctl -w net.ipv4.conf.{br}.route_localnet=1",
                f"{nat} -A POSTROUTING -s 127.0.0.0/8 -o {br} -j MASQUERADE"]  # fmt: skip
    if part == "docker-output":  # Docker's OUTPUT jump: everything local but 127.0.0.0/8
        return [f"{nat} -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {world.chain}"]
    if part == "proxy":  # a userland proxy: a process per connection, as inetd would run it
        return [f"ip netns exec {r} busybox nc -ll -p {world.host_port} -e busybox nc "
                f"{world.address} {world.container_port} > /dev/null 2>&1 &"]  # fmt: skip
    raise ValueError(f"no part {part!r}")


# -- making and removing worlds ------------------------------------------------------------------

#: The guard of a world (``netns_guard``): what it made goes even if the kernel is killed.
guard, delete, release = netns_guard.guard, netns_guard.delete, netns_guard.release


def remove(world: World) -> list[str]:
    """Kill what runs in a world, delete its namespaces and files; the namespaces deleted."""
    gone = release(world.prefix) + delete(world.namespaces(), str(world.www.parent))
    return sorted(set(gone))


def start(world: World) -> World:
    """Make ready to build ``world``: remove one of the same names left from an earlier run,
    start its guard, and write the web server's files."""
    remove(world)
    guard(world.prefix, world.namespaces(), str(world.www.parent))
    (world.www / "cgi-bin").mkdir(parents=True, exist_ok=True)
    (world.www / "index.html").write_text(f"hello from web, {world.address}\n")
    script = world.www / "cgi-bin" / "who"
    script.write_text(_SCRIPT.format(address=f"{world.address}:{world.container_port}"))
    script.chmod(0o755)
    return world


PARTS = ["namespaces", "bridge", "web", "uplink", "router", "server"]


def build(world: World | None = None, *extra: str, echo: bool = False) -> World:
    """Build a whole world (an earlier one of the same names goes first), then ``extra`` parts
    ("publish", ...)."""
    world = start(world or World())
    try:
        for part in PARTS + list(extra):
            run(steps(world, part), echo=echo)
    except BaseException:
        remove(world)
        raise
    return world


def check_world(*extra: str) -> World:
    """A world of this process's own for one check (``labkit-nb06-x<pid>-*``); ``remove`` it."""
    return build(World(prefix=f"{PREFIX}-x{os.getpid()}"), *extra)


def existing(prefix: str = PREFIX) -> list[str]:
    """The network namespaces whose names start with ``prefix-``."""
    return netns_guard.existing(prefix)


def remove_all() -> list[str]:
    """Remove everything this process made, and the notebook's own: every ``labkit-nb06-*``
    namespace but another process's check (``labkit-nb06-x<pid>-*``), and its files."""
    gone = netns_guard.release_all(PREFIX)
    others = netns_guard.others_checks(PREFIX)
    gone += delete([n for n in existing() if n not in others], str(World().www.parent))
    return sorted(set(gone))
