"""The connectivity matrix of labkit's networks, each cell asserted on the real kernel, with
Docker's daemon running alongside (its docker0, its iptables rules, its containers).

Who may reach whom, as under Docker's bridge driver:

==========================================  =========  ======================================
from -> to                                  expected   how it is shown
==========================================  =========  ======================================
container <-> container, one network        yes        ping by address both ways (and by name
                                                       on a user network)
container on A -> container on B            no         ping; control: a peer on B reaches it
container -> outside (a netns of ours)      yes, NAT   the outside sees the host's address;
                                                       control: it has no route back to the
                                                       container's own address
outside -> container port (not published)   no         TCP connect times out, for labkit as
                                                       for a Docker container
host -> container                           yes        ping and TCP connect from the host
labkit container <-> Docker container       no         ping; control: Docker peers reach it
20 containers at once                       distinct   addresses; afterwards no link, lease
                                                       or iptables change is left
--network none / host / an unknown name     lo only /  ``ip link``, the netns inode, a
                                            host's /   one-line error (as Docker's) that
                                            refused    leaves nothing
==========================================  =========  ======================================

No packet leaves the host: the "outside" is a network namespace made here (TEST-NET-3,
203.0.113.0/24; test_network.py's egress test uses TEST-NET-2, and the two may run at the
same time) on a veth pair of ours (``lkt...``), and its route is checked before
anything is sent. No name is looked up that is not in a container's /etc/hosts (an unknown
name would send a DNS query to the host's nameserver). Everything made here (containers,
networks, the netns and veths, Docker containers ``labkit-test-...``) goes in fixtures'
teardown, whatever the test's outcome.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _env, wait_until

from labkit import docker, paths

pytestmark = pytest.mark.usefixtures("needs_root")

#: Names made here end in this, so two sessions on one host never clash.
TOKEN = secrets.token_hex(3)
OUTSIDE = ipaddress.IPv4Interface("203.0.113.1/24")  # TEST-NET-3 (RFC 5737): routed nowhere
HOST_SIDE = ipaddress.IPv4Interface("203.0.113.254/24")
PORT = 9000


def _name(role: str) -> str:
    return f"labkit-test-{TOKEN}-{role}"


def _host(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command on the host; with ``check``, its failure fails the test with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr}")
    return done


def _exec(pid: int, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """``docker exec`` for a labkit container: ``argv`` in the namespaces of its PID 1 (its
    network, its files, so /etc/hosts is the container's), as root."""
    enter = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--"]
    return _host(*enter, *argv, check=False, timeout=timeout)


def _address(pid: int) -> str:
    """eth0's IPv4 address, as the container sees it."""
    done = _exec(pid, "ip", "-o", "-4", "addr", "show", "eth0")
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", done.stdout)
    assert found, f"no address on eth0: {done.stdout}{done.stderr}"
    return found.group(1)


def _assert_plugged(pid: int, bridge: str) -> None:
    """The host end of the container's veth, ``lkv`` + 8 hex of its id (its hostname, by
    default the short id), is a port of ``bridge``."""
    short_id = _exec(pid, "hostname").stdout.strip()
    master = os.path.realpath(f"/sys/class/net/lkv{short_id[:8]}/master")
    assert os.path.basename(master) == bridge, f"lkv{short_id[:8]} is on {master}, not {bridge}"


def _ping_from(pid: int, target: str, wait: int = 2) -> bool:
    return _exec(pid, "ping", "-c1", f"-W{wait}", target).returncode == 0


def _docker_ping(box: str, target: str, wait: int = 2) -> bool:
    return docker.run("exec", box, "ping", "-c1", f"-W{wait}", target, check=False).returncode == 0


def _links(prefix: str) -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith(prefix)}


def _inspect(network: str) -> dict:
    done = subprocess.run(
        [PYTHON, "-m", "labkit.cli", "network", "inspect", network],
        cwd=REPO,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


def _iptables() -> dict[str, list[str]]:
    """``iptables -S`` of the filter and nat tables, but the rules of user networks' bridges
    (labkit's ``lkbr-*``, Docker's ``br-*``): another session on this host may make or
    remove a network meanwhile, and no container started here adds such a rule."""
    out = {}
    for table in ("filter", "nat"):
        lines = _host("iptables", "-w", "-t", table, "-S").stdout.splitlines()
        out[table] = [ln for ln in lines if not re.search(r" -[io] (lkbr-|br-)", ln)]
    return out


def _same_rules(before: dict[str, list[str]], after: dict[str, list[str]]) -> None:
    """The two listings are equal; if not, the lines that differ, table by table."""
    diff = {t: ([ln for ln in before[t] if ln not in after[t]],
                [ln for ln in after[t] if ln not in before[t]]) for t in before}  # fmt: skip
    assert before == after, f"iptables changed (gone, new): {diff}"


#: A TCP connect to each ``host:port`` argument at once; prints {target: outcome} as JSON,
#: outcome one of "connected", "timeout" (dropped on the way) or the error's name.
PROBE = textwrap.dedent("""\
    import json, socket, sys, threading
    timeout, out = float(sys.argv[1]), {}
    def probe(target):
        host, port = target.rsplit(":", 1)
        s = socket.socket()
        s.settimeout(timeout)
        try:
            s.connect((host, int(port)))
            out[target] = "connected"
        except socket.timeout:
            out[target] = "timeout"
        except OSError as exc:
            out[target] = type(exc).__name__
        finally:
            s.close()
    threads = [threading.Thread(target=probe, args=(t,)) for t in sys.argv[2:]]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps(out))
""")


def _connect(targets: list[str], netns: str | None = None, timeout: float = 1.5) -> dict:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = _host(*prefix, PYTHON, "-c", PROBE, str(timeout), *targets)
    return json.loads(done.stdout)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busybox_bin(busybox_rootfs: Path) -> str:
    """A static busybox for the host's side (ping), from labkit's busybox image."""
    return str(busybox_rootfs / "bin" / "busybox")


@pytest.fixture
def default_network(lab) -> Iterator[dict]:
    """The default network's ``network inspect``, made if it is not there yet, and kept for
    the test by a container of its own on it: a session that made the default network takes
    it away at its end if no container is on it (see conftest), and other sessions run on
    this host too; a test comparing iptables before and after must not see that happen."""
    with lab.background("sleep", "1000", opts=("--name", _name(f"keep{secrets.token_hex(2)}"))):
        yield _inspect("bridge")


@pytest.fixture
def networks(lab) -> Iterator:
    """``create(role)`` makes a user network ``labkit-test-TOKEN-ROLE``; all go at the end."""
    made: list[str] = []

    def create(role: str) -> str:
        name = _name(role)
        made.append(name)
        done = lab.cli("network", "create", name)
        assert done.returncode == 0, done.stderr
        return name

    yield create
    problems = []
    for name in reversed(made):
        deadline = time.monotonic() + 15  # a container being removed may still hold its lease
        while True:
            done = lab.cli("network", "rm", name)
            if done.returncode == 0 or "not found" in done.stderr:
                break
            if time.monotonic() > deadline:
                problems.append(done.stderr.strip())
                break
            time.sleep(0.3)
    assert not problems, problems


@pytest.fixture
def docker_boxes() -> Iterator:
    """``start(role, *command)`` runs labkit's busybox in Docker on docker0, detached, as
    ``labkit-test-TOKEN-ROLE``; returns (name, address). All are removed at the end."""
    image = docker.import_image("busybox")
    made: list[str] = []

    def start(role: str, *command: str) -> tuple[str, str]:
        name = _name(role)
        made.append(name)
        docker.run("run", "-d", "--name", name, image, *command)
        address = docker.run("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout
        return name, address.strip()

    yield start
    for name in made:
        docker.run("rm", "-f", name, check=False)


@pytest.fixture
def outside() -> Iterator[str]:
    """A network namespace standing for the world outside: OUTSIDE on one end of a veth
    pair, the host's end HOST_SIDE (same /24), and no route to anything else (so it can
    answer the host's address only: what it sees from a container is NAT's doing). Yields
    its name; the netns, and the veth with it, go at the end."""
    routes = _host("ip", "-o", "-4", "route", "show", "to", "match", str(OUTSIDE.ip)).stdout
    taken = [r for r in routes.splitlines() if not r.startswith("default ")]
    assert not taken, f"{OUTSIDE.network} is routed on this host already: {taken}"
    netns, host_end, out_end = f"lkt-out-{TOKEN}", f"lkt{TOKEN}h", f"lkt{TOKEN}o"
    try:
        _host("ip", "netns", "add", netns)
        _host("ip", "link", "add", host_end, "type", "veth", "peer", "name", out_end)
        _host("ip", "link", "set", out_end, "netns", netns)
        _host("ip", "-n", netns, "addr", "add", str(OUTSIDE), "dev", out_end)
        _host("ip", "-n", netns, "link", "set", "lo", "up")
        _host("ip", "-n", netns, "link", "set", out_end, "up")
        _host("ip", "addr", "add", str(HOST_SIDE), "dev", host_end)
        _host("ip", "link", "set", host_end, "up")
        _check_route(host_end)
        yield netns
    finally:
        _host("ip", "netns", "del", netns, check=False)
        if Path(f"/sys/class/net/{host_end}").exists():
            _host("ip", "link", "del", host_end, check=False)


def _check_route(host_end: str) -> None:
    """Before a packet goes to OUTSIDE: the host sends it down our veth, nowhere else."""
    done = _host("ip", "-o", "route", "get", str(OUTSIDE.ip))
    assert f" dev {host_end} " in done.stdout, f"{OUTSIDE.ip} is not routed to us: {done.stdout}"


def _kill_container(name: str) -> None:
    """SIGKILL a labkit container's PID 1 by name (its supervisor then removes it)."""
    from labkit.runtime import records

    with contextlib.suppress(Exception):
        pid = records.find(name).pid
        if pid:
            os.kill(pid, signal.SIGKILL)


# -- 1. container <-> container on one network ------------------------------------------------


def test_containers_on_the_default_bridge_reach_each_other_by_address(lab, default_network):
    bridge = default_network["Options"]["com.docker.network.bridge.name"]
    subnet = ipaddress.ip_network(default_network["IPAM"]["Config"][0]["Subnet"])
    opts_a, opts_b = ("--name", _name("b-one")), ("--name", _name("b-two"))
    with (
        lab.background("sleep", "1000", opts=opts_a) as a,
        lab.background("sleep", "1000", opts=opts_b) as b,
    ):
        addr_a, addr_b = _address(a.pid), _address(b.pid)
        assert addr_a != addr_b and {ipaddress.ip_address(x) for x in (addr_a, addr_b)} <= set(
            subnet
        )
        for box, addr in ((a, addr_a), (b, addr_b)):
            mac = _exec(box.pid, "cat", "/sys/class/net/eth0/address").stdout.strip()
            assert mac == "02:42:" + ":".join(f"{int(o):02x}" for o in addr.split("."))
            _assert_plugged(box.pid, bridge)
        assert _ping_from(a.pid, addr_b), f"{addr_a} cannot ping {addr_b}"
        assert _ping_from(b.pid, addr_a), f"{addr_b} cannot ping {addr_a}"
        # The default network has no names, as Docker's: each hosts file lists itself only.
        hosts = _exec(a.pid, "cat", "/etc/hosts").stdout
        assert addr_a in hosts and addr_b not in hosts and _name("b-two") not in hosts


def test_containers_on_a_user_network_reach_each_other_by_address_and_by_name(lab, networks):
    net = networks("u")
    doc = _inspect(net)
    subnet = ipaddress.ip_network(doc["IPAM"]["Config"][0]["Subnet"])
    web, client = _name("web"), _name("client")
    with (
        lab.background("sleep", "1000", opts=("--network", net, "--name", web)) as w,
        lab.background("sleep", "1000", opts=("--network", net, "--name", client)) as c,
    ):
        addr_w, addr_c = _address(w.pid), _address(c.pid)
        assert ipaddress.ip_address(addr_w) in subnet and ipaddress.ip_address(addr_c) in subnet
        _assert_plugged(w.pid, doc["Options"]["com.docker.network.bridge.name"])
        assert _ping_from(w.pid, addr_c) and _ping_from(c.pid, addr_w)
        # By name, both ways: web was running before client came, so web's /etc/hosts only
        # knows client because labkit rewrote it when client joined (kept current).
        assert _ping_from(c.pid, web), _exec(c.pid, "cat", "/etc/hosts").stdout
        assert _ping_from(w.pid, client), _exec(w.pid, "cat", "/etc/hosts").stdout
        # and a container started now, with its own capabilities (no nsenter), finds web
        done = lab.run("ping", "-c1", "-W2", web, opts=("--network", net, "--name", _name("q")))
        assert done.returncode == 0 and f"from {addr_w}" in done.stdout, done


# -- 2. isolation between networks ------------------------------------------------------------


def test_a_container_cannot_reach_one_on_another_network(lab, networks, default_network):
    net_a, net_b = networks("a"), networks("b")

    def on(net: str, role: str):
        return lab.background("sleep", "1000", opts=("--network", net, "--name", _name(role)))

    with (
        on(net_b, "target") as target,
        on(net_b, "peer") as peer,
        on(net_a, "other") as other,
        on("bridge", "dflt") as dflt,
    ):
        addr_t, addr_o = _address(target.pid), _address(other.pid)
        # positive control: the target answers a ping from its own network
        assert _ping_from(peer.pid, addr_t), "the target does not answer its own network"
        assert not _ping_from(other.pid, addr_t, wait=1), "network A reached network B"
        assert not _ping_from(dflt.pid, addr_t, wait=1), "the default network reached B"
        assert not _ping_from(target.pid, addr_o, wait=1), "network B reached network A"


# -- 3. container -> outside, masqueraded -----------------------------------------------------

LISTEN = textwrap.dedent(f"""\
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{OUTSIDE.ip}", {PORT}))
    s.listen()
    s.settimeout(20)
    print("listening", flush=True)
    c, peer = s.accept()
    c.settimeout(5)
    data = b""
    while not data.endswith(b"\\n"):
        chunk = c.recv(100)
        if not chunk:
            break
        data += chunk
    c.close()
    print(peer[0], peer[1], data.decode().strip(), flush=True)
""")


def test_a_container_reaches_the_outside_as_the_host(lab, outside):
    listener = subprocess.Popen(
        ["ip", "netns", "exec", outside, PYTHON, "-c", LISTEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "listening\n"
        _check_route(f"lkt{TOKEN}h")
        script = (
            f"ip -o -4 addr show eth0; ping -c1 -W2 {OUTSIDE.ip} >/dev/null && echo pinged; "
            f"echo hello-from-$(hostname) | nc -w5 {OUTSIDE.ip} {PORT}"
        )
        done = lab.run("sh", "-c", script, opts=("--name", _name("nat")))
        assert done.returncode == 0 and "pinged" in done.stdout, done
        seen, err = listener.communicate(timeout=20)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    inside = re.search(r"inet (\S+)/", done.stdout).group(1)
    source, source_port, message = seen.split()
    assert message.startswith("hello-from-"), seen
    # MASQUERADE: the outside saw the host's address on that link, not the container's
    assert source == str(HOST_SIDE.ip) != inside, seen
    # and the host's connection tracking says the same: this flow left as the host
    flows = _host(
        "conntrack", "-L", "-p", "tcp", "-s", inside, "-d", str(OUTSIDE.ip), "--dport", str(PORT)
    ).stdout
    assert re.search(
        rf"src={OUTSIDE.ip} dst={HOST_SIDE.ip} sport={PORT} dport={source_port}\b", flows
    ), flows
    # Control: without NAT no reply could come back, since the outside has no route to the
    # container's own address.
    back = _host("ip", "-n", outside, "route", "get", inside, check=False)
    assert back.returncode != 0 and "unreachable" in back.stderr, back


# -- 4. unpublished ports, from outside and from the host ------------------------------------


def test_unpublished_ports_are_closed_to_the_outside_but_open_to_the_host(
    lab, outside, docker_boxes, busybox_bin
):
    """Docker's behaviour, shown here on its own container too: docker0's addresses are
    reachable from the host itself (host -> container is the OUTPUT path, never FORWARD),
    but a packet *routed through* the host from elsewhere to a container's port goes through
    FORWARD, where only published ports are accepted (the DOCKER chain) and the policy is
    DROP: the connection times out. labkit matches: its LABKIT-FORWARD ends with
    ``-o labkit0 -j DROP``, so it holds even on a host whose FORWARD policy is ACCEPT."""
    serve = ("httpd", "-f", "-p", "8080", "-h", "/")
    box, addr_d = docker_boxes("srv", *serve)
    with lab.background(*serve, opts=("--name", _name("srv"))) as srv:
        addr_l = _address(srv.pid)
        targets = [f"{addr_l}:8080", f"{addr_d}:8080"]
        # the host reaches both, by ping and on the port (and so the servers are up)
        assert wait_until(lambda: set(_connect(targets).values()) == {"connected"}, timeout=10)
        for addr in (addr_l, addr_d):
            assert _host(busybox_bin, "ping", "-c1", "-W2", addr, check=False).returncode == 0
        # the outside gets a route to both containers through the host
        for addr in (addr_l, addr_d):
            _host("ip", "-n", outside, "route", "add", f"{addr}/32", "via", str(HOST_SIDE.ip))
            got = _host("ip", "-n", outside, "-o", "route", "get", addr).stdout
            assert f"via {HOST_SIDE.ip}" in got, got
        # control: the outside reaches the host over that link
        ping = [busybox_bin, "ping", "-c1", "-W1"]
        control = _host("ip", "netns", "exec", outside, *ping, str(HOST_SIDE.ip), check=False)
        assert control.returncode == 0, control.stdout + control.stderr
        assert _connect(targets, netns=outside) == dict.fromkeys(targets, "timeout")
        pings = [
            subprocess.run(
                ["ip", "netns", "exec", outside, *ping, addr], capture_output=True, timeout=10
            ).returncode
            for addr in (addr_l, addr_d)
        ]
        assert all(pings), "the outside pinged a container through the host"


# -- 5. beside Docker -------------------------------------------------------------------------


def test_labkit_and_docker_containers_reach_their_peers_but_not_each_other(
    lab, docker_boxes, busybox_bin
):
    d1, addr_d1 = docker_boxes("d1", "sleep", "1000")
    d2, addr_d2 = docker_boxes("d2", "sleep", "1000")
    with (
        lab.background("sleep", "1000", opts=("--name", _name("l1"))) as l1,
        lab.background("sleep", "1000", opts=("--name", _name("l2"))) as l2,
    ):
        addr_l1 = _address(l1.pid)
        # peers on one network, on each side
        assert _docker_ping(d2, addr_d1), "Docker containers do not reach each other"
        assert _ping_from(l2.pid, addr_l1), "labkit containers do not reach each other"
        # both targets answer (the host reaches them): what follows is isolation at work
        for addr in (addr_d1, addr_l1):
            assert _host(busybox_bin, "ping", "-c1", "-W2", addr, check=False).returncode == 0
        assert not _ping_from(l1.pid, addr_d1, wait=1), "labkit reached a Docker container"
        assert not _docker_ping(d1, addr_l1, wait=1), "Docker reached a labkit container"


# -- 6. many at once, and nothing left --------------------------------------------------------


def test_twenty_containers_at_once_get_distinct_addresses_and_leave_nothing(lab, default_network):
    subnet = ipaddress.ip_network(default_network["IPAM"]["Config"][0]["Subnet"])
    leases = paths.NET_DIR / "leases" / default_network["Id"]
    before = _iptables()
    names = [_name(f"many{i:02d}") for i in range(20)]
    script = (
        "cut -d' ' -f1 /proc/uptime; hostname; ip -o -4 addr show eth0; sleep 3; "
        "cut -d' ' -f1 /proc/uptime"
    )
    procs = [
        subprocess.Popen(
            [PYTHON, "-m", "labkit.cli", "run", "--name", name, "busybox", "sh", "-c", script],
            cwd=REPO,
            env=_env(None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    results = []
    try:
        for proc in procs:
            results.append(proc.communicate(timeout=60))
    finally:
        for name, proc in zip(names, procs, strict=True):
            if proc.poll() is None:
                _kill_container(name)
                proc.communicate(timeout=30)
    assert [p.returncode for p in procs] == [0] * 20, [err for _, err in results]
    starts, ids, addresses, ends = zip(*(out.split("\n", 3) for out, _ in results), strict=True)
    addresses = [re.search(r"inet (\S+)/", a).group(1) for a in addresses]
    # they ran at the same time (every one started before any ended), so sharing was possible
    assert max(map(float, starts)) < min(float(e.split()[0]) for e in ends)
    assert len(set(addresses)) == 20, sorted(addresses)
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    # Nothing of theirs is left: host ends, leases (any file that names one of them), rules.
    # (Theirs, not "no lkv* link at all": other sessions run containers on this host too.)
    assert not {f"lkv{i[:8]}" for i in ids} & _links("lkv")
    left = [p.name for p in leases.iterdir() if any(i in _read(p) for i in ids)]
    assert not left, f"leases left behind: {left}"
    _same_rules(before, _iptables())


# -- 7. none, host, and an unknown network ----------------------------------------------------


def test_network_none_has_only_loopback_up(lab):
    done = lab.sh("ip -o link; ip -o -4 addr", opts=("--network", "none", "--name", _name("no")))
    links = [ln for ln in done.stdout.splitlines() if ": <" in ln]
    assert len(links) == 1 and links[0].startswith("1: lo: <"), done.stdout
    assert ",UP," in links[0] or ",UP>" in links[0], links[0]
    assert re.findall(r"inet (\S+)", done.stdout) == ["127.0.0.1/8"], done.stdout


def test_network_host_is_the_host_s_network(lab):
    script = "readlink /proc/self/ns/net; ls /sys/class/net"
    done = lab.sh(script, opts=("--network", "host", "--name", _name("hostnet")))
    netns, *names = done.stdout.split()
    assert netns == os.readlink("/proc/self/ns/net")
    stable = {"lo", "eth0", "docker0"} & set(os.listdir("/sys/class/net"))
    assert stable <= set(names), names


def test_an_unknown_network_is_refused_in_one_line_and_leaves_nothing(lab, default_network):
    from labkit.runtime import records

    missing, name = _name("nosuch"), _name("ghost")
    rules_before, links_before = _iptables(), _links("lkv")
    done = lab.run("true", opts=("--network", missing, "--name", name))
    theirs = docker.run(
        "run", "--rm", "--network", missing, docker.image_tag("busybox"), "true", check=False
    )
    assert done.returncode == theirs.returncode == 125, (done, theirs)
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"network {missing} not found" in done.stderr and missing in theirs.stderr
    assert not (paths.NET_DIR / "networks" / f"{missing}.json").exists()
    assert not [r for r in records.all_records() if r.name == name]
    _same_rules(rules_before, _iptables())
    assert not _links("lkv") - links_before - _leased_links(), "a veth was left"
    assert not [p for p in _lease_files() if name in _read(p)], "a lease was left"


def _read(path: Path) -> str:
    """A file's text, or "" if it went meanwhile (leases come and go as containers do)."""
    try:
        return path.read_text()
    except OSError:
        return ""


def _lease_files() -> list[Path]:
    return list((paths.NET_DIR / "leases").glob("*/*"))


def _leased_links() -> set[str]:
    """The host ends of containers holding a lease now (another session's, on this host)."""
    found = set()
    for path in _lease_files():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            found.add("lkv" + json.loads(_read(path))["container_id"][:8])
    return found
