"""The userland proxy's UDP side: datagrams to a published port, relayed to the container.

UDP has no connections, so the relay makes one per client: the first datagram from a new
client opens a socket *connected* to CONTAINER:PORT (its source is the bridge's address and
a port of its own), which is how the container's replies can be told apart and sent back,
from the published socket, to the client they belong to. A flow idle for UDP_IDLE seconds
(docker-proxy's 90) is closed; at most UDP_FLOWS are open per port, and a datagram that
cannot be sent is dropped, as the network itself may drop it. Watched by the supervisor's
loop, as the TCP side (``proxy``).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Callable

Watch = Callable[[int, int, Callable[[], None]], None]
Unwatch = Callable[[int, int], None]
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE

UDP_IDLE = 90.0
UDP_FLOWS = 1024
ACCEPT_BATCH = 64  # datagrams (or connections) taken per wakeup: no port starves the rest


class UdpPort:
    """A published UDP port: a connected socket toward the container per client."""

    def __init__(
        self, watch: Watch, unwatch: Unwatch, sock: socket.socket, target: tuple[str, int]
    ) -> None:
        self.watch, self.unwatch, self.sock, self.target = watch, unwatch, sock, target
        self.flows: dict[tuple[str, int], UdpFlow] = {}
        watch(sock.fileno(), READ, self.readable)

    def readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                data, client = self.sock.recvfrom(65535)
            except OSError:  # BlockingIOError: all read
                return
            flow = self.flows.get(client)
            if flow is None:
                if len(self.flows) >= UDP_FLOWS:
                    continue
                flow = self.flows[client] = UdpFlow(self, client)
            flow.last = time.monotonic()
            with contextlib.suppress(OSError):  # UDP may lose it: so may we
                flow.sock.send(data)

    def expire(self, before: float) -> None:
        for client, flow in list(self.flows.items()):
            if flow.last < before:
                flow.close()
                del self.flows[client]

    def close(self) -> None:
        self.expire(float("inf"))
        self.unwatch(self.sock.fileno(), READ)


class UdpFlow:
    """One client's datagrams to the container, and the container's replies back."""

    def __init__(self, port: UdpPort, client: tuple[str, int]) -> None:
        self.port, self.client, self.last = port, client, time.monotonic()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(port.target)
        port.watch(self.sock.fileno(), READ, self.reply)

    def reply(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                data = self.sock.recv(65535)
            except OSError:  # all read; or ECONNREFUSED: nothing listens in the container
                return
            self.last = time.monotonic()
            with contextlib.suppress(OSError):
                self.port.sock.sendto(data, self.client)

    def close(self) -> None:
        self.port.unwatch(self.sock.fileno(), READ)
        self.sock.close()
