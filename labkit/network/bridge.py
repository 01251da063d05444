"""A network's bridge: a virtual switch in the host's kernel, with the gateway address on it.

Every container's veth lands on its network's bridge (``master``), so containers on one
network reach each other at layer 2; the address on the bridge (the network's first host,
``.1``) makes the host their router, and the route the kernel adds for it
(``10.200.0.0/16 dev labkit0``) is how replies find their way back. Spanning tree is off (a
bridge with no loops needs none), so a port forwards as soon as it is plugged in.

This is the one place that talks netlink through pyroute2. pyroute2 takes ~100 ms to
import, so it is imported inside the functions that make or remove a bridge or read the
host's routes, never when a container starts on a bridge that exists already. Its
synchronous ``IPRoute`` cannot run inside a running asyncio loop (a Jupyter kernel's):
this module is for the CLI and the supervisor.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from labkit import paths
from labkit.errors import LabkitError

#: The alias a bridge is made with: "labkit network of NET_DIR".
ALIAS_PREFIX = "labkit network of "


class Route(NamedTuple):
    """Somewhere the host already sends packets: a destination network and its device."""

    network: ipaddress.IPv4Network
    device: str


def exists(name: str) -> bool:
    """Whether the host has a link called ``name`` (sysfs: no netlink, no pyroute2)."""
    return os.path.exists(f"/sys/class/net/{name}")


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """pyroute2's NetlinkError as the OSError it is (errno and all), naming the job."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as exc:
        raise OSError(exc.code, f"{what}: {os.strerror(exc.code)}") from None


def create(name: str, gateway: str, prefix: int) -> None:
    """Make bridge ``name`` with ``gateway/prefix`` on it and bring it up.

    Each part is done only if missing, so a bridge half-made by a crash is completed."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr, _errors(f"make bridge {name} with {gateway}/{prefix}"):
        if not ipr.link_lookup(ifname=name):
            ipr.link("add", ifname=name, kind="bridge", br_stp_state=0)
        index = ipr.link_lookup(ifname=name)[0]
        have = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)}
        if have and (gateway, prefix) not in have:  # another NET_DIR's network, or a stranger
            theirs = ", ".join(f"{a}/{p}" for a, p in sorted(have))
            raise LabkitError(
                f"bridge {name} exists with {theirs}, not {gateway}/{prefix}",
                fix="remove what labkit left with {reset}",
            )
        ipr.link("set", index=index, ifalias=ALIAS_PREFIX + str(paths.NET_DIR))
        if not have:
            broadcast = str(ipaddress.ip_interface(f"{gateway}/{prefix}").network.broadcast_address)
            ipr.addr("add", index=index, address=gateway, prefixlen=prefix, broadcast=broadcast)
        ipr.link("set", index=index, state="up")


def owner(name: str) -> str | None:
    """The NET_DIR whose network made bridge ``name`` (its alias, ``ip link`` shows it), or
    None if it has no alias (or is gone). Every NET_DIR names its default bridge
    ``labkit0``, and tests use NET_DIRs of their own: the alias tells whose it is."""
    try:
        alias = Path(f"/sys/class/net/{name}/ifalias").read_text().strip()
    except OSError:
        return None
    return alias.removeprefix(ALIAS_PREFIX) if alias.startswith(ALIAS_PREFIX) else None


def is_foreign(name: str) -> bool:
    """The bridge exists and another NET_DIR's network made it: not this one's to touch."""
    made_by = owner(name)
    return made_by is not None and made_by != str(paths.NET_DIR)


def address_of(name: str) -> tuple[str, str] | None:
    """(subnet, gateway) of a bridge this NET_DIR made (``10.200.0.0/16``, ``10.200.0.1``),
    or None when there is no such bridge, another NET_DIR made it, or it has no address."""
    if not exists(name) or is_foreign(name):
        return None
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        for a in ipr.get_addr(index=found[0], family=2) if found else []:
            gateway, prefix = a.get("address"), a["prefixlen"]
            return str(ipaddress.ip_interface(f"{gateway}/{prefix}").network), gateway
    return None


def delete(name: str) -> bool:
    """Remove the bridge (its ports are let go, its route goes with its address).
    False if there was none."""
    if not exists(name):
        return False
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr, _errors(f"delete {name}"):
            ipr.link("del", ifname=name)
    except OSError as exc:
        if exc.errno != errno.ENODEV:  # someone removed it first: fine
            raise
        return False
    return True


def ports(name: str) -> list[str]:
    """The links plugged into bridge ``name`` (sysfs ``brif/``)."""
    try:
        return sorted(os.listdir(f"/sys/class/net/{name}/brif"))
    except OSError:
        return []


def host_routes() -> list[Route]:
    """Every IPv4 network the host already reaches directly: the routes of every routing
    table (but the default route, which covers everything) and the networks of every
    address. A new network's subnet must overlap none of them, or the kernel would not know
    which way to send a packet (and the bridge's own route would shadow, or be shadowed)."""
    from pyroute2 import IPRoute

    found: list[Route] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        routes = sorted(ipr.get_routes(family=2), key=lambda r: r["table"] != 254)
        for r in routes:  # the main table first: that is the route `ip route` shows
            if r["dst_len"] and r.get("dst"):
                net = ipaddress.ip_network(f"{r.get('dst')}/{r['dst_len']}", strict=False)
                found.append(Route(net, names.get(r.get("oif"), "?")))
        for a in ipr.get_addr(family=2):
            net = ipaddress.ip_interface(f"{a.get('address')}/{a['prefixlen']}").network
            found.append(Route(net, names.get(a["index"], "?")))
    return list(dict.fromkeys(found))
