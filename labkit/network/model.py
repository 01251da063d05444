"""What a network and a container's place on it are, as plain data that fits in JSON.

A ``Network`` is a definition: a name, a 64-hex id (Docker's form), the bridge device that
carries it, its subnet and gateway. An ``Attachment`` is one container on one network: the
address it leased, its MAC, and the host end of its veth pair. The runtime stores the
attachment in the container's record, so whoever removes the container (the supervisor, a
later ``rm``, ``reset`` after a crash) knows what to unplug without asking anyone.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any

#: Docker's predefined networks: ``bridge`` is made on first use, the other two are modes.
DEFAULT = "bridge"
RESERVED = ("bridge", "host", "none")
#: The default network's bridge device (Docker's is docker0).
DEFAULT_BRIDGE = "labkit0"
#: User networks' bridges: ``lkbr-`` and the first 8 hex of the id (Docker: ``br-`` + 12).
BRIDGE_PREFIX = "lkbr-"
#: A container's end of its veth pair on the host: ``lkv`` + 8 hex of the container id.
VETH_PREFIX = "lkv"


@dataclass
class Network:
    """A network definition (``NET_DIR/networks/<name>.json``)."""

    name: str
    id: str
    bridge: str
    subnet: str  # "10.200.0.0/16"
    gateway: str  # "10.200.0.1", the bridge's own address
    created: str  # RFC 3339, UTC
    driver: str = "bridge"

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Attachment:
    """One container plugged into one network (kept in the container's record)."""

    container_id: str
    container_name: str
    network: str
    network_id: str
    bridge: str
    address: str  # "10.200.0.2"
    prefix: int  # 16
    gateway: str
    mac: str  # "02:42:0a:c8:00:02"
    host_ifname: str  # "lkv0123abcd"
    hostname: str
    directory: str = ""  # where its hosts, resolv.conf and hostname files are
    # Its published ports (``ports.Published`` as dicts: proto, container_port, host_ip,
    # host_port), and how the host's loopback reaches them: the supervisor's userland proxy,
    # or (False: Docker's --userland-proxy=false) hairpin NAT. See ``portrules``.
    ports: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    userland_proxy: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attachment:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def bridge_name(network_id: str) -> str:
    """A user network's bridge device (15 characters at most: IFNAMSIZ is 16 with the NUL)."""
    return BRIDGE_PREFIX + network_id[:8]


def host_ifname(container_id: str) -> str:
    return VETH_PREFIX + container_id[:8]


def mac_for(address: str) -> str:
    """Docker's rule: ``02:42`` then the four bytes of the IPv4 address. 02 sets the
    "locally administered" bit, so it never clashes with a vendor's MAC; deriving it from
    the address means two containers on one network can never share one."""
    octets = ipaddress.IPv4Address(address).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)
