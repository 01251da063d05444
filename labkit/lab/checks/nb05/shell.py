"""What both of notebook 05's exercises share: ``sh()``, which runs a command in the learner's
cell as a terminal would, and the verdict for a command that failed.

The learner's cell runs in a fresh child in a scratch network namespace and a private mount
namespace (``SANDBOX``): a link made and not moved, a sysctl or an iptables rule written
without ``ip netns exec`` lands there and goes with the child, never on the host. ``sh`` prints
``$ command`` and what it printed, and stops the cell at the first command that fails; the
notebook's names (``A``, ``ROUTER``, ...) are also environment variables, so ``sh("ip -n $A
link")`` works as typed in a terminal.
"""

from __future__ import annotations

import re

from labkit.lab import child
from labkit.lab.checks.common import failed
from labkit.lab.exercises import Verdict, wrong
from labkit.lab.i18n import Text, t

SANDBOX = {"net", "mnt"}

PRELUDE = '''
class CommandFailed(Exception):
    """A command run with sh() exited with an error."""


_NAMES = {k: v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str)}
_ENV = dict(os.environ, **_NAMES)


def _own_namespace():
    """Tell the checker what is left in this cell's own namespace: links, NAT rules."""
    import json
    links = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S", "POSTROUTING"],
                         capture_output=True, text=True).stdout
    report(own=[x["ifname"] for x in json.loads(links or "[]") if x["ifname"] != "lo"],
           own_nat=[r for r in nat.splitlines() if "MASQUERADE" in r or "SNAT" in r])


def sh(command):
    """Run a shell command as in a terminal: print it and its output; stop if it fails."""
    print("$ " + command, flush=True)
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=_ENV)
    print(done.stdout + done.stderr, end="", flush=True)
    if done.returncode != 0:
        _own_namespace()
        raise CommandFailed(f"`{command}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout
'''

#: The harness: what the cell left in its own namespace (when no command failed before).
OWN_NAMESPACE = "_own_namespace()\n"

_FAILED = re.compile(r"^`(?P<command>.*)` exited (?P<code>\d+): ?(?P<stderr>.*)$", re.S)


def failed_command(run: child.ChildRun) -> dict | None:
    """``{"command", "code", "stderr"}`` if the cell stopped at a command ``sh`` ran."""
    if not run.error or run.error.get("type") != "CommandFailed":
        return None
    found = _FAILED.match(run.error.get("message", ""))
    return found.groupdict() if found else None


def command_verdict(run: child.ChildRun, by_type: dict | None = None) -> Verdict | None:
    """A verdict for a cell that crashed, hung, or stopped at a failed command (``None`` if it
    did none of those, or if the command that failed was a ping: then the state tells more)."""
    cmd = failed_command(run)
    if cmd is None:
        return failed(run, by_type)
    if "ping" in cmd["command"] and "exec of" not in cmd["stderr"]:
        return None
    said = t(
        f"this command failed (exit {cmd['code']}):\n  {cmd['command']}\n  {cmd['stderr']}",
        f"이 명령이 실패했습니다 (종료 코드 {cmd['code']}):\n  {cmd['command']}\n  {cmd['stderr']}",
    )
    return wrong("command-failed", said, _hint_for(cmd["stderr"]))


def _hint_for(stderr: str) -> Text:
    if "Cannot find device" in stderr:
        return t(
            "a link is seen only in the namespace it is in: after `ip link set NAME netns $B`, "
            "name it there, with `ip -n $B ...`",
            "링크는 자기가 있는 namespace에서만 보입니다: `ip link set NAME netns $B`로 옮긴 "
            "뒤에는 `ip -n $B ...`처럼 그 namespace에서 다루세요",
        )
    if "File exists" in stderr:
        return t(
            "it is there already: the same link, address, route or rule was added twice",
            "이미 있습니다: 같은 링크, 주소, 경로 또는 규칙을 두 번 추가했습니다",
        )
    if "exec of" in stderr or "command not found" in stderr:
        return t(
            "that program is not on this machine: ping is busybox's here, "
            "`ip netns exec $A busybox ping -c1 ...`",
            "이 컴퓨터에는 그 프로그램이 없습니다: 여기서 ping은 busybox의 것입니다. "
            "`ip netns exec $A busybox ping -c1 ...`",
        )
    return t(
        "read the command's own error message above: it names what it did not like",
        "위에 나온 명령의 오류 메시지를 읽어 보세요: 무엇이 문제인지 알려 줍니다",
    )
