"""Networks against the real kernel and the real iptables, beside the host's Docker.

Each test points ``paths.NET_DIR`` at a temp dir of its own, so its network definitions and
leases are its own; the bridges, veths and rules are the host's, named with labkit's tags
(``lkbr-*``, ``lkv*``, ``LABKIT-*``), and a fixture checks that a test leaves none behind.
A "container" here is a process in a network namespace of its own (``unshare --net``),
plugged in with ``attach.prepare`` + ``attach.plug`` and given its address from inside with
``ip``, as PID 1 will do it with ``kernel.netdev.configure_inside``.

Nothing is sent beyond the host: the "outside world" of the egress test is a namespace of
the test's own with a TEST-NET-2 address (198.51.100.0/24, RFC 5737), routed to explicitly.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import paths
from labkit.errors import LabkitError
from labkit.kernel import netdev
from labkit.network import attach, bridge, cleanup, firewall, host, ipam, store
from labkit.network.model import Attachment, Network

REPO = Path(__file__).resolve().parent.parent
OWN_NETNS = os.readlink("/proc/self/ns/net")


def _traces(names: set[str]) -> list[str]:
    """What is left on the host of these links: the links, and rules naming them."""
    links = [f"link {n}" for n in sorted(names) if bridge.exists(n)]
    rules = [f"{t} {line}" for t, line in firewall.labkit_rules() if set(line.split()) & names]
    return links + rules


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A NET_DIR of the test's own; afterwards its networks are removed, and nothing is left
    of the links it made (bridges, veths: noted as they are made) or of rules naming them.

    Teammates and notebooks make labkit networks on this host at the same time, so the
    check is about this test's own objects, not a before/after diff of the whole host."""
    forward = firewall.IP_FORWARD.read_text()
    monkeypatch.setattr(paths, "NET_DIR", tmp_path / "net")
    made: set[str] = set()
    real_create, real_veth = bridge.create, netdev.add_veth

    def noting_create(name: str, *args: object) -> None:
        made.add(name)
        real_create(name, *args)

    def noting_veth(host_end: str, *args: object, **kwargs: object) -> None:
        made.add(host_end)
        real_veth(host_end, *args, **kwargs)

    monkeypatch.setattr(bridge, "create", noting_create)
    monkeypatch.setattr(netdev, "add_veth", noting_veth)
    procs: list[subprocess.Popen] = []
    yield {"tmp": tmp_path, "procs": procs, "made": made}
    for p in procs:
        p.kill()
        p.wait()
    for network in store.list_all():
        store.destroy(network, ignore=frozenset(le.container_id for le in ipam.leases(network)))
    host.remove_base_if_unused()
    deadline = time.monotonic() + 5  # a dead namespace takes its veth end with it, soon
    while (left := _traces(made)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: {left}"
    rules = firewall.labkit_rules()
    assert not rules or firewall.bridges_in_rules(rules), f"chains nobody needs: {rules}"
    assert firewall.IP_FORWARD.read_text() == forward


def _netns_process(procs: list[subprocess.Popen]) -> int:
    """A process alone in a new network namespace: the stand-in for a container's PID 1."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    procs.append(proc)
    deadline = time.monotonic() + 5
    while os.readlink(f"/proc/{proc.pid}/ns/net") == OWN_NETNS:
        assert time.monotonic() < deadline, "unshare --net did not happen"
        time.sleep(0.005)
    return proc.pid


def inside(pid: int, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in the network namespace of ``pid`` (only that namespace)."""
    return subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", *argv],
        capture_output=True, text=True, check=check, timeout=30,
    )  # fmt: skip


def _container(net: dict, name: str, mode: str) -> tuple[Attachment, int]:
    """prepare + a namespace + plug, then eth0's address and route from inside."""
    cid = secrets.token_hex(32)
    directory = net["tmp"] / name
    directory.mkdir()
    att = attach.prepare(cid, name, name, mode, directory)
    assert att is not None
    pid = _netns_process(net["procs"])
    attach.plug(att, pid)
    config = attach.inside_config(att)
    inside(pid, "ip", "link", "set", "lo", "up")
    inside(pid, "ip", "addr", "add", f"{config['address']}/{config['prefix']}", "dev", "eth0")
    inside(pid, "ip", "link", "set", "eth0", "up")
    inside(pid, "ip", "route", "add", "default", "via", config["gateway"])
    return att, pid


def ping(pid: int, address: str) -> bool:
    done = inside(pid, "busybox", "ping", "-c", "1", "-W", "2", address, check=False)
    return done.returncode == 0


def _cli(net: dict, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LABKIT_NET_DIR=str(paths.NET_DIR))
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip


def _ip_json(*argv: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *argv], capture_output=True, text=True,
                                     check=True).stdout or "[]")  # fmt: skip


# -- networks: definitions, bridges, rules, errors --------------------------------------------


def test_create_makes_bridge_address_route_and_rules(net: dict) -> None:
    network = store.create("lab-a")
    assert re.fullmatch(r"[0-9a-f]{64}", network.id) and network.bridge == "lkbr-" + network.id[:8]
    addrs = _ip_json("addr", "show", "dev", network.bridge)
    inet = [a for a in addrs[0]["addr_info"] if a["family"] == "inet"]
    assert [(a["local"], a["prefixlen"]) for a in inet] == [(network.gateway, network.prefix)]
    assert network.gateway.endswith(".1") and network.subnet.startswith("10.2")
    routes = _ip_json("route", "show", network.subnet)
    assert routes and routes[0]["dev"] == network.bridge
    # every rule, verbatim, as iptables itself prints it (so removal by spec is exact)
    filt, nat = firewall.listing("filter"), firewall.listing("nat")
    for rule in firewall.network_rules(network.bridge, network.subnet):
        assert rule.line() in (filt if rule.table == "filter" else nat), rule
    forward = [line for line in filt if line.startswith("-A FORWARD")]
    assert forward[0] == "-A FORWARD -j LABKIT-FORWARD", "labkit's jump must come first"
    assert "-A LABKIT-ISOLATION-2 -o docker0 -j DROP" in filt
    # a second network: another subnet, and the two drop each other in isolation stage 2
    other = store.create("lab-b")
    assert other.subnet != network.subnet
    filt = firewall.listing("filter")
    assert f"-A LABKIT-ISOLATION-2 -o {network.bridge} -j DROP" in filt
    assert f"-A LABKIT-ISOLATION-2 -o {other.bridge} -j DROP" in filt

    store.remove("lab-a")
    assert not bridge.exists(network.bridge)
    assert not any(network.bridge in line for _, line in firewall.labkit_rules())
    assert bridge.exists(other.bridge), "removing one network touched another"
    store.remove("lab-b")
    rules = firewall.labkit_rules()  # another NET_DIR's labkit0 may need the chains still
    assert rules == [] or firewall.bridges_in_rules(rules), "chains outlived the last network"


def test_create_refuses_what_docker_refuses(net: dict) -> None:
    # docker0's subnet: one line, naming the route, the flag and a free subnet
    done = _cli(net, "network", "create", "--subnet", "172.17.0.0/16", "clash")
    assert done.returncode == 125 and done.stdout == ""
    assert re.fullmatch(
        r"labkit: subnet 172\.17\.0\.0/16 overlaps 172\.17\.0\.0/16 on docker0 "
        r"\(fix: pick another with --subnet, e.g\. 10\.2\d\d\.0\.0/16\)\n", done.stderr
    ), done.stderr  # fmt: skip
    first = store.create("first", subnet="10.251.0.0/16")
    with pytest.raises(LabkitError, match=r"overlaps 10\.251\.0\.0/16 on lkbr-"):
        store.create("second", subnet="10.251.128.0/17")  # inside the first one
    with pytest.raises(LabkitError, match="network with name first already exists"):
        store.create("first")
    for bad in ("bridge", "host", "none"):
        with pytest.raises(LabkitError, match="reserved"):
            store.create(bad)
    with pytest.raises(LabkitError, match="invalid network name"):
        store.create("-dash")
    with pytest.raises(LabkitError, match=r"did you mean 10\.1\.0\.0/16"):
        store.create("x", subnet="10.1.2.3/16")
    with pytest.raises(LabkitError, match="not a host address"):
        store.create("x", subnet="10.252.0.0/16", gateway="10.253.0.1")
    with pytest.raises(LabkitError, match="not found") as err:
        store.get("nosuch")
    assert "{network_ls}" in err.value.fix
    assert [n.name for n in store.list_all()] == ["first"], "a refused create left a definition"
    with pytest.raises(LabkitError, match="pre-defined"):
        store.remove("bridge")
    assert first.subnet == "10.251.0.0/16"


def test_cli_create_ls_inspect_rm(net: dict) -> None:
    done = _cli(net, "network", "create", "--subnet", "10.252.0.0/24", "--gateway",
                "10.252.0.254", "web")  # fmt: skip
    assert done.returncode == 0, done.stderr
    network_id = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", network_id)
    lines = _cli(net, "network", "ls").stdout.splitlines()
    assert re.fullmatch(r"NETWORK ID +NAME +DRIVER +SCOPE", lines[0])
    rows = [line.split() for line in lines[1:]]
    assert [r[1] for r in rows] == ["bridge", "host", "none", "web"]
    assert [r[2] for r in rows] == ["bridge", "host", "null", "bridge"]
    assert all(len(r[0]) == 12 and r[3] == "local" for r in rows)
    assert ["web", network_id[:12]] == [rows[3][1], rows[3][0]]
    (doc,) = json.loads(_cli(net, "network", "inspect", "web").stdout)
    assert doc["Name"] == "web" and doc["Id"] == network_id and doc["Scope"] == "local"
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.252.0.0/24", "Gateway": "10.252.0.254"}]
    assert doc["Options"] == {"com.docker.network.bridge.name": "lkbr-" + network_id[:8]}
    assert doc["Containers"] == {}
    done = _cli(net, "network", "rm", "web")
    assert (done.returncode, done.stdout) == (0, "web\n"), done.stderr
    done = _cli(net, "network", "rm", "web")
    assert (
        done.stderr
        == "labkit: network web not found (fix: see the networks with labkit network ls)\n"
    )


# -- address leases ---------------------------------------------------------------------------

TAKER = """
import os, sys, time
from pathlib import Path
from labkit import paths
from labkit.network import ipam
from labkit.network.model import Network
paths.NET_DIR = Path(sys.argv[1])
network = Network(**__import__("json").loads(sys.argv[2]))
while not os.path.exists(sys.argv[3]):
    time.sleep(0.001)
print(ipam.take(network, sys.argv[4], sys.argv[4][:6], "h"), flush=True)
if sys.argv[5] == "stay":
    time.sleep(60)
"""


def _takers(network: Network, go: Path, n: int, stay: bool = False) -> list[subprocess.Popen]:
    args = [str(paths.NET_DIR), json.dumps(network.to_dict()), str(go)]
    return [
        subprocess.Popen([sys.executable, "-c", TAKER, *args, secrets.token_hex(32),
                          "stay" if stay else "exit"], stdout=subprocess.PIPE, text=True, cwd=REPO)
        for _ in range(n)
    ]  # fmt: skip


def test_twenty_concurrent_takes_get_twenty_addresses(net: dict) -> None:
    """No lock on the start path: O_EXCL alone keeps addresses unique."""
    network = Network("ipam", "f" * 64, "lkbr-ffffffff", "10.99.0.0/24", "10.99.0.1", "now")
    go = net["tmp"] / "go"
    procs = _takers(network, go, 20, stay=True)  # alive: a dead taker's lease is fair game
    net["procs"] += procs
    time.sleep(0.3)  # let them all start and wait at the line
    go.touch()
    got = [p.stdout.readline().strip() for p in procs]
    assert len(set(got)) == 20, got
    assert sorted(got, key=lambda a: int(a.rsplit(".", 1)[1])) == [
        f"10.99.0.{i}" for i in range(2, 22)
    ], "lowest free first, skipping the network address and the gateway"
    me = secrets.token_hex(32)
    assert ipam.take(network, me, "me", "me") == "10.99.0.22"
    assert ipam.release(network, "10.99.0.5"), "release gives an address back"
    assert ipam.take(network, me, "me", "me") == "10.99.0.5", "and it is the lowest free one"
    assert ipam.release(network, "10.99.0.5", me) and not ipam.release(network, "10.99.0.5", me)
    assert not ipam.release(network, "10.99.0.22", "someone else"), "released another's lease"
    for p in procs:  # the takers die: their leases are stale, the next take reclaims them
        p.kill()
        p.wait()
    assert ipam.take(network, me, "me", "me") == "10.99.0.2"
    assert [le.address for le in ipam.leases(network)] == ["10.99.0.2", "10.99.0.22"]


def test_a_killed_owners_lease_is_reclaimed_a_live_ones_is_not(net: dict) -> None:
    network = Network("ipam", "e" * 64, "lkbr-eeeeeeee", "10.98.0.0/29", "10.98.0.1", "now")
    go = net["tmp"] / "go"
    go.touch()
    (owner,) = _takers(network, go, 1, stay=True)
    net["procs"].append(owner)
    assert owner.stdout.readline().strip() == "10.98.0.2"
    me = secrets.token_hex(32)
    assert ipam.take(network, me, "me", "me") == "10.98.0.3", "a live owner's lease was taken"
    # the container's PID 1, noted by plug, keeps the lease when the supervisor dies
    pid1 = subprocess.Popen(["sleep", "60"])
    net["procs"].append(pid1)
    ipam.claim(network, "10.98.0.3", pid1.pid)
    owner.kill()
    owner.wait()
    taken = [ipam.take(network, secrets.token_hex(32), "x", "x") for _ in range(2)]
    assert taken[0] == "10.98.0.2", "a killed owner's lease was not reclaimed"
    assert taken[1] == "10.98.0.4", "a lease whose container lives was reclaimed"
    for _ in range(2):  # .5 and .6: a /29 has six hosts, one is the gateway
        ipam.take(network, secrets.token_hex(32), "x", "x")
    with pytest.raises(LabkitError, match=r"no free address left in 10\.98\.0\.0/29"):
        ipam.take(network, secrets.token_hex(32), "x", "x")


# -- containers on networks -------------------------------------------------------------------


def test_prepare_refuses_before_making_anything(net: dict) -> None:
    directory = net["tmp"] / "c"
    directory.mkdir()
    assert attach.prepare("a" * 64, "c", "c", "none", directory) is None
    assert attach.prepare("a" * 64, "c", "c", "host", directory) is None
    for mode in ("nosuch", "container:web", ""):
        with pytest.raises(LabkitError) as err:
            attach.prepare("a" * 64, "c", "c", mode, directory)
        assert "{network_ls}" in err.value.fix
    assert list(directory.iterdir()) == [] and store.list_all() == []
    # a failure after the lease (here: the files cannot be written) gives the address back
    network = store.create("fails")
    with pytest.raises(OSError):
        attach.prepare("b" * 64, "c", "c", "fails", net["tmp"] / "missing")
    assert ipam.leases(network) == []


def test_containers_talk_within_a_network_not_across_and_go_out_masqueraded(net: dict) -> None:
    store.create("front")
    store.create("back")
    a1, p1 = _container(net, "a1", "front")
    a2, p2 = _container(net, "a2", "front")
    b1, pb = _container(net, "b1", "back")
    assert a1.mac == "02:42:" + ":".join(f"{int(o):02x}" for o in a1.address.split("."))
    assert bridge.ports(a1.bridge) == sorted([a1.host_ifname, a2.host_ifname])
    eth0 = json.loads(inside(p1, "ip", "-j", "link", "show", "eth0").stdout)
    assert eth0[0]["address"] == a1.mac
    # names: a user network's containers find each other in /etc/hosts (refreshed in place)
    hosts = {k: Path(v).read_text() for k, v in attach.files_for(a1).items()}
    assert hosts["/etc/hosts"].startswith("127.0.0.1\tlocalhost\n")
    assert (
        f"{a1.address}\ta1\n" in hosts["/etc/hosts"]
        and f"{a2.address}\ta2\n" in hosts["/etc/hosts"]
    )
    assert "b1" not in hosts["/etc/hosts"] and hosts["/etc/hostname"] == "a1\n"
    assert not re.search(r"nameserver (127\.|::1)", hosts["/etc/resolv.conf"])

    from labkit.cli_network import inspect

    seen_by_inspect = inspect("front")["Containers"][a1.container_id]
    assert seen_by_inspect["Name"] == "a1" and seen_by_inspect["MacAddress"] == a1.mac
    assert seen_by_inspect["IPv4Address"] == f"{a1.address}/{a1.prefix}"

    assert ping(p1, a2.address), "two containers on one network cannot reach each other"
    assert ping(p2, a1.address)
    assert not ping(pb, a1.address), "a container reached another network"
    assert ping(p2, a1.address), "positive control: the same target from its own network"
    assert ping(pb, b1.gateway)

    # egress: an "outside" namespace with a TEST-NET-2 address, routed to explicitly
    outside = _netns_process(net["procs"])
    veth = "lkt" + secrets.token_hex(4)
    net["made"].add(veth)
    subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns",
                    str(outside)], check=True)  # fmt: skip
    subprocess.run(["ip", "addr", "add", "198.51.100.1/32", "dev", veth], check=True)
    subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    subprocess.run(["ip", "route", "add", "198.51.100.0/24", "dev", veth], check=True)
    inside(outside, "ip", "addr", "add", "198.51.100.2/24", "dev", "eth0")
    inside(outside, "ip", "link", "set", "eth0", "up")
    inside(outside, "ip", "route", "add", "198.51.100.1/32", "dev", "eth0")
    route = _ip_json("route", "get", "198.51.100.2")
    assert route[0]["dev"] == veth, f"198.51.100.2 would not stay on this host: {route}"
    listener = subprocess.Popen(
        ["nsenter", f"--net=/proc/{outside}/ns/net", sys.executable, "-c",
         "import socket; s = socket.create_server(('198.51.100.2', 5555)); print('ready', "
         "flush=True); c, peer = s.accept(); print(peer[0], c.recv(10).decode(), flush=True)"],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    net["procs"].append(listener)
    assert listener.stdout.readline().strip() == "ready"
    inside(p1, sys.executable, "-c", "import socket; socket.create_connection(('198.51.100.2',"
           " 5555), timeout=5).sendall(b'hello')")  # fmt: skip
    seen = listener.stdout.readline().split()
    assert seen == ["198.51.100.1", "hello"], f"not masqueraded as the host: {seen}"
    subprocess.run(["ip", "link", "del", veth], check=True)

    # off the network: the veth goes, the address comes back, the peers forget the name
    attach.unplug(a2)
    attach.unplug(a2)  # again: nothing left to do, no error
    assert not bridge.exists(a2.host_ifname)
    assert [le.address for le in ipam.leases(a1.network_id)] == [a1.address]
    assert "a2" not in Path(attach.files_for(a1)["/etc/hosts"]).read_text()
    with pytest.raises(LabkitError, match="has active endpoints: a1"):
        store.remove("front")
    for att in (a1, b1):
        attach.unplug(att)


def test_default_network_fast_path() -> None:
    """The default network is made on first use; after that prepare+plug run no iptables
    and never import pyroute2. In a network namespace (and a /sys) of the test's own: the
    host's ``labkit0`` belongs to the real NET_DIR, and other tests' containers use it."""
    inner = "tests/test_network.py::test_default_network_fast_path_here"
    script = (
        "mount --make-rprivate / && mount -t sysfs sysfs /sys && "
        f"exec {sys.executable} -m pytest -q -p no:cacheprovider {inner}"
    )
    done = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", script],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env=dict(os.environ, LABKIT_TEST_OWN_NETNS="1"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout


def default_network_fast_path_here(net: dict) -> None:
    """The body of the test above, run by the inner pytest (collected there only)."""
    first, pid = _container(net, "first", "bridge")
    assert (first.network, first.bridge) == ("bridge", "labkit0")
    assert ping(pid, first.gateway)
    second = _netns_process(net["procs"])
    script = f"""
import os, subprocess, sys, time
from pathlib import Path
from labkit import paths
paths.NET_DIR = Path({str(paths.NET_DIR)!r})
from labkit.network import attach
calls = []
real = subprocess.Popen.__init__
def spy(self, *a, **k):
    calls.append(a[0])
    real(self, *a, **k)
subprocess.Popen.__init__ = spy
d = Path({str(net["tmp"])!r}) / "fast"
d.mkdir()
att = attach.prepare("c" * 64, "fast", "fast", "bridge", d)
attach.plug(att, {second})
print(att.address, "pyroute2" in sys.modules, calls)
attach.unplug(att)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    address, pyroute2, calls = done.stdout.split(" ", 2)
    assert address != first.address and pyroute2 == "False" and calls.strip() == "[]"
    # hosts on the default network: no peers, as Docker's
    text = Path(attach.files_for(first)["/etc/hosts"]).read_text()
    assert text.endswith(f"{first.address}\tfirst\n")
    assert not cleanup.remove_default_if_unused(), "removed while a container is on it"
    assert bridge.exists("labkit0")
    attach.unplug(first)
    gone = cleanup.remove_default_if_unused()  # False if another NET_DIR's network needs
    assert gone == (firewall.bridges_in_rules() == set())  # labkit's chains still
    assert not bridge.exists("labkit0") and store.list_all() == []
    assert not any("labkit0" in line for _, line in firewall.labkit_rules())


if os.environ.get("LABKIT_TEST_OWN_NETNS"):  # collected by the inner pytest only
    test_default_network_fast_path_here = default_network_fast_path_here


def test_ip_forward_is_turned_on_and_put_back(net: dict) -> None:
    """In a network namespace of the test's own: the host's ip_forward is never touched."""
    orig = net["tmp"] / "ip_forward.orig"
    script = f"""
from pathlib import Path
from labkit.network import firewall
orig = Path({str(orig)!r})
firewall.IP_FORWARD.write_text("0")
firewall.enable_forwarding(orig)
print(firewall.IP_FORWARD.read_text().strip(), orig.read_text().strip())
firewall.enable_forwarding(orig)
print(firewall.restore_forwarding(orig), firewall.IP_FORWARD.read_text().strip(), orig.exists())
print(firewall.restore_forwarding(orig))
"""
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", script],
                          capture_output=True, text=True, cwd=REPO, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["1 0", "True 0 False", "False"]


def test_reset_finds_and_removes_what_a_crash_left(
    net: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "STATE_DIR", net["tmp"] / "state")
    network = store.create("crashed")
    # a supervisor killed after taking a lease; the host end of a veth left behind
    go = net["tmp"] / "go"
    go.touch()
    (taker,) = _takers(network, go, 1)
    address = taker.communicate(timeout=30)[0].strip()
    stray = "lkv" + secrets.token_hex(4)
    net["made"] |= {stray, stray + "p"}
    subprocess.run(["ip", "link", "add", stray, "type", "veth", "peer", "name", stray + "p"],
                   check=True)  # fmt: skip
    mine = {address, stray, stray + "p", "crashed", "LABKIT-*"}
    found = [i for i in cleanup.find() if i[1] in mine]
    kinds = [(kind, name) for kind, name, _, _ in found]
    assert kinds[:3] == [("net-lease", address), ("net-link", stray), ("net-link", stray + "p")]
    assert ("network", "crashed") in kinds
    from labkit import reset

    assert any(i.kind == "network" and i.name == "crashed" for i in reset.find_network())
    for kind, _, _, ref in found:
        if kind == "net-chains" and not host.remove_base_if_unused():
            continue  # another NET_DIR on this host uses them
        if kind != "net-chains":
            cleanup.remove(kind, ref)
    assert not bridge.exists(stray) and not bridge.exists(network.bridge)
    assert store.list_all() == [] and not ipam.leases(network)
    assert not [i for i in cleanup.find() if i[1] in mine]
