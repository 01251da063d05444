"""The probes of 02a-which-kind: what a fresh process tries with a new namespace of one kind,
and how the checker words what it saw.

``HARNESS`` runs in a fresh child (scratch UTS, IPC and mount namespaces, so nothing it does
reaches the host). For each item it forks a process that unshares the answered kind and tries
the item's thing: sets a hostname, asks for its parent's PID from a child, lists the System V
segments, lists the network interfaces, reads its uid_map, mounts a tmpfs. The harness then
looks from the namespace the process came from and reports whether the thing stayed hidden.
"""

from __future__ import annotations

from labkit.lab.i18n import Text, t

#: The items, in the order of the questions: what the learner is asked about, and what the
#: probe for it tries with a new namespace of the answered kind.
ITEMS: dict[str, tuple[Text, Text]] = {
    "hostname": (
        t("the hostname it sets", "그 프로세스가 설정한 hostname"),
        t("set the hostname `labkit-probe`", "hostname을 `labkit-probe`로 설정"),
    ),
    "processes": (
        t("the processes outside it (its parent)", "바깥의 프로세스들(부모 프로세스)"),
        t("ask, from a child, for its parent's PID", "자식 프로세스에서 부모의 PID 확인"),
    ),
    "shared_memory": (
        t("a shared-memory segment of the host", "호스트의 공유 메모리 세그먼트"),
        t(
            "list the System V segments (/proc/sysvipc/shm)",
            "System V 세그먼트 목록(/proc/sysvipc/shm) 읽기",
        ),
    ),
    "interfaces": (
        t("the host's network interfaces", "호스트의 네트워크 인터페이스"),
        t(
            "list the network interfaces (/proc/self/net/dev)",
            "네트워크 인터페이스 목록(/proc/self/net/dev) 읽기",
        ),
    ),
    "root": (
        t("that its root is the host's root", "그 안의 root가 호스트의 root라는 사실"),
        t("read /proc/self/uid_map", "/proc/self/uid_map 읽기"),
    ),
    "mounts": (
        t("a tmpfs it mounts", "그 프로세스가 마운트한 tmpfs"),
        t("mount a tmpfs `labkit-probe`", "tmpfs `labkit-probe` 마운트"),
    ),
}

HARNESS = """
import ctypes, json
from labkit.kernel import namespaces, syscalls
_libc = ctypes.CDLL(None, use_errno=True)

def _net_dev():
    return [l.split(":")[0].strip() for l in open("/proc/self/net/dev").read().splitlines()[2:]]

def _segments():
    return [l.split()[3] for l in open("/proc/sysvipc/shm").read().splitlines()[1:]]

def _parent_seen_by_child():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, str(os.getppid()).encode())
        os._exit(0)
    os.close(w)
    ppid = int(os.read(r, 64))
    os.close(r)
    os.waitpid(pid, 0)
    return ppid

def _probe(kind, act):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                namespaces.unshare({kind})
                out = {"ok": act()}
            except OSError as e:
                out = {"error": errno.errorcode.get(e.errno, str(e.errno))}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data or b'{"error": "no answer"}')

_shm = _libc.shmget(0, 424242, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT: a segment "outside"
_acts = {
    "hostname": lambda: (syscalls.sethostname("labkit-probe"), os.uname().nodename)[1],
    "processes": _parent_seen_by_child,
    "shared_memory": lambda: "424242" in _segments(),
    "interfaces": _net_dev,
    "root": lambda: open("/proc/self/uid_map").read().split(),
    "mounts": lambda: syscalls.mount("labkit-probe", "/tmp", "tmpfs") or "mounted",
}
for _item, _kind in ANSWER.items():
    _got = _probe(_kind, _acts[_item])
    if "error" in _got:
        report(**{_item: {"hidden": False, "error": _got["error"]}})
        continue
    _v = _got["ok"]
    if _item == "hostname":
        _outside = os.uname().nodename
        _hidden = _outside != "labkit-probe"
        if not _hidden:
            syscalls.sethostname(_START_NAME)
    elif _item == "processes":
        _outside, _hidden = None, _v == 0
    elif _item == "shared_memory":
        _outside, _hidden = "424242" in _segments(), not _v
    elif _item == "interfaces":
        _outside = _net_dev()
        _hidden = sorted(_v) != sorted(_outside)
    elif _item == "root":
        _outside, _hidden = open("/proc/self/uid_map").read().split(), _v[:2] != ["0", "0"]
    else:
        _outside = "labkit-probe" in open("/proc/self/mounts").read()
        _hidden = not _outside
        if _outside:
            syscalls.umount2("/tmp", syscalls.MNT_DETACH)
    report(**{_item: {"hidden": _hidden, "inside": _v, "outside": _outside}})
_libc.shmctl(_shm, 0, None)  # IPC_RMID
"""

PRELUDE = "_START_NAME = os.uname().nodename\n"


def _shown(item: str, seen: dict) -> Text:
    """What a probe that did *not* hide its thing showed."""
    inside, outside = seen.get("inside"), seen.get("outside")
    if item == "hostname":
        return t(
            f"the namespace it came from now says `{outside}` too",
            f"원래 namespace도 이제 `{outside}`입니다",
        )
    if item == "processes":
        return t(
            f"its child saw it as PID {inside} (0 would mean: not there)",
            f"자식 프로세스가 부모를 PID {inside}(으)로 보았습니다 (0이면 보이지 않는다는 뜻)",
        )
    if item == "shared_memory":
        return t(
            "the 424242-byte segment from outside was in its list",
            "바깥에서 만든 424242바이트 세그먼트가 목록에 있었습니다",
        )
    if item == "interfaces":
        names = ", ".join(sorted(inside or []))
        return t(f"it saw {names}, the same as outside", f"바깥과 같은 {names}이(가) 보였습니다")
    if item == "root":
        shown = " ".join(inside or [])
        return t(
            f"its uid_map is `{shown}`: its uid 0 is the host's 0",
            f"uid_map이 `{shown}`입니다: 안쪽 uid 0이 호스트의 0입니다",
        )
    return t(
        "the tmpfs appeared in the namespace it came from",
        "tmpfs가 원래 namespace에도 나타났습니다",
    )


def evidence(item: str, kind: str, seen: dict) -> Text:
    """What the probe for ``item`` did with a new ``kind`` namespace, in the learner's terms."""
    action = ITEMS[item][1]
    if "error" in seen:
        return t(
            f"with only a new `{kind}` namespace, the process tried to {action['en']}, and "
            f"the kernel refused ({seen['error']})",
            f"새 `{kind}` namespace 하나만 가진 프로세스가 시도한 일: {action['ko']}. "
            f"커널이 거부했습니다 ({seen['error']})",
        )
    shown = _shown(item, seen)
    return t(
        f"with only a new `{kind}` namespace, the process tried to {action['en']}: {shown['en']}",
        f"새 `{kind}` namespace 하나만 가진 프로세스가 시도한 일: {action['ko']}. "
        f"결과: {shown['ko']}",
    )
