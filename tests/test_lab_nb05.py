"""Notebook 05's checkers (container networking), fed right answers and typical wrong ones, and the
lab helpers the notebook stands on: the scratch namespaces built by hand (and gone after), the
kernel's state read back with ``ip``, and the topology drawn from it.

Everything here happens in scratch network namespaces (``labkit-nb05-*``) with no link to the
host's: every test also checks that no namespace is left and that the host's links, iptables
rules and forwarding setting are as they were. ``NB05_ANSWERS`` is in tests/lab_answers.py's
format; that file adds them to its ``ANSWERS``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from labkit.lab import exercises, i18n, net_demo, net_plots, net_state
from labkit.lab.i18n import pick

pytestmark = pytest.mark.usefixtures("needs_root")

HANGUL = re.compile(r"[\uac00-\ud7a3]")


class Answer(NamedTuple):
    reason: str
    source: str


_PAIR = 'sh("ip link add va type veth peer name vb")\n'
_MOVE_A = 'sh("ip link set va netns $A")\n'
_MOVE_B = 'sh("ip link set vb netns $B")\n'
_ADDR_A = 'sh("ip -n $A addr add $ADDR_A dev va")\n'
_ADDR_B = 'sh("ip -n $B addr add $ADDR_B dev vb")\n'
_UP_A = 'sh("ip -n $A link set va up")\n'
_UP_B = 'sh("ip -n $B link set vb up")\n'
_PING_B = 'sh("ip netns exec $A busybox ping -c1 -W1 203.0.113.2")\n'

_ROUTE = 'sh("ip -n $A route add default via $GATEWAY")\n'
_FORWARDING = 'sh("ip netns exec $ROUTER sysctl -w net.ipv4.ip_forward=1")\n'
_OUT = 'sh("ip netns exec $ROUTER iptables -A FORWARD -i $BRIDGE ! -o $BRIDGE -j ACCEPT")\n'
_BACK = (
    'sh("ip netns exec $ROUTER iptables -A FORWARD -o $BRIDGE '
    '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")\n'
)
_MASQ = (
    'sh("ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s $SUBNET ! -o $BRIDGE '
    '-j MASQUERADE")\n'
)
_PING_OUT = 'sh("ip netns exec $A busybox ping -c1 -W1 $OUTSIDE_ADDR")\n'

NB05_ANSWERS: dict[str, list[Answer]] = {
    "05-veth-pair": [
        Answer(  # everything done, in the cell's own namespace
            "not-moved",
            _PAIR
            + 'sh("ip addr add 203.0.113.1/24 dev va")\nsh("ip addr add 203.0.113.2/24 dev vb")\n'
            'sh("ip link set va up")\nsh("ip link set vb up")\n',
        ),
        Answer("not-moved", _PAIR + _ADDR_A),  # "Cannot find device": va is still here
        Answer("one-end", _PAIR + _MOVE_A + _ADDR_A + _UP_A),
        Answer("down", _PAIR + _MOVE_A + _MOVE_B + _ADDR_A + _ADDR_B + _UP_A + _PING_B),
        Answer("no-address", _PAIR + _MOVE_A + _MOVE_B + _ADDR_A + _UP_A + _UP_B + _PING_B),
        Answer(
            "no-route",  # /32: an address, and no subnet around it
            _PAIR + _MOVE_A + _MOVE_B + 'sh("ip -n $A addr add 203.0.113.1/32 dev va")\n'
            'sh("ip -n $B addr add 203.0.113.2/32 dev vb")\n' + _UP_A + _UP_B + _PING_B,
        ),
        Answer(
            "command-failed",  # vb is in B, not A
            _PAIR + _MOVE_A + _MOVE_B + 'sh("ip -n $A addr add $ADDR_A dev vb")\n',
        ),
        Answer("no-veth", 'sh("ip -n $A link set lo up")\n'),
        Answer(
            "ok",  # the pair made with its ends in place at once
            'sh("ip -n $A link add va type veth peer name vb netns $B")\n'
            + _ADDR_A
            + _ADDR_B
            + _UP_A
            + _UP_B
            + _PING_B,
        ),  # fmt: skip
        Answer(
            "ok",  # other names, f-strings instead of $A, and no ping of its own
            'sh(f"ip link add one type veth peer name two netns {B}")\n'
            'sh(f"ip link set one netns {A}")\n'
            'sh(f"ip -n {A} addr add 203.0.113.1/24 dev one")\n'
            'sh(f"ip -n {B} addr add 203.0.113.2/24 dev two")\n'
            'sh(f"ip -n {A} link set one up")\nsh(f"ip -n {B} link set two up")\n',
        ),
    ],
    "05-masquerade": [
        Answer("no-route", _FORWARDING + _OUT + _BACK + _MASQ + _PING_OUT),
        Answer("wrong-route", 'sh("ip -n $A route add default dev eth0")\n' + _FORWARDING + _OUT),
        Answer("no-forwarding", _ROUTE + _OUT + _BACK + _MASQ + _PING_OUT),
        Answer(
            "no-forwarding",  # the sysctl written in the cell's own namespace
            _ROUTE + 'sh("sysctl -w net.ipv4.ip_forward=1")\n' + _OUT + _BACK + _MASQ + _PING_OUT,
        ),
        Answer("forward-drop", _ROUTE + _FORWARDING + _MASQ + _PING_OUT),
        Answer("replies-dropped", _ROUTE + _FORWARDING + _OUT + _MASQ + _PING_OUT),
        Answer("no-masquerade", _ROUTE + _FORWARDING + _OUT + _BACK + _PING_OUT),
        Answer(
            "wrong-namespace",
            _ROUTE
            + _FORWARDING
            + _OUT
            + _BACK
            + 'sh("iptables -t nat -A POSTROUTING -s $SUBNET ! -o $BRIDGE -j MASQUERADE")\n'
            + _PING_OUT,
        ),  # fmt: skip
        Answer(
            "masquerade-unused",  # -o names the link a packet leaves by: not the bridge
            _ROUTE
            + _FORWARDING
            + _OUT
            + _BACK
            + 'sh("ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s $SUBNET -o $BRIDGE '
            '-j MASQUERADE")\n' + _PING_OUT,
        ),  # fmt: skip
        Answer(
            "route-back",  # the outside told the way back: no NAT at all
            _ROUTE
            + _FORWARDING
            + _OUT
            + _BACK
            + 'sh("ip -n $OUTSIDE route add $SUBNET via 198.51.100.2")\n'
            + _PING_OUT,
        ),  # fmt: skip
        Answer(
            "ok",  # FORWARD's policy opened, and SNAT to the router's address
            _ROUTE + _FORWARDING + 'sh("ip netns exec $ROUTER iptables -P FORWARD ACCEPT")\n'
            'sh("ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s $SUBNET -o $UPLINK '
            '-j SNAT --to-source 198.51.100.2")\n',
        ),
    ],
}

CASES = [(i, n, a) for i in NB05_ANSWERS for n, a in enumerate(NB05_ANSWERS[i])]


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "_chosen", None)
    monkeypatch.setenv(i18n.ENV, "en")


def _host() -> dict[str, object]:
    """What these checks must never change on the host: links, iptables rules and addresses of
    theirs (compared by their words: other work on the machine may change the rest meanwhile),
    the forwarding setting, and the namespaces they make."""
    words = re.compile(r"lkn5|va\b|vb\b|10\.55\.|192\.0\.2\.|198\.51\.100\.|MASQUERADE -s 10\.55")
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    addresses = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    return {
        "links": [n for n in os.listdir("/sys/class/net") if words.search(n)],
        "rules": [r for r in rules.splitlines() if words.search(r)],
        "addresses": [a for a in addresses.splitlines() if words.search(a)],
        "forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "netns": net_demo.existing(),
    }


@pytest.mark.parametrize(("ex_id", "n", "answer"), CASES, ids=[f"{i}-{n}" for i, n, _ in CASES])
def test_checker_on_a_learners_answer(ex_id: str, n: int, answer: Answer) -> None:
    before = _host()
    verdict = exercises.evaluate(ex_id, answer.source)
    assert verdict.reason == answer.reason, pick(verdict.message)
    assert verdict.ok == (answer.reason == "ok")
    for lang in ("en", "ko"):
        message = pick(verdict.message, lang)
        assert message and "Traceback" not in message and "_child.py" not in message
        if not verdict.ok:
            assert verdict.hint and pick(verdict.hint, lang)
    assert HANGUL.search(verdict.message["ko"])
    if not verdict.ok:
        assert HANGUL.search(verdict.hint["ko"])
    assert _host() == before, "the host's network changed, or a namespace was left"


def test_every_nb05_exercise_has_three_wrong_answers() -> None:
    for ex_id in exercises.all_ids("05"):
        wrong = [a for a in NB05_ANSWERS[ex_id] if a.reason != "ok"]
        assert len(wrong) >= 3, ex_id


@pytest.mark.parametrize("ex_id", ["05-veth-pair", "05-masquerade"])
def test_the_reference_passes_and_says_why_in_both_languages(ex_id: str) -> None:
    ex = exercises.get(ex_id)
    assert ex.title["en"] and HANGUL.search(ex.title["ko"]) and HANGUL.search(ex.instructions["ko"])
    verdict = exercises.evaluate(ex_id, exercises.solution(ex_id))
    assert verdict.ok, pick(verdict.message)
    assert re.search(r"\d", pick(verdict.message, "en")) and HANGUL.search(verdict.message["ko"])


def test_the_references_give_the_notebook_its_evidence() -> None:
    pair = exercises.evaluate("05-veth-pair", exercises.solution("05-veth-pair")).value
    spaces = net_state.from_json(pair["state"])
    assert [x.peer for ns in spaces for x in ns.links if x.kind == "veth"] == [
        (spaces[1].label, "vb"),
        (spaces[0].label, "va"),
    ]
    assert "1 packets received" in pair["ping"]
    nat = exercises.evaluate("05-masquerade", exercises.solution("05-masquerade")).value
    assert "src=10.55.0.2 dst=198.51.100.1" in nat["conntrack"]
    assert "dst=198.51.100.2" in nat["conntrack"] and "MASQUERADE" in nat["rules"]


def test_a_wrong_answer_is_told_in_korean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(i18n.ENV, "ko")
    wrong = next(a for a in NB05_ANSWERS["05-veth-pair"] if a.reason == "down")
    verdict = exercises.evaluate("05-veth-pair", wrong.source)
    assert verdict.reason == "down" and "vb" in pick(verdict.hint)
    assert HANGUL.search(pick(verdict.message))


# -- the helpers the notebook stands on ---------------------------------------------------------


def test_a_world_by_hand_works_and_leaves_nothing() -> None:
    before = _host()
    world = net_demo.build()
    try:
        assert net_demo.existing() == sorted(world.namespaces())
        assert net_state.pings(world.ns("a"), world.address("b")).returncode == 0
        assert net_state.route_to(world.ns("a"), world.outside_address) is None
        assert net_state.sysctl(world.router, "net.ipv4.ip_forward") == "0"
        net_demo.run(net_demo.nat_steps(world), echo=False)
        assert net_state.pings(world.ns("a"), world.outside_address).returncode == 0
    finally:
        gone = net_demo.remove(world)
    assert gone == sorted(world.namespaces())
    assert _host() == before


def test_the_guard_removes_a_world_when_its_maker_is_killed() -> None:
    import sys

    code = (
        "import os, signal\nfrom labkit.lab import net_demo\n"
        "net_demo.build(net_demo.World(prefix='labkit-nb05-guardtest'))\n"
        "print('built', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "built" in done.stdout
    for _ in range(100):
        if not net_demo.existing("labkit-nb05-guardtest"):
            break
        import time

        time.sleep(0.05)
    assert net_demo.existing("labkit-nb05-guardtest") == []


def test_the_state_pairs_veth_ends_and_the_drawing_shows_them(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    world = net_demo.build()
    try:
        spaces = net_state.snapshot([world.ns("a"), world.ns("b"), world.router, world.outside])
        router = spaces[2]
        assert router.link(world.bridge).kind == "bridge"
        assert router.link(world.bridge).addresses == [f"{world.gateway}/24"]
        assert router.link("lkn5a").master == world.bridge
        assert router.link("lkn5a").peer == (world.ns("a"), "eth0")
        assert spaces[0].link("eth0").peer == (world.router, "lkn5a")
        assert spaces[3].link("eth0").peer == (world.router, world.uplink)
        plan = net_plots.layout(spaces)
        assert plan["hub"] is router
        assert [ns.label for ns in plan["top"]] == [world.ns("a"), world.ns("b")]
        assert [ns.label for ns in plan["bottom"]] == [world.outside]
        picture = tmp_path / "topo.png"
        fig = net_plots.draw(
            [world.ns("a"), world.ns("b"), world.router, world.outside], path=str(picture)
        )
        texts = {t.get_text() for t in fig.axes[0].texts}
        assert "bridge lkn5br0  10.55.0.1/24" in texts and "10.55.0.2/24" in texts
        assert picture.stat().st_size > 10_000
        assert net_state.from_json(net_state.to_json(spaces))[2].link("lkn5b").peer == (
            world.ns("b"),
            "eth0",
        )
    finally:
        net_demo.remove(world)


def test_the_drawing_as_a_command(tmp_path: Path) -> None:
    import sys

    with net_demo.empty_namespaces("drawtest-a", "drawtest-b") as (a, b):
        net_demo.run([f"ip -n {a} link add va type veth peer name vb netns {b}"], echo=False)
        out = tmp_path / "t.png"
        done = subprocess.run(
            [sys.executable, "-m", "labkit.lab.net_plots", "-o", str(out), a, b],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert out.stat().st_size > 5_000
    assert net_demo.existing("labkit-nb05-drawtest") == []


def test_ip_addr_output_is_read_as_printed() -> None:
    busybox = (
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue qlen 1000\n"
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
        "    inet 127.0.0.1/8 scope host lo\n"
        "2: eth0@if998: <BROADCAST,MULTICAST,UP,LOWER_UP,M-DOWN> mtu 1500 qdisc noqueue\n"
        "    link/ether 02:42:0a:c8:00:03 brd ff:ff:ff:ff:ff:ff\n"
        "    inet 10.200.0.3/16 brd 10.200.255.255 scope global eth0\n"
    )
    assert net_state.parse_ip_addr(busybox) == {
        "lo": {"mac": "", "inet": ["127.0.0.1/8"]},
        "eth0": {"mac": "02:42:0a:c8:00:03", "inet": ["10.200.0.3/16"]},
    }
    assert net_state.docker_mac("10.200.0.3") == "02:42:0a:c8:00:03"
    assert net_state.docker_mac("172.17.0.2") == "02:42:ac:11:00:02"
    assert net_state.where(("web", 42)) == net_state.Where("web", pid=42)
    assert net_state.where("host").run("ip", "link") == ["ip", "link"]
    assert net_state.where("labkit-nb05-a").ip("link") == ["ip", "-n", "labkit-nb05-a", "link"]
