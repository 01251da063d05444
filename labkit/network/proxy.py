"""The userland proxy: published ports reached from the host's own loopback, with no process.

Why there is one at all: the DNAT rules (``portrules``) catch packets *routed* to a
published port, from elsewhere (PREROUTING) or from the host to one of its own real
addresses (OUTPUT). A connection to 127.0.0.1:8081 is neither: the kernel will not send a
packet from a loopback address out of a real interface, so Docker's OUTPUT rule skips
127.0.0.0/8 and leaves localhost to docker-proxy, a program that listens on the port and,
for every client, opens a connection of its own to the container and copies bytes both ways.
Containers reaching a published port on the host's address come that way too.

docker-proxy is a process per published port and address family (two per ``-p``, 3.5 MiB
resident each on Debian 12); labkit's proxy is none: the sockets ``ports.bind`` bound are
watched by the supervisor's one poll loop, beside the pidfds and stdio relays it already
waits on. ``Proxy`` only needs the loop's ``watch(fd, event, handler)`` and ``unwatch``.

**TCP**, per client: accept, then a non-blocking connect to CONTAINER:PORT (from the bridge's
address: the container sees the gateway as its peer, never the client), then a ``Relay`` each
way. A relay moves bytes with ``splice(2)``: socket -> pipe -> socket. The kernel moves
references to the pages, so no byte is copied into Python (or, mostly, at all). Cost per
connection: 2 sockets and 2 pipes (6 descriptors, no thread), and up to PIPE_SIZE of pipe
per direction only while data is in flight. An end of file is passed on as a half-close
(``shutdown(SHUT_WR)``); the connection goes when both directions have ended, or on an error.

**UDP** (``udprelay``): a socket toward the container per client, closed when idle. The
supervisor asks ``timeout()`` how long it may sleep and calls ``expire()`` after each turn.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time

from labkit.network.udprelay import ACCEPT_BATCH, READ, UDP_IDLE, WRITE, UdpPort, Unwatch, Watch

PIPE_SIZE = 1 << 20  # per direction: what one splice may move (fs.pipe-max-size is 1 MiB)
SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


class Proxy:
    """The userland proxy of one container: its listening sockets and their connections."""

    def __init__(self, watch: Watch, unwatch: Unwatch) -> None:
        self.watch, self.unwatch = watch, unwatch
        self.listeners: list[tuple[socket.socket, tuple[str, int]]] = []
        self.connections: set[Connection] = set()
        self.udp: list[UdpPort] = []
        self.paused = False  # out of descriptors: not accepting until a connection ends

    def serve(self, sock: socket.socket, target: tuple[str, int]) -> None:
        """Relay what arrives on ``sock`` (bound by ``ports.bind``) to ``target``."""
        if sock.type == socket.SOCK_STREAM:
            self.listeners.append((sock, target))
            self.watch(sock.fileno(), READ, lambda: self._accept(sock, target))
        else:
            self.udp.append(UdpPort(self.watch, self.unwatch, sock, target))

    def _accept(self, listener: socket.socket, target: tuple[str, int]) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of descriptors: wait until a connection ends
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self.paused = True
                    self.unwatch(listener.fileno(), READ)
                return
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            for sock in (client, upstream):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's
            if upstream.connect_ex(target) not in (0, errno.EINPROGRESS):
                client.close()
                upstream.close()
                continue
            self.connections.add(Connection(self, client, upstream))

    def ended(self, connection: Connection) -> None:
        """A connection closed: listeners paused for want of descriptors may go on."""
        self.connections.discard(connection)
        if self.paused:
            self.paused = False
            for sock, target in self.listeners:
                self.watch(sock.fileno(), READ, lambda s=sock, t=target: self._accept(s, t))

    def timeout(self) -> float | None:
        """Seconds until a UDP flow may expire (None: nothing to expire)."""
        ends = [f.last + UDP_IDLE for port in self.udp for f in port.flows.values()]
        return max(0.0, min(ends) - time.monotonic()) if ends else None

    def expire(self) -> None:
        for port in self.udp:
            port.expire(time.monotonic() - UDP_IDLE)

    def close(self) -> None:
        """Stop: every connection and flow closed, the listeners no longer watched (they
        belong to the container, which closes them)."""
        for connection in list(self.connections):
            connection.close()
        for listener, _ in self.listeners:
            self.unwatch(listener.fileno(), READ)
        for port in self.udp:
            port.close()
        self.listeners, self.udp = [], []


class Connection:
    """One client's TCP connection and the proxy's own to the container."""

    def __init__(self, proxy: Proxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.relays: list[Relay] = []
        self.closed = False
        proxy.watch(upstream.fileno(), WRITE, self._connected)

    def _connected(self) -> None:
        self.proxy.unwatch(self.upstream.fileno(), WRITE)
        if self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.close()  # the container refused: the client sees its connection closed
            return
        try:
            self.relays = [Relay(self, self.client, self.upstream),
                           Relay(self, self.upstream, self.client)]  # fmt: skip
        except OSError:  # no descriptors left for the pipes
            self.close()
            return
        for relay in self.relays:
            relay.arm()

    def relay_done(self) -> None:
        if all(relay.state == "done" for relay in self.relays):
            self.close()

    def close(self) -> None:
        """Everything unwatched before it is closed (poll must never see a closed fd)."""
        if self.closed:
            return
        self.closed = True
        for relay in self.relays:
            relay.close()
        self.proxy.unwatch(self.upstream.fileno(), WRITE)
        self.client.close()
        self.upstream.close()
        self.proxy.ended(self)


class Relay:
    """One direction of a connection: ``src`` -> pipe -> ``dst`` with splice(2). It reads
    only when its pipe is empty, and waits for ``dst`` to take more when it is not."""

    def __init__(self, connection: Connection, src: socket.socket, dst: socket.socket) -> None:
        self.connection, self.src, self.dst = connection, src.fileno(), dst
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe still works, in smaller steps
            fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.pending = 0  # bytes in the pipe
        self.eof = False
        self.state = ""  # "reading", "writing" or "done"

    def arm(self) -> None:
        """Watch what this relay waits for now (re-registering only when it changes)."""
        state = "writing" if self.pending else "done" if self.eof else "reading"
        if state == self.state:
            return
        self._unwatch()
        self.state = state
        if state == "reading":
            self.connection.proxy.watch(self.src, READ, self.readable)
        elif state == "writing":
            self.connection.proxy.watch(self.dst.fileno(), WRITE, self.writable)
        else:
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)  # pass the end of file on
            self.connection.relay_done()

    def _unwatch(self) -> None:
        if self.state == "reading":
            self.connection.proxy.unwatch(self.src, READ)
        elif self.state == "writing":
            self.connection.proxy.unwatch(self.dst.fileno(), WRITE)

    def readable(self) -> None:
        try:
            n = os.splice(self.src, self.pipe_w, PIPE_SIZE, flags=SPLICE)
        except BlockingIOError:
            return
        except OSError:  # reset by the peer
            self.connection.close()
            return
        self.eof = n == 0
        self.pending += n
        self.writable()

    def writable(self) -> None:
        dst = self.dst.fileno()
        while self.pending:
            try:
                self.pending -= os.splice(self.pipe_r, dst, self.pending, flags=SPLICE)
            except BlockingIOError:
                break
            except OSError:  # the other side went away
                self.connection.close()
                return
        self.arm()

    def close(self) -> None:
        self._unwatch()
        self.state = "done"
        if self.pipe_r >= 0:
            os.close(self.pipe_r)
            os.close(self.pipe_w)
            self.pipe_r = self.pipe_w = -1
