"""The runtime's entry points: a container onto a network, and off it.

Docker plumbs a container's network between ``runc create`` and ``runc start``; labkit does
it in the same gap, in three calls:

1. ``prepare`` (before the helper starts): resolve the network mode, make sure the network
   exists on the host (``host.ensure``: nothing to do in the common case), lease an
   address, and write the container's hosts, resolv.conf and hostname files. A bad mode or
   an unknown network is refused before anything is made, and a failure after the lease
   gives it back: nothing is left half-made.
2. ``plug`` (PID 1 exists, waiting for "go"): one netlink message makes the veth pair,
   ``lkv<id>`` on the bridge and ``eth0`` inside the container's network namespace. This is
   labkit's own stdlib netlink (``kernel.netdev``), not pyroute2: it runs on every start.
   PID 1 then gives eth0 its address and route from inside (``inside_config``). Published
   ports get their iptables rules here (``portrules``; their host sockets were bound before
   anything was made, ``ports``); a container without any runs no iptables at all.
3. ``unplug`` (the container is gone, or being removed; after a crash too): delete the host
   end if it is still there, withdraw its ports, give the address back, tell the peers.

``host`` and ``none`` are modes, not networks: the host's network namespace, or one with
only ``lo``. They get no attachment.
"""

from __future__ import annotations

from pathlib import Path

from labkit.errors import LabkitError
from labkit.network import files, host, ipam, store
from labkit.network.model import DEFAULT, Attachment, Network, host_ifname, mac_for

#: The modes that are not a network of their own.
NO_ATTACHMENT = ("host", "none")


def resolve(mode: str) -> Network:
    """The network a mode names (``bridge``: the default, defined on first use)."""
    if mode == DEFAULT:
        return store.default()
    if not store.valid_name(mode):
        raise LabkitError(
            f"invalid network mode {mode!r}",
            fix="use bridge, host, none or a network from {network_ls}",
        )
    return store.get(mode)


def prepare(
    container_id: str,
    name: str,
    hostname: str,
    mode: str,
    directory: Path,
    ports: list[dict] | None = None,
    userland_proxy: bool = True,
) -> Attachment | None:
    """Everything before the container exists: its network, address and files (see above).
    None for ``host`` and ``none``. ``ports``: its published ports, bound already."""
    if mode in NO_ATTACHMENT:
        return None
    network = resolve(mode)
    host.ensure(network)
    address = ipam.take(network, container_id, name, hostname, str(directory))
    try:
        att = Attachment(
            container_id=container_id,
            container_name=name,
            network=network.name,
            network_id=network.id,
            bridge=network.bridge,
            address=address,
            prefix=network.prefix,
            gateway=network.gateway,
            mac=mac_for(address),
            host_ifname=host_ifname(container_id),
            hostname=hostname,
            directory=str(directory),
            ports=list(ports or []),
            userland_proxy=userland_proxy,
        )
        user = not network.is_default  # only user networks resolve names (as Docker's)
        files.write(directory, att, files.peers(network.id, container_id) if user else [])
        if user:
            files.refresh(network.id, skip=container_id)
    except BaseException:
        ipam.release(network, address, container_id)
        raise
    return att


def plug(att: Attachment, pid: int) -> None:
    """Put ``eth0`` into the network namespace of process ``pid`` (PID 1), its other end on
    the bridge, and note PID 1 in the lease."""
    from labkit.kernel import netdev

    netdev.add_veth(att.host_ifname, "eth0", pid, master=att.bridge, peer_mac=att.mac)
    # The lease notes the ports before their rules exist: whoever reclaims it after a crash
    # (the next ``take`` of this address, or reset) removes them, so a stale DNAT can never
    # lead to the next container that gets this address.
    ipam.claim(att.network_id, att.address, pid, att.to_dict() if att.ports else None)
    if att.ports:
        from labkit.network import portrules

        portrules.add(att)


def inside_config(att: Attachment | None) -> dict:
    """What PID 1 needs to configure eth0 (``kernel.netdev.configure_inside``); {} for none."""
    if att is None:
        return {}
    return {"interface": "eth0", "address": att.address, "prefix": att.prefix,
            "gateway": att.gateway}  # fmt: skip


def unplug(att: Attachment) -> None:
    """Take a container off its network. Safe to repeat, and after a crash: each part is
    done only if it is still there."""
    from labkit.kernel import netdev

    netdev.delete_link(att.host_ifname)  # gone already if its namespace died: fine
    if att.ports:  # before the lease that records them goes
        from labkit.network import portrules

        portrules.remove(att)
    ipam.release(att.network_id, att.address, att.container_id)
    if att.network != DEFAULT:
        files.refresh(att.network_id)


def files_for(att: Attachment) -> dict[str, str]:
    """``{"/etc/hosts": path, "/etc/resolv.conf": path, "/etc/hostname": path}``: the files
    ``prepare`` wrote, to bind-mount over the image's."""
    return files.paths_for(att.directory)
