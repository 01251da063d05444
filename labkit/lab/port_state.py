"""A published port as the kernel holds it, for notebook 06's checks and cells: a namespace's
iptables rules with their packet counters, who listens on a port, a page fetched from inside a
namespace, and the host's side (a client outside this machine, a labkit container serving).

Every reading is a subprocess (``ip netns exec``, ``iptables-save -c``, ``ss``), so nothing here
enters a namespace: the Jupyter kernel never does. ``ns`` is a netns name, or None / "host".
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from typing import NamedTuple

from labkit.lab import port_demo
from labkit.lab.net_demo import run
from labkit.lab.shell import Running


class Rule(NamedTuple):
    """One rule, as ``iptables-save -c`` writes it: its chain, its words, its packet count."""

    table: str
    chain: str
    spec: str
    packets: int

    def words(self) -> list[str]:
        return self.spec.split()

    def option(self, name: str) -> str | None:
        """The value after ``name`` ("--dport", "-j"), or None."""
        words = self.words()
        return words[words.index(name) + 1] if name in words[:-1] else None


def _save(ns: str | None, table: str) -> str:
    argv = ["iptables-save", "-c", "-t", table]
    argv = ["ip", "netns", "exec", ns, *argv] if ns and ns != "host" else argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout


def rules(ns: str | None, table: str = "nat") -> list[Rule]:
    """Every rule of ``table`` in namespace ``ns`` (None or "host": the host's)."""
    found = []
    for line in _save(ns, table).splitlines():
        m = re.match(r"\[(\d+):\d+\] -A (\S+) (.*)$", line)
        if m:
            found.append(Rule(table, m[2], m[3], int(m[1])))
    return found


def policy(ns: str | None, chain: str, table: str = "filter") -> tuple[str, int]:
    """A built-in chain's policy and how many packets it took: ("DROP", 3)."""
    m = re.search(rf"^:{chain} (\S+) \[(\d+):\d+\]", _save(ns, table), re.M)
    return (m[1], int(m[2])) if m else ("", 0)


def reachable(found: list[Rule], start: str) -> set[str]:
    """The chains a packet entering ``start`` can be sent to (``-j CHAIN``), ``start`` too."""
    chains = {rule.chain for rule in found}
    seen, todo = {start}, [start]
    while todo:
        chain = todo.pop()
        for rule in found:
            target = rule.option("-j")
            if rule.chain == chain and target in chains and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def who(text: str) -> str:
    """The address the page said a request came from ("" if it did not answer)."""
    m = re.search(r"you came from (\S+) port", text)
    return m[1] if m else ""


def fetch(ns: str, url: str, wait: float = 2) -> subprocess.CompletedProcess:
    """``curl`` from inside namespace ``ns`` (exit 0: the page answered)."""
    argv = ["curl", "-sS", "--connect-timeout", f"{wait:g}", "-m", f"{wait + 1:g}", url]
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=wait + 10)  # fmt: skip


def listeners(ns: str | None, port: int) -> list[tuple[str, str, int]]:
    """Who listens on TCP ``port`` (``ss -ltnp``): (local address, program, PID) each."""
    argv = ["ss", "-ltnpH", f"sport = :{port}"]
    argv = ["ip", "netns", "exec", ns, *argv] if ns and ns != "host" else argv
    found = []
    for line in subprocess.run(
        argv, capture_output=True, text=True, timeout=10
    ).stdout.splitlines():
        words = line.split()
        for program, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            found.append((words[3], program, int(pid)))
    return found


def wait_listening(ns: str | None, port: int, timeout: float = 5) -> bool:
    """Wait until something listens on TCP ``port`` in ``ns`` (a server started in the
    background); whether it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listeners(ns, port):
            return True
        time.sleep(0.05)
    return False


def parent(pid: int) -> int:
    """The PID of a process's parent (a container's first process: its supervisor)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# -- the host's side ------------------------------------------------------------------------------


def server_command(minutes: float = 15) -> list[str]:
    """What a labkit container of notebook 06 runs: busybox httpd serving /etc (without ``-f``
    it goes into the background inside the container), then ``sleep``: the container's first
    process, so the container ends by itself after ``minutes``."""
    return ["busybox", "sh", "-c", f"httpd -p 80 -h /etc && sleep {int(minutes * 60)}"]


def serve(*run_args: str, minutes: float = 15, timeout: float = 20) -> Running:
    """``labkit run RUN_ARGS busybox sh -c "httpd ... && sleep ..."`` in the background (the
    command is printed as typed): a container with a web server on port 80 for ``minutes``, or
    until ``.stop()``, or until the kernel stops."""
    argv = [*run_args, *server_command(minutes)]
    print(f"$ labkit run {shlex.join(argv)} &")
    return Running(argv, minutes, timeout)


# -- a client outside this machine, for labkit's and Docker's published ports ---------------------

CLIENT = f"{port_demo.PREFIX}-client"
HOST_SIDE, CLIENT_ADDRESS = "198.51.100.206", "198.51.100.207"  # a /32 each way
CLIENT_LINK = "lkn6c"


def client_steps() -> list[str]:
    """A namespace on a veth pair of its own to this machine: a client that comes from outside
    (no other route: nothing it sends can go further than this machine)."""
    c, end = CLIENT, CLIENT_LINK
    return [f"ip link add {end} type veth peer name eth0 netns {c}",
            f"ip addr add {HOST_SIDE}/32 dev {end}", f"ip link set {end} up",
            f"ip route add {CLIENT_ADDRESS}/32 dev {end}",
            f"ip -n {c} addr add {CLIENT_ADDRESS}/32 dev eth0", f"ip -n {c} link set eth0 up",
            f"ip -n {c} route add {HOST_SIDE}/32 dev eth0"]  # fmt: skip


def add_client(echo: bool = True) -> str:
    """Make the client (one left from an earlier run goes first); returns its namespace. Its
    host end goes with it (a veth pair is deleted as a whole)."""
    port_demo.release(CLIENT)
    port_demo.delete([CLIENT])
    port_demo.guard(CLIENT, [CLIENT])
    try:
        run([f"ip netns add {CLIENT}"], echo=False)
        run(client_steps(), echo=echo)
    except BaseException:
        port_demo.release(CLIENT)
        raise
    return CLIENT


def remove_client() -> list[str]:
    """Remove the client: its host end first (deleting a namespace deletes its links, but the
    kernel does it a moment later), then its namespace."""
    subprocess.run(["ip", "link", "del", CLIENT_LINK], capture_output=True, check=False)
    return sorted(set(port_demo.release(CLIENT) + port_demo.delete([CLIENT])))
