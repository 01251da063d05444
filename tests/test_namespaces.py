"""labkit.kernel.namespaces: naming kinds, reading /proc/PID/ns, and joining a live container."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.kernel import namespaces, syscalls
from labkit.kernel.namespaces import DOCKER_DEFAULT, KINDS

pytestmark = pytest.mark.usefixtures("needs_root")

HOSTNAME = "labkit-ns-test"


# -- parse_kinds, clone_flags ------------------------------------------------------------------


def test_kinds_are_the_seven_the_kernel_has() -> None:
    assert set(KINDS) == {"uts", "pid", "mnt", "ipc", "net", "user", "cgroup"}
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.isolates
        assert Path(f"/proc/self/ns/{name}").exists()
    assert set(KINDS) - {"user"} == DOCKER_DEFAULT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uts", {"uts"}),
        ("uts,pid,mnt", {"uts", "pid", "mnt"}),
        (" UTS , Net ", {"uts", "net"}),
        ("mount,network", {"mnt", "net"}),
        ("ns", {"mnt"}),
        ("pid,pid", {"pid"}),
        ("none", set()),
        ("NONE", set()),
        ("", set()),
        ("all", set(KINDS)),
        ("uts,pid,mnt,ipc,net,cgroup", set(DOCKER_DEFAULT)),
    ],
)
def test_parse_kinds(text: str, expected: set[str]) -> None:
    assert namespaces.parse_kinds(text) == frozenset(expected)


@pytest.mark.parametrize("text", ["bogus", "uts,bogus", "uts;pid", "time"])
def test_parse_kinds_rejects_unknown_names_with_a_fix(text: str) -> None:
    with pytest.raises(LabkitError) as info:
        namespaces.parse_kinds(text)
    err = info.value
    assert "unknown namespace kind" in err.problem
    assert repr(text.split(",")[-1]) in err.problem
    for kind in KINDS:
        assert kind in err.fix
    assert "none" in err.fix and "{ns}" in err.fix
    assert err.render({"ns": "--ns"}) == f"{err.problem} (fix: {err.fix.replace('{ns}', '--ns')})"


def test_clone_flags() -> None:
    assert namespaces.clone_flags([]) == 0
    assert namespaces.clone_flags(["uts"]) == syscalls.CLONE_NEWUTS
    assert (
        namespaces.clone_flags({"uts", "pid", "net"})
        == syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWPID | syscalls.CLONE_NEWNET
    )
    every = 0
    for kind in KINDS.values():
        assert kind.flag & every == 0, "two kinds share a clone flag"
        every |= kind.flag
    assert namespaces.clone_flags(KINDS) == every


# -- reading namespaces ------------------------------------------------------------------------


def test_inode_and_of_process_of_this_process() -> None:
    mine = namespaces.of_process()
    assert set(mine) == set(KINDS)
    for kind, ino in mine.items():
        assert ino == os.stat(f"/proc/self/ns/{kind}").st_ino == namespaces.inode("self", kind)
    assert namespaces.of_process(os.getpid()) == mine
    assert all(namespaces.shared_with(os.getpid()).values())


def test_inode_of_a_missing_process_raises() -> None:
    with pytest.raises(FileNotFoundError):
        namespaces.inode(2**22 + 1, "uts")


@pytest.fixture(scope="module")
def container(lab):
    """A container (Docker's default namespaces) that sleeps until the module is done."""
    with lab.background("sleep", "1000", opts=("--hostname", HOSTNAME)) as bg:
        yield bg


@pytest.fixture(scope="module")
def userns_container(lab):
    with lab.background("sleep", "1000", opts=("--ns", "all")) as bg:
        yield bg


def test_shared_with_a_running_container(container) -> None:
    shared = namespaces.shared_with(container.pid)
    assert {kind for kind, same in shared.items() if not same} == set(DOCKER_DEFAULT)
    assert shared["user"] is True
    # the reference can be any process: the container shares everything with itself
    assert all(namespaces.shared_with(container.pid, container.pid).values())


def test_shared_with_a_user_namespace_container(userns_container) -> None:
    shared = namespaces.shared_with(userns_container.pid)
    assert not any(shared.values())


def test_list_namespaces_shows_the_container_as_first_process(container) -> None:
    rows = namespaces.list_namespaces()
    by_key = {(row.kind, row.inode): row for row in rows}
    for kind in DOCKER_DEFAULT:
        row = by_key[(kind, namespaces.inode(container.pid, kind))]
        assert row.pid == container.pid
        assert row.nprocs == 1
        assert row.command == "sleep 1000"
    # the host's namespaces are listed too, with this process counted in them
    for kind in KINDS:
        host = by_key[(kind, namespaces.inode("self", kind))]
        assert host.nprocs > 1
        assert host.pid <= os.getpid()


def test_list_namespaces_of_some_kinds(container) -> None:
    rows = namespaces.list_namespaces(["uts", "net"])
    assert {row.kind for row in rows} == {"uts", "net"}
    assert [(r.kind, r.inode) for r in rows] == sorted((r.kind, r.inode) for r in rows)
    assert namespaces.inode(container.pid, "uts") in {r.inode for r in rows if r.kind == "uts"}


# -- entering ----------------------------------------------------------------------------------


@pytest.fixture
def canary(tmp_path: Path) -> tuple[Path, str]:
    """A host file with a random marker: what shows whether the host's filesystem is in view,
    instead of a real host file, so nothing of the host's reaches a log."""
    marker = f"labkit-canary-{secrets.token_hex(8)}"
    path = tmp_path / "canary"
    path.write_text(marker + "\n")
    return path, marker


_ENTER = """
    from labkit.kernel import namespaces
    namespaces.enter({pid}, {kinds!r})
    # Joining a PID namespace only affects children: fork, and let the child look around.
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        facts = {{"hostname": socket.gethostname(), "os_release": open("/etc/os-release").read(),
                 "pid": os.getpid(), "proc": sorted(p for p in os.listdir("/proc") if p.isdigit()),
                 "canary": open({canary!r}).read() if os.path.exists({canary!r}) else None,
                 "ns": {{k: os.stat("/proc/self/ns/" + k).st_ino for k in {kinds!r}}}}}
        os.write(w, json.dumps(facts).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(child, 0)
    emit(**json.loads(data))
"""


def test_enter_uts_mnt_pid_of_a_running_container(
    lab, container, busybox_rootfs: Path, canary
) -> None:
    path, _ = canary
    out = lab.py(_ENTER.format(pid=container.pid, kinds=["uts", "mnt", "pid"], canary=str(path)))
    assert out["hostname"] == HOSTNAME
    assert out["os_release"] == (busybox_rootfs / "etc" / "os-release").read_text()
    assert out["canary"] is None, "the host's files are still in view"
    # In the container's PID namespace the sleeper is PID 1 and we are another small number;
    # its /proc (we see the container's mounts) lists just the two of us.
    assert 1 < out["pid"] < 100
    assert out["proc"] == sorted(["1", str(out["pid"])])
    for kind in ("uts", "mnt", "pid"):
        assert out["ns"][kind] == namespaces.inode(container.pid, kind)


def test_enter_uts_only_keeps_the_host_filesystem(lab, container, canary) -> None:
    path, marker = canary
    out = lab.py(_ENTER.format(pid=container.pid, kinds=["uts"], canary=str(path)))
    assert out["hostname"] == HOSTNAME
    assert out["canary"] == marker + "\n"
    assert out["pid"] > 1 and str(os.getpid()) in out["proc"]


def test_enter_a_user_namespace_container(lab, userns_container, canary) -> None:
    kinds = ["user", "uts", "mnt", "pid"]
    out = lab.py(_ENTER.format(pid=userns_container.pid, kinds=kinds, canary=str(canary[0])))
    assert out["canary"] is None
    assert out["os_release"].startswith('NAME="labkit busybox"')
    assert out["ns"]["user"] == namespaces.inode(userns_container.pid, "user")


def test_enter_a_missing_process_fails_before_joining_anything(lab) -> None:
    out = lab.py("""
        from labkit.kernel import namespaces
        before = open("/proc/self/mountinfo").read()
        emit(err=attempt(namespaces.enter, 2**22 + 1, ["uts", "mnt"]),
             same=open("/proc/self/mountinfo").read() == before)
    """)
    assert out["err"]["type"] == "FileNotFoundError"
    assert out["same"] is True
