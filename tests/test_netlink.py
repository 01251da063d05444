"""labkit.kernel.netlink and netdev against the real kernel, in scratch network namespaces.

The pytest process never unshares and never touches the host's links. Each namespace is held
by a sleeping ``unshare --net`` process; work in it runs in a fresh child entered with
``nsenter --net``. What labkit makes is compared with what ``ip`` makes from the same
request in another pair of namespaces, and a ping between them proves it carries packets.
Killing the sleepers frees the namespaces and every link in them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import PYTHON, REPO, wait_until

#: Every link a test makes starts with this (at most 15 bytes with its suffix).
PREFIX = "lkt" + secrets.token_hex(3)
HOST, BRIDGE = f"{PREFIX}v", f"{PREFIX}b"
PEER_MAC = "02:42:0a:e7:00:05"
NOT_A_PID = 2**22 + 1  # above the largest pid_max Linux allows


def _netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


@pytest.fixture
def netns(needs_root: None) -> Iterator[Callable[[], int]]:
    """Make scratch network namespaces: each call returns the PID of a process holding one."""
    holders: list[subprocess.Popen] = []

    def make() -> int:
        proc = subprocess.Popen(["unshare", "--net", "sleep", "600"])
        holders.append(proc)
        mine = _netns_inode("self")
        assert wait_until(lambda: _netns_inode(proc.pid) not in (None, mine)), "no netns"
        return proc.pid

    yield make
    for proc in holders:
        proc.kill()
        proc.wait()
    leftover = [n for n in os.listdir("/sys/class/net") if n.startswith(PREFIX)]
    assert leftover == [], f"links left in the host's namespace: {leftover}"


def _enter(pid: int) -> list[str]:
    return ["nsenter", f"--net=/proc/{pid}/ns/net"]


def sh(pid: int, command: str) -> str:
    """Run ``command`` (split on spaces) in the network namespace of ``pid``."""
    done = subprocess.run(
        [*_enter(pid), *command.split()], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


def ip(pid: int, *args: str) -> Any:
    """``ip -j ARGS`` in the network namespace of ``pid``, parsed."""
    return json.loads(sh(pid, " ".join(["ip", "-j", *args])) or "[]")


def call(pid: int, expr: str) -> dict[str, Any]:
    """Evaluate ``expr`` in a fresh Python in the network namespace of ``pid``:
    ``{"value": ...}``, or the OSError it raised as ``{"errno", "type", "message"}``."""
    script = textwrap.dedent(f"""\
        import json
        from labkit.kernel import netdev, netlink
        try:
            out = {{"value": {expr}}}
        except OSError as exc:
            out = {{"errno": exc.errno, "type": type(exc).__name__, "message": exc.strerror}}
        print(json.dumps(out))
    """)
    done = subprocess.run(
        [*_enter(pid), PYTHON, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _bridge(pid: int) -> None:
    """The host side's bridge, with the address containers use as their gateway."""
    sh(pid, f"ip link add {BRIDGE} type bridge")
    sh(pid, f"ip addr add 10.231.0.1/24 dev {BRIDGE}")
    sh(pid, f"ip link set {BRIDGE} up")


LABKIT_SETUP = {
    "host": f"netdev.add_veth({HOST!r}, 'eth0', {{container}}, master={BRIDGE!r}, "
    f"peer_mac={PEER_MAC!r}, mtu=1400)",
    "inside": "netdev.configure_inside("
    "{'address': '10.231.0.5', 'prefix': 24, 'gateway': '10.231.0.1'})",
}
IP_SETUP = {
    "host": f"ip link add {HOST} up master {BRIDGE} mtu 1400 type veth "
    f"peer name eth0 netns {{container}} address {PEER_MAC} mtu 1400",
    "inside": [
        "ip link set lo up",
        "ip addr add 10.231.0.5/24 brd + dev eth0",
        "ip link set eth0 up",
        "ip route add default via 10.231.0.1",
    ],
}

#: What two identical setups share: not indexes, random MACs, or the peer's netns id.
LINK_KEYS = ("ifname", "flags", "mtu", "master", "operstate", "link_type", "group")


def _links(pid: int, fixed_mac: str | None = None) -> dict[str, dict]:
    found = {}
    for link in ip(pid, "-d", "link"):
        row = {k: link.get(k) for k in LINK_KEYS}
        row["kind"] = link.get("linkinfo", {}).get("info_kind")
        row["slave_kind"] = link.get("linkinfo", {}).get("info_slave_kind")
        if link.get("address") == fixed_mac or link["ifname"] == "lo":
            row["address"] = link.get("address")
        found[link["ifname"]] = row
    return found


def _state(host: int, container: int) -> dict[str, Any]:
    """Everything both sides hold that ``ip`` would show the same for the same request."""
    ipv4 = {a["ifname"]: a["addr_info"] for a in ip(container, "-4", "addr")}
    return {
        "host links": _links(host),
        "container links": _links(container, PEER_MAC),
        "container addresses": ipv4,
        "container routes": ip(container, "-4", "route", "show", "table", "all"),
    }


def _ping(pid: int, address: str) -> bool:
    done = subprocess.run(
        [*_enter(pid), "busybox", "ping", "-c", "1", "-W", "2", address],
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


def test_a_veth_pair_is_what_ip_makes_and_carries_packets(netns: Callable[[], int]) -> None:
    host, container = netns(), netns()
    _bridge(host)
    assert call(host, LABKIT_SETUP["host"].format(container=container)) == {"value": None}

    # The peer went straight into the container's namespace: the host never held it.
    assert set(_links(host)) == {"lo", BRIDGE, HOST}
    assert set(_links(container)) == {"lo", "eth0"}
    host_end = _links(host)[HOST]
    assert host_end["master"] == BRIDGE and "UP" in host_end["flags"] and host_end["mtu"] == 1400
    peer = _links(container, PEER_MAC)["eth0"]
    assert peer["address"] == PEER_MAC and peer["kind"] == "veth" and "UP" not in peer["flags"]

    assert call(container, LABKIT_SETUP["inside"]) == {"value": None}
    ours = _state(host, container)
    [inet] = ours["container addresses"]["eth0"]
    assert (inet["local"], inet["prefixlen"], inet["broadcast"]) == (
        "10.231.0.5",
        24,
        "10.231.0.255",
    )
    assert {"dst": "default", "gateway": "10.231.0.1", "dev": "eth0", "flags": []} in ours[
        "container routes"
    ]
    assert wait_until(lambda: _ping(container, "10.231.0.1"), timeout=10)
    assert _ping(host, "10.231.0.5")

    ref_host, ref_container = netns(), netns()
    _bridge(ref_host)
    sh(ref_host, IP_SETUP["host"].format(container=ref_container))
    for command in IP_SETUP["inside"]:
        sh(ref_container, command)
    assert wait_until(lambda: _ping(ref_container, "10.231.0.1"), timeout=10)
    # (a bridge's operstate follows its ports' a moment later, in the kernel's linkwatch)
    wait_until(lambda: _state(ref_host, ref_container) == _state(host, container), timeout=5)
    ours, theirs = _state(host, container), _state(ref_host, ref_container)
    for key, value in ours.items():
        assert value == theirs[key], f"{key}:\n labkit: {value}\n     ip: {theirs[key]}"


def test_the_kernel_says_no_in_errnos_that_name_the_link(netns: Callable[[], int]) -> None:
    host, container = netns(), netns()
    _bridge(host)
    add = f"netdev.add_veth({HOST!r}, 'eth0', {container}, master={BRIDGE!r})"
    assert call(host, add) == {"value": None}

    again = call(host, add)
    assert again["type"] == "FileExistsError" and again["errno"] == 17
    assert again["message"] == f"add veth {HOST}: File exists"

    # The peer's name is taken inside the container: nothing is left half-made on the host.
    clash = call(host, f"netdev.add_veth({HOST + '2'!r}, 'eth0', {container})")
    assert clash["errno"] == 17 and HOST in clash["message"]
    assert call(host, f"netdev.link_exists({HOST + '2'!r})") == {"value": False}

    gone = call(host, f"netdev.add_veth({HOST + '3'!r}, 'eth1', {NOT_A_PID})")
    assert gone["type"] == "ProcessLookupError", gone
    assert f"add veth {HOST}3: No such process" in gone["message"]
    assert str(NOT_A_PID) in gone["message"]

    no_bridge = call(
        host, f"netdev.add_veth({HOST + '4'!r}, 'eth1', {container}, master='lktnone')"
    )
    assert no_bridge["errno"] == 19 and "lktnone" in no_bridge["message"]

    assert call(host, "netdev.set_up('lktnone')")["errno"] == 19
    assert call(host, "netdev.add_address('lktnone', '10.0.0.1', 24)")["errno"] == 19
    assert call(host, "netdev.delete_link('lktnone')") == {"value": False}

    assert call(host, f"netdev.link_exists({HOST!r})") == {"value": True}
    assert call(host, f"netdev.delete_link({HOST!r})") == {"value": True}
    assert set(_links(container)) == {"lo"}, "deleting one end deletes its peer"
    assert set(_links(host)) == {"lo", BRIDGE}


def test_inside_without_a_network_only_lo_comes_up(netns: Callable[[], int]) -> None:
    container = netns()
    assert call(container, "netdev.configure_inside({})") == {"value": None}
    assert "UP" in _links(container)["lo"]["flags"]
    assert ip(container, "-4", "route") == []
    missing = call(container, "netdev.configure_inside({'address': '10.1.0.2', 'prefix': 24})")
    assert missing["errno"] == 19 and "eth0" in missing["message"]


def test_a_dump_is_read_to_its_end(netns: Callable[[], int]) -> None:
    """A dump is a multi-part answer: many messages flagged NLM_F_MULTI, then NLMSG_DONE."""
    pid = netns()
    for n in range(40):  # more than fit in one read
        sh(pid, f"ip link add {PREFIX}{n} type veth peer name {PREFIX}p{n}")
    names = call(
        pid,
        "sorted(netlink.parse_attrs(payload[16:])[3].rstrip(b'\\0').decode() for kind, payload"
        " in netlink.Netlink().request(netlink.RTM_GETLINK,"
        " netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP, bytes(16), 'dump links'))",
    )["value"]
    assert names == sorted(link["ifname"] for link in ip(pid, "link")) and len(names) == 81


def test_attributes_are_padded_to_four_bytes() -> None:
    from labkit.kernel.netlink import attr, parse_attrs

    assert attr(3, "lo") == b"\x07\x00\x03\x00lo\x00\x00"  # length 7, padded to 8
    assert attr(19, 1234) == b"\x08\x00\x13\x00" + (1234).to_bytes(4, sys.byteorder)
    nested = attr(18, [attr(1, "veth"), attr(2, [attr(1, b"x")])])
    assert len(nested) % 4 == 0
    inner = parse_attrs(parse_attrs(nested)[18])
    assert inner[1] == b"veth\0" and parse_attrs(inner[2]) == {1: b"x"}


def test_the_modules_are_standard_library_only() -> None:
    """The helper imports them per container: no pyroute2, nothing outside the stdlib and
    labkit's kernel layer."""
    script = (
        "import sys; before = set(sys.modules)\n"
        "import labkit.kernel.netdev\n"
        "print(sorted(set(sys.modules) - before))"
    )
    done = subprocess.run([PYTHON, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.replace("'", '"'))
    assert "labkit.kernel.netlink" in loaded and not any(m.startswith("pyroute2") for m in loaded)
    ours = {"labkit", "labkit.errors", "labkit.kernel", "labkit.kernel.stage"}
    ours |= {"labkit.kernel.netlink", "labkit.kernel.netdev"}
    foreign = [m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names]
    assert set(foreign) <= ours, foreign
