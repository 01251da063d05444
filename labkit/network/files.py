"""The three files that tell a container who it is on the network: ``/etc/hosts``,
``/etc/resolv.conf`` and ``/etc/hostname``, kept in its record's directory and bind-mounted
over the image's, as Docker does (the image is shared; these are the container's own).

* ``hosts``: the loopback lines Docker writes, ``ADDRESS HOSTNAME`` for the container
  itself, and on a user network one ``ADDRESS NAME`` line per other container on it, so
  containers find each other by name. (Docker answers those names from a DNS server of its
  own at 127.0.0.11; a hosts file needs none, and shows the idea in one file.) The default
  network has no names, as under Docker.
* ``resolv.conf``: the host's, without loopback nameservers (127.x, ::1): inside its own
  network namespace a container's 127.0.0.1 is itself, not the host's resolver. On a
  systemd-resolved host the real upstreams are in /run/systemd/resolve/resolv.conf, as
  Docker knows too.
* ``hostname``: the hostname and a newline.

When a container joins or leaves a user network, ``refresh`` rewrites its peers' hosts files
*in place*: a bind mount pins the file's inode, so a new file renamed over it would never
be seen inside the container.
"""

from __future__ import annotations

import os
from pathlib import Path

from labkit.network import ipam
from labkit.network.model import Attachment

#: What Docker writes first in every container's /etc/hosts.
LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
HOST_RESOLV = Path("/etc/resolv.conf")
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")
#: File name in the container's directory -> where it is mounted inside.
FILES = {"hosts": "/etc/hosts", "resolv.conf": "/etc/resolv.conf", "hostname": "/etc/hostname"}

Peers = list[tuple[str, str]]  # (address, name) of the other containers on a user network


def hosts_text(address: str, hostname: str, peers: Peers) -> str:
    lines = [f"{address}\t{hostname}\n"] + [f"{a}\t{n}\n" for a, n in sorted(peers)]
    return LOCALHOST + "".join(lines)


def _nameservers(lines: list[str]) -> list[str]:
    return [w[1] for w in map(str.split, lines) if len(w) > 1 and w[0] == "nameserver"]


def _loopback_nameserver(line: str) -> bool:
    return any(s == "::1" or s.startswith("127.") for s in _nameservers([line]))


def resolv_text(host: Path = HOST_RESOLV) -> str:
    """The host's resolv.conf for a container: loopback nameservers left out."""
    try:
        lines = host.read_text().splitlines()
    except OSError:
        lines = []
    if _nameservers(lines) == ["127.0.0.53"] and RESOLVED_UPSTREAM.exists():
        lines = RESOLVED_UPSTREAM.read_text().splitlines()  # systemd-resolved's upstreams
    kept = [line for line in lines if not line.startswith("#") and not _loopback_nameserver(line)]
    out = [f"# labkit: the host's {host}, without nameservers on loopback (127.x, ::1)\n"]
    if not _nameservers(kept):
        out.append("# no nameserver is left, so names do not resolve (Docker would add 8.8.8.8)\n")
    return "".join(out) + "".join(line + "\n" for line in kept)


def write(directory: Path, att: Attachment, peers: Peers) -> None:
    """Write the three files into ``directory`` (new files: nothing has them mounted yet)."""
    texts = {
        "hosts": hosts_text(att.address, att.hostname, peers),
        "resolv.conf": resolv_text(),
        "hostname": att.hostname + "\n",
    }
    for name, text in texts.items():
        tmp = Path(directory) / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, Path(directory) / name)


def paths_for(directory: Path | str) -> dict[str, str]:
    """``{"/etc/hosts": "<directory>/hosts", ...}``: what to bind-mount where."""
    return {inside: str(Path(directory) / name) for name, inside in FILES.items()}


def peers(network_id: str, container_id: str) -> Peers:
    """The other containers holding an address on a network: (address, name)."""
    return [
        (le.address, le.name)
        for le in ipam.holders(network_id)
        if le.data is not None and le.container_id != container_id
    ]


def refresh(network_id: str, skip: str = "") -> None:
    """Rewrite, in place, the hosts file of every container on a user network (but
    ``skip``), so each lists the others as they are now."""
    live = [le for le in ipam.holders(network_id) if le.data is not None]
    for lease in live:
        directory = lease.data.get("directory") if lease.data else None
        if lease.container_id == skip or not directory:
            continue
        others = [(o.address, o.name) for o in live if o.container_id != lease.container_id]
        text = hosts_text(lease.address, lease.data.get("hostname", ""), others)
        try:
            with open(Path(directory) / "hosts", "r+") as f:  # same inode: seen inside
                f.write(text)
                f.truncate()
        except FileNotFoundError:
            continue  # that container is being removed
