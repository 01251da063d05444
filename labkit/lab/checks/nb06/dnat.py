"""06-dnat: publish the container's port 80 on the router's port 8081, as ``-p 8081:80`` does.
Judged by a client outside fetching the page once, and by the router's own counters.

The checker builds a world of its own (``port_demo.check_world``): the container ``web``
(10.66.0.2, a web server on port 80, no default route), a router with forwarding on and
Docker's FORWARD chain (policy DROP), a client outside at 198.51.100.1. After the learner's
cell the client asks for the router's 198.51.100.2:8081 once, and the checker reads what
happened to that connection, in the order the packet meets each piece:

* no DNAT rule in the router's nat table (or only in the cell's own namespace);
* DNAT rules, but none a packet from outside passes (only in OUTPUT, or in a chain no one
  jumps to): the wrong chain;
* a DNAT rule in PREROUTING that matched nothing: ``--dport`` is not 8081 (the wrong port),
  or ``-i``/``-d``/``-s`` keep it from matching;
* it matched, but it sends the packet elsewhere: not to 10.66.0.2, or not to port 80;
* FORWARD's policy dropped the rewritten packet (nothing accepted it);
* the container has no way back to the client (no default route via the router).
"""

from __future__ import annotations

from labkit.lab import net_state, port_demo, port_state
from labkit.lab.checks.common import run_code
from labkit.lab.checks.nb06.shell import OWN_NAMESPACE, PRELUDE, SANDBOX, command_verdict, own_rules
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t


@define(
    "06-dnat",
    kind="code",
    title=t("Publish a port: DNAT", "포트 공개하기: DNAT"),
    instructions=t(
        "Publish the container's web server (`WEB_ADDR`, 10.66.0.2, port `WEB_PORT` 80) on the "
        "router's port `HOST_PORT` (8081), as `-p 8081:80` does: a client outside (`OUTSIDE`, "
        "198.51.100.1) that asks for the router's address `ROUTER_ADDR` (198.51.100.2) on port "
        "8081 must get the container's page. You get a fresh copy of the world above: the "
        "router forwards, its FORWARD chain is Docker's (policy DROP), nothing is published. "
        "Three pieces, all in the router's namespace (`ip netns exec $ROUTER ...`) but the last:"
        "\n\n1. **DNAT**: rewrite the destination of what comes for port 8081, in the router's "
        "nat table: `iptables -t nat -A CHAIN -p tcp --dport PORT -j DNAT --to-destination "
        "ADDRESS:PORT`. Which chain, and which port where? A packet that comes in from "
        "elsewhere passes PREROUTING first; one the router itself sends passes OUTPUT;"
        "\n2. **FORWARD**: the rewritten packet is now for 10.66.0.2:80, and the policy drops "
        "it: `iptables -A FORWARD -d $WEB_ADDR -o $BRIDGE -p tcp --dport PORT -j ACCEPT`;"
        "\n3. **the way back**: DNAT changes only the destination, so the container answers "
        "the client's own address, and only the router can take the answer there (and undo "
        "the rewrite). This container has no default route yet: `ip -n $WEB route add "
        "default via $GATEWAY`."
        '\n\nThen try it: `sh("ip netns exec $OUTSIDE curl -sS -m 3 '
        'http://$ROUTER_ADDR:$HOST_PORT/cgi-bin/who")`: the page says whom the container saw.',
        "컨테이너의 웹 서버(`WEB_ADDR` 10.66.0.2, 포트 `WEB_PORT` 80)를 `-p 8081:80`처럼 "
        "라우터의 포트 `HOST_PORT`(8081)로 공개하세요(포트 포워딩): 바깥의 클라이언트(`OUTSIDE`, "
        "198.51.100.1)가 라우터의 주소 `ROUTER_ADDR`(198.51.100.2)의 8081 포트에 요청하면 "
        "컨테이너의 페이지를 받아야 합니다. 위와 같은 구성을 새로 하나 받습니다: 라우터는 "
        "포워딩을 하고, FORWARD 체인은 Docker의 것(정책 DROP)이며, 아직 공개된 포트는 "
        "없습니다. 세 가지가 필요하고, 마지막 것만 빼고 모두 라우터의 namespace에 넣습니다"
        "(`ip netns exec $ROUTER ...`):"
        "\n\n1. **DNAT**: 8081 포트로 온 패킷의 목적지를 라우터의 nat 테이블에서 바꿉니다: "
        "`iptables -t nat -A 체인 -p tcp --dport 포트 -j DNAT --to-destination 주소:포트`. "
        "어느 체인이고, 어느 자리에 어느 포트일까요? 다른 곳에서 들어오는 패킷은 먼저 "
        "PREROUTING을 지나고, 라우터 자신이 보내는 패킷은 OUTPUT을 지납니다;"
        "\n2. **FORWARD**: 목적지가 바뀐 패킷은 이제 10.66.0.2:80으로 가는데 정책이 버립니다: "
        "`iptables -A FORWARD -d $WEB_ADDR -o $BRIDGE -p tcp --dport 포트 -j ACCEPT`;"
        "\n3. **돌아오는 길**: DNAT는 목적지만 바꾸므로 컨테이너는 클라이언트의 주소로 "
        "응답하고, 그 응답을 클라이언트에게 데려다주고 바꾼 것을 되돌릴 수 있는 것은 "
        "라우터뿐입니다. 이 컨테이너에는 아직 기본 경로가 없습니다: `ip -n $WEB route add "
        "default via $GATEWAY`."
        '\n\n그다음 확인: `sh("ip netns exec $OUTSIDE curl -sS -m 3 '
        'http://$ROUTER_ADDR:$HOST_PORT/cgi-bin/who")`. 페이지가 컨테이너가 본 주소를 '
        "알려 줍니다.",
    ),
)
def check_dnat(source: str) -> Verdict:
    world = port_demo.check_world()
    try:
        run = run_code(source, OWN_NAMESPACE, PRELUDE, world.values(), sandbox=SANDBOX)
        return command_verdict(run) or _judge(run, world)
    finally:
        port_demo.remove(world)


def _judge(run, world: port_demo.World) -> Verdict:
    r = world.router
    before, (_, dropped_before) = port_state.rules(r), port_state.policy(r, "FORWARD")
    page = port_state.fetch(world.outside, world.url(world.uplink_address), wait=1)
    after, (_, dropped_after) = port_state.rules(r), port_state.policy(r, "FORWARD")
    dnat = [x for x in after if x.option("-j") == "DNAT"]
    if page.returncode == 0:
        return _right(world, page.stdout)
    if not dnat:
        if own_rules(run, "DNAT"):
            return wrong("wrong-namespace", _WRONG_NS, _DNAT_HINT)
        return wrong("no-dnat", _NO_DNAT, _DNAT_HINT)
    prerouting = port_state.reachable(after, "PREROUTING")
    passed = [x for x in dnat if x.chain in prerouting]
    if not passed:
        return _wrong_chain(dnat, after)
    hit = [new for new, old in _pairs(after, before) if new in passed and new.packets > old.packets]
    if not hit:
        if str(world.host_port) not in [x.option("--dport") for x in passed]:
            ports = ", ".join(sorted({x.option("--dport") or "any" for x in passed}))
            return wrong("wrong-port", _dport(ports), _DNAT_HINT)
        return wrong("dnat-unused", _UNUSED, _UNUSED_HINT)
    to = hit[0].option("--to-destination") or ""
    address, _, port = to.partition(":")
    if address != world.address:
        return wrong("wrong-destination", _elsewhere(to), _DNAT_HINT)
    if port != str(world.container_port):
        return wrong("wrong-port", _to_port(to), _DNAT_HINT)
    if dropped_after > dropped_before:
        accepts = port_state.rules(r, "filter")
        said_8081 = any(x.option("--dport") == str(world.host_port) for x in accepts)
        return wrong("forward-drop", _FORWARD_8081 if said_8081 else _FORWARD_DROP, _FORWARD_HINT)
    route = net_state.route_to(world.web, world.outside_address)
    if route is None or route.get("gateway") != world.gateway:
        return wrong("no-route-back", _NO_ROUTE_BACK, _ROUTE_HINT)
    return wrong(
        "no-answer",
        t(f"the page did not come back: {page.stderr.strip()}", f"페이지가 오지 않았습니다: "
          f"{page.stderr.strip()}"),
        t("compare your rules with the three steps", "세 단계와 규칙을 하나씩 비교해 보세요"),
    )  # fmt: skip


def _pairs(after: list, before: list) -> list:
    """Each rule now, with itself before the fetch (the same rules, in the same order)."""
    return list(zip(after, before, strict=False)) if len(after) == len(before) else []


def _wrong_chain(dnat: list, found: list) -> Verdict:
    output = port_state.reachable(found, "OUTPUT")
    where = ", ".join(sorted({x.chain for x in dnat}))
    if any(x.chain in output for x in dnat):
        said = t(
            f"your DNAT rule is in {where}, which only the router's own connections pass: a "
            "packet that comes in from outside passes PREROUTING, and never OUTPUT",
            f"DNAT 규칙이 {where}에 있는데, 그 체인은 라우터 자신이 만드는 연결만 지납니다: "
            "바깥에서 들어오는 패킷은 PREROUTING을 지나고 OUTPUT은 지나지 않습니다",
        )
    else:
        said = t(
            f"your DNAT rule is in {where}, and no packet gets there: nothing jumps to it from "
            "PREROUTING",
            f"DNAT 규칙이 {where}에 있지만 어떤 패킷도 거기에 가지 않습니다: PREROUTING에서 그 "
            "체인으로 점프하는 규칙이 없습니다",
        )
    return wrong("wrong-chain", said, _DNAT_HINT)


def _right(world: port_demo.World, page: str) -> Verdict:
    saw = port_state.who(page) or "?"
    tracked = net_state.output(world.router, "conntrack", "-L", "-p", "tcp").stdout
    rules = net_state.output(world.router, "iptables", "-w", "-t", "nat", "-S").stdout
    return right(
        t(
            f"the page came back, and the container saw the client as {saw}. The router "
            f"rewrote the destination {world.uplink_address}:{world.host_port} to "
            f"{world.address}:{world.container_port} (DNAT); conntrack remembers it, and "
            "rewrote the answer's source back on its way out.",
            f"페이지가 돌아왔고, 컨테이너는 클라이언트를 {saw}(으)로 보았습니다. 라우터가 "
            f"목적지 {world.uplink_address}:{world.host_port}를 {world.address}:"
            f"{world.container_port}로 바꾸었고(DNAT), conntrack이 이를 기억해서 나가는 "
            "응답의 출발지를 다시 되돌렸습니다.",
        ),
        value={"page": page, "conntrack": tracked, "rules": rules},
    )


_DNAT_HINT = t(
    "ip netns exec $ROUTER iptables -t nat -A PREROUTING -p tcp --dport $HOST_PORT -j DNAT "
    "--to-destination $WEB_ADDR:$WEB_PORT",
    "ip netns exec $ROUTER iptables -t nat -A PREROUTING -p tcp --dport $HOST_PORT -j DNAT "
    "--to-destination $WEB_ADDR:$WEB_PORT 로 라우터에서 목적지를 바꾸세요",
)
_NO_DNAT = t(
    "the client's connection to 198.51.100.2:8081 was refused by the router itself: nothing "
    "listens on 8081 there, and its nat table has no DNAT rule to send it on to the container",
    "198.51.100.2:8081로의 연결을 라우터가 거부했습니다: 라우터에는 8081을 듣는 것이 없고, "
    "nat 테이블에 컨테이너로 보내 줄 DNAT 규칙이 없습니다",
)
_WRONG_NS = t(
    "your DNAT rule went into your cell's own namespace, not the router's",
    "DNAT 규칙이 라우터가 아니라 셀 자신의 namespace에 들어갔습니다",
)


def _dport(ports: str) -> dict[str, str]:
    return t(
        f"your DNAT rule in PREROUTING matched no packet: it waits for port {ports}, and the "
        "client asked for 8081. --dport is the port the client asks for (before the rewrite)",
        f"PREROUTING의 DNAT 규칙에 맞는 패킷이 없었습니다: 규칙은 {ports} 포트를 기다리는데 "
        "클라이언트는 8081을 요청했습니다. --dport는 (바꾸기 전에) 클라이언트가 요청한 포트입니다",
    )


_UNUSED = t(
    "your DNAT rule in PREROUTING matched no packet of the client's connection: it asks for "
    "something the packet does not have (an -i, -s or -d that is not the client's)",
    "PREROUTING의 DNAT 규칙이 클라이언트의 연결에 맞지 않았습니다: 패킷에 없는 조건"
    "(클라이언트와 다른 -i, -s, -d)이 붙어 있습니다",
)
_UNUSED_HINT = t(
    "match only what the client's packet has: -p tcp --dport $HOST_PORT (the packet comes in "
    "by $UPLINK, for $ROUTER_ADDR)",
    "클라이언트 패킷에 있는 것만 조건으로 쓰세요: -p tcp --dport $HOST_PORT (패킷은 $UPLINK로 "
    "들어오고 목적지는 $ROUTER_ADDR입니다)",
)


def _elsewhere(to: str) -> dict[str, str]:
    return t(
        f"your DNAT rule matched, and sent the connection to {to}: the container is 10.66.0.2",
        f"DNAT 규칙이 맞았지만 연결을 {to}(으)로 보냈습니다: 컨테이너는 10.66.0.2입니다",
    )


def _to_port(to: str) -> dict[str, str]:
    return t(
        f"your DNAT rule matched, and sent the connection to {to}: the container's server "
        "listens on port 80 (without :PORT, the port stays 8081, where nothing listens)",
        f"DNAT 규칙이 맞았지만 연결을 {to}(으)로 보냈습니다: 컨테이너의 서버는 80 포트에서 "
        "기다립니다(:포트를 빼면 포트는 8081 그대로이고, 거기에는 아무것도 없습니다)",
    )


_FORWARD_DROP = t(
    "the rewritten packet, now for 10.66.0.2:80, was dropped by the router's FORWARD chain: "
    "its policy is DROP, and no rule accepted it",
    "목적지가 바뀐 패킷(이제 10.66.0.2:80)을 라우터의 FORWARD 체인이 버렸습니다: 정책이 "
    "DROP이고 허용하는 규칙이 없습니다",
)
_FORWARD_8081 = t(
    "the rewritten packet was dropped by the router's FORWARD chain: your ACCEPT rule waits "
    "for port 8081, but FORWARD comes after PREROUTING, and sees the packet already rewritten, "
    "for 10.66.0.2:80",
    "목적지가 바뀐 패킷을 라우터의 FORWARD 체인이 버렸습니다: ACCEPT 규칙이 8081 포트를 "
    "기다리지만, FORWARD는 PREROUTING 다음이라 이미 바뀐 패킷(10.66.0.2:80)을 봅니다",
)
_FORWARD_HINT = t(
    "ip netns exec $ROUTER iptables -A FORWARD -d $WEB_ADDR -o $BRIDGE -p tcp --dport $WEB_PORT "
    "-j ACCEPT",
    "ip netns exec $ROUTER iptables -A FORWARD -d $WEB_ADDR -o $BRIDGE -p tcp --dport $WEB_PORT "
    "-j ACCEPT 로 허용하세요",
)
_NO_ROUTE_BACK = t(
    "the request reached the container, and its answer had no way back: DNAT changed only the "
    "destination, so the container answers 198.51.100.1, and it has no route there",
    "요청은 컨테이너에 닿았지만 응답이 돌아갈 길이 없었습니다: DNAT는 목적지만 바꾸므로 "
    "컨테이너는 198.51.100.1로 응답하는데, 그곳으로 가는 경로가 없습니다",
)
_ROUTE_HINT = t(
    "ip -n $WEB route add default via $GATEWAY: the answer goes back through the router, which "
    "undoes the rewrite",
    "ip -n $WEB route add default via $GATEWAY: 응답이 라우터를 거쳐 돌아가야 라우터가 바꾼 "
    "것을 되돌립니다",
)
