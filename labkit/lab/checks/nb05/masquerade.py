"""05-masquerade: a container's way out, through a router that masquerades it, as Docker's host
does for docker0. Judged by a ping to the outside and by the router's own counters.

The checker builds a world of its own (``net_demo.check_world``): container ``A`` on the
router's bridge with no default route, a router with forwarding off and Docker's FORWARD chain
(policy DROP, bridge-to-bridge accepted), an outside at 198.51.100.1 that has no route back to
the containers' subnet. After the learner's cell it pings the outside from A once, and reads
what happened to that one packet from the kernel, in this order:

* A has no route to the outside, or one that does not go through the bridge's address;
* the router does not forward (``net.ipv4.ip_forward`` is 0 in the router's namespace);
* FORWARD's policy dropped the request (nothing accepted it) or the reply (only the way out was
  accepted): the policy's own packet counter went up;
* no MASQUERADE (or SNAT) rule in the router's ``nat`` table (or only in the cell's own
  namespace), or one that matched no packet;
* the ping was answered without NAT: the outside was given a route back to a private subnet.
"""

from __future__ import annotations

import re

from labkit.lab import net_demo, net_state
from labkit.lab.checks.common import run_code
from labkit.lab.checks.nb05.shell import OWN_NAMESPACE, PRELUDE, SANDBOX, command_verdict
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t


@define(
    "05-masquerade",
    kind="code",
    title=t("The way out: forwarding and MASQUERADE", "밖으로 나가는 길: 포워딩과 MASQUERADE"),
    instructions=t(
        "Make container `A` (10.55.0.2) reach the outside (`OUTSIDE_ADDR`, 198.51.100.1), as "
        "Docker does for its containers. You get a fresh copy of the world above: A's `eth0` on "
        "the router's bridge `BRIDGE` (`GATEWAY`, 10.55.0.1), and the router's FORWARD chain as "
        "Docker leaves a host's (policy DROP). Four pieces are missing:"
        "\n\n1. A has no default route: `ip -n $A route add default via $GATEWAY`;"
        "\n2. the router does not forward: in the router's namespace, `sysctl -w "
        "net.ipv4.ip_forward=1` (run it with `ip netns exec $ROUTER ...`);"
        "\n3. FORWARD drops everything: accept what comes in from the bridge and goes out "
        "elsewhere (`-i $BRIDGE ! -o $BRIDGE`), and the replies that come back "
        "(`-o $BRIDGE -m conntrack --ctstate RELATED,ESTABLISHED`);"
        "\n4. the outside has no route back to 10.55.0.0/24 (nobody outside does): masquerade "
        "what leaves the subnet, `iptables -t nat -A POSTROUTING -s $SUBNET ! -o $BRIDGE -j "
        "MASQUERADE` in the router."
        '\n\nThen ping: `sh("ip netns exec $A busybox ping -c1 $OUTSIDE_ADDR")`. Every rule and '
        "setting goes into the router's namespace (`ip netns exec $ROUTER ...`): your cell "
        "runs in a scratch namespace of its own, so the host's tables are never touched.",
        "컨테이너 `A`(10.55.0.2)가 Docker의 컨테이너처럼 바깥(`OUTSIDE_ADDR`, 198.51.100.1)에 "
        "닿게 하세요. 위와 같은 구성을 새로 하나 받습니다: A의 `eth0`은 라우터의 브릿지 "
        "`BRIDGE`(`GATEWAY`, 10.55.0.1)에 연결되어 있고, 라우터의 FORWARD 체인은 Docker가 "
        "호스트에 남기는 그대로(정책 DROP)입니다. 빠진 것이 네 가지 있습니다:"
        "\n\n1. A에 기본 경로(default route)가 없습니다: `ip -n $A route add default via "
        "$GATEWAY`;"
        "\n2. 라우터가 패킷을 전달(포워딩)하지 않습니다: 라우터의 namespace에서 `sysctl -w "
        "net.ipv4.ip_forward=1` (`ip netns exec $ROUTER ...`로 실행);"
        "\n3. FORWARD가 모두 버립니다: 브릿지에서 들어와 다른 곳으로 나가는 것"
        "(`-i $BRIDGE ! -o $BRIDGE`)과 돌아오는 응답"
        "(`-o $BRIDGE -m conntrack --ctstate RELATED,ESTABLISHED`)을 허용하세요;"
        "\n4. 바깥에는 10.55.0.0/24로 돌아오는 경로가 없습니다(바깥의 누구에게도 없습니다): "
        "라우터에서 서브넷을 떠나는 패킷을 마스커레이드하세요. `iptables -t nat -A "
        "POSTROUTING -s $SUBNET ! -o $BRIDGE -j MASQUERADE`."
        '\n\n그다음 ping: `sh("ip netns exec $A busybox ping -c1 $OUTSIDE_ADDR")`. 모든 규칙과 '
        "설정은 라우터의 namespace에 넣습니다(`ip netns exec $ROUTER ...`). 셀은 자기만의 "
        "임시 namespace에서 실행되므로 호스트의 테이블은 전혀 바뀌지 않습니다.",
    ),
)
def check_masquerade(source: str) -> Verdict:
    world = net_demo.check_world()
    try:
        run = run_code(source, OWN_NAMESPACE, PRELUDE, world.values(), sandbox=SANDBOX)
        return command_verdict(run) or _judge(run, world)
    finally:
        net_demo.remove(world)


def _counters(router: str) -> dict[str, int]:
    """Packets: dropped by FORWARD's policy, accepted by FORWARD's rules, NATed on the way out."""
    forward = net_state.output(router, "iptables", "-w", "-L", "FORWARD", "-n", "-v", "-x").stdout
    nat = net_state.output(router, "iptables", "-w", "-t", "nat", "-L", "POSTROUTING", "-n", "-v",
                           "-x").stdout  # fmt: skip
    policy = re.search(r"policy DROP (\d+) packets", forward)
    rules = [line.split() for line in forward.splitlines()[2:] if line.strip()]
    nat_rules = [line.split() for line in nat.splitlines()[2:] if line.strip()]
    return {
        "dropped": int(policy[1]) if policy else 0,
        "accepted": sum(int(r[0]) for r in rules if len(r) > 2 and r[2] == "ACCEPT"),
        "masqueraded": sum(int(r[0]) for r in nat_rules if len(r) > 2 and r[2] in _NAT),
        "nat_rules": len([r for r in nat_rules if len(r) > 2 and r[2] in _NAT]),
    }


_NAT = ("MASQUERADE", "SNAT")


def _judge(run, world: net_demo.World) -> Verdict:
    a, router, out = world.ns("a"), world.router, world.outside_address
    route = net_state.route_to(a, out)
    if route is None:
        return wrong("no-route", _NO_ROUTE, _ROUTE_HINT)
    if route.get("gateway") != world.gateway:
        said = t(
            f"A's route to {out} goes {route.get('gateway') or 'straight out of ' + route['dev']}"
            f", not through the router ({world.gateway})",
            f"A에서 {out}로 가는 경로가 라우터({world.gateway})를 거치지 않습니다",
        )
        return wrong("wrong-route", said, _ROUTE_HINT)
    if net_state.sysctl(router, "net.ipv4.ip_forward") != "1":
        return wrong("no-forwarding", _NO_FORWARDING, _FORWARDING_HINT)
    before = _counters(router)
    ping = net_state.pings(a, out)
    after = _counters(router)
    delta = {k: after[k] - before[k] for k in before}
    if ping.returncode == 0:
        if delta["masqueraded"] > 0:
            return _right(world, ping.stdout)
        return wrong("route-back", _ROUTE_BACK, _NAT_HINT)
    if delta["dropped"] and delta["accepted"]:
        return wrong("replies-dropped", _REPLIES, _REPLIES_HINT)
    if delta["dropped"]:
        return wrong("forward-drop", _FORWARD_DROP, _FORWARD_HINT)
    if not after["nat_rules"]:
        if run.value("own_nat"):
            return wrong("wrong-namespace", _WRONG_NS, _NAT_HINT)
        return wrong("no-masquerade", _NO_NAT, _NAT_HINT)
    if not delta["masqueraded"]:
        return wrong("masquerade-unused", _UNUSED, _NAT_HINT)
    return wrong(
        "no-answer",
        t(f"{out} did not answer A's ping", f"A의 ping에 {out}에서 응답이 없었습니다"),
        t("compare your rules with the four steps", "네 단계와 규칙을 하나씩 비교해 보세요"),
    )


def _right(world: net_demo.World, ping: str) -> Verdict:
    tracked = net_state.output(world.router, "conntrack", "-L", "-p", "icmp").stdout
    rules = net_state.output(world.router, "iptables", "-w", "-t", "nat", "-S", "POSTROUTING")
    return right(
        t(
            f"{world.outside_address} answered. The router rewrote the request's source "
            f"{world.address('a')} to its own {world.uplink_address} on the way out (conntrack "
            "remembers it), and the reply's destination back on the way in.",
            f"{world.outside_address}에서 응답이 왔습니다. 라우터는 나가는 요청의 출발지 "
            f"주소 {world.address('a')}를 자기 주소 {world.uplink_address}로 바꾸었고(conntrack이 "
            "기억합니다), 돌아오는 응답의 목적지를 다시 되돌렸습니다.",
        ),
        value={"ping": ping, "conntrack": tracked, "rules": rules.stdout},
    )


_NO_ROUTE = t(
    "A has no route to the outside: only its own subnet, 10.55.0.0/24, is reachable",
    "A에는 바깥으로 가는 경로가 없습니다: 자기 서브넷 10.55.0.0/24에만 닿습니다",
)
_ROUTE_HINT = t(
    "ip -n $A route add default via $GATEWAY: everything else goes to the bridge's address",
    "ip -n $A route add default via $GATEWAY: 나머지는 모두 브릿지의 주소로 보냅니다",
)
_NO_FORWARDING = t(
    "the router does not forward: net.ipv4.ip_forward is 0 in its namespace (a setting each "
    "network namespace has for itself)",
    "라우터가 포워딩하지 않습니다: 라우터 namespace의 net.ipv4.ip_forward가 0입니다(네트워크 "
    "namespace마다 따로 있는 설정입니다)",
)
_FORWARDING_HINT = t(
    "ip netns exec $ROUTER sysctl -w net.ipv4.ip_forward=1",
    "ip netns exec $ROUTER sysctl -w net.ipv4.ip_forward=1 로 라우터 안에서 켜세요",
)
_FORWARD_DROP = t(
    "the router's FORWARD chain dropped A's ping: its policy is DROP, and no rule accepted it",
    "라우터의 FORWARD 체인이 A의 ping을 버렸습니다: 정책이 DROP이고 허용하는 규칙이 없습니다",
)
_FORWARD_HINT = t(
    "ip netns exec $ROUTER iptables -A FORWARD -i $BRIDGE ! -o $BRIDGE -j ACCEPT (and one for "
    "the replies: -o $BRIDGE -m conntrack --ctstate RELATED,ESTABLISHED)",
    "ip netns exec $ROUTER iptables -A FORWARD -i $BRIDGE ! -o $BRIDGE -j ACCEPT (응답을 위한 "
    "규칙도: -o $BRIDGE -m conntrack --ctstate RELATED,ESTABLISHED)",
)
_REPLIES = t(
    "the ping went out, but its reply was dropped on the way back in: FORWARD accepted the "
    "request, and its DROP policy took the reply",
    "ping은 나갔지만 돌아오는 응답이 버려졌습니다: FORWARD가 요청은 허용했지만 응답은 DROP "
    "정책에 걸렸습니다",
)
_REPLIES_HINT = t(
    "accept the replies too: ip netns exec $ROUTER iptables -A FORWARD -o $BRIDGE -m conntrack "
    "--ctstate RELATED,ESTABLISHED -j ACCEPT",
    "응답도 허용하세요: ip netns exec $ROUTER iptables -A FORWARD -o $BRIDGE -m conntrack "
    "--ctstate RELATED,ESTABLISHED -j ACCEPT",
)
_NO_NAT = t(
    "the ping reached the outside from 10.55.0.2, a private address it has no route back to, "
    "so no reply came: the router's nat table has no MASQUERADE rule",
    "ping은 10.55.0.2라는 사설 주소에서 바깥에 닿았고, 바깥은 그 주소로 돌아갈 경로가 없어서 "
    "응답이 오지 않았습니다: 라우터의 nat 테이블에 MASQUERADE 규칙이 없습니다",
)
_NAT_HINT = t(
    "ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s $SUBNET ! -o $BRIDGE -j MASQUERADE",
    "ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s $SUBNET ! -o $BRIDGE -j "
    "MASQUERADE 로 라우터에서 마스커레이드하세요",
)
_WRONG_NS = t(
    "your MASQUERADE rule went into your cell's own namespace, not the router's",
    "MASQUERADE 규칙이 라우터가 아니라 셀 자신의 namespace에 들어갔습니다",
)
_UNUSED = t(
    "the router has a MASQUERADE rule, but it matched no packet of the ping: -o names the link "
    "a packet leaves by (toward the outside, not the bridge), -s the subnet it comes from",
    "라우터에 MASQUERADE 규칙이 있지만 ping 패킷에 하나도 맞지 않았습니다: -o는 패킷이 나가는 "
    "링크(브릿지가 아니라 바깥쪽), -s는 패킷이 온 서브넷입니다",
)
_ROUTE_BACK = t(
    "the ping was answered, but not through NAT: the outside saw 10.55.0.2 and was given a "
    "route back. On the internet nobody has a route to your private subnet",
    "ping에 응답은 왔지만 NAT 덕분이 아닙니다: 바깥이 10.55.0.2를 보았고 돌아오는 경로를 "
    "받았습니다. 인터넷에서는 아무도 여러분의 사설 서브넷으로 가는 경로를 갖고 있지 않습니다",
)
