"""Hardening by default: capabilities, seccomp, masked paths, devices, no_new_privs.

Each defence is proven by its effect inside a real container (a call refused, a file
empty), and labkit's default container is compared, field by field, with Docker's.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _env
from syscall_tables import read as read_header_table

from labkit import docker
from labkit.errors import LabkitError
from labkit.kernel import capabilities, masks, seccomp, syscall_numbers
from labkit.kernel.cgroups import devices

pytestmark = pytest.mark.usefixtures("needs_root")

STATUS = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status"


def _run(*args: str, image: str = "busybox") -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "labkit.cli", "run", "--image", image, *args],
        cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _sh(script: str, *opts: str, image: str = "busybox") -> subprocess.CompletedProcess:
    return _run(*opts, "--", "sh", "-c", script, image=image)


def _status(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+):\s+(\S+)$", text, re.M))


# -- capabilities ---------------------------------------------------------------------------


def test_capability_numbers_are_the_kernels() -> None:
    header = Path("/usr/include/linux/capability.h").read_text()
    for name, number in re.findall(r"#define CAP_(\w+)\s+(\d+)\s*$", header, re.M):
        if name in capabilities.NAMES:
            assert capabilities.number(name) == int(number), name
    assert len(capabilities.DOCKER_DEFAULT) == 14


@pytest.mark.parametrize(
    ("add", "drop", "privileged", "expected"),
    [
        ([], [], False, capabilities.DOCKER_DEFAULT),
        (["net_admin"], ["CAP_CHOWN"], False,
         capabilities.DOCKER_DEFAULT - {"CHOWN"} | {"NET_ADMIN"}),
        (["ALL"], ["MKNOD"], False, capabilities.known() - {"MKNOD"}),
        (["CHOWN"], ["all"], False, {"CHOWN"}),
        ([], ["ALL"], False, set()),
        (["SYS_ADMIN"], [], True, capabilities.known()),
    ],
)  # fmt: skip
def test_cap_add_and_drop_follow_dockers_rules(add, drop, privileged, expected) -> None:
    assert capabilities.resolve(add, drop, privileged) == frozenset(expected)


def test_an_unknown_capability_is_one_line_and_creates_nothing(
    tmp_path: Path, busybox_rootfs: Path
) -> None:
    with pytest.raises(LabkitError, match="unknown capability: CAP_BOGUS"):
        capabilities.resolve(["bogus"], [], False)
    state = tmp_path / "state"
    done = subprocess.run(
        [PYTHON, "-m", "labkit.cli", "run", "--rootfs", str(busybox_rootfs), "--cap-add",
         "bogus", "--", "true"],
        cwd=REPO, env=_env({"LABKIT_STATE_DIR": str(state)}), capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 125 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("labkit: unknown capability: CAP_BOGUS (fix: ")
    assert not state.exists()


def test_capabilities_by_name() -> None:
    assert capabilities.names_of("00000000a80425fb") == sorted(
        capabilities.DOCKER_DEFAULT, key=capabilities.number
    )
    assert capabilities.mask(["CHOWN", "SYS_ADMIN"]) == 1 | 1 << 21


def test_a_dropped_capability_is_gone_and_an_added_one_works() -> None:
    assert _sh("chown 1 /tmp && echo chowned").stdout == "chowned\n"
    denied = _sh("chown 1 /tmp", "--cap-drop", "CHOWN")
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr
    # lo is up already, as under Docker: taking it down is what needs NET_ADMIN
    assert _sh("ip link set lo down").returncode != 0  # no NET_ADMIN by default
    added = _sh("ip link set lo down && echo down", "--cap-add", "NET_ADMIN")
    assert added.stdout == "down\n", added.stderr  # (in the container's own net namespace)


# -- the default container is Docker's ---------------------------------------------------------


def test_status_matches_dockers_default() -> None:
    ours = _status(_sh(STATUS).stdout)
    theirs = _status(docker.run("run", "--rm", "labkit/busybox", "sh", "-c", STATUS).stdout)
    assert ours == theirs
    assert capabilities.names_of(ours["CapEff"]) == sorted(
        capabilities.DOCKER_DEFAULT, key=capabilities.number
    )
    assert (ours["NoNewPrivs"], ours["Seccomp"], ours["CapInh"]) == ("0", "2", "0" * 16)


def _mount_options(mountinfo: str, targets: tuple[str, ...]) -> dict[str, set[str]]:
    out = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if fields[4] in targets:
            out[fields[4]] = set(fields[5].split(",")) - {"relatime", "noatime"}
    return out


def test_proc_and_sys_are_mounted_as_under_docker() -> None:
    targets = ("/proc", "/sys", "/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/keys",
               "/proc/timer_list", "/sys/firmware")  # fmt: skip
    probe = "cat /proc/self/mountinfo"
    ours = _mount_options(_sh(probe).stdout, targets)
    theirs = _mount_options(
        docker.run("run", "--rm", "labkit/busybox", "sh", "-c", probe).stdout, targets
    )
    assert ours == theirs
    assert "ro" in ours["/sys"] and "ro" in ours.get("/proc/sys", {"ro"})


# -- seccomp --------------------------------------------------------------------------------


def test_the_syscall_tables_are_the_kernel_headers() -> None:
    """Every number in labkit's tables is the one this machine's kernel headers give. Newer
    headers add calls (Debian 13's 6.12 has cachestat, fchmodat2, futex_wait ... that
    Debian 12's 6.1 lacks): those are not in the table yet, which only means the filter
    refuses them; regenerating with tests/syscall_tables.py adds them."""
    tables = {"x86_64": syscall_numbers.X86_64, "aarch64": syscall_numbers.AARCH64}
    for machine, table in tables.items():
        headers = read_header_table(machine)
        assert {name: headers.get(name) for name in table} == table, machine
        newer = sorted(set(headers) - set(table))
        if newer:
            print(f"{machine}: the headers here have {len(newer)} calls not in the table: {newer}")


def _run_bpf(program: list[tuple[int, int, int, int]], nr: int, arch: int, arg0: int = 0) -> int:
    """Evaluate a classic-BPF seccomp program on one system call (a checker independent of
    the kernel, to look at the cases a test cannot easily make: another arch, x32)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == seccomp.LD_W_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == seccomp.RET_K:
            return k
        else:
            taken = {
                seccomp.JEQ_K: acc == k, seccomp.JGE_K: acc >= k, seccomp.JGT_K: acc > k,
                seccomp.JSET_K: bool(acc & k),
            }[code]  # fmt: skip
            pc += jt if taken else jf
        pc += 1


@pytest.mark.parametrize("machine", sorted(seccomp.ARCHES))
def test_the_filter_decides_as_dockers_profile(machine: str) -> None:
    audit_arch, table = seccomp.ARCHES[machine]
    prog = seccomp.program(machine, capabilities.DOCKER_DEFAULT)
    eperm, allow = seccomp.RET_ERRNO | errno.EPERM, seccomp.RET_ALLOW
    for name in ("read", "write", "execve", "openat", "chroot", "mknodat"):
        assert _run_bpf(prog, table[name], audit_arch) == allow, name
    blocked = ("mount", "unshare", "setns", "kexec_load", "init_module", "bpf", "keyctl",
               "open_by_handle_at", "clock_settime", "fsopen", "pivot_root", "syslog")  # fmt: skip
    for name in blocked:
        assert _run_bpf(prog, table[name], audit_arch) == eperm, name
    assert _run_bpf(prog, table["clone3"], audit_arch) == seccomp.RET_ERRNO | errno.ENOSYS
    assert _run_bpf(prog, table["clone"], audit_arch, arg0=0x11) == allow  # a plain fork
    assert _run_bpf(prog, table["clone"], audit_arch, arg0=0x10000000) == eperm  # NEWUSER
    assert _run_bpf(prog, table["socket"], audit_arch, arg0=2) == allow
    assert _run_bpf(prog, table["socket"], audit_arch, arg0=seccomp.AF_VSOCK) == eperm
    assert _run_bpf(prog, table["personality"], audit_arch, arg0=8) == allow
    assert _run_bpf(prog, table["personality"], audit_arch, arg0=1) == eperm
    # Another syscall table is no way around it: i386 (int 0x80), or x32 on x86_64.
    assert _run_bpf(prog, table["read"], 0x40000003) == eperm  # AUDIT_ARCH_I386
    if machine == "x86_64":
        assert _run_bpf(prog, table["read"] | seccomp.X32_SYSCALL_BIT, audit_arch) == eperm
    with_admin = seccomp.program(machine, capabilities.DOCKER_DEFAULT | {"SYS_ADMIN"})
    assert _run_bpf(with_admin, table["mount"], audit_arch) == allow


_SYSCALL = "perl -e '$! = 0; my $r = syscall({nr}, 0, 0, 0); print \"$r $!\\n\"'"


def test_a_blocked_call_fails_with_eperm_in_a_container() -> None:
    done = _sh("unshare -u true; mount -t proc proc /tmp; dmesg")
    assert done.stderr.count("Operation not permitted") + done.stderr.count("denied") >= 3
    table = syscall_numbers.X86_64 if os.uname().machine == "x86_64" else syscall_numbers.AARCH64
    clone3 = _sh(_SYSCALL.format(nr=table["clone3"]), image="debian")
    assert clone3.stdout.split()[0] == "-1" and "not implemented" in clone3.stdout
    if os.uname().machine == "x86_64":  # the x32 table: same call, bit 30 set
        x32 = _sh(_SYSCALL.format(nr=table["getpid"] | seccomp.X32_SYSCALL_BIT), image="debian")
        assert x32.stdout.strip() == "-1 Operation not permitted", x32.stdout + x32.stderr


def test_seccomp_unconfined_turns_the_filter_off() -> None:
    status = _status(_sh(STATUS, "--security-opt", "seccomp=unconfined").stdout)
    assert status["Seccomp"] == "0" and status["CapEff"] == "00000000a80425fb"


# -- masked and read-only paths -------------------------------------------------------------------


def test_masked_paths_are_empty_and_read_only_paths_refuse_writes() -> None:
    present = [p for p in masks.MASKED if os.path.exists(p)]
    script = "for p in " + " ".join(present) + "; do echo \"$p $(cat $p 2>/dev/null | wc -c) " \
        "$(ls $p 2>/dev/null | wc -l)\"; done; : >> /proc/sys/kernel/core_pattern"  # fmt: skip
    done = _sh(script)
    for line in done.stdout.splitlines():
        path, size, entries = line.split()
        assert (size, entries) in (("0", "0"), ("0", "1")), line  # a file: /dev/null's 0 bytes
    assert "Read-only file system" in done.stderr
    unmasked = _sh(": >> /proc/sys/kernel/core_pattern && echo opened",
                   "--security-opt", "systempaths=unconfined")  # fmt: skip
    assert unmasked.stdout == "opened\n"  # opened for append, nothing written


# -- devices -------------------------------------------------------------------------------------


#: /dev/fuse: Docker denies it by name, and opening it (without reading) is harmless.
FUSE = (10, 229)


def test_a_device_node_made_inside_cannot_be_opened() -> None:
    major, minor = FUSE
    # (in /dev: a device cgroup decides, whatever the filesystem)
    script = f"mknod /dev/lk-fuse c {major} {minor} && echo made; " \
        "exec 3</dev/lk-fuse && echo opened; head -c 1 /dev/zero | wc -c"  # fmt: skip
    done = _sh(f"({script}); head -c 1 /dev/zero | wc -c")
    assert done.stdout.split() == ["made", "1"], done.stderr
    assert "Operation not permitted" in done.stderr
    opened = _sh(script, "--device-cgroup-rule", f"c {major}:{minor} r")
    assert opened.stdout.split() == ["made", "opened", "1"], opened.stderr


def test_device_rules_are_parsed_as_docker_writes_them() -> None:
    assert str(devices.parse("c 1:3 rwm")) == "c 1:3 rwm"
    assert devices.parse("b *:* m") == devices.Rule("b", None, None, "m")
    for bad in ("x 1:3 r", "c 1:3", "c one:3 r", "c 1:3 rwx", "c 1:3 rr"):
        with pytest.raises(LabkitError, match="invalid device cgroup rule"):
            devices.parse(bad)


def test_the_ebpf_device_program_decides_in_a_real_cgroup2(tmp_path: Path) -> None:
    """The v2 device program, attached to a cgroup of the v2 tree on this host (on a hybrid
    host too: BPF device programs need no controller), decides what a process there opens."""
    from labkit.kernel import cgroups

    layout = cgroups.detect()
    assert layout.v2_mount, "no cgroup2 tree on this host"
    group = Path(layout.v2_mount) / f"labkit-test-devices-{os.getpid()}"
    group.mkdir()
    node = tmp_path / "fuse"
    os.mknod(node, 0o600 | 0o020000, os.makedev(*FUSE))
    try:
        devices.attach(devices.program(devices.DOCKER_DEFAULT), group)
        probe = (
            "open('/dev/null', 'rb').close(); print('null ok', flush=True)\n"
            f"try:\n    open({str(node)!r}, 'rb')\nexcept PermissionError:\n"
            "    print('fuse refused')\n"
        )
        r, w = os.pipe()
        child = subprocess.Popen(  # waits on the pipe until it is in the cgroup
            [PYTHON, "-c", "import os, sys; os.read(int(sys.argv[1]), 1); exec(sys.argv[2])",
             str(r), probe],
            pass_fds=(r,), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        (group / "cgroup.procs").write_text(f"{child.pid}\n")
        os.write(w, b"go\n")
        out, _ = child.communicate(timeout=30)
        os.close(r)
        os.close(w)
        assert out.split("\n")[:2] == ["null ok", "fuse refused"], out
    finally:
        group.rmdir()


# -- no_new_privs ----------------------------------------------------------------------------


def test_no_new_privileges_is_off_by_default_and_on_when_asked() -> None:
    assert _status(_sh(STATUS).stdout)["NoNewPrivs"] == "0"
    on = _status(_sh(STATUS, "--security-opt", "no-new-privileges").stdout)
    assert on["NoNewPrivs"] == "1" and on["Seccomp"] == "2"


def test_a_bad_security_option_is_refused() -> None:
    done = _run("--security-opt", "apparmor=unconfined", "--", "true")
    assert done.returncode == 125
    assert done.stderr.startswith("labkit: unsupported security option 'apparmor=unconfined'")


@pytest.mark.parametrize(
    "rules",
    [
        ("a *:* rwm",),
        ("c 1:3 rwm", "a *:* rwm", "c 10:229 rwm"),
        tuple(map(str, devices.DOCKER_DEFAULT)),
    ],
    ids=["allow all (--privileged)", "allow all among others", "Docker's default"],
)
def test_the_kernel_verifier_accepts_the_device_program(rules: tuple[str, ...]) -> None:
    """A cgroup-v2 device program is checked by the kernel's verifier when it is loaded (any
    host can load one, whatever its cgroups): a rule that allows everything must end the
    program, since the verifier refuses instructions that can never run. (Found on the
    learner's VM: every container with all defences off failed with bpf(5) EINVAL.)"""
    import ctypes

    code = devices.program([devices.parse(r) for r in rules])
    insns = ctypes.create_string_buffer(code)
    license = ctypes.create_string_buffer(b"Apache")
    attr = struct.pack(
        "=IIQQ",
        devices.BPF_PROG_TYPE_CGROUP_DEVICE,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license),
    )
    os.close(devices._bpf(devices.BPF_PROG_LOAD, attr))  # raises OSError(EINVAL) if refused
