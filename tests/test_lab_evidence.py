"""labkit.lab.evidence: what notebook comparisons between the host and a container rest on, fed
the real output of the host's tools and of busybox's (run chrooted into the image, in a child
process)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from labkit.lab import evidence

pytestmark = pytest.mark.usefixtures("needs_root")


def _out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _pretty(text: str) -> str:
    line = next(ln for ln in text.splitlines() if ln.startswith("PRETTY_NAME="))
    return line.split("=", 1)[1].strip('"')


def test_os_release_name(busybox_rootfs: Path) -> None:
    host = Path("/etc/os-release").read_text()
    assert evidence.os_release_name(host) == _pretty(host)
    image = (busybox_rootfs / "etc/os-release").read_text()
    assert evidence.os_release_name(image) == _pretty(image)
    assert evidence.os_release_name(image.splitlines()[0]) == "labkit busybox"  # NAME= only
    assert evidence.os_release_name("NAME=Alpine\n") == "Alpine"
    assert evidence.os_release_name("") == ""


def test_gist_compares_interfaces_by_name_and_the_rest_as_text(busybox_rootfs: Path) -> None:
    host = _out("ip", "link", "show", "lo")
    inside = _out("chroot", str(busybox_rootfs), "ip", "link", "show", "lo")
    assert host != inside  # different tools, different details
    assert evidence.gist(host) == evidence.gist(inside) == ["lo"]
    assert evidence.gist("vm\n") == "vm"
    assert evidence.gist("ip: can't find device 'eth9'\n") == "ip: can't find device 'eth9'"


def test_main_interface_is_one_of_the_hosts() -> None:
    name = evidence.main_interface()
    assert name in os.listdir("/sys/class/net")
    default = _out("ip", "route", "show", "default").split()
    if "dev" in default:
        assert name == default[default.index("dev") + 1]


def test_rooted_at_finds_a_chrooted_process(busybox_rootfs: Path) -> None:
    sleeper = subprocess.Popen(["chroot", str(busybox_rootfs), "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while sleeper.pid not in evidence.rooted_at(busybox_rootfs):
            assert time.monotonic() < deadline, "the chrooted sleep never showed up"
            time.sleep(0.02)
        assert os.getpid() not in evidence.rooted_at(busybox_rootfs)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sleeper.pid not in evidence.rooted_at(busybox_rootfs)
