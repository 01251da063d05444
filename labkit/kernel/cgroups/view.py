"""What a container sees at /sys/fs/cgroup: its own cgroups, read-only, as under Docker.

Programs look there for their limits (a JVM or a Go runtime sizes its heap and threads from
memory.max and cpu.max), so a runtime mounts the cgroup filesystem inside. In a cgroup
namespace the kernel roots a fresh cgroup mount at the namespace's cgroup, the container's
own: inside, ``/sys/fs/cgroup/memory.max`` (v2) or ``/sys/fs/cgroup/memory/
memory.limit_in_bytes`` (v1) is the container's limit, and no other cgroup is in sight.

* **v2**: one ``cgroup2`` mount at /sys/fs/cgroup.
* **v1**: a small tmpfs at /sys/fs/cgroup with one ``cgroup`` mount per hierarchy under it,
  named as on the host (cpu, memory, pids ..., systemd). The v2 tree of a hybrid host is left
  out, as Docker does.

Without a cgroup namespace (or in a user namespace, where v1 cannot be mounted) a fresh mount
would show the host's whole tree, so the container's own directories are bind-mounted
instead, as runc does; their mount then names the host path (/labkit/<id>) in mountinfo,
which is the difference a cgroup namespace makes. Read-only unless privileged, as Docker.
"""

from __future__ import annotations

from pathlib import Path

from labkit.kernel import cgroups, syscalls
from labkit.kernel.stage import stage
from labkit.kernel.syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT

FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC


@stage("mount /sys/fs/cgroup", fix="check the cgroup filesystems are mounted on the host: {doctor}")
def mount_cgroups(rootfs: Path, own: list[str], fresh: bool = True, read_only: bool = True) -> None:
    """Mount the container's cgroups at ``rootfs``/sys/fs/cgroup (after /sys is mounted).

    ``own`` are the container's cgroup directories on the host; ``fresh`` (in its own cgroup
    namespace, no user namespace) mounts the filesystems, else ``own`` is bind-mounted.
    """
    layout = cgroups.detect()
    target = rootfs / "sys" / "fs" / "cgroup"
    ro = MS_RDONLY if read_only else 0
    if layout.kind == "unified":
        if fresh:
            syscalls.mount("cgroup2", target, "cgroup2", FLAGS | ro)
        elif own:
            _bind(Path(own[0]), target, ro)
        return
    syscalls.mount("tmpfs", target, "tmpfs", FLAGS, "mode=755,size=64k")
    for options, host_mount in layout.v1_mounts:
        name = Path(host_mount).name
        if fresh:
            (target / name).mkdir()
            controllers = ",".join(o for o in options.split(",") if o not in ("rw", "ro"))
            syscalls.mount("cgroup", target / name, "cgroup", FLAGS | ro, controllers)
        else:
            mine = [Path(p) for p in own if Path(p).is_relative_to(host_mount)]
            if mine:
                (target / name).mkdir()
                _bind(mine[0], target / name, ro)
    if read_only:  # the directories are made: nothing more to write in the tmpfs
        syscalls.mount(None, target, None, MS_REMOUNT | FLAGS | MS_RDONLY)


def _bind(source: Path, target: Path, ro: int) -> None:
    syscalls.mount(source, target, None, MS_BIND)
    if ro:  # a bind mount takes new flags only in a second, remounting call
        syscalls.mount(None, target, None, MS_REMOUNT | MS_BIND | FLAGS | ro)
