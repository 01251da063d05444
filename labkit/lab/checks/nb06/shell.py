"""What both of notebook 06's exercises share: notebook 05's ``sh()`` (a command run as a
terminal would, the cell stopped at the first that fails), what the cell left in its own
namespace, and the verdict for a command that failed, with hints for iptables' own errors.

A ``curl`` that fails is no verdict of its own: the checker fetches the page itself afterwards
and reads the router's counters, which say more than curl's exit status.
"""

from __future__ import annotations

from labkit.lab import child
from labkit.lab.checks.nb05 import shell as nb05
from labkit.lab.exercises import Verdict, wrong
from labkit.lab.i18n import Text, t

SANDBOX = nb05.SANDBOX
PRELUDE = (
    nb05.PRELUDE
    + '''

def _own_nat():
    """Tell the checker which nat rules this cell's own namespace has (forgot ip netns exec)."""
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True,
                         text=True).stdout
    report(own_rules=[r for r in nat.splitlines() if r.startswith("-A ")])
'''
)
#: The harness: what the cell left in its own namespace (when no command failed before).
OWN_NAMESPACE = "_own_namespace()\n_own_nat()\n"


def own_rules(run: child.ChildRun, word: str) -> list[str]:
    """The rules of the cell's own nat table that hold ``word`` ("DNAT", "MASQUERADE")."""
    return [r for r in (run.value("own_rules") or run.value("own_nat") or []) if word in r]


def command_verdict(run: child.ChildRun) -> Verdict | None:
    """A verdict for a cell that crashed, hung, or stopped at a failed command (``None`` if it
    did none of those, or if what failed was fetching the page)."""
    cmd = nb05.failed_command(run)
    if cmd and "exec of" not in cmd["stderr"]:
        if any(w in cmd["command"] for w in ("curl", "wget", "ping")):
            return None
        hint = _iptables_hint(cmd["command"], cmd["stderr"])
        if hint:
            said = t(
                f"this command failed (exit {cmd['code']}):\n  {cmd['command']}\n  {cmd['stderr']}",
                f"이 명령이 실패했습니다 (종료 코드 {cmd['code']}):\n  {cmd['command']}\n"
                f"  {cmd['stderr']}",
            )
            return wrong("command-failed", said, hint)
    return nb05.command_verdict(run)


def _iptables_hint(command: str, stderr: str) -> Text | None:
    if "route_localnet" in command and "No such file" in stderr:
        return t(
            "the bridge is in the router's namespace, and so is its setting: "
            "ip netns exec $ROUTER sysctl -w net.ipv4.conf.$BRIDGE.route_localnet=1",
            "브릿지와 그 설정은 라우터의 namespace에 있습니다: "
            "ip netns exec $ROUTER sysctl -w net.ipv4.conf.$BRIDGE.route_localnet=1",
        )
    if "iptables" not in command:
        return None
    if any(w in stderr for w in ("No chain/target/match", "does not exist", "Couldn't load")):
        return t(
            "PREROUTING, OUTPUT, POSTROUTING and the chain LABKIT are in the nat table "
            "(iptables -t nat ...), and LABKIT only in the router's (ip netns exec $ROUTER ...)",
            "PREROUTING, OUTPUT, POSTROUTING과 LABKIT 체인은 nat 테이블에 있습니다"
            "(iptables -t nat ...). LABKIT은 라우터의 nat 테이블에만 있습니다"
            "(ip netns exec $ROUTER ...)",
        )
    if "DNAT" in command and ("Invalid argument" in stderr or "only" in stderr):
        return t(
            "DNAT works only where a packet's destination is still to be decided: in the nat "
            "table's PREROUTING and OUTPUT chains (and chains jumped to from them)",
            "DNAT는 패킷의 목적지가 아직 정해지기 전, 즉 nat 테이블의 PREROUTING과 OUTPUT "
            "체인(그리고 거기서 점프하는 체인)에서만 쓸 수 있습니다",
        )
    if "--to-destination" in stderr or "Bad IP address" in stderr:
        return t(
            "write the new destination as ADDRESS:PORT: --to-destination $WEB_ADDR:$WEB_PORT",
            "새 목적지는 주소:포트로 씁니다: --to-destination $WEB_ADDR:$WEB_PORT",
        )
    if "--dport" in command and "unknown option" in stderr:
        return t(
            "--dport belongs to a protocol: write -p tcp before it",
            "--dport는 프로토콜에 딸린 옵션입니다: 앞에 -p tcp를 쓰세요",
        )
    return None
