"""labkit.kernel.syscalls against the real kernel: each call works, and each failure says why.

Every call that changes namespaces or mounts runs in a child interpreter (``lab.py``) that
first moves into a new mount namespace where it mounts anything, so the host never sees it.
"""

from __future__ import annotations

import errno
import os
import platform
import socket
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.kernel import syscalls
from labkit.kernel.namespaces import KINDS

pytestmark = pytest.mark.usefixtures("needs_root")

NOBODY = 65534
#: Every namespace link a process has; unsharing one kind must change exactly one of them.
NS_LINKS = sorted(os.listdir("/proc/self/ns"))
PYTEST_NS = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in NS_LINKS}

#: The implementations of unshare/setns that this interpreter can run, decided here at
#: collection: libc through ctypes always (on 3.12+ too, by hiding os.unshare/os.setns), and
#: os.unshare/os.setns when this Python has them (3.12+: Ubuntu 24.04, Debian 13).
PATHS = ["ctypes"] + (["os"] if hasattr(os, "unshare") and hasattr(os, "setns") else [])
#: Script openings that pick the path. They run before labkit is imported, so the choice
#: holds however labkit looks the functions up. Both define ``os_calls``: which of
#: os.unshare/os.setns were called.
_USE = {
    "ctypes": """
        for name in ("unshare", "setns"):
            if hasattr(os, name):
                delattr(os, name)
        os_calls = []
    """,
    "os": """
        os_calls = []
        def _counted(name, real):
            def call(*args):
                os_calls.append(name)
                return real(*args)
            return call
        os.unshare = _counted("unshare", os.unshare)
        os.setns = _counted("setns", os.setns)
    """,
}
#: The clone flags this Python's os module exports too (3.12+; none on 3.11).
PYTHON_CLONE_FLAGS = sorted(n for n in dir(syscalls) if n.startswith("CLONE_") and hasattr(os, n))


def _using(path: str, code: str) -> str:
    """``code`` for ``lab.py``, run with the unshare/setns implementation ``path``."""
    return textwrap.dedent(_USE[path]) + textwrap.dedent(code)


def test_pivot_root_syscall_numbers() -> None:
    assert syscalls.PIVOT_ROOT_SYSCALL["x86_64"] == 155
    assert syscalls.PIVOT_ROOT_SYSCALL["aarch64"] == 41
    assert platform.machine() in syscalls.PIVOT_ROOT_SYSCALL


if PYTHON_CLONE_FLAGS:  # on 3.11 the unshare tests below check the flags against the kernel

    @pytest.mark.parametrize("name", PYTHON_CLONE_FLAGS)
    def test_clone_flags_match_python_when_it_has_them(name: str) -> None:
        """Python 3.12 exports os.CLONE_*; labkit's numbers must be the same."""
        assert getattr(syscalls, name) == getattr(os, name)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_unshare_changes_exactly_that_namespace(lab, kind: str) -> None:
    """The flag for one kind gives a new namespace of that kind and leaves the rest alone."""
    out = lab.py(f"""
        from labkit.kernel import namespaces, syscalls
        links = {NS_LINKS!r}
        def inodes():
            return {{n: os.stat('/proc/self/ns/' + n).st_ino for n in links}}
        before = inodes()
        syscalls.unshare(namespaces.KINDS[{kind!r}].flag)
        # pid_for_children of a new PID namespace only resolves once a child lives in it.
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.read(r, 1)
            os._exit(0)
        after = inodes()
        child_pid_ns = os.stat(f"/proc/{{child}}/ns/pid").st_ino
        os.write(w, b"x")
        os.waitpid(child, 0)
        emit(before=before, after=after, child_pid_ns=child_pid_ns)
    """)
    # A new PID namespace is for the caller's children: pid_for_children changes, pid does not.
    link = "pid_for_children" if kind == "pid" else kind
    changed = {n for n in NS_LINKS if out["before"][n] != out["after"][n]}
    assert changed == {link}
    assert (out["child_pid_ns"] != out["before"]["pid"]) == (kind == "pid")
    # The child started in our namespaces, and ours did not change.
    assert out["before"][link] == os.stat(f"/proc/self/ns/{link}").st_ino


@pytest.mark.parametrize("path", PATHS)
def test_unshare_and_setns_paths(lab, path: str) -> None:
    """Both implementations (os.unshare/os.setns on 3.12+, libc via ctypes on 3.11) work.

    The ctypes path is forced by hiding os.unshare and os.setns before labkit is imported,
    so nothing else is left to call; the os path, where this Python has it, is proven taken
    by counting the calls that reach os.unshare/os.setns. The script leaves a UTS namespace,
    names it, and setns()es back.
    """
    out = lab.py(
        _using(
            path,
            f"""
        from labkit.kernel import syscalls
        host_fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
        host_ino, host_name = os.fstat(host_fd).st_ino, socket.gethostname()
        syscalls.unshare(syscalls.CLONE_NEWUTS)
        new_ino = os.stat("/proc/self/ns/uts").st_ino
        syscalls.sethostname("labkit-" + {path!r})
        new_name = socket.gethostname()
        syscalls.setns(host_fd, syscalls.CLONE_NEWUTS)
        emit(host_ino=host_ino, host_name=host_name, new_ino=new_ino, new_name=new_name,
             back_ino=os.stat("/proc/self/ns/uts").st_ino, back_name=socket.gethostname(),
             os_calls=os_calls, has_os=[hasattr(os, "unshare"), hasattr(os, "setns")],
             version=sys.version_info[:2])
    """,
        )
    )
    assert out["new_ino"] != out["host_ino"]
    assert out["new_name"] == f"labkit-{path}"
    assert out["back_ino"] == out["host_ino"]
    assert out["back_name"] == out["host_name"] == socket.gethostname()
    if path == "ctypes":
        assert out["has_os"] == [False, False]
        assert out["os_calls"] == []
    else:
        assert out["version"] >= [3, 12]
        assert out["os_calls"] == ["unshare", "setns"]


@pytest.mark.parametrize("path", PATHS)
def test_unshare_user_ns_from_a_threaded_process_is_einval_with_hint(lab, path: str) -> None:
    out = lab.py(
        _using(
            path,
            """
        import threading
        from labkit.kernel import syscalls
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        err = attempt(syscalls.unshare, syscalls.CLONE_NEWUSER)
        stop.set()
        t.join()
        emit(err=err, os_calls=os_calls)
    """,
        )
    )
    assert out["os_calls"] == ([] if path == "ctypes" else ["unshare"])
    err = out["err"]
    assert err is not None, "unshare(CLONE_NEWUSER) succeeded in a threaded process"
    assert err["errno"] == errno.EINVAL
    assert "unshare failed: EINVAL" in err["strerror"]
    assert "multithreaded" in err["strerror"]


def test_unshare_as_nobody_is_eperm_with_hint(lab) -> None:
    out = lab.py(
        """
        from labkit.kernel import syscalls
        emit(err=attempt(syscalls.unshare, syscalls.CLONE_NEWNET), uid=os.getuid())
        """,
        user=NOBODY,
    )
    assert out["uid"] == NOBODY
    err = out["err"]
    assert err["type"] == "PermissionError"
    assert err["name"] == "EPERM"
    assert "EPERM" in err["strerror"] and "root" in err["strerror"]


def test_pivot_root_on_a_non_mount_point_is_einval_and_says_why(lab, tmp_path) -> None:
    """new_root inside a tmpfs but not itself a mount point: EINVAL, and the fix in the text."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = lab.py(f"""
        from labkit.kernel import rootfs, syscalls
        syscalls.unshare(syscalls.CLONE_NEWNS)
        rootfs.make_mounts_private()
        syscalls.mount("labkit-test", {str(mnt)!r}, "tmpfs")
        plain = {str(mnt / "plain")!r}
        os.mkdir(plain)
        emit(err=attempt(syscalls.pivot_root, plain, plain), root=os.stat("/").st_ino)
    """)
    err = out["err"]
    assert err is not None, "pivot_root onto a plain directory succeeded"
    assert err["errno"] == errno.EINVAL
    message = err["strerror"]
    assert message.startswith("pivot_root failed: EINVAL")
    assert "mount point" in message and "private" in message
    assert out["root"] == os.stat("/").st_ino
    assert not os.path.ismount(mnt)


@pytest.fixture
def plain_dir_on_the_root_mount() -> Iterator[Path]:
    """A directory on the mount that is "/" itself. Not the temp dir: /tmp is a tmpfs of its
    own on Debian 13 (and on many hosts), where the kernel answers EINVAL instead."""
    for base in ("/var/tmp", "/var/lib", "/root", "/"):
        chain = [Path(base), *Path(base).parents]
        if os.path.isdir(base) and not any(os.path.ismount(p) for p in chain if str(p) != "/"):
            plain = Path(tempfile.mkdtemp(prefix="labkit-test-pivot-", dir=base))
            try:
                yield plain
            finally:
                plain.rmdir()
            return
    pytest.fail("no directory on the root mount to try pivot_root on")


def test_pivot_root_on_a_plain_dir_of_the_root_fs_is_ebusy_and_says_why(
    lab, plain_dir_on_the_root_mount: Path
) -> None:
    """The learner's usual first try: the same mistake, but the kernel says EBUSY."""
    plain = plain_dir_on_the_root_mount
    out = lab.py(f"""
        from labkit.kernel import rootfs, syscalls
        syscalls.unshare(syscalls.CLONE_NEWNS)
        rootfs.make_mounts_private()
        emit(err=attempt(syscalls.pivot_root, {str(plain)!r}, {str(plain)!r}))
    """)
    err = out["err"]
    assert err["errno"] == errno.EBUSY
    assert err["strerror"].startswith("pivot_root failed: EBUSY")
    assert "mount point" in err["strerror"] and "bind-mount" in err["strerror"]


def test_pivot_root_on_a_missing_path_is_enoent(lab, tmp_path) -> None:
    missing = tmp_path / "missing"
    out = lab.py(f"""
        from labkit.kernel import syscalls
        syscalls.unshare(syscalls.CLONE_NEWNS)
        emit(err=attempt(syscalls.pivot_root, {str(missing)!r}, {str(missing)!r}))
    """)
    assert out["err"]["type"] == "FileNotFoundError"
    assert "ENOENT" in out["err"]["strerror"] and "does not exist" in out["err"]["strerror"]


def test_pivot_root_on_an_unknown_architecture_is_enosys(lab) -> None:
    """With no syscall number for this machine, ENOSYS names the machine (however labkit
    asks the kernel for its name)."""
    out = lab.py("""
        from labkit.kernel import syscalls
        syscalls.PIVOT_ROOT_SYSCALL.clear()
        emit(err=attempt(syscalls.pivot_root, "/nonexistent-a", "/nonexistent-b"),
             machine=os.uname().machine)
    """)
    assert out["err"]["errno"] == errno.ENOSYS
    assert out["machine"] in out["err"]["strerror"]


def test_mount_with_a_bad_fstype_is_enodev_named(lab, tmp_path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    out = lab.py(f"""
        from labkit.kernel import syscalls
        syscalls.unshare(syscalls.CLONE_NEWNS)
        emit(err=attempt(syscalls.mount, "none", {str(target)!r}, "labkitnosuchfs"))
    """)
    err = out["err"]
    assert err["errno"] == errno.ENODEV
    assert err["name"] == "ENODEV"
    assert "mount labkitnosuchfs on" in err["strerror"] and "ENODEV" in err["strerror"]
    assert err["filename"] == str(target)


def test_mount_flags_and_umount2(lab, tmp_path) -> None:
    """MS_* values are the kernel's: a tmpfs mounted with them shows them in mountinfo."""
    target = tmp_path / "t"
    target.mkdir()
    out = lab.py(f"""
        from labkit.kernel import syscalls as s
        s.unshare(s.CLONE_NEWNS)
        s.mount(None, "/", None, s.MS_REC | s.MS_PRIVATE)
        t = {str(target)!r}
        def options():
            for line in open("/proc/self/mountinfo"):
                f = line.split()
                if f[4] == t:
                    return f[5].split(",")
            return None
        s.mount("labkit-test", t, "tmpfs", s.MS_RDONLY | s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC)
        mounted = options()
        write = attempt(open, t + "/file", "w")
        first = attempt(s.umount2, t)
        again = attempt(s.umount2, t)
        missing = attempt(s.umount2, t + "/nope")
        emit(mounted=mounted, write=write, first=first, after=options(), again=again,
             missing=missing)
    """)
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(out["mounted"])
    assert out["write"]["errno"] == errno.EROFS
    assert out["first"] is None
    assert out["after"] is None
    assert out["again"]["errno"] == errno.EINVAL and "umount" in out["again"]["strerror"]
    assert out["missing"]["errno"] == errno.ENOENT
    assert "a path does not exist" in out["missing"]["strerror"]
    assert not os.path.ismount(target)


def test_propagation_flags(lab, tmp_path) -> None:
    """MS_SHARED, MS_SLAVE, MS_PRIVATE and MS_BIND do what mountinfo says they do."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    out = lab.py(f"""
        from labkit.kernel import syscalls as s
        s.unshare(s.CLONE_NEWNS)
        s.mount(None, "/", None, s.MS_REC | s.MS_PRIVATE)
        a, b = {str(a)!r}, {str(b)!r}
        def optional(target):
            for line in open("/proc/self/mountinfo"):
                f = line.split()
                if f[4] == target:
                    return f[6:f.index("-")]
        s.mount("labkit-test", a, "tmpfs")
        s.mount(None, a, None, s.MS_SHARED)
        shared = optional(a)
        s.mount(a, b, None, s.MS_BIND)
        open(a + "/seen-through-bind", "w").close()
        bound = os.listdir(b)
        s.mount(None, b, None, s.MS_SLAVE)
        slave = optional(b)
        s.mount(None, a, None, s.MS_PRIVATE)
        private = optional(a)
        emit(shared=shared, bound=bound, slave=slave, private=private)
    """)
    assert out["shared"][0].startswith("shared:")
    assert out["bound"] == ["seen-through-bind"]
    assert any(tag.startswith("master:") for tag in out["slave"])
    assert out["private"] == []


def test_sethostname_in_a_new_uts_namespace_changes_only_that_namespace(lab) -> None:
    host_before = socket.gethostname()
    out = lab.py("""
        from labkit.kernel import syscalls
        syscalls.unshare(syscalls.CLONE_NEWUTS)
        syscalls.sethostname("labkit-uts-test")
        emit(name=socket.gethostname(), proc=open("/proc/sys/kernel/hostname").read().strip(),
             too_long=attempt(syscalls.sethostname, "x" * 65))
    """)
    assert out["name"] == out["proc"] == "labkit-uts-test"
    assert out["too_long"]["errno"] == errno.EINVAL
    assert "sethostname failed: EINVAL" in out["too_long"]["strerror"]
    assert socket.gethostname() == host_before != "labkit-uts-test"


def test_sethostname_as_nobody_is_eperm(lab) -> None:
    out = lab.py(
        """
        from labkit.kernel import syscalls
        emit(err=attempt(syscalls.sethostname, "labkit-should-not-be-set"))
        """,
        user=NOBODY,
    )
    assert out["err"]["name"] == "EPERM"
    assert "CAP_SYS_ADMIN" in out["err"]["strerror"]
    assert socket.gethostname() != "labkit-should-not-be-set"


def test_setns_with_the_wrong_type_is_einval_with_hint(lab) -> None:
    out = lab.py("""
        from labkit.kernel import syscalls
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        emit(err=attempt(syscalls.setns, fd, syscalls.CLONE_NEWUTS),
             bad_fd=attempt(syscalls.setns, 9999, 0))
    """)
    assert out["err"]["errno"] == errno.EINVAL
    assert "setns failed: EINVAL" in out["err"]["strerror"]
    assert "not a namespace of that type" in out["err"]["strerror"]
    assert out["bad_fd"]["name"] == "EBADF"


def test_errors_are_oserror_with_errno_attributes(lab) -> None:
    """Callers can catch the usual subclasses (PermissionError ...) and read .errno."""
    out = lab.py(
        """
        from labkit.kernel import syscalls
        try:
            syscalls.mount("none", "/tmp", "tmpfs")
        except PermissionError as exc:
            emit(caught=True, errno=exc.errno, is_oserror=isinstance(exc, OSError))
        """,
        user=NOBODY,
    )
    assert out == {
        "caught": True,
        "errno": errno.EPERM,
        "is_oserror": True,
        "_exit": 0,
        "_stderr": "",
    }


def test_the_test_process_itself_never_moved() -> None:
    """Sanity: none of the above moved pytest itself into another namespace."""
    assert {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in NS_LINKS} == PYTEST_NS
