"""A container's network devices: a veth pair, an address, a default route, as ``ip`` makes them.

A veth pair is two network devices joined back to back: what one is sent, the other
receives. Docker's default network puts one end in the container's network namespace as
``eth0`` and plugs the other, on the host, into a bridge (``docker0``) that joins it to the
other containers' ends. Done in two places, as Docker does between ``runc create`` and
``runc start``:

* the **supervisor**, on the host, makes the pair (``add_veth``): one netlink message that
  creates both ends, puts the peer straight into the container's network namespace, plugs
  the host end into the bridge and brings it up. Nothing is left half-made if the kernel
  refuses any of it, and the peer never appears on the host;
* the container's **PID 1**, inside its new network namespace, gives ``eth0`` its address
  and default route (``configure_inside``). A new network namespace has only ``lo``, and
  even that is down.

Each function says which ``ip`` command sends the same message (``strace -e sendmsg ip ...``
shows it); ``labkit.kernel.netlink`` is how a message is put together and answered.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from labkit.kernel.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    RTM_DELLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    Netlink,
    attr,
)
from labkit.kernel.stage import stage

IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, which flags change
IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst/src length, tos, table, protocol,
#                                      scope, type, flags

# Link attributes (linux/if_link.h), and those nested in IFLA_LINKINFO (linux/veth.h).
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_NET_NS_PID = 18, 19
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFF_UP = 0x1
# Address attributes (linux/if_addr.h) and route attributes and values (linux/rtnetlink.h).
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_GATEWAY = 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

#: ``ip ... add``: create it, and fail (EEXIST) if it is there already.
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
#: ``ip ... set`` and ``del``: an object that must exist (ENODEV if it does not).
CHANGE = NLM_F_REQUEST | NLM_F_ACK


def _ifinfo(up: bool = False) -> bytes:
    """An ifinfomsg. Its index 0 means "the link named by IFLA_IFNAME"; ``up`` sets IFF_UP
    and says it is the flag to change (ifi_change), leaving the others as they are."""
    flags = IFF_UP if up else 0
    return IFINFO.pack(socket.AF_UNSPEC, 0, 0, flags, flags)


def _index(name: str, what: str) -> int:
    """The interface index of link ``name`` in the caller's network namespace."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise OSError(
            errno.ENODEV, f"{what}: {os.strerror(errno.ENODEV)} (no link named {name})"
        ) from None


def _mac(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return raw


def _ipv4(text: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise ValueError(f"not an IPv4 address: {text!r}") from None


def link_exists(name: str) -> bool:
    """Is there a link ``name`` in the caller's network namespace? (Not /sys/class/net: it
    lists the namespace of whoever mounted /sys, which after an unshare is not ours.)"""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def add_veth(
    host: str,
    peer: str,
    peer_pid: int,
    master: str | None = None,
    peer_mac: str | None = None,
    mtu: int | None = None,
) -> None:
    """Create a veth pair: ``host`` stays in the caller's netns (enslaved to bridge ``master``
    if given, and set up); ``peer`` is created directly inside the network namespace of
    process ``peer_pid``, with MAC ``peer_mac`` ("02:42:0a:c8:00:05").

    The one message of ``ip link add HOST up master MASTER mtu MTU type veth peer name PEER
    netns PEER_PID address PEER_MAC mtu MTU``::

        RTM_NEWLINK  ifinfomsg(flags=IFF_UP)  IFLA_IFNAME HOST  IFLA_MTU  IFLA_MASTER index
          IFLA_LINKINFO
            IFLA_INFO_KIND "veth"
            IFLA_INFO_DATA
              VETH_INFO_PEER  ifinfomsg()  IFLA_IFNAME PEER  IFLA_NET_NS_PID  IFLA_ADDRESS
    """
    what = f"add veth {host}"
    peer_attrs = [attr(IFLA_IFNAME, peer), attr(IFLA_NET_NS_PID, peer_pid)]
    host_attrs = [attr(IFLA_IFNAME, host)]
    if peer_mac:
        peer_attrs.append(attr(IFLA_ADDRESS, _mac(peer_mac)))
    if mtu:
        peer_attrs.append(attr(IFLA_MTU, mtu))
        host_attrs.append(attr(IFLA_MTU, mtu))
    if master:
        host_attrs.append(attr(IFLA_MASTER, _index(master, what)))
    # The peer's payload is a whole link description of its own: an ifinfomsg, then attributes.
    peer_info = attr(VETH_INFO_PEER, _ifinfo() + b"".join(peer_attrs))
    host_attrs.append(
        attr(IFLA_LINKINFO, [attr(IFLA_INFO_KIND, "veth"), attr(IFLA_INFO_DATA, [peer_info])])
    )
    hints = {errno.ESRCH: f"no process {peer_pid} whose network namespace could hold {peer}"}
    with Netlink() as nl:
        nl.request(RTM_NEWLINK, CREATE, _ifinfo(up=True) + b"".join(host_attrs), what, hints)


def delete_link(name: str) -> bool:
    """``ip link del NAME``: True if it existed. Deleting either end of a veth deletes both,
    and a network namespace deletes its links when its last process exits."""
    try:
        with Netlink() as nl:
            nl.request(RTM_DELLINK, CHANGE, _ifinfo() + attr(IFLA_IFNAME, name), f"delete {name}")
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return False
        raise
    return True


def set_up(name: str) -> None:
    """``ip link set NAME up``: a veth carries packets once *both* ends are up."""
    with Netlink() as nl:
        nl.request(
            RTM_NEWLINK, CHANGE, _ifinfo(up=True) + attr(IFLA_IFNAME, name), f"set {name} up"
        )


def add_address(name: str, address: str, prefix: int) -> None:
    """``ip addr add ADDRESS/PREFIX brd + dev NAME``: an IPv4 address, and the broadcast
    address of its subnet (all host bits set), which ``ip`` leaves out for a /31 or /32."""
    what = f"add address {address}/{prefix} to {name}"
    if not 0 <= prefix <= 32:
        raise ValueError(f"{what}: a prefix length is 0 to 32")
    local = _ipv4(address)
    attrs = attr(IFA_LOCAL, local) + attr(IFA_ADDRESS, local)
    if prefix <= 30:
        host_bits = (1 << (32 - prefix)) - 1
        (number,) = struct.unpack("!I", local)
        attrs += attr(IFA_BROADCAST, struct.pack("!I", number | host_bits))
    body = IFADDR.pack(socket.AF_INET, prefix, 0, RT_SCOPE_UNIVERSE, _index(name, what)) + attrs
    with Netlink() as nl:
        nl.request(RTM_NEWADDR, CREATE, body, what)


def add_default_route(gateway: str) -> None:
    """``ip route add default via GATEWAY``: destination 0.0.0.0/0 in the main table. The
    kernel finds the device itself: the one whose subnet holds the gateway."""
    what = f"add default route via {gateway}"
    rtmsg = RTMSG.pack(
        socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
    )
    with Netlink() as nl:
        nl.request(RTM_NEWROUTE, CREATE, rtmsg + attr(RTA_GATEWAY, _ipv4(gateway)), what)


@stage(
    "network: eth0",
    fix="the container needs a network namespace of its own and CAP_NET_ADMIN in it "
    "(configure it before capabilities are dropped); then {doctor}",
)
def configure_inside(config: dict) -> None:
    """lo up always; if config: eth0 (config["interface"], default "eth0") gets
    config["address"]/config["prefix"], goes up, and a default route via config["gateway"].

    Run by the container's PID 1 in its own network namespace, after the supervisor has put
    eth0 there: the socket talks about the namespace the process is in.
    """
    set_up("lo")
    if not config:
        return
    name = config.get("interface", "eth0")
    add_address(name, config["address"], config["prefix"])
    set_up(name)
    if config.get("gateway"):
        add_default_route(config["gateway"])
