"""What the image tests share: labkit run as a user runs it, on a private state dir, and the
real Docker beside it, with every Docker image a test makes removed again.

Each test gets its own LABKIT_STATE_DIR (a tmp dir), so the image store it fills is its own;
labkit reads that variable at import, so labkit runs in a subprocess, as the CLI. Docker is
shared with teammates: a test only ever tags ``labkit/h3-test-<random>:...`` and removes
exactly those tags at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


class Kit:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.env = {
            **os.environ,
            "LABKIT_STATE_DIR": str(self.state),
            "LABKIT_RUN_DIR": str(tmp / "run"),
        }
        self.env.pop("PYTHONPATH", None)
        self.prefix = f"labkit/h3-test-{secrets.token_hex(3)}"
        self.docker_tags: list[str] = []

    @property
    def oci(self) -> Path:
        return self.state / "oci"

    @property
    def layers(self) -> Path:
        return self.state / "layers"

    def lk(
        self, *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``labkit ARGS`` on this test's state dir."""
        done = subprocess.run(
            [sys.executable, "-m", "labkit.cli", *args],
            cwd=REPO,
            env=self.env,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        res = subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"labkit {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
            )
        return res

    def lk_bytes(self, *args: str) -> bytes:
        """``labkit ARGS``'s stdout as bytes (``save`` to a pipe)."""
        done = subprocess.run(
            [sys.executable, "-m", "labkit.cli", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    def tag(self, name: str) -> str:
        """A Docker tag of this test's own (removed at the end)."""
        tag = f"{self.prefix}-{name}"
        self.docker_tags.append(tag)
        return tag

    def docker(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(
            ["docker", *args], input=stdin, capture_output=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"docker {args}: {done.stderr.decode()}"
        return done.stdout.decode()

    def build(self, name: str, *lines: str) -> str:
        """``docker build`` an image FROM labkit/busybox with ``lines``; return its tag."""
        tag = self.tag(name)
        ctx = self.tmp / f"ctx-{name}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM labkit/busybox\n" + "\n".join(lines) + "\n")
        self.docker("build", "--network", "none", "-q", "-t", tag, str(ctx))
        return tag

    def docker_save(self, *tags: str) -> bytes:
        return subprocess.run(
            ["docker", "save", *tags], capture_output=True, check=True, timeout=300
        ).stdout

    def inspect(self, tag: str, template: str) -> str:
        return self.docker("image", "inspect", "--format", template, tag).strip()

    def index(self) -> list[dict]:
        return json.loads((self.oci / "index.json").read_text())["manifests"]

    def layer_dirs(self) -> list[str]:
        return sorted(p.name for p in self.layers.iterdir() if len(p.name) == 64)

    def blobs(self) -> list[str]:
        d = self.oci / "blobs" / "sha256"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def cleanup(self) -> None:
        """Remove every Docker tag of this test (any tag of its repositories), and only those."""
        listed = subprocess.run(
            [
                "docker",
                "images",
                "--filter",
                f"reference={self.prefix}-*",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        for tag in [*self.docker_tags, *(t for t in listed if t.startswith(self.prefix))]:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def docker_ready() -> None:
    """Docker is part of the lab: a missing one is a broken machine, not a skip."""
    done = subprocess.run(["docker", "image", "inspect", "labkit/busybox"], capture_output=True)
    if done.returncode != 0:
        pytest.fail("needs Docker with labkit/busybox: labkit images docker-import busybox")


def kit_for(tmp_path: Path) -> Iterator[Kit]:
    """The body of each test module's ``kit`` fixture: a Kit, its Docker tags removed after."""
    docker_ready()
    k = Kit(tmp_path)
    try:
        yield k
    finally:
        k.cleanup()


def table(text: str) -> list[list[str]]:
    """A Docker-style table as rows of cells (cells are split on runs of 2+ spaces)."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]
