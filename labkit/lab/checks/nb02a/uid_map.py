"""02a-uid-map: from outside, write the id maps of a process that has just made a user namespace.

In a fresh child, the harness forks a process that unshares CLONE_NEWUSER (nothing is mapped
there yet) and waits; then it calls the learner's ``write_id_maps(pid)``, as labkit's helper
writes its child's maps. The new process then reads its own ``uid_map`` and ``gid_map``, tries
to become root inside (setgid/setuid 0), and the harness reads ``/proc/PID/status`` from the
host's side: who is that root on the host? Every typical mistake leaves a different map, or a
different errno from the kernel.
"""

from __future__ import annotations

from labkit.kernel.namespaces import USERNS_HOST_BASE as BASE
from labkit.kernel.namespaces import USERNS_SIZE as SIZE
from labkit.lab.checks.common import failed, run_function
from labkit.lab.exercises import Verdict, define, right, wrong
from labkit.lab.i18n import t

HARNESS = """
import errno as _errno, json as _json
from labkit.kernel import syscalls as _sc

def _read_all(fd):
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data

_ready_r, _ready_w = os.pipe()
_go_r, _go_w = os.pipe()
_seen_r, _seen_w = os.pipe()
_pid = os.fork()
if _pid == 0:  # the process in the new user namespace: it never returns to the harness
    try:
        os.close(_ready_r); os.close(_go_w); os.close(_seen_r)
        _sc.unshare(_sc.CLONE_NEWUSER)
        os.write(_ready_w, b"1")
        os.read(_go_r, 1)  # the maps are written (or the function gave up)
        _seen = {m: open(f"/proc/self/{m}").read() for m in ("uid_map", "gid_map")}
        for _call in (os.setgid, os.setuid):
            try:
                _call(0)
            except OSError as _e:
                _seen[_call.__name__] = _errno.errorcode.get(_e.errno, str(_e.errno))
        _seen["uid"], _seen["gid"] = os.getuid(), os.getgid()
        os.write(_seen_w, _json.dumps(_seen).encode())
        os.close(_seen_w)
        os.read(_go_r, 1)  # stay until the host has looked at us
    finally:
        os._exit(0)
os.close(_ready_w); os.close(_go_r); os.close(_seen_w)
os.read(_ready_r, 1)
try:
    write_id_maps(_pid)
except OSError as _e:
    report(raised=_errno.errorcode.get(_e.errno, str(_e.errno)),
           child_uid_map=open(f"/proc/{_pid}/uid_map").read())
    raise
finally:
    os.write(_go_w, b"1")
_seen = _json.loads(_read_all(_seen_r) or b"{}")
_host = [l.split()[1:] for l in open(f"/proc/{_pid}/status") if l.startswith("Uid:")][0]
os.write(_go_w, b"1")
os.waitpid(_pid, 0)
report(seen=_seen, host_uid=_host, pid=_pid)
"""

LINE = f"0 {BASE} {SIZE}"
NOTHING = t(
    f"write `{LINE}` to /proc/PID/uid_map and to /proc/PID/gid_map (PID: the argument)",
    f"/proc/PID/uid_map과 /proc/PID/gid_map에 `{LINE}`을 쓰세요 (PID는 함수의 인자)",
)


def parse_map(text: str) -> list[tuple[int, ...]]:
    """``uid_map`` lines as (inside, outside, count); lines that are not three numbers dropped."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            rows.append(tuple(int(f) for f in fields))
    return rows


def _judge_map(name: str, text: str) -> tuple[str, dict, dict] | None:
    """(reason, message, hint) for a map that is not ``0 BASE SIZE``; None if it is."""
    rows = parse_map(text)
    shown = "; ".join(" ".join(line.split()) for line in text.splitlines()) or "(empty)"
    if rows == [(0, BASE, SIZE)]:
        return None
    said = t(f"the kernel shows {name}: `{shown}`", f"커널이 보여 주는 {name}: `{shown}`")
    order = t(
        "a map line is `inside outside count`: the first number is the ID in the new "
        f"namespace, the second the host's. Write `{LINE}`",
        "map의 한 줄은 `안쪽 바깥쪽 개수` 순서입니다: 첫 숫자는 새 namespace 안의 ID, 둘째는 "
        f"호스트의 ID입니다. `{LINE}`을 쓰세요",
    )
    if not rows:
        what = "gid_map" if name == "gid_map" else "uid_map"
        return (
            f"no-{name.replace('_', '-')}",
            t(
                f"{said['en']}: nothing is mapped, so inside every {what[:3]} is `nobody` "
                "(65534) and setuid/setgid(0) fails",
                f"{said['ko']}: 아무것도 매핑되지 않아서, 안에서는 모든 {what[:3]}가 "
                "`nobody`(65534)이고 setuid/setgid(0)이 실패합니다",
            ),
            t(
                f"write /proc/PID/{name} too, with the same line (users and groups are "
                "mapped separately)",
                f"/proc/PID/{name}에도 같은 줄을 쓰세요 (사용자와 그룹은 따로 매핑됩니다)",
            ),
        )
    if any(outside == 0 and inside != 0 for inside, outside, _ in rows):
        return (
            "inverted",
            t(
                f"{said['en']}: the host's root (0) is *inside* the namespace, as ID "
                f"{rows[0][0]}, and root inside (0) is not mapped at all",
                f"{said['ko']}: 호스트의 root(0)가 namespace *안에* ID {rows[0][0]}(으)로 "
                "들어왔고, 안쪽의 root(0)는 전혀 매핑되지 않았습니다",
            ),
            order,
        )
    if any(inside == 0 and outside == 0 for inside, outside, _ in rows):
        return (
            "root-is-root",
            t(
                f"{said['en']}: root inside is the host's root (0), exactly what a user "
                "namespace is for avoiding",
                f"{said['ko']}: 안쪽 root가 호스트의 root(0) 그대로입니다. user namespace로 "
                "피하려던 바로 그 상황입니다",
            ),
            t(
                f"map inside 0 to the unprivileged host ID {BASE}: `{LINE}`",
                f"안쪽 0을 권한 없는 호스트 ID {BASE}에 매핑하세요: `{LINE}`",
            ),
        )
    if sum(count for *_, count in rows) < SIZE:
        return (
            "too-few",
            t(
                f"{said['en']}: only {sum(c for *_, c in rows)} ID(s) mapped; an image's "
                "files and users (daemon, nobody, uid 1000...) need the others",
                f"{said['ko']}: ID가 {sum(c for *_, c in rows)}개만 매핑되었습니다. 이미지의 "
                "파일과 사용자(daemon, nobody, uid 1000...)에는 나머지도 필요합니다",
            ),
            t(f"the count is the third number: {SIZE}", f"개수는 셋째 숫자입니다: {SIZE}"),
        )
    return (
        "other-range",
        t(f"{said['en']}, not `{LINE}`", f"{said['ko']}. `{LINE}`이 아닙니다"),
        order,
    )


@define(
    "02a-uid-map",
    kind="function",
    name="write_id_maps",
    title=t("Who is root? Write the id maps", "root는 누구인가? id map 쓰기"),
    instructions=t(
        "Process `pid` has just called `unshare(CLONE_NEWUSER)`. In its new user namespace "
        "no ID is mapped yet: it is `nobody`, and cannot even become root there. Complete "
        "`write_id_maps(pid)`, which runs **outside**, as root on the host, the way labkit's "
        f"helper does it: map IDs 0-{SIZE - 1} inside to host IDs {BASE}-{BASE + SIZE - 1}, "
        "for users and for groups.\n\n"
        "The kernel's interface is two files, `/proc/PID/uid_map` and `/proc/PID/gid_map`. "
        "Each takes lines of three numbers, `inside outside count`, and can be written "
        "**once**, in one write. The checker runs your function in a fresh process against a "
        "real new user namespace, then looks at who its root is, inside and on the host.",
        "프로세스 `pid`가 방금 `unshare(CLONE_NEWUSER)`를 호출했습니다. 새 user namespace "
        "안에서는 아직 아무 ID도 매핑되지 않아서 그 프로세스는 `nobody`이고, root가 될 수도 "
        "없습니다. labkit의 helper처럼 **바깥에서**, 호스트의 root로 실행되는 "
        f"`write_id_maps(pid)`를 완성하세요: 안쪽 ID 0-{SIZE - 1}를 호스트 ID "
        f"{BASE}-{BASE + SIZE - 1}에 매핑합니다. 사용자와 그룹 모두.\n\n"
        "커널의 인터페이스는 `/proc/PID/uid_map`과 `/proc/PID/gid_map` 두 파일입니다. 각 "
        "파일에는 `안쪽 바깥쪽 개수` 세 숫자로 된 줄을 쓰고, 한 번의 write로 **한 번만** 쓸 "
        "수 있습니다. 검사기는 새 프로세스에서 실제 user namespace를 상대로 함수를 실행한 뒤, "
        "그 root가 안과 호스트에서 각각 누구인지 확인합니다.",
    ),
)
def check_uid_map(source: str) -> Verdict:
    run = run_function(source, HARNESS)
    raised = run.value("raised")
    if run.error and raised == "EPERM":
        if not (run.value("child_uid_map") or "").strip():
            return wrong(
                "not-the-child",
                t(
                    "the kernel refused a write (EPERM) and the new namespace's map is still "
                    "empty: that map belonged to another process (a process outside a new "
                    "user namespace, like your own, has its map for good)",
                    "커널이 쓰기를 거부했고(EPERM) 새 namespace의 map은 여전히 비어 있습니다. "
                    "다른 프로세스의 map에 쓴 것입니다 (새 user namespace 밖의 프로세스는, 지금 "
                    "코드가 도는 프로세스처럼, map이 이미 정해져 있습니다)",
                ),
                t(
                    "write /proc/{pid}/uid_map, with the pid you are given, not /proc/self",
                    "/proc/self가 아니라 받은 pid의 /proc/{pid}/uid_map에 쓰세요",
                ),
            )
        return wrong(
            "written-twice",
            t(
                "the kernel refused a second write to a map that was already written (EPERM)",
                "이미 쓴 map에 두 번째로 쓰려 하자 커널이 거부했습니다(EPERM)",
            ),
            t(
                "put every line of a map in one write: each file can be written once",
                "한 map의 모든 줄을 한 번의 write로 쓰세요. 각 파일은 한 번만 쓸 수 있습니다",
            ),
        )
    if run.error and raised == "EINVAL":
        return wrong(
            "bad-line",
            t(
                "the kernel refused the map (EINVAL): each line is three numbers, ranges may "
                "not overlap, and the whole map goes in one write from the start of the file",
                "커널이 map을 거부했습니다(EINVAL): 각 줄은 숫자 세 개이고, 범위가 겹치면 안 "
                "되며, map 전체를 파일의 처음부터 한 번의 write로 써야 합니다",
            ),
            t(
                f"open the file, write the line `{LINE}` once, close it",
                f"파일을 열고 `{LINE}` 줄을 한 번 쓰고 닫으세요",
            ),
        )
    verdict = failed(run)
    if verdict:
        return verdict
    seen = run.value("seen") or {}
    for name in ("uid_map", "gid_map"):
        if name == "gid_map" and not parse_map(seen.get("uid_map", "")):
            break  # nothing written at all: one message is enough
        found = _judge_map(name, seen.get(name, ""))
        if found:
            reason, message, hint = found
            if reason == "no-uid-map":
                reason, hint = "nothing-written", NOTHING
            return wrong(reason, message, hint)
    host_uid = (run.value("host_uid") or ["?"])[0]
    return right(
        t(
            f"the new process read its uid_map `{LINE}`, became uid {seen.get('uid')} inside, "
            f"and the host's /proc/{run.value('pid')}/status says Uid {host_uid}: root inside, "
            "an unprivileged user outside.",
            f"새 프로세스는 uid_map `{LINE}`을 읽었고, 안에서 uid {seen.get('uid')}이(가) "
            f"되었으며, 호스트의 /proc/{run.value('pid')}/status에는 Uid {host_uid}로 "
            "나옵니다: 안에서는 root, 밖에서는 권한 없는 사용자.",
        )
    )
