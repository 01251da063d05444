"""The network commands of ``labkit``, named and printed as Docker's are: ``network create``,
``ls``, ``inspect``, ``rm``, ``prune``, and ``port`` (a container's published ports).

The handlers import ``labkit.network`` when they run, so no other command pays for it, and
pyroute2 is imported only by what makes or removes a bridge (``create``, ``rm``), or reads
the host's routes to choose the default network's subnet (its first use).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

#: Docker's predefined networks that are modes, not bridges: (name, driver).
MODES = (("host", "host"), ("none", "null"))


def _mode_id(name: str) -> str:
    """A stable 64-hex id for ``host`` and ``none`` (Docker makes one per daemon)."""
    return hashlib.sha256(f"labkit network {name}".encode()).hexdigest()


def _cmd_create(args: argparse.Namespace) -> int:
    from labkit.errors import LabkitError
    from labkit.network import store

    if args.driver != "bridge":
        raise LabkitError(f"driver {args.driver} is not supported", fix="use bridge (the default)")
    print(store.create(args.name, subnet=args.subnet, gateway=args.gateway).id)
    return 0


def _rows() -> list[tuple[str, str, str]]:
    """(id, name, driver) of every network, the predefined ones included, by name."""
    from labkit.network import store

    store.default()  # like docker0, always there (defined here; its bridge comes on first use)
    rows = [(n.id, n.name, n.driver) for n in store.list_all()]
    rows += [(_mode_id(name), name, driver) for name, driver in MODES]
    return sorted(rows, key=lambda r: r[1])


def _cmd_ls(args: argparse.Namespace) -> int:
    from labkit.cli_images import _table

    rows = _rows()
    if args.quiet:
        for network_id, _, _ in rows:
            print(network_id if args.no_trunc else network_id[:12])
        return 0
    _table(
        ("NETWORK ID", "NAME", "DRIVER", "SCOPE"),
        [(i if args.no_trunc else i[:12], name, driver, "local") for i, name, driver in rows],
    )
    return 0


def inspect(name: str) -> dict[str, Any]:
    """What ``docker network inspect NAME`` shows, for one labkit network."""
    from labkit.network import ipam, store
    from labkit.network.model import mac_for

    doc: dict[str, Any] = {"Name": name, "Id": _mode_id(name), "Created": "", "Scope": "local",
                           "Driver": dict(MODES).get(name, "bridge"), "EnableIPv6": False,
                           "IPAM": {"Driver": "default", "Options": None, "Config": []},
                           "Internal": False, "Attachable": False, "Ingress": False,
                           "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
                           "Containers": {}, "Options": {}, "Labels": {}}  # fmt: skip
    if name in dict(MODES):
        return doc
    network = store.get(name)
    doc.update(Id=network.id, Created=network.created, Driver=network.driver)
    doc["IPAM"]["Config"] = [{"Subnet": network.subnet, "Gateway": network.gateway}]
    for lease in ipam.holders(network):
        endpoint = hashlib.sha256(f"{network.id}{lease.container_id}".encode()).hexdigest()
        doc["Containers"][lease.container_id] = {
            "Name": lease.name, "EndpointID": endpoint, "MacAddress": mac_for(lease.address),
            "IPv4Address": f"{lease.address}/{network.prefix}", "IPv6Address": ""}  # fmt: skip
    doc["Options"] = {"com.docker.network.bridge.name": network.bridge}
    if network.is_default:  # what Docker shows for docker0
        doc["Options"] = {"com.docker.network.bridge.default_bridge": "true",
                          "com.docker.network.bridge.enable_icc": "true",
                          "com.docker.network.bridge.enable_ip_masquerade": "true",
                          "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                          "com.docker.network.bridge.name": network.bridge,
                          "com.docker.network.driver.mtu": "1500"}  # fmt: skip
    return doc


def _cmd_inspect(args: argparse.Namespace) -> int:
    print(json.dumps([inspect(name) for name in args.names], indent=4))
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    from labkit.network import store

    for name in args.names:
        store.remove(name)
        print(name)
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from labkit.errors import LabkitError
    from labkit.network import ipam, store
    from labkit.network.model import RESERVED

    if not args.force:
        print("WARNING! This will remove all custom networks not used by at least one container.")
        if input("Are you sure you want to continue? [y/N] ").strip().lower() not in ("y", "yes"):
            return 0
    deleted = []
    for network in store.list_all():
        if network.name in RESERVED or ipam.holders(network):
            continue
        try:
            store.destroy(network)
        except LabkitError:
            continue  # a container joined it meanwhile
        deleted.append(network.name)
    if deleted:
        print("Deleted Networks:\n" + "\n".join(deleted))
    return 0


def _cmd_port(args: argparse.Namespace) -> int:
    """``docker port``: read from the container's record, where the supervisor wrote the
    ports it bound (so a random one shows as the port it is)."""
    from labkit.errors import LabkitError
    from labkit.network import ports
    from labkit.runtime import records

    record = records.find(args.container)
    found = ports.lines(record.network.get("ports", []), args.private_port or "")
    if args.private_port and not found:
        port, _, proto = args.private_port.partition("/")
        raise LabkitError(
            f"No public port '{port}/{proto or 'tcp'}' published for {args.container}"
        )
    for line in found:
        print(line)
    return 0


def _cmd_draw(args: argparse.Namespace) -> int:
    """The drawing the notebooks show, read from the kernel now (matplotlib: loaded here)."""
    from labkit.lab import net_plots

    argv = ["-o", args.output, *(["--nat"] if args.nat else []), *args.namespaces]
    return net_plots.main(argv)


def add_parsers(sub: Any) -> None:
    """Add ``labkit network ACTION`` to the ``labkit`` subcommand table ``sub``."""
    network = sub.add_parser("network", help="manage networks: create, ls, inspect, rm, prune")
    under = network.add_subparsers(dest="network_action", required=True, metavar="ACTION")

    p = under.add_parser("create", help="make a network (a bridge of its own)")
    p.add_argument("--subnet", help="CIDR, e.g. 10.202.0.0/16 (default: a free 10.2xx.0.0/16)")
    p.add_argument("--gateway", help="the bridge's address (default: the subnet's first)")
    p.add_argument("-d", "--driver", default="bridge", help="bridge (the only one)")
    p.add_argument("name", metavar="NETWORK")
    p.set_defaults(func=_cmd_create)

    for called in ("ls", "list"):
        p = under.add_parser(called, help="list networks")
        p.add_argument("-q", "--quiet", action="store_true", help="only network ids")
        p.add_argument("--no-trunc", action="store_true", help="whole ids")
        p.set_defaults(func=_cmd_ls)

    p = under.add_parser("inspect", help="a network's details, as JSON")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(func=_cmd_inspect)

    for called in ("rm", "remove"):
        p = under.add_parser(called, help="remove networks no container uses")
        p.add_argument("names", nargs="+", metavar="NETWORK")
        p.set_defaults(func=_cmd_rm)

    p = under.add_parser("prune", help="remove every user network no container uses")
    p.add_argument("-f", "--force", action="store_true", help="do not ask")
    p.set_defaults(func=_cmd_prune)

    p = under.add_parser(
        "draw", help="draw the live topology (namespaces, veth pairs, bridges) as an image"
    )
    p.add_argument("-o", "--output", default="topology.png", help="the picture (PNG, SVG)")
    p.add_argument("--nat", action="store_true", help="note each one's MASQUERADE rules")
    p.add_argument(
        "namespaces", nargs="*", metavar="NS", help="host, a netns name or a PID "
        "(default: the host and every running labkit container)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_draw)

    p = sub.add_parser("port", help="a running container's published ports, as `docker port`")
    p.add_argument("container", help="its name or id")
    p.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    p.set_defaults(func=_cmd_port)
