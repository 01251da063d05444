"""Records of running containers, so nothing labkit started is ever lost track of.

The helper writes one JSON file per container before it reports the container started,
and the supervisor removes it when it reaps the container. If the supervisor is killed,
the record stays, and ``labkit reset`` uses it to find (and kill) exactly that process:
the start time from /proc/PID/stat guards against a recycled PID.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from labkit import paths


def containers_dir() -> Path:
    return paths.RUN_DIR / "containers"


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [0] is the state (field 3),
    [19] the start time (field 22). None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


def write_record(
    container_id: str, pid: int, argv: list[str], rootfs: str, supervisor: int | None = None
) -> Path:
    """Record a started container; written atomically so a crash never leaves half a file.

    ``supervisor`` is the process that will reap it: while that one lives, the container
    is in use, not a leftover.
    """
    directory = containers_dir()
    directory.mkdir(parents=True, exist_ok=True)
    record: dict = {
        "id": container_id,
        "pid": pid,
        "start_time": process_start_time(pid),
        "argv": argv,
        "rootfs": rootfs,
    }
    if supervisor is not None:
        record["supervisor"] = {"pid": supervisor, "start_time": process_start_time(supervisor)}
    path = directory / f"{container_id}.json"
    tmp = directory / f"{container_id}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    return path


def remove_record(container_id: str) -> None:
    (containers_dir() / f"{container_id}.json").unlink(missing_ok=True)


def list_records() -> list[dict]:
    """Every record on disk, including ones whose process is gone."""
    directory = containers_dir()
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return records


def is_alive(record: dict) -> bool:
    """True if the recorded process still runs (same PID *and* same start time, and not a
    zombie: one that has exited but is not yet reaped)."""
    start = record.get("start_time")
    if start is None:
        return False
    fields = stat_fields(record["pid"])
    return fields is not None and fields[0] != "Z" and int(fields[19]) == start


def is_supervised(record: dict) -> bool:
    """True if the container's supervisor still runs: then it is in use, not left over."""
    supervisor = record.get("supervisor")
    return bool(supervisor) and is_alive(supervisor)
