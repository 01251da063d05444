"""Address leases (IP address management): which container holds which address.

A lease is a file, ``NET_DIR/leases/<network id>/<address>``, created with
``O_CREAT | O_EXCL``: the kernel lets exactly one of any number of racing creators make it,
so an address is never handed out twice, with no lock on a container's start. Addresses
go lowest free first, skipping the network address, the gateway and the broadcast address.
Being files, leases survive a crash; being named by address, ``ls`` shows who has what.

A lease says who holds it: the container, and the process that took it (the supervisor,
by PID, start time and boot: ``ProcessRef``), joined by the container's PID 1 once it is
plugged in. While either lives the lease is kept; when both are gone (a killed supervisor,
a reboot) it is stale, and the next ``take`` reclaims it, under the network lock and
after reading it again, so a lease just re-taken by someone else is never removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

from labkit.errors import LabkitError
from labkit.kernel.procfs import ProcessRef
from labkit.network import netdir
from labkit.network.model import Network

#: How long a lease file may be empty or unreadable: its taker is writing it.
GRACE = 5.0


class Lease(NamedTuple):
    """One address and what its file says (``data`` is None while it is being written)."""

    address: str
    path: Path
    data: dict[str, Any] | None
    mtime: float

    @property
    def container_id(self) -> str:
        return (self.data or {}).get("container_id", "")

    @property
    def name(self) -> str:
        return (self.data or {}).get("name", "?")

    def is_live(self) -> bool:
        """Its taker or its container is still running (or it is being written now)."""
        if self.data is None:
            return time.time() - self.mtime < GRACE
        return any(_alive(self.data.get(who)) for who in ("owner", "process"))


def _alive(ref: dict[str, Any] | None) -> bool:
    return ref is not None and ProcessRef(**ref).is_alive()


def _ref(pid: int) -> dict[str, Any] | None:
    ref = ProcessRef.of(pid)
    return None if ref is None else ref._asdict()


def _id(network: Network | str) -> str:
    return network if isinstance(network, str) else network.id


def read(path: Path) -> Lease | None:
    """The lease in ``path`` (None if it is gone)."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    return Lease(path.name, path, data, mtime)


def _is_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False  # a ``.tmp-`` file being renamed into place, or a stranger
    return True


def leases(network: Network | str) -> list[Lease]:
    """Every lease of a network, lowest address first (``.tmp-`` files are not leases)."""
    directory = netdir.leases_dir(_id(network))
    try:
        names = [n for n in os.listdir(directory) if _is_address(n)]
    except FileNotFoundError:
        return []
    found = [le for le in (read(directory / n) for n in names) if le is not None]
    return sorted(found, key=lambda le: ipaddress.IPv4Address(le.address))


def holders(network: Network | str) -> list[Lease]:
    """The leases held by someone alive."""
    return [le for le in leases(network) if le.is_live()]


def take(network: Network, container_id: str, name: str, hostname: str, directory: str = "") -> str:
    """Lease the lowest free address of ``network`` to a container; return it.

    ``directory`` is where the container's hosts file is, so peers can update it."""
    folder = netdir.leases_dir(network.id)
    folder.mkdir(parents=True, exist_ok=True)
    held = set()
    for lease in leases(network.id):
        if lease.is_live() or not reclaim(network.id, lease.address):
            held.add(lease.address)
    data = {"container_id": container_id, "name": name, "hostname": hostname,
            "directory": directory, "created": time.time(), "owner": _ref(os.getpid()),
            "process": None}  # fmt: skip
    subnet = ipaddress.IPv4Network(network.subnet)
    for candidate in subnet.hosts():  # neither the network nor the broadcast address
        address = str(candidate)
        if address in held or address == network.gateway:
            continue
        try:
            fd = os.open(folder / address, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue  # someone else took it a moment ago: try the next one
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data) + "\n")
        return address
    raise LabkitError(
        f"no free address left in {subnet} (network {network.name})",
        fix="remove a container from it, or use a network with a bigger {subnet}",
    )


def claim(
    network: Network | str, address: str, pid: int, published: dict[str, Any] | None = None
) -> None:
    """Note the container's PID 1 in its lease: it keeps the lease alive if the supervisor
    dies first (a detached container outlives a crashed daemon). ``published``: the
    attachment of a container with published ports, whose rules go when the lease does."""
    path = netdir.leases_dir(_id(network)) / address
    lease = read(path)
    if lease is not None and lease.data is not None:
        extra = {"published": published} if published else {}
        netdir.write_json(path, dict(lease.data, process=_ref(pid), **extra))


def release(network: Network | str, address: str, container_id: str | None = None) -> bool:
    """Give an address back; with ``container_id``, only if that container holds it (under
    the lock, so a lease re-taken meanwhile is left alone). False if nothing was removed."""
    path = netdir.leases_dir(_id(network)) / address
    if container_id is None:
        return _unlink(path)
    with netdir.lock():
        lease = read(path)
        if lease is None or lease.container_id != container_id:
            return False
        return _unlink(path)


def reclaim(network: Network | str, address: str, force: bool = False) -> bool:
    """Remove a stale lease (or, with ``force``, any lease), after reading it again under the
    lock. Call without holding the lock."""
    path = netdir.leases_dir(_id(network)) / address
    with netdir.lock():
        lease = read(path)
        if lease is None:
            return True
        if lease.is_live() and not force:
            return False
        _unpublish(lease)
        return _unlink(path)


def _unpublish(lease: Lease) -> None:
    """Withdraw the published ports a lease records (its holder died without doing it).
    Under the lock."""
    published = (lease.data or {}).get("published")
    if published:
        from labkit.network import portrules
        from labkit.network.model import Attachment

        portrules.remove(Attachment.from_dict(published), locked=True)


def drop_all(network: Network | str) -> None:
    """Remove every lease of a network (it is being removed; under the lock), and the port
    rules any of them still records."""
    for lease in leases(network):
        _unpublish(lease)
    shutil.rmtree(netdir.leases_dir(_id(network)), ignore_errors=True)


def _unlink(path: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return True
    return False
