#!/usr/bin/env python3
"""Build the learner's VM as a disk image, from Debian's packages alone, and cache it.

The learner's first command is ``vagrant up`` on a Debian 13 box; CI has no hypervisor and no
box downloads, so it builds the same machine here: debootstrap of a Debian 13 (trixie) root
with systemd as PID 1 and the distribution kernel, then ``vagrant/provision.sh --no-server``
run in a chroot of it, which installs every package and the lab's venv (so the booted guest
needs no network: provisioning at boot finds everything there, exactly as on an instructor's
offline box). The checkout is bind-mounted at /home/vagrant/labkit, where Vagrant's synced
folder puts it, for the editable install. The tree becomes an ext4 image with ``mkfs.ext4 -d``.

Then the image boots once under qemu, and provision.sh runs in it as ``vagrant up`` runs it
(the Vagrantfile's PROVISION_ARGS), under systemd and without network: Docker and JupyterLab
become units, the images go into Docker, a token is made. The cached image is that box, right
after its first ``vagrant up``; each CI run boots it and provisions again (``vagrant
provision``: idempotent, offline). A failed first provisioning fails the build.

The image is cached under CACHE/<arch>/<key>/, keyed by what it is made of (this file,
build_root.sh, vm.py, guest.sh, vagrant/provision.sh, pyproject.toml, the Vagrantfile's
provision args, the suite and the package list), so the next run on the same machine only
boots it. Older keys of the same arch are removed.

    python tests/guest/image.py [--arch amd64|arm64] [--rebuild] [--key]

Prints the cache directory (disk.img, vmlinuz, initrd.img, build.json). Standard library
only; run as root. arm64 is built through qemu-user (binfmt_misc is mounted and an
``qemu-aarch64`` entry registered for the build only, and both are undone afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("LABKIT_GUEST_CACHE", "/var/cache/labkit-guest"))
SUITE = "trixie"
MIRROR = os.environ.get("LABKIT_GUEST_MIRROR", "http://deb.debian.org/debian")
#: Where Vagrant's synced folder puts the checkout (vagrant/Vagrantfile: REPO_IN_GUEST).
REPO_IN_GUEST = "/home/vagrant/labkit"
DISK_SIZE = "10G"

#: What debootstrap installs: a bootable systemd machine, like a Vagrant box before
#: provisioning. Everything the lab needs on top is installed by vagrant/provision.sh.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "procps",
    "sudo",
    "ca-certificates",
    "python3",
    "python3-venv",
)
KERNEL_PACKAGE = {"amd64": "linux-image-amd64", "arm64": "linux-image-arm64"}
#: The kernel's name for each Debian architecture.
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
#: Files whose content decides the image.
KEY_FILES = (
    "tests/guest/image.py",
    "tests/guest/build_root.sh",
    "tests/guest/vm.py",
    "tests/guest/guest.sh",
    "vagrant/provision.sh",
    "pyproject.toml",
)
#: How long the first boot (booting, then provisioning under emulation) may take.
FIRST_BOOT_TIMEOUT = {"amd64": 2400, "arm64": 5400}
#: The binfmt_misc entry for arm64 binaries (qemu's own magic and mask for aarch64 ELF). F:
#: the interpreter is opened now, so it works inside the chroot too.
BINFMT_NAME = "labkit-qemu-aarch64"
BINFMT_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
BINFMT_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


class BuildError(Exception):
    """The image could not be built; the message says which step and why."""


def provision_args() -> list[str]:
    """The args the Vagrantfile gives provision.sh, read from the Vagrantfile itself."""
    text = (REPO / "vagrant" / "Vagrantfile").read_text()
    consts = dict(re.findall(r'^([A-Z_]+) = "([^"]*)"$', text, re.M))
    listed = re.search(r"^PROVISION_ARGS = \[(.*?)\]", text, re.M | re.S)
    if not listed or "args: PROVISION_ARGS" not in text:
        raise BuildError("vagrant/Vagrantfile has no PROVISION_ARGS for provision.sh")
    args = []
    for token in re.findall(r'"[^"]*"|[A-Z_]+', listed.group(1)):
        args.append(token.strip('"') if token.startswith('"') else consts[token])
    return args


def host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def cache_key(arch: str) -> str:
    """A hash of everything the image is made of."""
    digest = hashlib.sha256()
    for rel in KEY_FILES:
        digest.update(rel.encode() + b"\0" + (REPO / rel).read_bytes() + b"\0")
    digest.update(
        json.dumps(
            [arch, SUITE, BASE_PACKAGES, KERNEL_PACKAGE[arch], DISK_SIZE, provision_args()]
        ).encode()
    )
    return digest.hexdigest()[:16]


def cached(arch: str) -> Path | None:
    """The cache directory of a complete image for the current key, or None."""
    d = CACHE / arch / cache_key(arch)
    return d if (d / "build.json").is_file() else None


def log(msg: str) -> None:
    print(f"[image {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(argv: list[str], what: str, **kw) -> None:
    """Run one build step; a failure names the step."""
    done = subprocess.run(argv, **kw)
    if done.returncode != 0:
        raise BuildError(f"{what} failed (exit {done.returncode}): {' '.join(argv[:6])} ...")


@contextlib.contextmanager
def arm64_binfmt() -> Iterator[None]:
    """Let this amd64 host run arm64 binaries (in the chroot) for the build only.

    binfmt_misc is mounted if it is not, one entry is registered, and both are undone on the
    way out, so the host's settings are as they were."""
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        raise BuildError("no qemu-aarch64-static (fix: apt-get install qemu-user-static)")
    mounted_here = not (BINFMT_DIR / "register").exists()
    if mounted_here:
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mount binfmt_misc")
    entry = BINFMT_DIR / BINFMT_NAME
    try:
        if not entry.exists():
            rule = f":{BINFMT_NAME}:M::{BINFMT_MAGIC}:{BINFMT_MASK}:{qemu}:F"
            (BINFMT_DIR / "register").write_text(rule)
        log(f"binfmt_misc: {BINFMT_NAME} registered for the build ({qemu})")
        yield
    finally:
        if entry.exists():
            entry.write_text("-1")
        if mounted_here:
            subprocess.run(["umount", str(BINFMT_DIR)], check=False)
        log("binfmt_misc: registration removed" + (", unmounted" if mounted_here else ""))


def snapshot_repo(dest: Path) -> Path:
    """A copy of the checkout (no .git, caches or working copies), so the build never writes
    into the developer's tree (pip writes egg-info, provision writes work/)."""
    ignore = shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", ".ruff_cache", ".pytest_cache", "work", ".vagrant"
    )
    shutil.copytree(REPO, dest, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    return dest


def build(arch: str) -> Path:
    """Build the image for ``arch`` into the cache and return its directory."""
    key = cache_key(arch)
    final = CACHE / arch / key
    arch_dir = CACHE / arch
    arch_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=arch_dir))
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        root = work / "root"
        root.mkdir()
        repo_copy = snapshot_repo(work / "repo")
        ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
        host_images = Path("/var/lib/labkit/images")
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "ROOT": str(root),
            "ARCH": arch,
            "SUITE": SUITE,
            "MIRROR": MIRROR,
            "INCLUDE": ",".join((*BASE_PACKAGES, KERNEL_PACKAGE[arch])),
            "REPO_COPY": str(repo_copy),
            "REPO_IN_GUEST": REPO_IN_GUEST,
            "HOST_CA": str(ca) if ca.is_file() else "",
            # The host's base images hold the host's binaries: only for a guest of its arch
            # (for another, provision.sh builds them in the chroot, through qemu-user).
            "HOST_IMAGES": str(host_images)
            if (host_images / "busybox").is_dir() and arch == host_arch()
            else "",
            "TIMINGS": str(work / "timings"),
        }
        needs_binfmt = arch != host_arch()
        with arm64_binfmt() if needs_binfmt else contextlib.nullcontext():
            # A private mount namespace: every mount made for the chroot vanishes with it,
            # whatever happens half way.
            run(
                ["unshare", "--mount", "--propagation", "private", "bash", HERE / "build_root.sh"],
                "build_root.sh",
                env=env,
            )
        for line in (work / "timings").read_text().splitlines():
            name, _, seconds = line.partition(" ")
            timings[name] = float(seconds)
        t = time.monotonic()
        kernel = sorted(root.glob("boot/vmlinuz-*"))
        initrd = sorted(root.glob("boot/initrd.img-*"))
        if not kernel or not initrd:
            raise BuildError(f"no kernel or initrd in {root}/boot")
        shutil.copy2(kernel[-1], work / "vmlinuz")
        shutil.copy2(initrd[-1], work / "initrd.img")
        disk = work / "disk.img"
        run(
            ["mkfs.ext4", "-q", "-F", "-L", "labkit-root", "-d", str(root), str(disk), DISK_SIZE],
            "mkfs.ext4 -d",
        )
        timings["mkfs"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        first = first_boot(work, arch, repo_copy)
        timings["first_boot"] = round(time.monotonic() - t, 1)
        info = {
            "arch": arch,
            "key": key,
            "suite": SUITE,
            "kernel": kernel[-1].name.removeprefix("vmlinuz-"),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - started, 1),
            "timings": timings,
            "disk_bytes_used": disk.stat().st_blocks * 512,
            "first_boot": first,
            "packages": (root / "var/lib/labkit-guest-packages").read_text().split()
            if (root / "var/lib/labkit-guest-packages").exists()
            else [],
        }
        shutil.rmtree(root)
        shutil.rmtree(repo_copy)
        (work / "timings").unlink()
        (work / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for old in arch_dir.iterdir():  # one image per arch: the current key's
        if old != final and not old.name.startswith(".build-"):
            shutil.rmtree(old, ignore_errors=True)
    log(f"{arch} image built in {info['seconds']} s: {final}")
    return final


def first_boot(work: Path, arch: str, repo_copy: Path) -> dict:
    """Boot the new image once and provision it there as ``vagrant up`` does (guest.sh in
    its first-boot mode); its logs stay in WORK/first-boot. Returns the guest's steps."""
    import vm

    share = work / "first-boot"
    share.mkdir()
    (share / "mode").write_text("first-boot\n")
    (share / "provision-args").write_text(" ".join(provision_args()) + "\n")
    argv = vm.command(work, arch, None, repo_copy, share, work / "first-boot.console.log", False)
    log(f"first boot: provisioning as vagrant up does ({arch}, tcg)")
    machine = vm.VM(argv, work / "first-boot.qemu.log", work)
    try:
        rc = machine.wait(FIRST_BOOT_TIMEOUT[arch])
    finally:
        machine.stop()
    steps = {}
    if (share / "steps.jsonl").exists():
        for line in (share / "steps.jsonl").read_text().splitlines():
            row = json.loads(line)
            steps[row["step"]] = row
    facts = {p.name.removeprefix("fact."): p.read_text().strip() for p in share.glob("fact.*")}
    if rc != 0 or steps.get("provision", {}).get("rc") != 0:
        tail = (share / "provision.log").read_text()[-3000:] if (
            share / "provision.log").exists() else "(no provision.log)"  # fmt: skip
        raise BuildError(
            f"the first boot's provisioning failed (qemu exit {rc}, steps {steps}); "
            f"console: {work / 'first-boot.console.log'}\n{tail}"
        )
    log(f"first boot: provisioned in {steps['provision']['seconds']} s")
    return {"steps": steps, "facts": facts}


def ensure(arch: str, rebuild: bool = False) -> Path:
    """The cached image for ``arch``, built first if there is none for the current key."""
    found = None if rebuild else cached(arch)
    if found is not None:
        log(f"{arch}: cached image {found}")
        return found
    return build(arch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(KERNEL_PACKAGE), default=host_arch())
    parser.add_argument("--rebuild", action="store_true", help="ignore the cache")
    parser.add_argument("--key", action="store_true", help="print the cache key and exit")
    args = parser.parse_args(argv)
    if args.key:
        print(cache_key(args.arch))
        return 0
    if os.geteuid() != 0:
        print("image.py: needs root (debootstrap, chroot, mounts)", file=sys.stderr)
        return 2
    try:
        print(ensure(args.arch, rebuild=args.rebuild))
    except BuildError as err:
        print(f"image.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
