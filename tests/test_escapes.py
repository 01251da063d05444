"""The escape suite: each classic break-out, with every defence off, under the defaults, and
under each of its defences alone, beside Docker's default on the same host.

With every defence off each probe must succeed, which shows the probe really works and so
that its failure elsewhere means something. Probes are harmless: they read a canary file the
test planted, or open a file for writing without writing; the files they probe are checked
unchanged afterwards. (The inherited descriptor, TIOCSTI and chroot probes are in
tests/test_boundary.py, with their own positive controls.)
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _env

from labkit import docker
from labkit.kernel import syscall_numbers
from labkit.lab.escape_probes import file_handle, filesystem_of

pytestmark = pytest.mark.usefixtures("needs_root")

#: Docker's flag that turns each defence off, and nothing else.
OFF = {
    "capabilities": ("--cap-add", "ALL"),
    "seccomp": ("--security-opt", "seccomp=unconfined"),
    "masks": ("--security-opt", "systempaths=unconfined"),
    "devices": ("--device-cgroup-rule", "a *:* rwm"),
}


def defences(on: str | None) -> tuple[str, ...]:
    """Flags for a run with every defence off except ``on`` (None: all off)."""
    return tuple(flag for name, flags in OFF.items() if name != on for flag in flags)


@dataclass
class Probe:
    name: str
    script: str  # run with sh -c in the container
    escaped: Callable[[str], bool]  # did it work, judging by stdout
    stopped_by: tuple[str, ...]  # the defences that each stop it alone
    image: str = "busybox"
    rootfs: Path | None = None  # run on this directory of ours instead of the image


@pytest.fixture(scope="module")
def canary() -> Iterator[tuple[Path, str]]:
    """A file on the host's root filesystem (the one the images live on) with a random token."""
    directory = Path(f"/var/tmp/labkit-canary-{secrets.token_hex(4)}")
    directory.mkdir()
    token = f"labkit-canary-{secrets.token_hex(8)}"
    (directory / "canary").write_text(token + "\n")
    yield directory / "canary", token
    (directory / "canary").unlink()
    directory.rmdir()


@pytest.fixture(scope="module")
def debian_copy(canary) -> Iterator[Path]:
    """A copy of the debian image on the canary's filesystem, used as a root of our own.

    The shocker escape needs a descriptor on the host's disk to decode its handle with. A
    container of an image has none: its root is an overlay (which decodes no handles) and
    labkit does not yet bind-mount /etc/hosts from the host's disk as Docker does. A
    directory of your own is bind-mounted as it is, so its "/" is on the host's disk."""
    from labkit.images.store import image_rootfs

    copy = canary[0].parent / "debian"
    subprocess.run(["cp", "-a", str(image_rootfs("debian")), str(copy)], check=True)
    yield copy
    shutil.rmtree(copy)


def probes(canary: tuple[Path, str], debian_copy: Path | None = None) -> list[Probe]:
    path, token = canary
    major, minor, fstype, inside = filesystem_of(path)
    size, kind, data = file_handle(path)
    table = getattr(syscall_numbers, os.uname().machine.upper())
    shocker = (
        """perl -e 'open(my $r, "<", "/") or die; """
        f"""my $h = pack("Ii", {size}, {kind}) . pack("H*", "{data}"); """
        f"""my $fd = syscall({table["open_by_handle_at"]}, fileno($r), $h, 0); """
        """if ($fd < 0) { print "refused: $!\\n"; exit 1 } """
        """open(my $f, "<&=", $fd); print <$f>;'"""
    )
    # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): a look at the kernel's
    # keyring, which needs no capability and which Docker's seccomp profile refuses.
    keyring = (
        f"""perl -e '$! = 0; my $id = syscall({table["keyctl"]}, 0, -3, 0); """
        """print $id > 0 ? "keyring $id\\n" : "refused: $!\\n"'"""
    )
    return [
        Probe(
            "mount the host's disk",
            f"mkdir -p /tmp/m && mknod /dev/lk-disk b {major} {minor} && "
            f"mount -t {fstype} /dev/lk-disk /tmp/m && cat /tmp/m/{inside}; umount /tmp/m",
            lambda out: token in out,
            # (seccomp lets mount through for a container with CAP_SYS_ADMIN, as Docker's
            # profile does; the device rules are not asked: the mounted disk's superblock is
            # found by its number, without opening the node)
            ("capabilities",),
        ),
        Probe(
            "open a device node made inside",
            "mknod /dev/lk-fuse c 10 229 && exec 3</dev/lk-fuse && echo opened",
            lambda out: "opened" in out,
            ("devices",),
        ),
        Probe(
            "open core_pattern for writing",
            ": >> /proc/sys/kernel/core_pattern && echo opened",
            lambda out: "opened" in out,
            ("masks",),
        ),
        Probe(
            'the "shocker" file-handle escape',
            shocker,
            lambda out: token in out,
            ("capabilities",),  # (seccomp allows it to a container with DAC_READ_SEARCH)
            image="debian",
            rootfs=debian_copy,
        ),
        Probe(
            "use the kernel keyring",
            keyring,
            lambda out: out.startswith("keyring"),
            ("seccomp",),
            image="debian",
        ),
        Probe(
            "remount /sys read-write",
            "mount -o remount,rw /sys && echo remounted",
            lambda out: "remounted" in out,
            ("capabilities",),
        ),
        Probe(
            "new namespaces with unshare",
            "unshare -u true && echo unshared",
            lambda out: "unshared" in out,
            ("capabilities",),
        ),
        Probe(
            "mount proc and tmpfs",
            "mkdir -p /tmp/p && mount -t proc proc /tmp/p && mount -t tmpfs t /tmp/p && echo ok",
            lambda out: "ok" in out,
            ("capabilities",),
        ),
        Probe(
            "read the host's kernel log",
            "dmesg > /dev/null && echo read",  # (nothing of it is shown)
            lambda out: "read" in out,
            ("capabilities",),
        ),
    ]


def _labkit(probe: Probe, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "labkit.cli", "run",
         *(("--rootfs", str(probe.rootfs)) if probe.rootfs else ("--image", probe.image)),
         *flags, "--", "sh", "-c", probe.script],
        cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def probe_list(canary, debian_copy) -> list[Probe]:
    return probes(canary, debian_copy)


@pytest.fixture(scope="module", autouse=True)
def _host_files_unchanged() -> Iterator[None]:
    watched = [Path("/proc/sys/kernel/core_pattern"), Path("/proc/sys/kernel/dmesg_restrict")]
    before = [p.read_text() for p in watched]
    yield
    assert [p.read_text() for p in watched] == before, "a probe changed a host file"


NAMES = [
    "mount the host's disk", "open a device node made inside", "open core_pattern for writing",
    'the "shocker" file-handle escape', "use the kernel keyring", "remount /sys read-write",
    "new namespaces with unshare", "mount proc and tmpfs", "read the host's kernel log",
]  # fmt: skip


def test_every_probe_is_in_the_suite(probe_list) -> None:
    assert [p.name for p in probe_list] == NAMES


def _probe(probe_list: list[Probe], name: str) -> Probe:
    return next(p for p in probe_list if p.name == name)


@pytest.mark.parametrize("name", NAMES)
def test_with_every_defence_off_the_probe_escapes(probe_list, name: str) -> None:
    probe = _probe(probe_list, name)
    done = _labkit(probe, *defences(None))
    assert probe.escaped(done.stdout), f"the probe does not work: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("name", NAMES)
def test_the_defaults_stop_it(probe_list, name: str) -> None:
    probe = _probe(probe_list, name)
    done = _labkit(probe)
    assert not probe.escaped(done.stdout), done.stdout


@pytest.mark.parametrize(
    ("name", "defence"),
    [(n, d) for n in NAMES for d in ("capabilities", "seccomp", "masks", "devices")],
)
def test_each_named_defence_alone_stops_it(probe_list, name: str, defence: str) -> None:
    probe = _probe(probe_list, name)
    if defence not in probe.stopped_by:
        return  # (that defence is not what stops this probe: nothing to show)
    done = _labkit(probe, *defences(defence))
    assert not probe.escaped(done.stdout), f"{defence} alone did not stop it: {done.stdout}"


@pytest.mark.parametrize("name", NAMES)
def test_docker_refuses_it_too(probe_list, name: str) -> None:
    probe = _probe(probe_list, name)
    done = docker.run("run", "--rm", f"labkit/{probe.image}", "sh", "-c", probe.script, check=False)
    assert not probe.escaped(done.stdout), f"Docker let it through: {done.stdout}"


def test_no_host_program_is_visible_in_the_container() -> None:
    """The /proc/self/exe overwrite class (CVE-2019-5736) needs a host binary running inside
    the container's PID namespace. labkit's helper becomes the container's command by exec,
    so PID 1 is the image's own program: there is no host binary to open."""
    done = subprocess.run(
        [PYTHON, "-m", "labkit.cli", "run", "--", "sh", "-c", "readlink /proc/1/exe; ls /proc"],
        cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    exe, listing = done.stdout.split("\n", 1)
    assert exe == "/bin/busybox"
    pids = sorted(int(p) for p in listing.split() if p.isdigit())
    assert pids[0] == 1 and len(pids) <= 2, f"only sh (and ls): {pids}"
