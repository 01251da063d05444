"""seccomp: a filter the kernel runs on every system call, written here by hand in BPF.

A process can give the kernel a small program (classic BPF, the language of tcpdump's
filters) that sees each system call's number and arguments before the call runs, and
answers: allow it, fail it with an errno, or kill the process. The filter is inherited by
every child and survives exec, and it can never be removed, only narrowed by another.

labkit's default filter is Docker's default profile (moby's profiles/seccomp/default.json):
an *allowlist* of about 300 calls, so a call the list does not name (mount, unshare,
setns, kexec_load, init_module, bpf, keyctl, open_by_handle_at, clock_settime, the new
mount API ...) fails with EPERM, including calls added to the kernel after the list was
written. Some entries depend on the container's capabilities, as in Docker's profile.

The program first checks the *architecture*: an x86_64 process can also make 32-bit (int
0x80) and x32 system calls, whose numbers differ. A filter that only looked at numbers could
be bypassed through another table, so anything but this machine's native table is refused.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable

from labkit.kernel import syscall_numbers
from labkit.kernel.stage import stage

#: Per machine: the AUDIT_ARCH value the kernel reports, and the syscall table.
ARCHES = {
    "x86_64": (0xC000003E, syscall_numbers.X86_64),
    "aarch64": (0xC00000B7, syscall_numbers.AARCH64),
}
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: same AUDIT_ARCH, numbers with this bit set

# Return values (linux/seccomp.h).
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Docker's allowlist for every container (the profile's first group, and ptrace & co.,
#: which it allows on kernels >= 4.8). Names this machine lacks are skipped.
ALLOWED = _names(
    """
    accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown
    clock_adjtime clock_getres clock_gettime clock_nanosleep close close_range connect
    copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
    epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
    exit_group faccessat faccessat2 fadvise64 fallocate fanotify_mark fchdir fchmod fchmodat
    fchown fchownat fcntl fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr
    fstat fstatfs fsync ftruncate futex futex_waitv futimesat getcpu getcwd getdents
    getdents64 getegid geteuid getgid getgroups getitimer getpeername getpgid getpgrp getpid
    getppid getpriority getrandom getresgid getresuid getrlimit get_robust_list getrusage
    getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getxattr
    inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
    io_getevents io_pgetevents ioprio_get ioprio_set io_setup io_submit io_uring_enter
    io_uring_register io_uring_setup kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lgetxattr link linkat listen listxattr llistxattr
    lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create memfd_secret mincore
    mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mprotect mq_getsetattr mq_notify
    mq_open mq_timedreceive mq_timedsend mq_unlink mremap msgctl msgget msgrcv msgsnd msync
    munlock munlockall munmap name_to_handle_at nanosleep newfstatat open openat openat2
    pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll
    ppoll prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev
    pwritev2 read readahead readlink readlinkat readv recvfrom recvmmsg recvmsg
    remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
    rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
    rt_sigtimedwait rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
    sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
    sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp
    select semctl semget semop semtimedop sendfile sendmmsg sendmsg sendto setfsgid setfsuid
    setgid setgroups setitimer setpgid setpriority setregid setresgid setresuid setreuid
    setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
    setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 socketpair
    splice stat statfs statx symlink symlinkat sync sync_file_range syncfs sysinfo tee
    tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_settime
    timerfd_create timerfd_gettime timerfd_settime times tkill truncate umask uname unlink
    unlinkat utime utimensat utimes vfork vmsplice wait4 waitid write writev
    process_vm_readv process_vm_writev ptrace arch_prctl modify_ldt
    """
)

#: More calls allowed when the container keeps a capability (the profile's "includes").
BY_CAPABILITY = {
    "DAC_READ_SEARCH": _names("open_by_handle_at"),
    "SYS_ADMIN": _names(
        """
        bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount
        mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd
        setdomainname sethostname setns syslog umount2 unshare
        """
    ),
    "SYS_BOOT": _names("reboot"),
    "SYS_CHROOT": _names("chroot"),
    "SYS_MODULE": _names("delete_module init_module finit_module"),
    "SYS_PACCT": _names("acct"),
    "SYS_PTRACE": _names("kcmp pidfd_getfd process_madvise"),
    "SYS_RAWIO": _names("iopl ioperm"),
    "SYS_TIME": _names("settimeofday stime clock_settime"),
    "SYS_TTY_CONFIG": _names("vhangup"),
    "SYS_NICE": _names("get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
    "SYSLOG": _names("syslog"),
    "BPF": _names("bpf"),
    "PERFMON": _names("perf_event_open"),
}

#: clone without CAP_SYS_ADMIN: allowed unless it asks for new namespaces (CLONE_NEW*).
CLONE_NAMESPACE_FLAGS = 0x7E020000
#: personality(2) values Docker allows; socket(2) families it refuses (AF_VSOCK).
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
AF_VSOCK = 40


def policy(capabilities: Iterable[str]) -> set[str]:
    """The names a container with these capabilities may call without conditions."""
    names = set(ALLOWED)
    for cap in capabilities:
        names.update(BY_CAPABILITY.get(cap, ()))
    return names


# -- classic BPF, by hand ---------------------------------------------------------------------
# An instruction is (code, jump-if-true, jump-if-false, k); jumps count instructions to skip.
# seccomp_data: int nr at offset 0, u32 arch at 4, u64 ip at 8, u64 args[6] at 16.

LD_W_ABS, JEQ_K, JGE_K, JGT_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x25, 0x45, 0x06
NR, ARCH, ARG0_LOW, ARG0_HIGH = 0, 4, 16, 20

Insn = tuple[int, int, int, int]


def _ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted runs of consecutive numbers: [(lo, hi), ...]."""
    runs: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def program(machine: str, capabilities: Iterable[str]) -> list[Insn]:
    """Docker's default profile, for one machine and capability set, as a BPF program."""
    audit_arch, table = ARCHES[machine]
    caps = set(capabilities)
    allowed = {table[n] for n in policy(caps) if n in table}
    deny = (RET_K, 0, 0, RET_ERRNO | errno.EPERM)
    allow = (RET_K, 0, 0, RET_ALLOW)
    out: list[Insn] = [
        (LD_W_ABS, 0, 0, ARCH),
        (JEQ_K, 1, 0, audit_arch),  # this machine's own table, or nothing
        (RET_K, 0, 0, RET_ERRNO | errno.EPERM),
        (LD_W_ABS, 0, 0, NR),
    ]
    if machine == "x86_64":
        out += [(JGE_K, 0, 1, X32_SYSCALL_BIT), deny]
    # Calls allowed only for some arguments: check the number, then the first argument.
    special: list[tuple[int, list[Insn]]] = [
        (table["socket"], [(JEQ_K, 0, 1, AF_VSOCK), deny, allow]),
        (table["personality"], [*((JEQ_K, len(PERSONALITIES) - i, 0, p)
                                   for i, p in enumerate(PERSONALITIES)), deny, allow]),
    ]  # fmt: skip
    if "SYS_ADMIN" not in caps:
        allowed -= {table["clone"], table["clone3"]}
        special += [
            (table["clone"], [(JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS), deny, allow]),
            (table["clone3"], [(RET_K, 0, 0, RET_ERRNO | errno.ENOSYS)]),  # glibc falls back
        ]
    for nr, body in special:
        allowed.discard(nr)
        argument = [(LD_W_ABS, 0, 0, ARG0_LOW)] if body[0][0] != RET_K else []
        block = argument + body
        out += [(JEQ_K, 0, len(block), nr), *block]
    for lo, hi in _ranges(allowed):  # sorted: a number below this run is in no later one
        out += [(JGE_K, 1, 0, lo), deny, (JGT_K, 1, 0, hi), allow]
    out.append(deny)
    return out


def assemble(insns: list[Insn]) -> bytes:
    """struct sock_filter[]: u16 code, u8 jt, u8 jf, u32 k, in the machine's byte order."""
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
_libc = ctypes.CDLL(None, use_errno=True)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@stage("seccomp", fix="to run without the filter, set {seccomp_unconfined}")
def load(capabilities: Iterable[str]) -> None:
    """Install Docker's default filter on this process (and, after exec, its command).

    Without no_new_privs this needs CAP_SYS_ADMIN, so it runs before capabilities drop.
    """
    insns = program(os.uname().machine, capabilities)
    code = ctypes.create_string_buffer(assemble(insns))
    prog = _Fprog(len(insns), ctypes.cast(code, ctypes.c_void_p))
    ret = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0)
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP) failed: {os.strerror(err)}")
