"""Notebook 06's checkers (publishing a port), fed right answers and typical wrong ones, and the
lab helpers the notebook stands on: the by-hand world (a container with a web server, a router,
a client outside; gone after, with whatever ran in it), the rules read back with their counters,
the client outside this machine, and the picture of the ways in.

Everything but the client happens in scratch network namespaces (``labkit-nb06-*``) with no
link to the host's: every test also checks that no namespace, link, file or process is left and
that the host's links, iptables rules and settings are as they were. ``NB06_ANSWERS`` is in
tests/lab_answers.py's format; that file adds them to its ``ANSWERS``.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from labkit.lab import exercises, i18n, port_demo, port_plots, port_state
from labkit.lab.i18n import pick

pytestmark = pytest.mark.usefixtures("needs_root")

HANGUL = re.compile(r"[\uac00-\ud7a3]")


class Answer(NamedTuple):
    reason: str
    source: str
    says: str = ""  # what the message or hint must name: the learner's own mistake


_ROUTER = "ip netns exec $ROUTER iptables"
_DNAT = (
    f'sh("{_ROUTER} -t nat -A PREROUTING -p tcp --dport $HOST_PORT '
    '-j DNAT --to-destination $WEB_ADDR:$WEB_PORT")\n'
)
_FWD = f'sh("{_ROUTER} -A FORWARD -d $WEB_ADDR -o $BRIDGE -p tcp --dport $WEB_PORT -j ACCEPT")\n'
_ROUTE = 'sh("ip -n $WEB route add default via $GATEWAY")\n'
_CURL = 'sh("ip netns exec $OUTSIDE curl -sS -m 3 http://$ROUTER_ADDR:$HOST_PORT/cgi-bin/who")\n'


def _dnat(chain: str = "PREROUTING", dport: str = "$HOST_PORT", to: str = "$WEB_ADDR:$WEB_PORT",
          more: str = "", router: str = _ROUTER) -> str:  # fmt: skip
    return (
        f'sh("{router} -t nat -A {chain} {more}-p tcp --dport {dport} -j DNAT '
        f'--to-destination {to}")\n'
    )


_JUMP = f'sh("{_ROUTER} -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j LABKIT")\n'
_LOCALNET = 'sh("ip netns exec $ROUTER sysctl -w net.ipv4.conf.$BRIDGE.route_localnet=1")\n'
_MASQ = f'sh("{_ROUTER} -t nat -A POSTROUTING -s 127.0.0.0/8 -o $BRIDGE -j MASQUERADE")\n'
_CURLS = (
    'sh("ip netns exec $ROUTER curl -sS -m 3 http://$ROUTER_ADDR:$HOST_PORT/cgi-bin/who")\n'
    'sh("ip netns exec $ROUTER curl -sS -m 3 http://127.0.0.1:$HOST_PORT/cgi-bin/who")\n'
)

NB06_ANSWERS: dict[str, list[Answer]] = {
    "06-dnat": [
        Answer("no-dnat", _FWD + _ROUTE + _CURL, "no DNAT rule"),
        Answer("wrong-namespace", _dnat(router="iptables") + _FWD + _ROUTE, "own namespace"),
        Answer("wrong-chain", _dnat("OUTPUT") + _FWD + _ROUTE + _CURL, "is in OUTPUT"),
        Answer(
            "wrong-chain",  # Docker's chain, and nothing jumps to it
            f'sh("{_ROUTER} -t nat -N LABKIT")\n' + _dnat("LABKIT") + _FWD + _ROUTE,
            "nothing jumps to it from PREROUTING",
        ),
        Answer("wrong-port", _dnat(dport="$WEB_PORT") + _FWD + _ROUTE + _CURL, "port 80, and"),
        Answer("wrong-port", _dnat(to="$WEB_ADDR") + _FWD + _ROUTE, "the port stays 8081"),
        Answer("wrong-destination", _dnat(to="$GATEWAY:$WEB_PORT") + _FWD + _ROUTE, "10.66.0.1"),
        Answer("dnat-unused", _dnat(more="-i $BRIDGE ") + _FWD + _ROUTE, "an -i, -s or -d"),
        Answer("forward-drop", _DNAT + _ROUTE + _CURL, "no rule accepted it"),
        Answer(
            "forward-drop",  # FORWARD sees the packet already rewritten: port 80, not 8081
            _DNAT
            + f'sh("{_ROUTER} -A FORWARD -d $WEB_ADDR -p tcp --dport $HOST_PORT -j ACCEPT")\n'
            + _ROUTE,
            "already rewritten",
        ),
        Answer("no-route-back", _DNAT + _FWD + _CURL, "route add default"),
        Answer(
            "command-failed",  # no -t nat: PREROUTING is not in the filter table
            'sh("ip netns exec $ROUTER iptables -A PREROUTING -p tcp '
            '--dport 8081 -j DNAT --to-destination 10.66.0.2:80")\n',
            "-t nat",
        ),
        Answer("command-failed", _dnat("POSTROUTING"), "PREROUTING and OUTPUT"),
        Answer(
            "ok",  # Docker's layout: a chain of its own, jumped to for the router's addresses
            f'sh("{_ROUTER} -t nat -N LABKIT")\n'
            f'sh("{_ROUTER} -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j LABKIT")\n'
            + _dnat("LABKIT", more="! -i $BRIDGE ")
            + _FWD
            + _ROUTE
            + _CURL,
            "198.51.100.1",
        ),
        Answer(
            "ok",  # no route back, but the source rewritten too: the container sees the bridge
            _DNAT + f'sh("{_ROUTER} -P FORWARD ACCEPT")\n'
            f'sh("{_ROUTER} -t nat -A POSTROUTING -o $BRIDGE -d $WEB_ADDR -j MASQUERADE")\n',
            "saw the client as 10.66.0.1",
        ),
        Answer(
            "ok",  # f-strings, literal addresses, -i for the uplink
            'sh(f"ip netns exec {ROUTER} iptables -t nat -A PREROUTING -i {UPLINK} -p tcp '
            '--dport 8081 -j DNAT --to-destination 10.66.0.2:80")\n'
            'sh(f"ip netns exec {ROUTER} iptables -I FORWARD -p tcp -d 10.66.0.2 --dport 80 '
            '-j ACCEPT")\nsh(f"ip -n {WEB} route add default via 10.66.0.1")\n',
        ),
    ],
    "06-localhost": [
        Answer("no-output-jump", _LOCALNET + _MASQ + _CURLS, "never PREROUTING"),
        Answer(
            "loopback-excluded",  # Docker's own jump: 127.0.0.0/8 is left to docker-proxy
            f'sh("{_ROUTER} -t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL '
            '-j LABKIT")\n' + _LOCALNET + _MASQ + _CURLS,
            "without ! -d 127.0.0.0/8",
        ),
        Answer("no-route-localnet", _JUMP + _MASQ + _CURLS, "route_localnet=1"),
        Answer("no-hairpin-masquerade", _JUMP + _LOCALNET + _CURLS, "its own loopback"),
        Answer(
            "wrong-namespace",  # the MASQUERADE rule in the cell's own namespace
            _JUMP
            + _LOCALNET
            + 'sh("iptables -t nat -A POSTROUTING -s 127.0.0.0/8 -o $BRIDGE -j MASQUERADE")\n',
            "own namespace",
        ),
        Answer(
            "command-failed",  # the bridge's setting, asked for in the cell's own namespace
            _JUMP + 'sh("sysctl -w net.ipv4.conf.$BRIDGE.route_localnet=1")\n',
            "ip netns exec $ROUTER sysctl",
        ),
        Answer(
            "command-failed",  # LABKIT is in the router's nat table, not the cell's
            'sh("iptables -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j LABKIT")\n',
            "only in the router's",
        ),
        Answer(
            "ok",  # DNAT right in OUTPUT, route_localnet for all links, SNAT to the bridge
            f'sh("{_ROUTER} -t nat -A OUTPUT -p tcp --dport 8081 -j DNAT '
            '--to-destination 10.66.0.2:80")\n'
            'sh("ip netns exec $ROUTER sysctl -w net.ipv4.conf.all.route_localnet=1")\n'
            f'sh("{_ROUTER} -t nat -A POSTROUTING -s 127.0.0.1 -j SNAT --to-source $GATEWAY")\n',
            "from 10.66.0.1",
        ),
    ],
}

CASES = [(i, n, a) for i in NB06_ANSWERS for n, a in enumerate(NB06_ANSWERS[i])]


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "_chosen", None)
    monkeypatch.setenv(i18n.ENV, "en")


_WORDS = re.compile(r"lkn6|10\.66\.|198\.51\.100\.2\d\d|\b8081\b|labkit-nb06")


def _host() -> dict[str, object]:
    """What these checks must never change on the host: links, iptables rules and addresses of
    theirs (compared by their words: other work on the machine may change the rest meanwhile),
    settings, the namespaces, files and processes they make."""
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    addresses = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    settings = glob.glob("/proc/sys/net/ipv4/conf/*/route_localnet")
    localnet = {p: Path(p).read_text() for p in settings if not _WORDS.search(p)}
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return {
        "links": [n for n in os.listdir("/sys/class/net") if _WORDS.search(n)],
        "rules": [r for r in rules.splitlines() if _WORDS.search(r)],
        "addresses": [a for a in addresses.splitlines() if _WORDS.search(a)],
        "forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "localnet": localnet,
        "netns": port_demo.existing(),
        "files": glob.glob("/run/labkit-nb06*"),
        "processes": [p for p in processes.splitlines() if "labkit-nb06" in p or "nc -ll" in p],
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
    told = pick(verdict.message) + "\n" + pick(verdict.hint or "")
    assert answer.says in told, f"the learner is not told {answer.says!r}: {told}"
    assert _host() == before, "the host's network changed, or something was left"


def test_every_nb06_exercise_has_three_wrong_answers() -> None:
    for ex_id in exercises.all_ids("06"):
        wrong = [a for a in NB06_ANSWERS[ex_id] if a.reason != "ok"]
        assert len(wrong) >= 3, ex_id


@pytest.mark.parametrize("ex_id", ["06-dnat", "06-localhost"])
def test_the_reference_passes_and_says_why_in_both_languages(ex_id: str) -> None:
    ex = exercises.get(ex_id)
    assert ex.title["en"] and HANGUL.search(ex.title["ko"]) and HANGUL.search(ex.instructions["ko"])
    verdict = exercises.evaluate(ex_id, exercises.solution(ex_id))
    assert verdict.ok, pick(verdict.message)
    assert re.search(r"\d", pick(verdict.message, "en")) and HANGUL.search(verdict.message["ko"])


def test_the_references_give_the_evidence_the_notebook_describes() -> None:
    dnat = exercises.evaluate("06-dnat", exercises.solution("06-dnat")).value
    assert port_state.who(dnat["page"]) == "198.51.100.1"
    assert "src=198.51.100.1 dst=198.51.100.2" in dnat["conntrack"]
    assert "src=10.66.0.2 dst=198.51.100.1 sport=80" in dnat["conntrack"]
    local = exercises.evaluate("06-localhost", exercises.solution("06-localhost")).value
    assert port_state.who(local["own"]) == "198.51.100.2"
    assert port_state.who(local["local"]) == "10.66.0.1"
    assert "src=10.66.0.2 dst=10.66.0.1 sport=80" in local["conntrack"]


def test_a_wrong_answer_is_told_in_korean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(i18n.ENV, "ko")
    wrong = NB06_ANSWERS["06-dnat"][2]
    verdict = exercises.evaluate("06-dnat", wrong.source)
    assert verdict.reason == "wrong-chain" and "PREROUTING" in pick(verdict.hint)
    assert HANGUL.search(pick(verdict.message)) and HANGUL.search(pick(verdict.hint))


# -- the helpers the notebook stands on ---------------------------------------------------------


def test_a_world_by_hand_works_and_leaves_nothing() -> None:
    before = _host()
    world = port_demo.build(port_demo.World(prefix="labkit-nb06-t"))
    try:
        assert port_demo.existing("labkit-nb06-t") == sorted(world.namespaces())
        assert port_state.who(port_state.fetch(world.router, world.url(world.address, 80)).stdout)
        assert port_state.fetch(world.outside, world.url(world.uplink_address)).returncode != 0
        port_demo.run(port_demo.steps(world, "publish"), echo=False)
        page = port_state.fetch(world.outside, world.url(world.uplink_address))
        assert port_state.who(page.stdout) == world.outside_address
        found = port_state.rules(world.router)
        dnat = next(x for x in found if x.option("-j") == "DNAT")
        assert (dnat.chain, dnat.packets, dnat.option("--dport")) == ("LABKIT", 1, "8081")
        assert port_state.reachable(found, "PREROUTING") == {"PREROUTING", "LABKIT"}
        assert port_state.reachable(found, "OUTPUT") == {"OUTPUT"}
        assert port_state.policy(world.router, "FORWARD") == ("DROP", 0)
        port_demo.run(port_demo.steps(world, "docker-output") + port_demo.steps(world, "proxy"),
                      echo=False)  # fmt: skip
        assert port_state.wait_listening(world.router, 8081)
        [(_, program, _)] = port_state.listeners(world.router, 8081)
        assert program == "busybox"
        page = port_state.fetch(world.router, world.url("127.0.0.1"))
        assert port_state.who(page.stdout) == world.gateway
    finally:
        gone = port_demo.remove(world)
    assert gone == sorted(world.namespaces())
    assert _host() == before


def test_the_guard_removes_a_world_and_its_server_when_its_maker_is_killed() -> None:
    code = (
        "import os, signal\nfrom labkit.lab import port_demo\n"
        "w = port_demo.build(port_demo.World(prefix='labkit-nb06-guardtest'), 'publish', "
        "'proxy')\nprint('built', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "built" in done.stdout, done.stderr
    for _ in range(100):
        if not port_demo.existing("labkit-nb06-guardtest"):
            break
        time.sleep(0.05)
    assert port_demo.existing("labkit-nb06-guardtest") == []
    assert not Path("/run/labkit-nb06-guardtest").exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "labkit-nb06-guardtest" not in ps


def test_the_client_outside_leaves_nothing_on_the_host() -> None:
    before = _host()
    client = port_state.add_client(echo=False)
    try:
        assert Path("/sys/class/net", port_state.CLIENT_LINK).exists()
        route = subprocess.run(["ip", "route", "get", port_state.CLIENT_ADDRESS],
                               capture_output=True, text=True).stdout  # fmt: skip
        assert f"dev {port_state.CLIENT_LINK}" in route
        ping = subprocess.run(["ip", "netns", "exec", client, "busybox", "ping", "-c1", "-W1",
                               port_state.HOST_SIDE], capture_output=True)  # fmt: skip
        assert ping.returncode == 0
    finally:
        port_state.remove_client()
    assert not Path("/sys/class/net", port_state.CLIENT_LINK).exists()
    assert _host() == before


def test_the_picture_is_drawn_from_the_rules(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    world = port_demo.build(port_demo.World(prefix="labkit-nb06-drawtest"), "publish")
    try:
        port_state.fetch(world.outside, world.url(world.uplink_address))
        boxes = port_plots.read(world.router, 8081)
        assert boxes["dnat"].present and boxes["dnat"].packets == 1
        assert boxes["prerouting"].present and boxes["forward"].packets == 1
        assert not boxes["output"].present and not boxes["hairpin"].present
        assert not boxes["proxy"].present
        assert (
            boxes["bridge"].title == "bridge lkn6br0" and "10.66.0.2:80" in boxes["container"].text
        )
        port_demo.run(port_demo.steps(world, "localhost"), echo=False)
        boxes = port_plots.read(world.router, 8081)
        assert boxes["output"].present and boxes["hairpin"].present
        picture = tmp_path / "ways.png"
        fig = port_plots.draw(world.router, 8081, path=str(picture))
        texts = {t.get_text() for t in fig.axes[0].texts}
        assert "nat LABKIT  [1 pkts]" in texts and "bridge lkn6br0" in texts
        assert picture.stat().st_size > 10_000
    finally:
        port_demo.remove(world)


def test_rules_are_read_as_iptables_save_writes_them() -> None:
    rule = port_state.Rule("nat", "LABKIT", "! -i br -p tcp -m tcp --dport 8081 -j DNAT "
                           "--to-destination 10.66.0.2:80", 3)  # fmt: skip
    assert rule.option("--dport") == "8081" and rule.option("-j") == "DNAT"
    assert rule.option("--to-destination") == "10.66.0.2:80" and rule.option("-d") is None
    found = [
        port_state.Rule("nat", "PREROUTING", "-m addrtype --dst-type LOCAL -j A", 0),
        port_state.Rule("nat", "A", "-j B", 0),
        port_state.Rule("nat", "B", "-p tcp -j DNAT --to-destination 1.2.3.4:80", 0),
        port_state.Rule("nat", "C", "-j DNAT --to-destination 1.2.3.4:80", 0),
    ]
    assert port_state.reachable(found, "PREROUTING") == {"PREROUTING", "A", "B"}
    text = "web (10.66.0.2:80) answers: you came from 198.51.100.1 port 4242\n"
    assert port_state.who(text) == "198.51.100.1" and port_state.who("") == ""
