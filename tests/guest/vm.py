"""Boot the learner's VM image under qemu, with software emulation (no KVM here).

The guest's own kernel and initrd, the image as a virtio disk opened with ``snapshot=on`` (the
cached image is never written; changes go to a temporary file that qemu deletes), the
checkout shared over 9p at the path Vagrant's synced folder uses, a second 9p share for
results, and qemu's user network with ``restrict=on``: the guest reaches nothing outside,
and the one way in is JupyterLab's port, forwarded from 127.0.0.1 on the host, as Vagrant's
``host_ip: "127.0.0.1"`` forward does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: In the qemu command line, so a stray VM is visible to tests/leakcheck.py (it mentions labkit).
VM_NAME = "labkit-learner-vm"
MEMORY_MB = 4096  # what vagrant/Vagrantfile gives the learner's VM
CPUS = 2
GUEST_PORT = 8888
COMMON_ARGS = ("systemd.unified_cgroup_hierarchy=1", "labkit.ci=1", "panic=-1")
#: Under TCG, udev loading drivers for emulated PC hardware the lab never uses (SATA, CD-ROM,
#: i2c, kvm, SIMD crypto self-tests) is a large part of the boot.
X86_FAST_BOOT = (
    "cryptomgr.notests",
    "modprobe.blacklist=ahci,libahci,libata,sr_mod,cdrom,sg,i2c_i801,i2c_smbus,lpc_ich,"
    "iTCO_wdt,iTCO_vendor_support,intel_pmc_bxt,pcspkr,psmouse,serio_raw,evdev,kvm,kvm_amd,"
    "kvm_intel,irqbypass,ccp",
)
QEMU = {
    "amd64": (
        "qemu-system-x86_64",
        ["-accel", "tcg", "-cpu", "max"],
        ("console=ttyS0", *X86_FAST_BOOT),
    ),
    "arm64": (
        "qemu-system-aarch64",
        ["-M", "virt", "-accel", "tcg,thread=multi", "-cpu", "max,pauth-impdef=on"],
        ("console=ttyAMA0",),
    ),
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(
    image: Path,
    arch: str,
    port: int | None,
    repo: Path,
    share: Path,
    console: Path,
    snapshot: bool = True,
) -> list:
    """qemu's command line. ``port``: the host port JupyterLab is forwarded from (None: no
    way in at all); ``snapshot``: keep ``image`` unchanged (False only while building it)."""
    binary, machine, console_args = QEMU[arch]
    nic = "user,model=virtio-net-pci,restrict=on"
    if port is not None:
        nic += f",hostfwd=tcp:127.0.0.1:{port}-:{GUEST_PORT}"
    drive = f"file={image / 'disk.img'},if=virtio,format=raw" + (",snapshot=on" if snapshot else "")
    append = " ".join(("root=/dev/vda", "rw", *console_args, *COMMON_ARGS))
    virtfs = "local,path={},mount_tag={},security_model=passthrough,id={}"
    return [
        binary,
        "-name",
        VM_NAME,
        *machine,
        "-smp",
        str(CPUS),
        "-m",
        str(MEMORY_MB),
        "-nographic",
        "-monitor",
        "none",
        "-no-reboot",
        "-kernel",
        str(image / "vmlinuz"),
        "-initrd",
        str(image / "initrd.img"),
        "-append",
        append,
        "-drive",
        drive,
        "-nic",
        nic,
        "-virtfs",
        virtfs.format(repo, "labkit", "labkit"),
        "-virtfs",
        virtfs.format(share, "labkit-ci", "labkitci"),
        "-device",
        "virtio-rng-pci",
        "-serial",
        f"file:{console}",
    ]


class VM:
    """One qemu process; ``stop`` ends it (politely first) and is safe to call twice."""

    def __init__(self, argv: list, log: Path, tmpdir: Path) -> None:
        if shutil.which(argv[0]) is None:
            pkg = "qemu-system-arm" if "aarch64" in argv[0] else "qemu-system-x86"
            raise RuntimeError(f"no {argv[0]} (fix: apt-get install {pkg})")
        self.started = time.monotonic()
        # snapshot=on keeps the guest's writes in a temp file under TMPDIR: beside the cache.
        env = {**os.environ, "TMPDIR": str(tmpdir)}
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # qemu: like pulling the plug, cleanly
            if self.wait(20) is None:
                self.proc.kill()
                self.proc.wait()
