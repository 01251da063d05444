"""Container records: one JSON file per container, the one store every front end shares.

Where: ``STATE_DIR/containers/<id>/record.json`` (/var/lib/labkit by default). A record is the
container's configuration plus its state (creating, running, exited; PID 1, exit code), and
it lives under /var/lib, not /run, because a container's record must outlive the process
that wrote it: a killed supervisor, a restarted daemon (``ps -a``, ``logs``, exit codes) and
a reboot. The parts that only mean something while the machine is up (PIDs) carry the boot
id, so after a reboot a "running" record is seen for what it is: stale.

Only supervisors write records. A name is claimed atomically, under a lock, before anything
is created, so two ``run --name x`` can never both start. The container's PID 1 waits until
its record says "running" before it does anything, so no container ever runs unrecorded.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.kernel.mounts import remove_tree
from labkit.kernel.procfs import ProcessRef

RECORD = "record.json"


def containers_dir() -> Path:
    return paths.STATE_DIR / "containers"


def now() -> str:
    """UTC time in RFC 3339, as Docker prints it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"


@dataclass
class Record:
    """What labkit knows about one container."""

    id: str
    name: str
    config: dict  # the ContainerSpec it was started from
    supervisor: ProcessRef | None  # who reaps it: while that process lives, it is in use
    created: str = field(default_factory=now)
    status: str = "creating"  # creating -> running -> exited
    process: ProcessRef | None = None  # its PID 1, as the host sees it
    exit_code: int | None = None
    finished: str | None = None
    cgroups: list[str] = field(default_factory=list)  # the cgroups made for it
    network: dict = field(default_factory=dict)  # its place on a network (an Attachment)

    @property
    def directory(self) -> Path:
        return containers_dir() / self.id

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        """Its PID 1 is still the process that was recorded (same boot, PID and start time)."""
        return self.process is not None and self.process.is_alive()

    def is_supervised(self) -> bool:
        """Its supervisor still runs: then it is in use, not left over."""
        return self.supervisor is not None and self.supervisor.is_alive()

    def in_use(self) -> bool:
        """Running or still being looked after: its name is taken, reset must ask first."""
        return self.is_running() or self.is_supervised()

    def save(self) -> None:
        """Write atomically (a temp file renamed over the record): a crash never leaves half."""
        tmp = self.directory / f".{RECORD}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.directory / RECORD)

    @classmethod
    def from_dict(cls, data: dict) -> Record:
        for key in ("supervisor", "process"):
            if data.get(key) is not None:
                data[key] = ProcessRef(*data[key])
        return cls(**data)


def load(directory: Path) -> Record | None:
    """The record in ``directory``, or None if there is none or it cannot be read."""
    try:
        return Record.from_dict(json.loads((directory / RECORD).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def directories() -> list[Path]:
    """Every container directory, readable record or not (reset needs both)."""
    top = containers_dir()
    if not top.is_dir():
        return []
    return sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))


def all_records() -> list[Record]:
    return [r for r in map(load, directories()) if r is not None]


@contextmanager
def _locked() -> Iterator[None]:
    """One claim at a time. flock is dropped by the kernel if the holder dies."""
    top = containers_dir()
    top.mkdir(parents=True, exist_ok=True)
    with open(top / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def claim(container_id: str, name: str, config: dict, supervisor: ProcessRef) -> Record:
    """Reserve ``name`` for a new container and write its first record ("creating").

    A name held by a container that is running or still supervised is refused, as Docker
    does. A record of the same name left by a crash (nothing alive) is removed.
    """
    with _locked():
        for other in all_records():
            if other.name != name:
                continue
            if other.in_use():
                raise LabkitError(
                    f"Conflict. The container name {name!r} is already in use by container "
                    f"{other.id[:12]}",
                    fix="choose another {name}, or stop that container first",
                )
            remove(other.id)
        record = Record(container_id, name, config, supervisor)
        record.directory.mkdir(parents=True)
        record.save()
        return record


def find(name_or_id: str, running: bool = True) -> Record:
    """The container with this name, id or unique id prefix (as Docker finds one): a running
    one, or with ``running=False`` any that still has its record (exited, say)."""
    candidates = [r for r in all_records() if r.is_running() or not running]
    exact = [r for r in candidates if name_or_id in (r.name, r.id)]
    matches = exact or [r for r in candidates if r.id.startswith(name_or_id)]
    if len(matches) != 1:
        why = "No such container" if not matches else "Several containers match"
        which = "running container" if running else "container"
        raise LabkitError(f"{why}: {name_or_id}", fix=f"give the name or id of one {which}")
    return matches[0]


def remove(container_id: str) -> None:
    """Delete a container's directory: its record and its own layer (upper, work) or the
    throwaway copy of its root, as ``docker rm`` removes a container's layer."""
    remove_tree(containers_dir() / container_id)
