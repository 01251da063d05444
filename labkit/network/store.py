"""Network definitions: ``NET_DIR/networks/<name>.json``, one per network, host-wide.

A definition is what Docker keeps for ``docker network create``: a name, an id, a subnet
and its gateway. The bridge and rules that carry it are made from it (``host.make``). The
subnet is chosen, or checked, against every route and address the host already has
(docker0's 172.17.0.0/16, the uplink's network...) and every other labkit network: two
networks on one host must not overlap, or the kernel could not tell where a packet goes.

The default network, ``bridge`` on device ``labkit0``, is defined on first use with the
first free /16 of 10.200.0.0 to 10.254.0.0. Changes happen under the network lock.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
from datetime import UTC, datetime

from labkit.errors import LabkitError
from labkit.network import bridge, host, ipam, netdir
from labkit.network.model import DEFAULT, DEFAULT_BRIDGE, RESERVED, Network, bridge_name

#: Docker's rule for network names.
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
#: Where subnets come from when none is given: 10.200.0.0/16, 10.201.0.0/16, ... 10.254.
POOL = tuple(ipaddress.IPv4Network(f"10.{n}.0.0/16") for n in range(200, 255))

Taken = list[tuple[ipaddress.IPv4Network, str]]  # a network in use, and where ("on docker0")


def valid_name(name: str) -> bool:
    return bool(NAME.match(name))


def find(name: str) -> Network | None:
    """The definition of ``name``, or None."""
    if not valid_name(name):
        return None
    data = netdir.read_json(netdir.networks_dir() / f"{name}.json")
    return None if data is None else Network.from_dict(data)


def get(name: str) -> Network:
    """The definition of ``name``; a LabkitError naming the list command if there is none."""
    network = default() if name == DEFAULT else find(name)
    if network is None:
        raise LabkitError(f"network {name} not found", fix="see the networks with {network_ls}")
    return network


def list_all() -> list[Network]:
    """Every defined network, by name."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(netdir.networks_dir().glob("*.json")):
            network = find(path.stem)
            if network is not None:
                found.append(network)
    return found


def default() -> Network:
    """The default network, defined now if this is its first use (the bridge and rules are
    made later, by ``host.ensure``, when a container needs them)."""
    network = find(DEFAULT)
    if network is not None:
        return network
    with netdir.lock():
        found = find(DEFAULT)
        if found is None:  # a labkit0 of ours outlived its definition: keep its subnet
            subnet, gateway = bridge.address_of(DEFAULT_BRIDGE) or (None, None)
            found = _define(DEFAULT, subnet, gateway, adopt=subnet is not None)
        return found


def _adopted_id() -> str | None:
    """The id our labkit0 was made for (its ready marker): its leases stay valid."""
    try:
        return netdir.ready_marker(DEFAULT_BRIDGE).read_text().strip() or None
    except FileNotFoundError:
        return None


def create(name: str, subnet: str | None = None, gateway: str | None = None) -> Network:
    """Define a user network and make its bridge and rules (as ``docker network create``)."""
    if not valid_name(name):
        raise LabkitError(
            f"invalid network name {name!r}", fix="use letters, digits and _.- (not first)"
        )
    if name in RESERVED:
        raise LabkitError(
            f"network name {name} is reserved (a predefined network)", fix="pick another name"
        )
    if gateway is not None and subnet is None:
        raise LabkitError("a gateway needs a subnet", fix="give {subnet} too")
    with netdir.lock():
        if find(name) is not None:
            raise LabkitError(
                f"network with name {name} already exists",
                fix="pick another name, or remove it first with {network_rm}",
            )
        network = _define(name, subnet, gateway)
        try:
            host.make(network)
        except BaseException:
            _forget(network)
            raise
    return network


def remove(name: str) -> None:
    """Remove a user network: refused for the predefined ones and while containers use it."""
    if name in RESERVED:
        raise LabkitError(f"{name} is a pre-defined network and cannot be removed")
    destroy(get(name))


def destroy(network: Network, ignore: frozenset[str] = frozenset()) -> None:
    """Remove ``network`` whole (bridge, rules, leases, definition), unless a live container
    other than those in ``ignore`` (ids that are being removed) holds an address on it."""
    with netdir.lock():
        users = [le for le in ipam.holders(network) if le.container_id not in ignore]
        if users:
            names = ", ".join(sorted(le.name for le in users))
            raise LabkitError(
                f"network {network.name} has active endpoints: {names}",
                fix="stop or remove those containers first",
            )
        _forget(network)
        host.remove_base_if_unused()


def _forget(network: Network) -> None:
    """Under the lock: the host side, the leases, then the definition."""
    host.teardown(network)
    ipam.drop_all(network.id)
    with contextlib.suppress(FileNotFoundError):
        (netdir.networks_dir() / f"{network.name}.json").unlink()


def _define(name: str, subnet: str | None, gateway: str | None, adopt: bool = False) -> Network:
    """Under the lock: choose or check the subnet and gateway, write the definition.
    ``adopt``: the subnet is the one on our own ``labkit0`` already (its route is no clash)."""
    taken = [t for t in _taken() if not (adopt and t[1] == f"on {DEFAULT_BRIDGE}")]
    net = _free(taken) if subnet is None else _check(subnet, taken)
    gw = _gateway(net, gateway)
    network_id = (_adopted_id() if adopt else None) or secrets.token_hex(32)
    network = Network(
        name=name,
        id=network_id,
        bridge=DEFAULT_BRIDGE if name == DEFAULT else bridge_name(network_id),
        subnet=str(net),
        gateway=str(gw),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    netdir.write_json(netdir.networks_dir() / f"{name}.json", network.to_dict())
    return network


def _taken() -> Taken:
    """Every IPv4 network in use: the host's routes and addresses, and labkit's networks."""
    from labkit.network import bridge

    taken: Taken = [(r.network, f"on {r.device}") for r in bridge.host_routes()]
    taken += [(ipaddress.IPv4Network(n.subnet), f"of network {n.name}") for n in list_all()]
    return taken


def _overlap(net: ipaddress.IPv4Network, taken: Taken) -> tuple[ipaddress.IPv4Network, str]:
    return next(((t, where) for t, where in taken if net.overlaps(t)), (net, ""))


def _free(taken: Taken) -> ipaddress.IPv4Network:
    for net in POOL:
        if not _overlap(net, taken)[1]:
            return net
    raise LabkitError(
        f"no free subnet left in {POOL[0]} to {POOL[-1]}", fix="give one with {subnet}"
    )


def _check(subnet: str, taken: Taken) -> ipaddress.IPv4Network:
    """A user's subnet: IPv4, written as a network address, room for a container, free."""
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError:
        try:
            better = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError:
            raise LabkitError(
                f"invalid subnet {subnet}", fix="write an IPv4 network, e.g. 10.202.0.0/16"
            ) from None
        raise LabkitError(f"invalid subnet {subnet}", fix=f"did you mean {better}?") from None
    if net.prefixlen > 30:
        raise LabkitError(f"subnet {net} is too small", fix="use a prefix of /30 or shorter")
    other, where = _overlap(net, taken)
    if where:
        try:
            hint = f", e.g. {_free(taken)}"
        except LabkitError:
            hint = ""
        raise LabkitError(
            f"subnet {net} overlaps {other} {where}", fix=f"pick another with {{subnet}}{hint}"
        )
    return net


def _gateway(net: ipaddress.IPv4Network, gateway: str | None) -> ipaddress.IPv4Address:
    """The bridge's address: the first host (``.1``), or the user's, if it is in the subnet."""
    if gateway is None:
        return net.network_address + 1
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise LabkitError(f"invalid gateway {gateway}", fix="write an IPv4 address") from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise LabkitError(
            f"gateway {gw} is not a host address of {net}",
            fix=f"pick one in {net}, e.g. {net.network_address + 1}",
        )
    return gw
