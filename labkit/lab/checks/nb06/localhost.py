"""06-localhost: the router's own connections to its published port, to its own address and to
127.0.0.1, by NAT alone (hairpin NAT, Docker's ``--userland-proxy=false``).

The checker builds a world with port 8081 published as section 1 left it (DNAT in the chain
``LABKIT``, jumped to from PREROUTING only; FORWARD accepts; the container's default route).
After the learner's cell the router fetches the page twice, from its own address and from
127.0.0.1, and the checker reads the router's counters around each, in the order a packet
meets each piece:

* its own address does not answer: no DNAT rule is reached from OUTPUT (no jump there);
* 127.0.0.1 does not reach a DNAT rule: the jump leaves out 127.0.0.0/8 (Docker's own
  ``! -d 127.0.0.0/8``, which leaves localhost to docker-proxy);
* it does, but the bridge does not take a packet from 127.0.0.1 (``route_localnet`` is 0);
* it does, but no MASQUERADE rule rewrote the source 127.0.0.1 (the container cannot answer
  it: 127.0.0.1 is its own loopback), or the rule went into the cell's own namespace.
"""

from __future__ import annotations

from labkit.lab import net_state, port_demo, port_state
from labkit.lab.checks.common import run_code
from labkit.lab.checks.nb06.shell import OWN_NAMESPACE, PRELUDE, SANDBOX, command_verdict, own_rules
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t


@define(
    "06-localhost",
    kind="code",
    title=t("The host's own localhost: hairpin NAT", "호스트 자신의 localhost: 헤어핀 NAT"),
    instructions=t(
        "In a fresh copy of the world, port 8081 is published as above: a DNAT rule in the "
        "router's chain `LABKIT`, jumped to from PREROUTING, FORWARD accepting it, the "
        "container's default route. From outside it works. On the router itself, neither "
        "`curl $ROUTER_ADDR:8081` nor `curl 127.0.0.1:8081` does. Make both work, by NAT alone, "
        "in the router's namespace (`ip netns exec $ROUTER ...`):"
        "\n\n1. the router's own connections never pass PREROUTING: they pass the nat table's "
        "OUTPUT chain. Jump from there to `LABKIT`, for every address of the router's own: "
        "`-m addrtype --dst-type LOCAL -j LABKIT` (127.0.0.1 is one of them);"
        "\n2. a packet from 127.0.0.1 may not leave by a real link (the kernel drops it as a "
        "*martian*) unless that link allows it: `sysctl -w "
        "net.ipv4.conf.$BRIDGE.route_localnet=1`;"
        "\n3. the container cannot answer 127.0.0.1: that is its own loopback. Rewrite the "
        "source of what goes from 127.0.0.0/8 out by the bridge: `iptables -t nat -A "
        "POSTROUTING -s 127.0.0.0/8 -o $BRIDGE -j MASQUERADE`."
        '\n\nThen: `sh("ip netns exec $ROUTER curl -sS -m 3 '
        'http://127.0.0.1:$HOST_PORT/cgi-bin/who")`.',
        "새로 받는 구성에서 8081 포트는 위에서처럼 공개되어 있습니다: 라우터의 `LABKIT` 체인에 "
        "DNAT 규칙이 있고, PREROUTING에서 그 체인으로 점프하며, FORWARD가 허용하고, 컨테이너에 "
        "기본 경로가 있습니다. 바깥에서는 됩니다. 하지만 라우터 자신에서는 `curl "
        "$ROUTER_ADDR:8081`도 `curl 127.0.0.1:8081`도 되지 않습니다. 둘 다 되게 하세요. "
        "NAT만으로, 라우터의 namespace에서(`ip netns exec $ROUTER ...`):"
        "\n\n1. 라우터 자신이 만드는 연결은 PREROUTING을 지나지 않고 nat 테이블의 OUTPUT 체인을 "
        "지납니다. 거기서 라우터 자신의 모든 주소에 대해 `LABKIT`으로 점프하세요: "
        "`-m addrtype --dst-type LOCAL -j LABKIT` (127.0.0.1도 그중 하나입니다);"
        "\n2. 출발지가 127.0.0.1인 패킷은 링크가 허용하지 않으면 실제 링크로 나갈 수 없습니다"
        "(커널이 *martian*으로 버립니다): `sysctl -w net.ipv4.conf.$BRIDGE.route_localnet=1`;"
        "\n3. 컨테이너는 127.0.0.1에 응답할 수 없습니다: 그것은 컨테이너 자신의 루프백입니다. "
        "127.0.0.0/8에서 브릿지로 나가는 패킷의 출발지를 바꾸세요: `iptables -t nat -A "
        "POSTROUTING -s 127.0.0.0/8 -o $BRIDGE -j MASQUERADE`."
        '\n\n그다음: `sh("ip netns exec $ROUTER curl -sS -m 3 '
        'http://127.0.0.1:$HOST_PORT/cgi-bin/who")`.',
    ),
)
def check_localhost(source: str) -> Verdict:
    world = port_demo.check_world("publish")
    try:
        run = run_code(source, OWN_NAMESPACE, PRELUDE, world.values(), sandbox=SANDBOX)
        return command_verdict(run) or _judge(run, world)
    finally:
        port_demo.remove(world)


def _fetch(world: port_demo.World, host: str) -> tuple[str | None, dict[str, int]]:
    """The page from the router itself (None: no answer), and how many packets each kind of
    rule took meanwhile: DNAT reached from OUTPUT, and MASQUERADE/SNAT."""
    r = world.router
    before = port_state.rules(r)
    page = port_state.fetch(r, world.url(host), wait=1)
    after = port_state.rules(r)
    output = port_state.reachable(after, "OUTPUT")
    took = {"dnat": 0, "masquerade": 0}
    if len(before) == len(after):
        for new, old in zip(after, before, strict=True):
            target = new.option("-j")
            if target == "DNAT" and new.chain in output:
                took["dnat"] += new.packets - old.packets
            elif target in ("MASQUERADE", "SNAT"):
                took["masquerade"] += new.packets - old.packets
    return (page.stdout if page.returncode == 0 else None), took


def _judge(run, world: port_demo.World) -> Verdict:
    own, _ = _fetch(world, world.uplink_address)
    if own is None:
        if own_rules(run, "OUTPUT"):
            return wrong("wrong-namespace", _WRONG_NS, _JUMP_HINT)
        return wrong("no-output-jump", _NO_JUMP, _JUMP_HINT)
    local, took = _fetch(world, "127.0.0.1")
    if local is not None:
        return _right(world, own, local)
    if not took["dnat"]:
        return wrong("loopback-excluded", _EXCLUDED, _EXCLUDED_HINT)
    bridge = f"net.ipv4.conf.{world.bridge}.route_localnet"
    localnet = {net_state.sysctl(world.router, key) for key in (bridge, _ALL)}
    if "1" not in localnet:
        return wrong("no-route-localnet", _MARTIAN, _LOCALNET_HINT)
    if not took["masquerade"]:
        if own_rules(run, "127.0.0.0/8"):
            return wrong("wrong-namespace", _WRONG_NS, _MASQ_HINT)
        return wrong("no-hairpin-masquerade", _NO_MASQ, _MASQ_HINT)
    return wrong(
        "no-answer",
        t(
            "127.0.0.1:8081 did not answer the router",
            "라우터에서 127.0.0.1:8081이 응답하지 않았습니다",
        ),
        t("compare your rules with the three steps", "세 단계와 규칙을 하나씩 비교해 보세요"),
    )


_ALL = "net.ipv4.conf.all.route_localnet"


def _right(world: port_demo.World, own: str, local: str) -> Verdict:
    saw_own, saw_local = port_state.who(own) or "?", port_state.who(local) or "?"
    tracked = net_state.output(world.router, "conntrack", "-L", "-p", "tcp").stdout
    return right(
        t(
            f"both answered. To its own {world.uplink_address} the container saw the router "
            f"come from {saw_own}; to 127.0.0.1, from {saw_local}: the bridge's address, put "
            "there by MASQUERADE, since the container could not answer 127.0.0.1.",
            f"둘 다 응답했습니다. 라우터 자신의 주소 {world.uplink_address}로 보낸 요청은 "
            f"컨테이너에게 {saw_own}에서 온 것으로, 127.0.0.1로 보낸 요청은 {saw_local}에서 온 "
            "것으로 보였습니다: 컨테이너는 127.0.0.1에 응답할 수 없으므로 MASQUERADE가 브릿지의 "
            "주소로 바꾼 것입니다.",
        ),
        value={"own": own, "local": local, "conntrack": tracked},
    )


_NO_JUMP = t(
    "from the router itself, its own 198.51.100.2:8081 refused the connection: the router's "
    "own packets pass the nat table's OUTPUT chain, never PREROUTING, and no rule in OUTPUT "
    "leads to the DNAT rule",
    "라우터 자신에서 198.51.100.2:8081로의 연결이 거부되었습니다: 라우터 자신의 패킷은 "
    "PREROUTING이 아니라 nat 테이블의 OUTPUT 체인을 지나는데, OUTPUT에는 DNAT 규칙으로 가는 "
    "규칙이 없습니다",
)
_JUMP_HINT = t(
    "ip netns exec $ROUTER iptables -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j LABKIT",
    "ip netns exec $ROUTER iptables -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j LABKIT 로 "
    "OUTPUT에서 점프하세요",
)
_WRONG_NS = t(
    "your rule went into your cell's own namespace, not the router's",
    "규칙이 라우터가 아니라 셀 자신의 namespace에 들어갔습니다",
)
_EXCLUDED = t(
    "the router's own address answers now, and 127.0.0.1 still does not: its packets never "
    "reached the DNAT rule. Your jump from OUTPUT leaves out 127.0.0.0/8 (Docker's does too, "
    "and leaves localhost to docker-proxy)",
    "라우터 자신의 주소는 이제 응답하지만 127.0.0.1은 아닙니다: 그 패킷은 DNAT 규칙에 닿지 "
    "않았습니다. OUTPUT의 점프 규칙이 127.0.0.0/8을 빼고 있습니다(Docker도 그렇게 하고, "
    "localhost는 docker-proxy에게 맡깁니다)",
)
_EXCLUDED_HINT = t(
    "jump for every local address, 127.0.0.1 too: -m addrtype --dst-type LOCAL, without "
    "! -d 127.0.0.0/8",
    "127.0.0.1을 포함해 모든 로컬 주소에 대해 점프하세요: ! -d 127.0.0.0/8 없이 "
    "-m addrtype --dst-type LOCAL",
)
_MARTIAN = t(
    "127.0.0.1's packet reached the DNAT rule, and went nowhere: rewritten for 10.66.0.2, it "
    "would leave by the bridge with the source 127.0.0.1, and the kernel drops such a packet "
    "(a martian) while the bridge's route_localnet is 0",
    "127.0.0.1의 패킷은 DNAT 규칙에 닿았지만 어디로도 가지 못했습니다: 10.66.0.2로 바뀐 "
    "패킷은 출발지 127.0.0.1로 브릿지를 통해 나가야 하는데, 브릿지의 route_localnet이 0이면 "
    "커널이 그런 패킷(martian)을 버립니다",
)
_LOCALNET_HINT = t(
    "ip netns exec $ROUTER sysctl -w net.ipv4.conf.$BRIDGE.route_localnet=1",
    "ip netns exec $ROUTER sysctl -w net.ipv4.conf.$BRIDGE.route_localnet=1 로 브릿지에서 "
    "허용하세요",
)
_NO_MASQ = t(
    "127.0.0.1's packet reached the container with the source 127.0.0.1, and the container "
    "answered its own loopback: nothing rewrote the source on the way out by the bridge",
    "127.0.0.1의 패킷이 출발지 127.0.0.1 그대로 컨테이너에 닿았고, 컨테이너는 자기 자신의 "
    "루프백으로 응답했습니다: 브릿지로 나갈 때 출발지를 바꾼 것이 없습니다",
)
_MASQ_HINT = t(
    "ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s 127.0.0.0/8 -o $BRIDGE -j MASQUERADE",
    "ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s 127.0.0.0/8 -o $BRIDGE -j "
    "MASQUERADE 로 출발지를 바꾸세요",
)
