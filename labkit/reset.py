"""``labkit reset``: remove exactly what labkit made on this host, and nothing else.

Every kind of host object labkit creates has a small *finder* that lists the leftovers
of that kind and a *remover* that deletes one. Each finder only looks at labkit's own
directories (``paths.STATE_DIR``, ``paths.RUN_DIR``) or at names carrying the labkit tag,
so reset can never hit something it did not make. Later lab steps (network namespaces
``labkit-*``, links ``lk-*``, iptables chains ``LABKIT-*``, cgroups ``.../labkit``) add a
finder/remover pair to ``KINDS``; order matters: processes die before their mounts go,
and mounts go before the directories under them are deleted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.kernel.procfs import ProcessRef


@dataclass
class Leftover:
    """One host object labkit made: ``kind`` picks its remover, ``ref`` holds what it needs."""

    kind: str
    name: str
    detail: str
    ref: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Kind:
    """A kind of leftover: how to find them and how to remove one."""

    kind: str
    find: Callable[[], list[Leftover]]
    remove: Callable[[Leftover], None]
    data: bool = False  # True for things the user wants to keep (images): only with --images


# -- containers -------------------------------------------------------------------------------


def find_containers() -> list[Leftover]:
    """Every container record. A running container's PID 1 is matched by PID, start time
    and boot (never by PID alone); an unreadable record is a leftover too, unless it is a
    few seconds old (a container being created has a directory before its record)."""
    from labkit.runtime import records

    out = []
    for directory in records.directories():
        record = records.load(directory)
        if record is None:
            if _younger_than(directory, 10):
                continue  # another labkit is writing it right now
            ref = {"id": directory.name}
            out.append(Leftover("record", directory.name[:12], "unreadable record", ref))
            continue
        argv = " ".join(map(str, record.config.get("argv") or []))
        in_use = record.is_supervised()  # running without a supervisor: an orphan, left over
        if record.is_running():
            detail = f"pid {record.pid} running: {argv}"
        else:
            detail = f"{record.status}, no process (pid {record.pid or '-'} is gone)"
        if record.is_supervised():
            detail += " (its supervisor is alive)"
        process = record.process if record.is_running() else None
        ref = {"id": record.id, "process": process, "pid": record.pid, "in_use": in_use}
        out.append(Leftover("container", record.name, detail, ref))
    return out


def remove_container(item: Leftover) -> None:
    """SIGKILL its PID 1 if that is still the recorded process, then delete its directory:
    the record and the container's own layer (upper/, work/, init/), or the copy of its root.
    Its overlay was never mounted on the host (only in its own mount namespace, gone with
    it), so nothing needs unmounting first."""
    from labkit.kernel import cgroups
    from labkit.runtime import records

    process = item.ref.get("process")
    if process is not None:
        _kill(process)
    for group in cgroups.existing(item.ref["id"], cgroups.detect()):
        remove_cgroup(Leftover("cgroup", group.name[:12], "", {"path": str(group)}))
    records.remove(item.ref["id"])


def _kill(process: ProcessRef) -> None:
    """Kill through a pidfd opened *after* checking identity: the PID cannot be reused
    between the check and the signal, because an open pidfd pins the process."""
    import select

    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return
    try:
        if process.is_alive():
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            poller = select.poll()  # (not select(): a process with many files has fds > 1023)
            poller.register(pidfd, select.POLLIN)
            poller.poll(5000)  # readable once it has exited
    finally:
        os.close(pidfd)


# -- cgroups ----------------------------------------------------------------------------------


def find_cgroups() -> list[Leftover]:
    """labkit's cgroups (``<hierarchy>/labkit/<id>``) that no live container uses: the ones
    recorded for a container that is not supervised any more (its processes are killed),
    and empty ones nobody records (older than a few seconds: a container being created or
    removed by another labkit has one for a moment). A busy cgroup of a container this
    state directory does not know (another labkit, another test's state) is not touched."""
    from labkit.kernel import cgroups
    from labkit.runtime import records

    known = {r.id: r for r in records.all_records()}
    out = []
    for hierarchy in cgroups.hierarchies(cgroups.detect()):
        parent = hierarchy / cgroups.PARENT
        groups = sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
        for group in groups:
            record = known.get(group.name)
            if record is not None and record.is_supervised():
                continue
            if record is None and (_has_processes(group) or _younger_than(group, 10)):
                continue  # someone else's container, or one being made or removed right now
            detail = f"cgroup {group.relative_to(hierarchy.parent)}"
            out.append(Leftover("cgroup", group.name[:12], detail, {"path": str(group)}))
    return out


def _younger_than(path: Path, seconds: float) -> bool:
    import time

    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return True


def _has_processes(group: Path) -> bool:
    try:
        return bool((group / "cgroup.procs").read_text().strip())
    except OSError:
        return False


def remove_cgroup(item: Leftover) -> None:
    from labkit.kernel import cgroups

    group = Path(item.ref["path"])
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    if not cgroups.remove(group, timeout=5):
        raise OSError(f"{group} is still busy")


# -- networks (labkit.network.cleanup) --------------------------------------------------------


def find_network() -> list[Leftover]:
    """Networking leftovers: stale address leases, host ends of veths, networks no live
    container uses (bridge, rules, definition), labkit's iptables chains, ip_forward. The
    containers reset removes first count as gone already."""
    from labkit.network import cleanup
    from labkit.runtime import records

    going = [r.id for r in records.all_records()]
    return [Leftover(kind, name, detail, ref) for kind, name, detail, ref in cleanup.find(going)]


def remove_network(item: Leftover) -> None:
    from labkit.network import cleanup

    cleanup.remove(item.kind, item.ref)


# -- mounts -----------------------------------------------------------------------------------


def find_mounts() -> list[Leftover]:
    """Mounts in this (the host's) mount namespace whose mount point is in a labkit dir.

    Deepest first, and for stacked mounts on one point newest first, so detaching them in
    list order never leaves a parent busy with a child.
    """
    from labkit.kernel.mounts import mount_rows_under

    return [
        Leftover("mount", m.target, f"{m.fstype} from {m.source}", {"target": m.target})
        for m in mount_rows_under(paths.STATE_DIR, paths.RUN_DIR)
    ]


def remove_mount(item: Leftover) -> None:
    """umount2(MNT_DETACH): a lazy unmount succeeds even if something still uses it."""
    from labkit.kernel.syscalls import umount_detach

    umount_detach(item.ref["target"])


# -- files ------------------------------------------------------------------------------------


def find_image_tmp() -> list[Leftover]:
    """Half-built images (.tmp-*) from interrupted builds; a build running now is skipped."""
    from labkit.images.store import stale_builds

    return [
        Leftover("image-tmp", p.name, "interrupted image build", {"path": str(p)})
        for p in stale_builds()
    ]


def remove_path(item: Leftover) -> None:
    """Delete a file or tree, detaching mounts under it first (never rmtree into /proc)."""
    from labkit.kernel.mounts import remove_tree

    remove_tree(Path(item.ref["path"]))


def find_image_garbage() -> list[Leftover]:
    """In the OCI image store: temp files of killed pulls and loads, and blobs and layers no
    image names (a load killed after its blobs were in). Nothing while a pull runs."""
    from labkit.images.usage import garbage

    try:
        found = garbage()
    except (LabkitError, OSError, ValueError, KeyError):
        return []  # a damaged store: nothing is safe to collect; --images removes it whole
    return [
        Leftover("image-garbage", Path(p).name[:19], "unused by any image", {"path": p})
        for p in found
    ]


def remove_image_garbage(item: Leftover) -> None:
    """One collection removes it all (the other items are then gone already)."""
    from labkit.images.usage import collect

    if collect() is None:
        raise LabkitError("a pull or load is running", fix="run {reset} again when it is done")


# -- images (data: only with --images) ---------------------------------------------------------


def find_images() -> list[Leftover]:
    """Built images and build logs under IMAGES_DIR."""
    from labkit.images.store import TMP_PREFIX

    if not paths.IMAGES_DIR.is_dir():
        return []
    return [
        Leftover("image", p.name, "base image (data)", {"path": str(p)})
        for p in sorted(paths.IMAGES_DIR.iterdir())
        if not p.name.startswith(TMP_PREFIX)
    ]


def find_image_store() -> list[Leftover]:
    """The OCI image store and the unpacked layers (pulled and loaded images)."""
    return [
        Leftover("image-store", p.name, "pulled and loaded images (data)", {"path": str(p)})
        for p in (paths.OCI_DIR, paths.LAYERS_DIR)
        if p.exists()
    ]


def find_docker_images() -> list[Leftover]:
    """Docker images tagged labkit/* (made by ``labkit images docker-import``)."""
    from labkit import docker

    return [
        Leftover("docker-image", tag, "docker image", {"tag": tag})
        for tag in docker.labkit_images()
    ]


def remove_docker_image(item: Leftover) -> None:
    from labkit import docker

    docker.remove_image(item.ref["tag"])


KINDS: list[Kind] = [
    Kind("container", find_containers, remove_container),
    Kind("cgroup", find_cgroups, remove_cgroup),
    Kind("network", find_network, remove_network),
    Kind("mount", find_mounts, remove_mount),
    Kind("image-tmp", find_image_tmp, remove_path),
    Kind("image-garbage", find_image_garbage, remove_image_garbage),
    Kind("docker-image", find_docker_images, remove_docker_image, data=True),
    Kind("image", find_images, remove_path, data=True),
    Kind("image-store", find_image_store, remove_path, data=True),
]


def _remover(kind: str) -> Callable[[Leftover], None]:
    for k in KINDS:
        if kind == k.kind or (k.kind == "container" and kind == "record"):
            return k.remove
        if k.kind == "network" and kind.startswith("net-"):  # network's finer kinds
            return k.remove
    raise KeyError(kind)


def plan(images: bool = False) -> list[Leftover]:
    """Everything reset would remove, in removal order. Images only if ``images``."""
    out: list[Leftover] = []
    for k in KINDS:
        if k.data and not images:
            continue
        out += k.find()
    return out


def apply(items: list[Leftover]) -> list[tuple[Leftover, Exception]]:
    """Remove each leftover in order; return the ones that failed (and why)."""
    failures = []
    for item in items:
        try:
            _remover(item.kind)(item)
        except (
            OSError,
            LabkitError,
        ) as exc:  # keep going: one stuck mount must not block the rest
            failures.append((item, exc))
    return failures


def main(dry_run: bool = False, images: bool = False) -> int:
    """Print what is (or would be) removed; exit 1 if something could not be removed."""
    items = plan(images=images)
    if not items:
        print("nothing to reset: no labkit leftovers on this host")
        return 0
    verb = "would remove" if dry_run else "removing"
    for item in items:
        print(f"{verb} {item.kind:<12} {item.name}  ({item.detail})")
    if dry_run:
        return 0
    failures = apply(items)
    for item, exc in failures:
        print(f"labkit: could not remove {item.kind} {item.name}: {exc}", file=sys.stderr)
    # Mounts are re-read: a detach can expose one stacked below it.
    if not failures and find_mounts():
        again = find_mounts()
        items += again
        failures = apply(again)
        for item, exc in failures:
            print(f"labkit: could not remove {item.kind} {item.name}: {exc}", file=sys.stderr)
    print(f"removed {len(items) - len(failures)} of {len(items)} leftovers")
    return 1 if failures else 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="labkit reset", description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    ap.add_argument("--images", action="store_true", help="also remove base images (data)")
    args = ap.parse_args()
    sys.exit(main(dry_run=args.dry_run, images=args.images))
