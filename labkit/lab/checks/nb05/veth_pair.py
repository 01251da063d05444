"""05-veth-pair: two empty network namespaces joined by hand with a veth pair, judged by what the
kernel holds in them afterwards, then by a ping.

The checker makes two empty namespaces (``A`` and ``B``, ``labkit-nb05-x<pid>-pair-*``), runs the
learner's cell in a scratch namespace of its own next to them, and then reads both with ``ip``
(``labkit.lab.net_state``). The first missing piece is named, with the command that adds it:

* no veth in A or B, but one in the cell's own namespace: the ends were never moved;
* an end in one namespace only, or two ends that are not one pair;
* an end that is DOWN; an end without an address; the same address twice;
* no route from one end to the other's address (a /32, or two subnets);
* and if all that is there but the ping still gets no answer, that.
"""

from __future__ import annotations

import os
import re

from labkit.lab import net_demo, net_state
from labkit.lab.checks.common import run_code
from labkit.lab.checks.nb05.shell import (
    OWN_NAMESPACE,
    PRELUDE,
    SANDBOX,
    command_verdict,
    failed_command,
)
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

ADDR_A, ADDR_B = "203.0.113.1/24", "203.0.113.2/24"  # TEST-NET-3: kept for documentation


@define(
    "05-veth-pair",
    kind="code",
    title=t("A veth pair, by hand", "veth 쌍을 손으로 연결하기"),
    instructions=t(
        "`A` and `B` are two new network namespaces with nothing in them but a `lo` that is "
        "DOWN. Join them with a virtual cable and make `A` reach `B`:"
        "\n\n1. make a veth pair: `ip link add va type veth peer name vb` (it appears in your "
        "cell's own namespace);"
        "\n2. move one end into each namespace: `ip link set va netns $A`, and `vb` into `$B`;"
        "\n3. give each end an address in one subnet, `ADDR_A` (203.0.113.1/24) to `va` and "
        "`ADDR_B` (203.0.113.2/24) to `vb`: `ip -n $A addr add 203.0.113.1/24 dev va`;"
        "\n4. set both ends up: `ip -n $A link set va up`;"
        "\n5. ping B from A: `ip netns exec $A busybox ping -c1 203.0.113.2`."
        '\n\n`sh("...")` runs one command as a terminal would and shows it; `$A` and `$B` are '
        "the namespaces' names (also the variables `A` and `B`). Your cell runs in a scratch "
        "network namespace of its own, so nothing you do reaches the host's network; the "
        "checker then looks into `A` and `B`.",
        "`A`와 `B`는 새로 만든 네트워크 네임스페이스이며, DOWN 상태인 `lo` 말고는 아무것도 "
        "없습니다. 가상의 케이블로 둘을 연결해서 `A`에서 `B`에 닿게 하세요:"
        "\n\n1. veth 쌍을 만듭니다: `ip link add va type veth peer name vb` (셀 자신의 "
        "namespace에 생깁니다);"
        "\n2. 양 끝을 각 namespace로 옮깁니다: `ip link set va netns $A`, `vb`는 `$B`로;"
        "\n3. 각 끝에 같은 서브넷의 주소를 줍니다. `va`에는 `ADDR_A`(203.0.113.1/24), `vb`에는 "
        "`ADDR_B`(203.0.113.2/24): `ip -n $A addr add 203.0.113.1/24 dev va`;"
        "\n4. 양 끝을 켭니다(up): `ip -n $A link set va up`;"
        "\n5. A에서 B로 ping을 보냅니다: `ip netns exec $A busybox ping -c1 203.0.113.2`."
        '\n\n`sh("...")`는 명령 하나를 터미널처럼 실행하고 보여 줍니다. `$A`와 `$B`는 '
        "namespace의 이름입니다(변수 `A`, `B`도 같습니다). 셀은 자기만의 임시 네트워크 "
        "namespace에서 실행되므로 호스트의 네트워크에는 아무 영향이 없고, 검사기가 그다음에 "
        "`A`와 `B` 안을 살펴봅니다.",
    ),
)
def check_veth_pair(source: str) -> Verdict:
    pid = os.getpid()
    with net_demo.empty_namespaces(f"x{pid}-pair-a", f"x{pid}-pair-b") as (a, b):
        values = {"A": a, "B": b, "ADDR_A": ADDR_A, "ADDR_B": ADDR_B}
        run = run_code(source, OWN_NAMESPACE, PRELUDE, values, sandbox=SANDBOX)
        cmd = failed_command(run)
        if cmd and "Cannot find device" in cmd["stderr"] and run.value("own"):
            return _not_moved(run.value("own"))
        return command_verdict(run) or _judge(run, a, b)


def _not_moved(own: list[str]) -> Verdict:
    return wrong(
        "not-moved",
        t(
            f"A and B are still empty; your pair ({', '.join(own)}) stayed in your cell's own "
            "namespace, and went with it",
            f"A와 B는 여전히 비어 있습니다. 만든 쌍({', '.join(own)})은 셀 자신의 namespace에 "
            "남아 있다가 셀과 함께 사라졌습니다",
        ),
        t(
            "move each end: ip link set va netns $A, then ip link set vb netns $B",
            "양 끝을 옮기세요: ip link set va netns $A, 그리고 ip link set vb netns $B",
        ),
    )


def _judge(run, a: str, b: str) -> Verdict:
    ns_a, ns_b = net_state.snapshot([a, b])
    ends_a = [x for x in ns_a.links if x.kind == "veth"]
    ends_b = [x for x in ns_b.links if x.kind == "veth"]
    if not ends_a and not ends_b:
        own = run.value("own") or []
        if own:
            return _not_moved(own)
        return wrong(
            "no-veth",
            t("A and B have no veth end: there is no cable yet", "A와 B에 veth가 없습니다"),
            t(
                "make a pair: ip link add va type veth peer name vb",
                "먼저 쌍을 만드세요: ip link add va type veth peer name vb",
            ),
        )
    for ends, name in ((ends_a, "A"), (ends_b, "B")):
        if not ends:
            return wrong(
                "one-end",
                t(
                    f"only one end is in place: {name} has no veth end",
                    f"한쪽 끝만 옮겨졌습니다: {name}에 veth 끝이 없습니다",
                ),
                t(
                    f"move the other end into it: ip link set <its name> netns ${name}",
                    f"다른 끝도 옮기세요: ip link set <이름> netns ${name}",
                ),
            )
    pair = next(((x, y) for x in ends_a for y in ends_b if x.peer == (b, y.ifname)), None)
    if pair is None:
        return wrong(
            "not-peers",
            t(
                "A and B each have a veth end, but not of the same pair: two cables, each "
                "plugged in at one end only",
                "A와 B에 veth 끝이 있지만 같은 쌍이 아닙니다: "
                "케이블 두 개의 한쪽씩만 꽂혀 있습니다",
            ),
            t(
                "one `ip link add va type veth peer name vb` makes both ends of one cable",
                "`ip link add va type veth peer name vb` 한 번이 케이블 하나의 양 끝을 만듭니다",
            ),
        )
    return _wired(a, b, *pair)


def _wired(a: str, b: str, end_a, end_b) -> Verdict:
    names = ((end_a, "A", a), (end_b, "B", b))
    for end, name, _ in names:
        if not end.up:
            return wrong(
                "down",
                t(
                    f"the veth end in {name} ({end.ifname}) is DOWN: it carries nothing",
                    f"{name}의 veth 끝({end.ifname})이 DOWN 상태라서 아무것도 전달하지 않습니다",
                ),
                t(
                    f"ip -n ${name} link set {end.ifname} up",
                    f"ip -n ${name} link set {end.ifname} up 으로 켜세요",
                ),
            )
    for end, name, _ in names:
        if not end.addresses:
            address = ADDR_A if name == "A" else ADDR_B
            return wrong(
                "no-address",
                t(
                    f"the veth end in {name} ({end.ifname}) has no IPv4 address",
                    f"{name}의 veth 끝({end.ifname})에 IPv4 주소가 없습니다",
                ),
                t(
                    f"ip -n ${name} addr add {address} dev {end.ifname}",
                    f"ip -n ${name} addr add {address} dev {end.ifname} 으로 주소를 주세요",
                ),
            )
    ip_a, ip_b = (end.addresses[0].split("/")[0] for end in (end_a, end_b))
    if ip_a == ip_b:
        return wrong(
            "same-address",
            t(f"both ends have {ip_a}", f"양 끝의 주소가 {ip_a}로 같습니다"),
            t("give B's end ADDR_B, 203.0.113.2/24", "B의 끝에는 ADDR_B(203.0.113.2/24)를 주세요"),
        )
    for (end, name, ns), target in zip(names, (ip_b, ip_a), strict=True):
        route = net_state.route_to(ns, target)
        if route is None or route.get("dev") != end.ifname:
            return wrong(
                "no-route",
                t(
                    f"{name} has no route to {target}: {end.ifname} has {end.addresses[0]}, "
                    f"whose subnet does not hold {target}",
                    f"{name}에는 {target}로 가는 경로가 없습니다: {end.ifname}의 주소 "
                    f"{end.addresses[0]}의 서브넷에는 {target} 주소가 들어 있지 않습니다",
                ),
                t(
                    "give both ends addresses in one subnet, 203.0.113.1/24 and 203.0.113.2/24: "
                    "the /24 makes the route",
                    "양 끝에 같은 서브넷의 주소(203.0.113.1/24, 203.0.113.2/24)를 주세요: /24가 "
                    "경로를 만듭니다",
                ),
            )
    ping = net_state.pings(a, ip_b)
    if ping.returncode != 0:
        return wrong(
            "no-answer",
            t(
                f"everything looks wired, but {ip_b} did not answer A's ping",
                f"연결은 다 된 것 같지만 A의 ping에 {ip_b}에서 응답이 없었습니다",
            ),
            t(
                "look at ip -n $B addr and ip -n $B route",
                "ip -n $B addr와 ip -n $B route를 보세요",
            ),
        )
    took = re.search(r"time=([\d.]+) ms", ping.stdout)
    ms = took[1] if took else "?"
    state = net_state.to_json(net_state.snapshot([a, b]))
    return right(
        t(
            f"{ip_b} answered in {ms} ms: {end_a.ifname} in A and {end_b.ifname} in B are the "
            "two ends of one cable, both up, in one subnet, so each namespace has a route to "
            "the other.",
            f"{ip_b}에서 {ms} ms 만에 응답이 왔습니다: A의 끝({end_a.ifname})과 B의 끝"
            f"({end_b.ifname})은 "
            "케이블 하나의 양 끝이고, 둘 다 켜져 있으며 같은 서브넷에 있어서 서로에게 가는 "
            "경로가 있습니다.",
        ),
        value={"state": state, "ping": ping.stdout, "a": ip_a, "b": ip_b},
    )
