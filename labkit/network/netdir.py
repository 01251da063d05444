"""Where network state lives, and the one lock that serialises changes to it.

Networks are host-wide: every labkit on the host (each with its own STATE_DIR) shares the
default network ``bridge`` and its device ``labkit0``, so their state lives in
``paths.NET_DIR`` (``/var/lib/labkit-network``), read at call time so a test can point it
elsewhere. Creating or removing a network, and choosing a subnet, happen under an
``flock`` on ``NET_DIR/lock``: the kernel drops it if the holder dies, so a crash never
leaves the lock held. Starting a container takes no lock at all (see ``ipam``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labkit import paths


def root() -> Path:
    """``paths.NET_DIR``, looked up now (not at import), so it can be redirected."""
    return paths.NET_DIR


def networks_dir() -> Path:
    return root() / "networks"


def leases_dir(network_id: str) -> Path:
    return root() / "leases" / network_id


def ready_marker(bridge: str) -> Path:
    """Written after a bridge's rules are in: its existence is the fast path's whole check."""
    return root() / "ready" / bridge


@contextlib.contextmanager
def lock() -> Iterator[None]:
    """Hold the host-wide network lock (blocking) for the ``with`` block."""
    root().mkdir(parents=True, exist_ok=True)
    with open(root() / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file drops the lock


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temp file beside ``path``, renamed over it, so a reader sees
    the old content or the new, never half of it (and a crash leaves only a ``.tmp-`` file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None if it is missing or unreadable (being written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
