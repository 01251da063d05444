"""Netlink: how ``ip`` talks to the kernel about links, addresses and routes.

``ip link add``, ``ip addr add`` and ``ip route add`` do not call a system call per job.
They open a socket of family AF_NETLINK (protocol NETLINK_ROUTE, "rtnetlink"), write one
message, and read the kernel's answer. Every message is a 16-byte header, a fixed struct
that says what the message is about, and a list of attributes::

    nlmsghdr   length, type (RTM_NEWLINK ...), flags (NLM_F_*), sequence number, port id
    ifinfomsg  family, device type, interface index, flags (IFF_UP), which flags to change
    rtattr     length, type (IFLA_IFNAME ...), value, padded to 4 bytes
    rtattr     ... an attribute's value may itself be a list of attributes (nested)

The kernel answers a request sent with NLM_F_ACK with an NLMSG_ERROR message whose error
code is 0 (done) or minus an errno (refused), which ``Netlink.request`` turns into an
``OSError``. The operations built from these messages are in ``labkit.kernel.netdev``.

A netlink socket belongs to the network namespace its creator was in when it was *created*:
a process that changes namespaces afterwards still talks about the old one's links.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable

# Message types (linux/netlink.h, linux/rtnetlink.h).
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_NEWROUTE = 20, 24

# Header flags: a request, wanting an ack; create, but fail if it exists (like `ip ... add`).
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300  # every object of the kind: a multi-part answer ending in NLMSG_DONE
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
# On an NLMSG_ERROR: only our request's header is echoed; attributes (the kernel's words) follow.
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200

# Socket options (SOL_NETLINK): don't echo our request back in an error; explain errors.
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
ATTR = struct.Struct("=HH")  # struct rtattr (nlattr): length, type
#: Two top bits of an attribute's type are flags (nested, network byte order), not its type.
NLA_TYPE_MASK = 0x3FFF


def _align(length: int) -> int:
    """Netlink pads every header and attribute to a multiple of 4 bytes."""
    return (length + 3) & ~3


def attr(kind: int, value: bytes | str | int | Iterable[bytes]) -> bytes:
    """One attribute: a str becomes NUL-terminated bytes, an int a u32 in host byte order,
    and a list of attributes (nested ones) their concatenation: IFLA_LINKINFO holds
    IFLA_INFO_KIND and IFLA_INFO_DATA, which holds the veth peer."""
    if isinstance(value, str):
        payload = value.encode() + b"\0"
    elif isinstance(value, int):
        payload = struct.pack("=I", value)
    elif isinstance(value, bytes):
        payload = value
    else:
        payload = b"".join(value)
    raw = ATTR.pack(ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """The attributes in ``data`` by type (nested ones still packed: parse them again)."""
    found = {}
    offset = 0
    while offset + ATTR.size <= len(data):
        length, kind = ATTR.unpack_from(data, offset)
        if length < ATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + ATTR.size : offset + length]
        offset += _align(length)
    return found


class Netlink:
    """One rtnetlink socket, in the network namespace of the process that opens it.

    ``with Netlink() as nl: nl.request(RTM_NEWLINK, flags, body, "add veth x")``
    """

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self.sock.bind((0, 0))  # port id 0: the kernel picks a free one
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):  # both since Linux 4.12
            self.sock.setsockopt(SOL_NETLINK, option, 1)
        self.seq = 0

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(
        self, kind: int, flags: int, body: bytes, what: str, hints: dict[int, str] | None = None
    ) -> list[tuple[int, bytes]]:
        """Send one request and read to its end: the acknowledgement, or NLMSG_DONE after a
        multi-part answer. Returns the (type, payload) of every other message answering it.

        A refusal raises ``OSError(errno, "WHAT: strerror")`` (the kernel's own explanation
        or ``hints[errno]`` in brackets when there is one).
        """
        self.seq += 1
        self.sock.send(HEADER.pack(HEADER.size + len(body), kind, flags, self.seq, 0) + body)
        answers = []
        while True:
            # One read holds one or more messages (the kernel keeps a dump's parts < 32 KiB).
            data = self.sock.recv(65536)
            offset = 0
            while offset + HEADER.size <= len(data):
                length, mtype, mflags, seq, _ = HEADER.unpack_from(data, offset)
                if length < HEADER.size:
                    raise OSError(errno.EBADMSG, f"{what}: a malformed netlink answer")
                payload = data[offset + HEADER.size : offset + length]
                offset += _align(length)
                if seq != self.seq:  # left over from an earlier request: not ours
                    continue
                if mtype == NLMSG_ERROR:
                    _check_error(payload, mflags, what, hints or {})
                    return answers  # error 0: the acknowledgement
                if mtype == NLMSG_DONE:
                    (code,) = struct.unpack_from("=i", payload) if payload else (0,)
                    if code < 0:
                        _raise(-code, what, hints or {})
                    return answers
                if mtype != NLMSG_NOOP:
                    answers.append((mtype, payload))
                if not mflags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return answers  # a single answer, and no ack was asked for


def _check_error(payload: bytes, flags: int, what: str, hints: dict[int, str]) -> None:
    """An NLMSG_ERROR: an int (0 or -errno), our request (its header only if NLM_F_CAPPED),
    then, with NLM_F_ACK_TLVS, attributes such as the kernel's message ("Invalid MTU")."""
    (code,) = struct.unpack_from("=i", payload)
    if code == 0:
        return
    said = ""
    if flags & NLM_F_ACK_TLVS:
        echoed = HEADER.size if flags & NLM_F_CAPPED else HEADER.unpack_from(payload, 4)[0]
        text = parse_attrs(payload[4 + _align(echoed) :]).get(NLMSGERR_ATTR_MSG, b"")
        said = text.rstrip(b"\0").decode(errors="replace")
    _raise(-code, what, hints, said)


def _raise(err: int, what: str, hints: dict[int, str], said: str = "") -> None:
    why = hints.get(err) or said
    message = f"{what}: {os.strerror(err)}" + (f" ({why})" if why else "")
    raise OSError(err, message)
