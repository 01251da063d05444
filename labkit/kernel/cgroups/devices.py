"""The device controller: which device nodes a container may open, whatever it creates.

A container keeps CAP_MKNOD, as under Docker, so ``mknod /tmp/disk b 8 0`` works. What stops
it from reading the host's disk through that node is the cgroup device controller: opening
a device checks the cgroup's rules, and a container's cgroup allows only the nodes Docker
gives every container (null, zero, full, random, urandom, tty, console, ptmx, its ptys, tun)
plus mknod of anything.

* **cgroup v1**: the rules are text in the ``devices`` hierarchy: write ``a`` to
  ``devices.deny``, then one ``c 1:3 rwm`` line per allowed device to ``devices.allow``;
* **cgroup v2** has no such files: the rules are a small eBPF program of type
  CGROUP_DEVICE, attached to the cgroup, that the kernel runs on every device access. labkit
  assembles it by hand (``program``), the way runc's devicefilter does.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from labkit.errors import LabkitError
from labkit.kernel import syscall_numbers


class Rule(NamedTuple):
    """One line of a device list: type a/b/c, major and minor (None is "*"), access rwm."""

    type: str
    major: int | None
    minor: int | None
    access: str

    def __str__(self) -> str:
        star = lambda n: "*" if n is None else str(n)  # noqa: E731
        return f"{self.type} {star(self.major)}:{star(self.minor)} {self.access}"


_RULE = re.compile(r"([abc]) (\*|\d+):(\*|\d+) ([rwm]{1,3})")


def parse(text: str) -> Rule:
    """``"c 1:3 rwm"`` (Docker's --device-cgroup-rule syntax) as a Rule, or a clear error."""
    match = _RULE.fullmatch(text.strip())
    if not match or len(set(match.group(4))) != len(match.group(4)):
        raise LabkitError(
            f"invalid device cgroup rule {text!r}",
            fix="write it as TYPE MAJOR:MINOR ACCESS, e.g. 'c 10:200 rwm' (type a, b or c; "
            "* for any number; access from r, w, m)",
        )
    kind, major, minor, access = match.groups()
    number = lambda n: None if n == "*" else int(n)  # noqa: E731
    return Rule(kind, number(major), number(minor), access)


#: Docker's defaults (moby's DefaultLinuxSpec devices, plus runc's AllowedDevices).
DOCKER_DEFAULT = tuple(
    parse(r)
    for r in (
        "c *:* m", "b *:* m",  # mknod of anything; opening it is another matter
        "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",  # null..urandom
        "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm",  # tty, console, ptmx
        "c 136:* rwm", "c 10:200 rwm",  # the container's ptys; tun
    )
)  # fmt: skip


def apply_v1(path: Path, rules: Iterable[Rule]) -> None:
    """A v1 devices cgroup: deny everything, then allow each rule."""
    (path / "devices.deny").write_text("a\n")
    for rule in rules:
        (path / "devices.allow").write_text(f"{rule}\n")


def apply_v2(path: Path, rules: Iterable[Rule]) -> None:
    """A v2 cgroup: the rules as an eBPF program attached to it."""
    attach(program(rules), path)


# -- cgroup v2: an eBPF program ------------------------------------------------------------------
# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }: access_type holds the
# device type in its low 16 bits (1 block, 2 char) and the access in its high 16 (1 mknod,
# 2 read, 4 write). The program returns 1 to allow and 0 to refuse.

_TYPE = {"b": 1, "c": 2}
_ACCESS = {"m": 1, "r": 2, "w": 4}
# eBPF opcodes: load word, AND/RSH/MOV with an immediate, MOV register, jump-if-not-equal, exit.
LDX_W, AND_K, RSH_K, MOV_K, MOV_X, JNE_K, EXIT = 0x61, 0x57, 0x77, 0xB7, 0xBF, 0x55, 0x95
R0, R1, R2, R3, R4, R5 = range(6)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def _rule_block(rule: Rule) -> bytes:
    """One rule: a chain of "not this device? go to the next rule" tests, then "allow"."""
    tests: list[tuple[int, int, int]] = []  # (opcode, register, immediate)
    if rule.type != "a":
        tests.append((JNE_K, R2, _TYPE[rule.type]))
    allowed = sum(_ACCESS[a] for a in rule.access)
    if allowed != 7:  # r1 = what was asked for beyond what the rule allows; not 0: no match
        tests += [(MOV_X, R1, R3), (AND_K, R1, ~allowed & 7), (JNE_K, R1, 0)]
    if rule.major is not None:
        tests.append((JNE_K, R4, rule.major))
    if rule.minor is not None:
        tests.append((JNE_K, R5, rule.minor))
    length = len(tests) + 2  # the tests, then "r0 = 1; exit"
    code = []
    for i, (op, reg, imm) in enumerate(tests):
        if op == JNE_K:  # jump past the rest of this block (offsets count from the next insn)
            code.append(_insn(JNE_K, reg, off=length - i - 1, imm=imm))
        elif op == MOV_X:
            code.append(_insn(MOV_X, reg, imm))
        else:
            code.append(_insn(op, reg, imm=imm))
    return b"".join([*code, _insn(MOV_K, R0, imm=1), _insn(EXIT)])


def program(rules: Iterable[Rule]) -> bytes:
    """The rules as a CGROUP_DEVICE program: allow if any rule matches, refuse otherwise."""
    head = [
        _insn(LDX_W, R2, R1, 0),  # r2 = type: access_type & 0xffff
        _insn(AND_K, R2, imm=0xFFFF),
        _insn(LDX_W, R3, R1, 0),  # r3 = access: access_type >> 16
        _insn(RSH_K, R3, imm=16),
        _insn(LDX_W, R4, R1, 4),  # r4 = major
        _insn(LDX_W, R5, R1, 8),  # r5 = minor
    ]
    tail = [_insn(MOV_K, R0, imm=0), _insn(EXIT)]  # no rule matched: refuse
    blocks = []
    for rule in rules:
        blocks.append(_rule_block(rule))
        if rule.type == "a" and set(rule.access) == set("rwm") and rule.major is rule.minor is None:
            # "a *:* rwm" allows everything: its block ends the program, and nothing may
            # follow it (the verifier refuses a program with unreachable instructions).
            return b"".join([*head, *blocks])
    return b"".join([*head, *blocks, *tail])


BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI = 15, 6, 2
_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(command: int, attr: bytes) -> int:
    number = getattr(syscall_numbers, os.uname().machine.upper())["bpf"]
    buffer = ctypes.create_string_buffer(attr, 128)
    ret = _libc.syscall(ctypes.c_long(number), command, buffer, ctypes.c_uint(128))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({command}) failed: {os.strerror(err)}")
    return ret


def attach(code: bytes, cgroup: Path) -> None:
    """Load the program and attach it to ``cgroup``; the attachment keeps it alive, and it
    goes away with the cgroup. ALLOW_MULTI: it runs beside programs on parent cgroups
    (systemd's), and a device must pass all of them."""
    insns = ctypes.create_string_buffer(code)
    license = ctypes.create_string_buffer(b"Apache")
    load = struct.pack(
        "=IIQQ",
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license),
    )
    prog = _bpf(BPF_PROG_LOAD, load)
    target = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attach_attr = struct.pack("=IIII", target, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
        _bpf(BPF_PROG_ATTACH, attach_attr)
    finally:
        os.close(target)
        os.close(prog)
