"""labkit.kernel.procfs: the one reader of /proc, against real processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import wait_until

from labkit.kernel import procfs


def test_mountinfo_parsing() -> None:
    text = (
        "22 1 0:21 / / rw shared:1 - ext4 /dev/sda1 rw\n"
        "23 22 0:22 / /a\\040b rw master:3 unbindable - tmpfs my\\040src rw,size=4k\n"
        "24 22 0:22 / /a\\040b rw - proc proc rw\n"
        "garbage\n"
    )
    root, spaced, on_top = procfs.parse_mountinfo(text)
    assert (root.target, root.fstype, root.source, root.propagation) == (
        "/", "ext4", "/dev/sda1", "shared"
    )  # fmt: skip
    assert (spaced.target, spaced.source, spaced.super_options) == ("/a b", "my src", "rw,size=4k")
    assert spaced.propagation == "private,slave,unbindable"
    assert on_top.propagation == "private" and on_top.mount_id == 24


def test_our_own_mount_table_has_a_root() -> None:
    assert any(m.target == "/" for m in procfs.mountinfo())
    assert procfs.mountinfo(2**22 + 1) == []


def test_start_time_parses_odd_command_names(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    plain = subprocess.Popen(["sleep", "1000"])
    weird = subprocess.Popen([str(odd), "1000"])
    try:
        assert wait_until(lambda: procfs.comm(weird.pid) == "a) b (c")
        t_plain, t_weird = procfs.start_time(plain.pid), procfs.start_time(weird.pid)
        assert t_plain is not None and t_weird is not None
        ticks = os.sysconf("SC_CLK_TCK")
        assert 0 <= t_weird - t_plain < 10 * ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        assert abs(t_weird / ticks - uptime) < 10
        assert procfs.cmdline(weird.pid) == [str(odd), "1000"]
    finally:
        for p in (plain, weird):
            p.kill()
            p.wait()
    assert procfs.start_time(plain.pid) is None
    assert procfs.status(plain.pid) == {} and procfs.cmdline(plain.pid) == []


def test_a_process_ref_survives_nothing_but_its_own_process() -> None:
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        ref = procfs.ProcessRef.of(sleeper.pid)
        assert ref is not None and ref.is_alive()
        assert not ref._replace(start_time=ref.start_time + 1).is_alive(), "a reused PID"
        assert not ref._replace(boot_id="another boot").is_alive(), "an earlier boot"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not ref.is_alive()


def test_namespace_inodes_and_cgroups_of_self() -> None:
    assert procfs.ns_inode("self", "uts") == os.stat("/proc/self/ns/uts").st_ino
    assert procfs.ns_inode(2**22 + 1, "uts") is None
    paths = procfs.cgroups()
    assert paths and all(p.startswith("/") for p in paths.values())
    assert procfs.parse_cgroups("0::/a/b\n4:cpu,cpuacct:/x\n") == {"0": "/a/b", "cpu,cpuacct": "/x"}
