"""Published ports (``-p 8080:80``): parsed as Docker parses them, then bound on the host.

A published port promises that what arrives for HOST_IP:HOST_PORT reaches the container's
CONTAINER_PORT. labkit keeps the promise in three places, as Docker does:

* a **socket bound on the host** for each published port (Docker's docker-proxy holds one).
  Binding is the only honest test that a port is free: the kernel knows every socket on
  the host (TCP and UDP apart), not just labkit's, and it refuses a second bind, so no two
  containers can publish one port. A random port (``-p 80``) is the one the kernel picks
  for a bind to port 0: chosen once, here, and recorded. The supervisor accepts on these
  sockets (``proxy``), or with the userland proxy off only holds them, as Docker's "dummy
  proxy" does;
* **iptables rules** that rewrite the destination to the container (``portrules``);
* the container's record (its Attachment's ``ports``), which ``port`` reads.

The spec (Docker's ``nat.ParsePortSpec``): ``[IP:][HOSTPORT:]PORT[/PROTO]``, where either
port may be a range ``A-B``: ``8080:80``, ``127.0.0.1:8080:80/udp``, ``80`` (a random host
port), ``127.0.0.1::80``, ``8000-8001:80-81`` (port by port), ``8000-8010:80`` (the first
free host port of the range). Host port 0 means a random one, as in Docker.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from typing import Any, NamedTuple

from labkit.errors import LabkitError

PROTOCOLS = ("tcp", "udp")
#: How many connections may wait for the supervisor to accept them (Go's default, as
#: docker-proxy's listener has: the kernel caps it at net.core.somaxconn).
BACKLOG = 4096
_NUMBER = re.compile(r"[0-9]+\Z")
SPEC_FIX = "write it as [ip:][hostport:]port[/tcp|udp], e.g. 8080:80 or 127.0.0.1::80/udp"


class Request(NamedTuple):
    """One container port to publish, as asked: host ports (0, 0) mean "any free one"."""

    proto: str
    container_port: int
    host_ip: str  # "0.0.0.0": every address of the host
    host_first: int
    host_last: int


class Published(NamedTuple):
    """One published port, its host port settled (kept in the Attachment as a dict)."""

    proto: str
    container_port: int
    host_ip: str
    host_port: int

    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def line(self) -> str:
        """As ``docker port`` prints it: ``80/tcp -> 0.0.0.0:8081``."""
        return f"{self.key()} -> {self.host_ip}:{self.host_port}"

    @classmethod
    def of(cls, data: dict[str, Any]) -> Published:
        return cls(**{k: data[k] for k in cls._fields})


def _invalid(spec: str, why: str) -> LabkitError:
    return LabkitError(f'invalid port spec "{spec}": {why}', fix=SPEC_FIX)


def _range(text: str) -> tuple[int, int] | None:
    """``80`` or ``8000-8010`` as (first, last); None if it is neither (Docker's
    ParsePortRange: 16-bit decimal numbers, and a range must not run backwards)."""
    first, dash, last = text.partition("-")
    if not _NUMBER.match(first) or (dash and not _NUMBER.match(last)):
        return None
    a, b = int(first), int(last) if dash else int(first)
    return (a, b) if b <= 65535 and a <= b else None


def parse(spec: str) -> list[Request]:
    """One ``-p`` value as the requests it makes (a range makes several), or a LabkitError
    saying what is wrong with it, with Docker's checks in Docker's order."""
    parts = spec.split(":")
    ip = ":".join(parts[:-2])
    host = parts[-2] if len(parts) > 1 else ""
    port, _, proto = parts[-1].partition("/")
    proto = (proto.split("/")[0] or "tcp").lower()
    if ip.startswith("["):
        ip = ip[1:].removesuffix("]")
    try:
        address = ipaddress.ip_address(ip) if ip else ipaddress.IPv4Address(0)
    except ValueError:
        raise _invalid(spec, f"invalid IP address {ip}") from None
    if not port:
        raise _invalid(spec, "no container port")
    ports = _range(port)
    if ports is None:
        raise _invalid(spec, f"invalid container port {port}")
    hosts = _range(host) if host else (0, 0)
    if hosts is None:
        raise _invalid(spec, f"invalid host port {host}")
    count = ports[1] - ports[0]
    if host and count not in (0, hosts[1] - hosts[0]):
        raise _invalid(spec, f"the ranges {port} and {host} differ in length")
    if proto not in (*PROTOCOLS, "sctp"):
        raise _invalid(spec, f"invalid protocol {proto}")
    if proto == "sctp":
        raise LabkitError(f'port spec "{spec}": sctp is not supported', fix="publish tcp or udp")
    if address.version == 6:
        raise LabkitError(
            f'port spec "{spec}": labkit\'s networks are IPv4 only', fix="give an IPv4 address"
        )
    if ports[0] == 0:  # Docker accepts it, and makes a DNAT rule to port 0
        raise _invalid(spec, "container port 0")
    requests = []
    for i in range(count + 1):
        first, last = (hosts[0] + i,) * 2 if count and host else hosts
        requests.append(Request(proto, ports[0] + i, str(address), first, last))
    return requests


def parse_all(specs: list[str]) -> list[Request]:
    return [request for spec in specs for request in parse(spec)]


def bind(requests: list[Request]) -> list[tuple[Published, socket.socket]]:
    """A socket bound (and, for TCP, listening) for every request; a LabkitError naming the
    port if one is taken, with nothing left bound."""
    done: list[tuple[Published, socket.socket]] = []
    try:
        for request in requests:
            done.append(_bind_one(request))
    except BaseException:
        for _, sock in done:
            sock.close()
        raise
    return done


def _bind_one(request: Request) -> tuple[Published, socket.socket]:
    proto, ip = request.proto, request.host_ip
    last_error: OSError | None = None
    for port in range(request.host_first, request.host_last + 1):
        try:
            sock = listen(proto, ip, port)
        except OSError as exc:
            last_error = exc
            continue
        published = Published(proto, request.container_port, ip, sock.getsockname()[1])
        return published, sock
    assert last_error is not None
    wanted = f"{request.host_first}-{request.host_last}"
    if request.host_first == request.host_last:
        wanted = str(request.host_first)
    if last_error.errno == errno.EADDRINUSE:
        taken = "every host port of the range" if "-" in wanted else "host port"
        raise LabkitError(
            f"{taken} {wanted}/{proto} on {ip} is taken (address already in use)",
            fix=f"publish on another host port, or stop what uses it (ss -l{proto[0]}np)",
        )
    raise LabkitError(
        f"cannot bind {proto} {ip}:{wanted}: {last_error.strerror or last_error}",
        fix="publish on an address of this host (ip -4 addr), or on every address",
    )


def listen(proto: str, ip: str, port: int) -> socket.socket:
    """A non-blocking socket bound to ``ip:port`` (listening, for TCP). SO_REUSEADDR as Go's
    listeners set it: a port whose last connection is in TIME_WAIT may be bound again, but
    never one a live socket holds."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        if proto == "tcp":
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def lines(ports: list[dict[str, Any]], which: str = "") -> list[str]:
    """What ``docker port`` prints: every published port as ``80/tcp -> 0.0.0.0:8081`` by
    container port, or with ``which`` ("80", "80/udp") only ``0.0.0.0:8081`` for that one."""
    published = sorted(map(Published.of, ports), key=lambda p: (p.container_port, p.proto))
    if not which:
        return [p.line() for p in published]
    port, _, proto = which.partition("/")
    return [
        f"{p.host_ip}:{p.host_port}"
        for p in published
        if str(p.container_port) == port and p.proto == (proto or "tcp").lower()
    ]
