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
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.runtime import state

#: Where the runtime records each container it starts: <RUN_DIR>/containers/<id>.json


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


# -- processes --------------------------------------------------------------------------------


def find_containers() -> list[Leftover]:
    """Container records; a live one (same pid *and* start time) gets its process killed."""
    out = []
    cdir = state.containers_dir()
    if not cdir.is_dir():
        return out
    # A *.tmp record is one whose writer died between writing and renaming it: its
    # container may well be running, so it is treated like any other record.
    for rec in sorted(cdir.glob("*.json")) + sorted(cdir.glob("*.tmp")):
        try:
            data = json.loads(rec.read_text())
            pid, start = int(data["pid"]), int(data["start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            out.append(Leftover("record", rec.stem, "unreadable record", {"record": str(rec)}))
            continue
        argv = " ".join(map(str, data.get("argv") or []))
        if state.is_alive({"pid": pid, "start_time": start}):
            in_use = state.is_supervised(data)
            detail = f"pid {pid} running{' (its supervisor is alive)' if in_use else ''}: {argv}"
            out.append(
                Leftover(
                    "container",
                    rec.stem,
                    detail.rstrip(": "),
                    {"record": str(rec), "pid": pid, "start_time": start, "in_use": in_use},
                )
            )
        else:
            detail = f"stale record (pid {pid} is gone)"
            out.append(Leftover("record", rec.stem, detail, {"record": str(rec)}))
    return out


def remove_container(item: Leftover) -> None:
    """SIGKILL the recorded process if it is still the same one, then drop the record."""
    pid = item.ref.get("pid")
    if pid is not None and state.is_alive(item.ref):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and state.is_alive(item.ref):
            time.sleep(0.02)
    Path(item.ref["record"]).unlink(missing_ok=True)


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
    from labkit.images.base import stale_builds

    return [
        Leftover("image-tmp", p.name, "interrupted image build", {"path": str(p)})
        for p in stale_builds()
    ]


def find_run_files() -> list[Leftover]:
    """Stray files among the container records (a record's own *.tmp is a record).

    Only what the runtime writes there counts: other files under RUN_DIR (JupyterLab's pid
    file, the cgroup-v2 harness's results, a test session's private dirs) belong to
    processes that may still be using them.
    """
    cdir = state.containers_dir()
    if not cdir.is_dir():
        return []
    return [
        Leftover("run-file", str(q.relative_to(paths.RUN_DIR)), "runtime file", {"path": str(q)})
        for q in sorted(cdir.iterdir())
        if q.suffix not in (".json", ".tmp")
    ]


def remove_path(item: Leftover) -> None:
    """Delete a file or tree, detaching mounts under it first (never rmtree into /proc)."""
    from labkit.kernel.mounts import remove_tree

    remove_tree(Path(item.ref["path"]))


# -- images (data: only with --images) ---------------------------------------------------------


def find_images() -> list[Leftover]:
    """Built images and build logs under IMAGES_DIR."""
    from labkit.images.base import TMP_PREFIX

    if not paths.IMAGES_DIR.is_dir():
        return []
    return [
        Leftover("image", p.name, "base image (data)", {"path": str(p)})
        for p in sorted(paths.IMAGES_DIR.iterdir())
        if not p.name.startswith(TMP_PREFIX)
    ]


def find_docker_images() -> list[Leftover]:
    """Docker images tagged labkit/* (made by ``labkit images docker-import``)."""
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return []
    res = subprocess.run(
        [
            "docker",
            "images",
            "--filter",
            f"reference={paths.NAME_PREFIX}/*",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        return []
    return [
        Leftover("docker-image", tag, "docker image", {"tag": tag})
        for tag in sorted(set(res.stdout.split()))
    ]


def remove_docker_image(item: Leftover) -> None:
    import subprocess

    subprocess.run(["docker", "rmi", item.ref["tag"]], capture_output=True, check=False)


KINDS: list[Kind] = [
    Kind("container", find_containers, remove_container),
    Kind("mount", find_mounts, remove_mount),
    Kind("image-tmp", find_image_tmp, remove_path),
    Kind("run-file", find_run_files, remove_path),
    Kind("docker-image", find_docker_images, remove_docker_image, data=True),
    Kind("image", find_images, remove_path, data=True),
]


def _remover(kind: str) -> Callable[[Leftover], None]:
    for k in KINDS:
        if kind == k.kind or (k.kind == "container" and kind == "record"):
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
