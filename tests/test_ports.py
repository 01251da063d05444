"""Published ports (``labkit run -p``) on the real kernel, with Docker's daemon alongside.

============================================  ===========================================
what                                          how it is shown
============================================  ===========================================
outside -> HOST:published port                an outside netns (TEST-NET-1) reaches the
                                              container's httpd by DNAT; a port it did not
                                              publish times out (control: the published one)
host's 127.0.0.1 -> published port            through the supervisor's userland proxy (the
                                              default) and by hairpin NAT (userland proxy
                                              off): who the container sees tells them apart
container -> its own port on the host         works, through the proxy and by hairpin NAT
UDP through the proxy                         a datagram and its reply, per-client flow
a host port that is taken                     one line, exit 125, nothing left; TCP and UDP
                                              apart; Docker refuses it too
-p 80 (a random host port)                    ``labkit port`` shows it, and it answers
rules                                         the same shape as Docker's, chain for chain
--network host / none                         Docker's warning / nothing published
bad specs                                     one line each, exit 125, as Docker
============================================  ===========================================

After every test nothing of it is left: no rule names its host ports or its container's
address, nothing listens on its host ports, route_localnet is as it was. No packet leaves
the host: the "outside" is a network namespace on a veth pair of ours with addresses of
198.51.100.241 and .242 (TEST-NET-2, addresses no other test uses; never TEST-NET-1, which is
a real network on some hosts, this one's eth0 included), reached through /32 routes that
are checked before anything is sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PYTHON, wait_until

from labkit import docker, paths

pytestmark = pytest.mark.usefixtures("needs_root")

TOKEN = secrets.token_hex(3)
HOST_SIDE, OUTSIDE = "198.51.100.241", "198.51.100.242"  # TEST-NET-2, a /32 each way
BRIDGE = "labkit0"
LOCALNET = Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet")
#: The container's server: busybox httpd with a CGI script that answers with the address
#: and port it saw the client come from.
PEER_SERVER = (
    "mkdir -p /tmp/w/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n"
    "echo $REMOTE_ADDR $REMOTE_PORT\\n' > /tmp/w/cgi-bin/peer && chmod +x /tmp/w/cgi-bin/peer"
    " && exec httpd -f -p 80 -h /tmp/w"
)
#: An HTTP GET of the peer script: prints JSON {"outcome": ..., "peer": [address, port]}.
CLIENT = textwrap.dedent("""\
    import json, socket, sys
    host, port, source, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    s = socket.socket()
    s.settimeout(timeout)
    out = {}
    try:
        if source:
            s.bind((source.rsplit(":", 1)[0], int(source.rsplit(":", 1)[1])))
        s.connect((host, port))
        s.sendall(b"GET /cgi-bin/peer HTTP/1.0\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        words = data.decode().strip().splitlines()[-1].split() if data else []
        out = {"outcome": "answered", "peer": words} if len(words) == 2 else {
            "outcome": "other" if data else "closed"}
    except socket.timeout:
        out = {"outcome": "timeout"}
    except OSError as exc:
        out = {"outcome": type(exc).__name__}
    print(json.dumps(out))
""")


def _name(role: str) -> str:
    return f"labkit-test-{TOKEN}-{role}"


def _host(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr}")
    return done


def _get(host: str, port: int, source: str = "", netns: str = "", timeout: float = 3) -> dict:
    """GET the peer script at host:port (from ``source`` "ip:port", in ``netns``)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = _host(*prefix, PYTHON, "-c", CLIENT, host, str(port), source, str(timeout))
    out = json.loads(done.stdout)
    if out.get("peer"):  # httpd listens on ::, so IPv4 peers come as [::ffff:10.200.0.1]
        address, port_seen = out["peer"]
        out["peer"] = (address.strip("[]").removeprefix("::ffff:"), int(port_seen))
    return out


def _answers(host: str, port: int) -> bool:
    return _get(host, port, timeout=1)["outcome"] == "answered"


def _free_port() -> int:
    """A port no socket holds now, for TCP and UDP (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("0.0.0.0", port))
    return port


def _record(name: str):
    from labkit.runtime import records

    return records.find(name)


def _exec(pid: int, script: str) -> subprocess.CompletedProcess:
    """``sh -c SCRIPT`` in the container's namespaces (its busybox, its network)."""
    enter = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--"]
    return _host(*enter, "sh", "-c", script, check=False)


def _host_address() -> str:
    """A global IPv4 address of this host that is not on a bridge or a test's veth."""
    for link in json.loads(_host("ip", "-4", "-j", "addr", "show", "scope", "global").stdout):
        if not re.match(r"(labkit0|lkbr-|docker0|br-|lk|veth)", link["ifname"]):
            for addr in link.get("addr_info", []):
                return addr["local"]
    pytest.skip("this host has no global IPv4 address of its own")


def _traces(ports: set[int], addresses: set[str]) -> list[str]:
    """What is left of published ports: rules naming one of the host ports or a container
    address, listeners on one of the ports."""
    left = []
    for table in ("filter", "nat"):
        for line in _host("iptables", "-w", "-t", table, "-S").stdout.splitlines():
            words = line.split()
            dports = {words[i + 1] for i, w in enumerate(words[:-1]) if w == "--dport"}
            named = {w.split("/")[0].rsplit(":", 1)[0] for w in words if w[:1].isdigit()}
            if dports & {str(p) for p in ports} or named & addresses:
                left.append(f"{table} {line}")
    for line in _host("ss", "-Hltun").stdout.splitlines():
        local = line.split()[4]
        if int(local.rsplit(":", 1)[1]) in ports:
            left.append(f"listener {line}")
    return left


@pytest.fixture
def published(lab) -> Iterator[dict]:
    """Notes the host ports and container addresses a test uses; afterwards, nothing of
    them may be left, and the bridge's route_localnet must be as it was."""
    localnet = LOCALNET.read_text() if LOCALNET.exists() else None
    noted: dict = {"ports": set(), "addresses": set()}
    yield noted

    def left() -> list[str]:
        return _traces(noted["ports"], noted["addresses"])

    assert wait_until(lambda: not left(), timeout=10), left()
    if localnet is not None and LOCALNET.exists():
        assert LOCALNET.read_text() == localnet, "route_localnet was not put back"


@pytest.fixture
def outside() -> Iterator[str]:
    """A network namespace for the world outside: OUTSIDE on one end of a veth pair, the
    host's end HOST_SIDE, each a /32 routed to the other (more specific than any route the
    host may have to TEST-NET-2)."""
    for address in (HOST_SIDE, OUTSIDE):
        neighbours = _host("ip", "neigh", "show", "to", address).stdout.strip()
        assert not neighbours, f"{address} is in use on this host's network: {neighbours}"
        assert not _host("ip", "-4", "addr", "show", "to", address).stdout.strip()
    netns, host_end, out_end = f"lkp-out-{TOKEN}", f"lkp{TOKEN}h", f"lkp{TOKEN}o"
    try:
        _host("ip", "netns", "add", netns)
        _host("ip", "link", "add", host_end, "type", "veth", "peer", "name", out_end)
        _host("ip", "link", "set", out_end, "netns", netns)
        _host("ip", "-n", netns, "addr", "add", OUTSIDE, "peer", HOST_SIDE, "dev", out_end)
        _host("ip", "-n", netns, "link", "set", "lo", "up")
        _host("ip", "-n", netns, "link", "set", out_end, "up")
        _host("ip", "addr", "add", HOST_SIDE, "peer", OUTSIDE, "dev", host_end)
        _host("ip", "link", "set", host_end, "up")
        route = _host("ip", "-o", "route", "get", OUTSIDE).stdout
        assert f" dev {host_end} " in route, f"{OUTSIDE} is not routed to us: {route}"
        yield netns
    finally:
        _host("ip", "netns", "del", netns, check=False)
        if Path(f"/sys/class/net/{host_end}").exists():
            _host("ip", "link", "del", host_end, check=False)


@contextlib.contextmanager
def _peer_server(lab, published: dict, role: str, *opts: str):
    """A container running PEER_SERVER with ``opts`` (its -p flags); yields (background,
    its address), once the server answers on its own address."""
    with lab.background("sh", "-c", PEER_SERVER, opts=("--name", _name(role), *opts)) as bg:
        address = _record(_name(role)).network["address"]
        published["addresses"].add(address)
        assert wait_until(lambda: _answers(address, 80), timeout=10), "httpd did not start"
        yield bg, address


# -- from outside -----------------------------------------------------------------------------


def test_the_outside_reaches_a_published_port_and_no_other(lab, published, outside):
    port = _free_port()
    published["ports"].add(port)
    script = f"httpd -p 81 -h /tmp; {PEER_SERVER}"  # 81 is served too, but not published
    with lab.background("sh", "-c", script, opts=("--name", _name("out"), "-p", f"{port}:80")):
        address = _record(_name("out")).network["address"]
        published["addresses"].add(address)
        assert wait_until(lambda: _answers(address, 80), timeout=10)
        got = _get(HOST_SIDE, port, netns=outside)
        # DNAT keeps the source: the container sees the outside's own address
        assert got["outcome"] == "answered" and got["peer"][0] == OUTSIDE, got
        # The container itself, routed to through the host: 80 is accepted (Docker's rule
        # accepts the port, DNATed or not), 81 is dropped in FORWARD (not published)
        _host("ip", "-n", outside, "route", "add", f"{address}/32", "via", HOST_SIDE)
        assert f"via {HOST_SIDE}" in _host("ip", "-n", outside, "route", "get", address).stdout
        assert _host("ip", "-o", "route", "get", address).stdout.split()[2] == BRIDGE
        assert _get(address, 80, netns=outside)["outcome"] == "answered", "positive control"
        assert _get(address, 81, netns=outside, timeout=1.5)["outcome"] == "timeout"
        assert _get(address, 81)["outcome"] != "timeout", "81 is served (to the host)"


# -- from the host's loopback: proxy or hairpin NAT ---------------------------------------


def _flow(source: int, port: int) -> str:
    """The host's connection tracking entry of a TCP connection from ``source`` to ``port``
    (its original direction, then the reply direction as NAT made it)."""
    done = _host("conntrack", "-L", "-p", "tcp", "--sport", str(source), "--dport", str(port))
    return done.stdout.strip()


def test_localhost_reaches_it_through_the_proxy_or_by_hairpin_nat(lab, published):
    """127.0.0.1:PORT is never DNATed by Docker's rules (OUTPUT skips 127.0.0.0/8): with the
    userland proxy the supervisor accepts the connection and opens its own to the
    container. So the container sees the bridge's address and the *proxy's* port, the
    kernel tracks the client's connection un-NATed (it ends at the supervisor), and the
    supervisor is the only process listening on the port. With the proxy off the kernel
    DNATs it (LABKIT-HAIRPIN) and masquerades 127.0.0.1 as the bridge's address: the
    container sees the port of the client's own connection, as NAT rewrote it, and that
    needs route_localnet on the bridge while the port is there. A real address of the
    host is DNATed in both modes, and the container sees the host's address."""
    proxied, nat, me = _free_port(), _free_port(), _host_address()
    published["ports"] |= {proxied, nat}
    before = LOCALNET.read_text() if LOCALNET.exists() else "0\n"
    # client ports below the kernel's ephemeral range, from which the proxy takes its own
    sources = iter(secrets.SystemRandom().sample(range(20000, 32000), 4))
    hairpin = ("--userland-proxy=false", "-p", f"{nat}:80")
    with (
        _peer_server(lab, published, "proxied", "-p", f"{proxied}:80") as (bg, address),
        _peer_server(lab, published, "nat", *hairpin) as (_, nat_address),
    ):
        gateway = _record(_name("proxied")).network["gateway"]
        source = next(sources)
        got = _get("127.0.0.1", proxied, source=f"127.0.0.1:{source}")
        assert got["outcome"] == "answered" and got["peer"][0] == gateway, got
        assert got["peer"][1] != source, "the client's own connection reached the container"
        assert f"src=127.0.0.1 dst=127.0.0.1 sport={proxied} dport={source}" in _flow(
            source, proxied
        ), "the client's connection was NATed"
        assert f"dst={address} sport={got['peer'][1]} dport=80" in _flow(got["peer"][1], 80)
        listeners = _host("ss", "-Hltnp", f"sport = :{proxied}").stdout
        assert re.findall(r"pid=(\d+)", listeners) == [str(bg.proc.pid)], listeners
        # hairpin NAT: the bridge's address too (MASQUERADE), and the port NAT gave it
        assert LOCALNET.read_text() == "1\n"
        source = next(sources)
        got = _get("127.0.0.1", nat, source=f"127.0.0.1:{source}")
        assert got["outcome"] == "answered" and got["peer"][0] == gateway, got
        flow = _flow(source, nat)
        reply = f"src={nat_address} dst={gateway} sport=80 dport={got['peer'][1]}"
        assert reply in flow, f"not NATed to the container: {flow}"
        # a real address of the host: DNAT in both modes, the container sees the host
        for port in (proxied, nat):
            source = next(sources)
            got = _get(me, port, source=f"{me}:{source}")
            assert got["outcome"] == "answered" and got["peer"] == (me, source), got
    assert LOCALNET.read_text() == before


def test_a_container_reaches_its_own_published_port_on_the_host(lab, published):
    """Through the proxy (the network's ``-i BR -j RETURN`` keeps it from DNAT), and with
    the proxy off by DNAT back to itself (the per-port hairpin MASQUERADE makes the reply
    come back through the host, and the bridge port's hairpin_mode lets it out the port it
    came in by)."""
    proxied, nat, me = _free_port(), _free_port(), _host_address()
    published["ports"] |= {proxied, nat}
    hairpin = ("--userland-proxy=false", "-p", f"{nat}:80")
    with (
        _peer_server(lab, published, "self-p", "-p", f"{proxied}:80") as (p, _),
        _peer_server(lab, published, "self-n", *hairpin) as (n, _),
    ):
        gateway = _record(_name("self-p")).network["gateway"]
        for bg, port in ((p, proxied), (n, nat)):
            for host in (me, gateway):  # the host's own address, and the bridge's
                get = f"printf 'GET /cgi-bin/peer HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}"
                done = _exec(bg.pid, get)
                last = (done.stdout.strip().splitlines() or [""])[-1]
                assert re.fullmatch(rf"\[::ffff:{re.escape(gateway)}\] \d+", last), (host, done)


def test_udp_is_relayed_by_the_proxy(lab, published):
    """A UDP echo server in the container's network namespace; the proxy opens one socket
    toward it per client and sends the replies back from the published port."""
    echo = textwrap.dedent("""\
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 5353))
        print("ready", flush=True)
        for _ in range(3):
            data, peer = s.recvfrom(100)
            s.sendto(f"{peer[0]} {peer[1]} ".encode() + data, peer)
    """)
    opts = ("--name", _name("udp"), "-p", "127.0.0.1::5353/udp")
    with lab.background("sleep", "60", opts=opts) as bg:
        record = _record(_name("udp"))
        (entry,) = record.network["ports"]
        port = entry["host_port"]
        published["ports"].add(port)
        published["addresses"].add(record.network["address"])
        assert lab.cli("port", _name("udp")).stdout == f"5353/udp -> 127.0.0.1:{port}\n"
        server = subprocess.Popen(
            ["nsenter", f"--net=/proc/{bg.pid}/ns/net", PYTHON, "-c", echo],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None and server.stdout.readline() == "ready\n"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(3)
                replies = []
                for n in range(2):
                    client.sendto(b"hello%d" % n, ("127.0.0.1", port))
                    replies.append(client.recvfrom(100))
        finally:
            server.kill()
            server.wait()
    (first, sender), (second, _) = replies
    assert sender == ("127.0.0.1", port), "the reply came from elsewhere than the published port"
    gateway, flow_port, text = first.decode().split()
    assert (gateway, text) == (record.network["gateway"], "hello0")
    assert second.decode() == f"{gateway} {flow_port} hello1", "one client, one flow"


# -- refusals -------------------------------------------------------------------------------


def _leftovers(name: str) -> list[str]:
    from labkit.runtime import records

    found = [f"record {r.id}" for r in records.all_records() if r.name == name]
    for lease in (paths.NET_DIR / "leases").glob("*/*"):
        with contextlib.suppress(OSError):
            if f'"{name}"' in lease.read_text():
                found.append(f"lease {lease}")
    return found


def test_a_taken_host_port_is_refused_before_anything_is_made(lab, published):
    tcp, udp, ours = _free_port(), _free_port(), _free_port()
    published["ports"] |= {tcp, udp, ours}
    stranger = socket.create_server(("0.0.0.0", tcp))
    stranger_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger_udp.bind(("0.0.0.0", udp))
    try:
        for spec, proto in ((f"{tcp}:80", "tcp"), (f"{udp}:53/udp", "udp")):
            name = _name(f"taken-{proto}")
            done = lab.cli("run", "--name", name, "-p", spec, "busybox", "true")
            port = spec.split(":")[0]
            assert (done.returncode, done.stdout) == (125, ""), done
            assert done.stderr == (
                f"labkit: host port {port}/{proto} on 0.0.0.0 is taken (address already in use)"
                f" (fix: publish on another host port, or stop what uses it (ss -l{proto[0]}np))\n"
            )
            assert not _leftovers(name)
            theirs = docker.run("run", "--rm", "-p", spec, docker.import_image("busybox"), "true",
                                check=False)  # fmt: skip
            assert theirs.returncode == 125 and "address already in use" in theirs.stderr
        # TCP and UDP are apart: the UDP port is free for TCP
        done = lab.cli("run", "--name", _name("tcp-ok"), "-p", f"{udp}:80", "busybox", "true")
        assert done.returncode == 0, done.stderr
        # and a port a labkit container publishes is taken for the next one
        with lab.background("sleep", "60", opts=("--name", _name("holder"), "-p", f"{ours}:80")):
            done = lab.cli("run", "--name", _name("second"), "-p", f"{ours}:80", "busybox", "true")
            assert done.returncode == 125 and f"host port {ours}/tcp" in done.stderr, done
            assert not _leftovers(_name("second"))
    finally:
        stranger.close()
        stranger_udp.close()


def test_a_crash_leaves_rules_that_the_lease_takes_away_with_it(lab, published):
    """Supervisor and container killed: the kernel closes the host sockets, but the rules
    stay. The container's lease records them (``attach.plug`` writes it first), so reset,
    or the next container that takes the address, removes them with the stale lease."""
    from labkit import reset
    from labkit.network import cleanup

    port, name = _free_port(), _name("crash")
    published["ports"].add(port)
    hairpin = ("--userland-proxy=false", "-p", f"{port}:80", "--name", name)
    with lab.background("sleep", "60", opts=hairpin) as bg:
        record = _record(name)
        published["addresses"].add(record.network["address"])
        bg.proc.kill()  # the supervisor first, then the container
        bg.proc.wait()
        os.kill(bg.pid, signal.SIGKILL)
        assert wait_until(lambda: not Path(f"/proc/{bg.pid}").exists(), timeout=10)
        left = _traces({port}, set())
        assert any("DNAT" in line for line in left), left
        assert not [line for line in left if line.startswith("listener")], left
    lease = [i for i in cleanup.find() if i[0] == "net-lease" and i[1] == record.network["address"]]
    assert len(lease) == 1, lease
    cleanup.remove(lease[0][0], lease[0][3])
    assert not _traces({port}, set())
    ref = {"id": record.id, "process": None}
    reset.remove_container(reset.Leftover("container", name, "", ref))


def test_bad_specs_are_refused_in_one_line_as_docker_refuses_them(lab):
    image = docker.import_image("busybox")
    for spec in ("80:abc", "70000:80", "1.2.3:80:80", "8080:80/xyz", "8080:", "127.0.0.1:80"):
        done = lab.cli("run", "-p", spec, "busybox", "true")
        assert done.returncode == 125 and done.stdout == "", done
        assert done.stderr.startswith(f'labkit: invalid port spec "{spec}": ') and (
            done.stderr.count("\n") == 1
        ), done.stderr
        assert "(fix: write it as [ip:][hostport:]port[/tcp|udp]" in done.stderr
        theirs = docker.run("run", "--rm", "-p", spec, image, "true", check=False)
        assert theirs.returncode == 125, (spec, theirs)


# -- a random port, labkit port ---------------------------------------------------------------


def test_a_random_host_port_is_shown_by_labkit_port_and_answers(lab, published):
    with _peer_server(lab, published, "random", "-p", "80") as (_, address):
        shown = lab.cli("port", _name("random"))
        found = re.fullmatch(r"80/tcp -> 0\.0\.0\.0:(\d+)\n", shown.stdout)
        assert shown.returncode == 0 and found, shown
        port = int(found.group(1))
        published["ports"].add(port)
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        assert low <= port <= high, "not the kernel's pick"
        assert _record(_name("random")).network["ports"][0]["host_port"] == port
        assert lab.cli("port", _name("random"), "80/tcp").stdout == f"0.0.0.0:{port}\n"
        missing = lab.cli("port", _name("random"), "81")
        assert "No public port '81/tcp' published for" in missing.stderr
        got = _get("127.0.0.1", port)
        assert got["outcome"] == "answered" and address not in got["peer"], got


# -- the same rules as Docker's ------------------------------------------------------------

#: Where each side keeps what: labkit's chains and Docker's, as one generic name.
LABKIT_CHAINS = {"LABKIT": "PORTS", "LABKIT-FORWARD": "FWD", "LABKIT-POSTROUTING": "POST"}
DOCKER_CHAINS = {"filter": {"DOCKER": "FWD"}, "nat": {"DOCKER": "PORTS", "POSTROUTING": "POST"}}


def _shape(tables: dict, address: str, bridge: str, ports: list[int], ours: bool) -> set[str]:
    """The rules of one container's published ports (and the jumps and RETURN they need),
    with its address, bridge, host ports and chain names made generic."""
    chain = "LABKIT" if ours else "DOCKER"
    out = set()
    for table, lines in tables.items():
        names = LABKIT_CHAINS if ours else DOCKER_CHAINS[table]
        for line in lines:
            jump = table == "nat" and line.endswith(f" -j {chain}")
            if not (f"{address}/32" in line or f"{address}:" in line or jump
                    or line == f"-A {chain} -i {bridge} -j RETURN"):  # fmt: skip
                continue
            line = line.replace(address, "C").replace(f" {bridge} ", " BR ")
            for i, port in enumerate(ports):
                line = re.sub(rf"\b{port}\b", f"H{i}", line)
            out.add(" ".join(names.get(w, w) for w in line.split()))
    return out


def test_the_rules_have_docker_s_shape(lab, published):
    mine, theirs = [_free_port(), _free_port()], [_free_port(), _free_port()]
    published["ports"] |= set(mine)
    name, image = _name("shape"), docker.import_image("busybox")

    def specs(ports: list[int]) -> list[str]:
        return ["-p", f"{ports[0]}:80", "-p", f"127.0.0.1:{ports[1]}:81/udp"]

    with lab.background("sleep", "60", opts=("--name", name, *specs(mine))):
        address = _record(name).network["address"]
        published["addresses"].add(address)
        docker.run("run", "-d", "--name", name, *specs(theirs), image, "sleep", "60")
        try:
            docker_address = docker.inspect(name, "{{.NetworkSettings.IPAddress}}").strip()
            tables = {t: _host("iptables", "-w", "-t", t, "-S").stdout.splitlines()
                      for t in ("filter", "nat")}  # fmt: skip
        finally:
            docker.run("rm", "-f", name, check=False)
    ours = _shape(tables, address, BRIDGE, mine, ours=True)
    docker_shape = _shape(tables, docker_address, "docker0", theirs, ours=False)
    assert ours == docker_shape, (sorted(ours - docker_shape), sorted(docker_shape - ours))
    # the jumps from PREROUTING and OUTPUT, the bridge's RETURN, then per port a DNAT, an
    # ACCEPT and a MASQUERADE (hairpin), two ports
    assert len(ours) == 9, sorted(ours)


# -- host and none ----------------------------------------------------------------------------


def test_host_mode_ignores_published_ports_with_docker_s_warning_and_none_publishes_nothing(
    lab, published
):
    port = _free_port()
    published["ports"].add(port)
    image = docker.import_image("busybox")
    done = lab.cli("run", "--network", "host", "-p", f"{port}:80", "busybox", "true")
    theirs = docker.run("run", "--rm", "--network", "host", "-p", f"{port}:80", image, "true")
    warning = "WARNING: Published ports are discarded when using host network mode"
    assert done.returncode == 0 and done.stderr == warning + "\n", done
    assert warning in theirs.stderr
    opts = ("--name", _name("none"), "--network", "none", "-p", f"{port}:80")
    with lab.background("sleep", "60", opts=opts):
        assert lab.cli("port", _name("none")).stdout == ""
        assert not _traces({port}, set())
