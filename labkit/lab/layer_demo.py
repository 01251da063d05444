"""An image with layers for notebook 04, built from labkit's busybox in Docker, and the places
its layers can be read from: ``docker save``'s tarball, and Docker's overlay2 directories of a
running container.

The image has three layers, each one a build step, so each one shows something:

1. the busybox root filesystem (``labkit/busybox``, built on this machine);
2. ``/app/hello.txt``, ``/app/notes.txt`` and ``/app/todo.txt`` added;
3. ``/app/hello.txt`` changed (the whole file again, not a patch) and ``/app/notes.txt`` deleted,
   which a tar layer can only say with a marker file, the *whiteout* ``/app/.wh.notes.txt``.

It is built with ``docker run`` and ``docker commit`` from a local base, so it needs no network
and no image builder. Everything here reads or starts things; the notebook shows the raw output
(``docker save``, ``tar -tvf``, ``docker inspect``) itself, and these helpers only find paths in
it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from labkit import docker

IMAGE = "labkit/nb04-layers:latest"
#: The commands of the two steps on top of busybox: each one's changes become one layer.
STEPS = [
    "mkdir /app && echo 'hello from layer 2' > /app/hello.txt"
    " && echo 'remember me' > /app/notes.txt && echo 'buy milk' > /app/todo.txt",
    "echo 'hello from layer 3' > /app/hello.txt && rm /app/notes.txt",
]
CMD = '["cat", "/app/hello.txt"]'
#: A label on the built image: a changed recipe (or base) is built again, an unchanged one not.
LABEL = "labkit.nb04.recipe"
_BUILDER = "labkit-nb04-build"


def _recipe(base_id: str) -> str:
    return hashlib.sha256("\0".join([base_id, *STEPS, CMD]).encode()).hexdigest()[:16]


def layered_image() -> str:
    """Build ``labkit/nb04-layers`` in Docker unless it is there already; return its tag.

    Each step is a ``docker run`` of its command on the image so far, then ``docker commit``
    of that container: its changes become one more layer, as a Dockerfile's ``RUN`` would make
    it (with any builder, and no network)."""
    base = docker.import_image("busybox")  # a no-op when Docker has it already
    want = _recipe(docker.inspect(base, "{{.Id}}"))
    label = f'{{{{index .Config.Labels "{LABEL}"}}}} {{{{.Id}}}}'
    have = docker.run("image", "inspect", "-f", label, IMAGE, check=False)
    old_label, _, old_id = have.stdout.strip().partition(" ")
    if have.returncode == 0 and old_label == want:
        return IMAGE
    image = base
    for i, step in enumerate(STEPS):
        last = i == len(STEPS) - 1
        changes = ["--change", f"CMD {CMD}", "--change", f"LABEL {LABEL}={want}"] if last else []
        docker.run("rm", "-f", _BUILDER, check=False)
        try:
            docker.run("run", "--name", _BUILDER, image, "sh", "-c", step)
            image = docker.run("commit", *changes, _BUILDER).stdout.strip()
        finally:
            docker.run("rm", "-f", _BUILDER, check=False)
    docker.run("tag", image, IMAGE)
    if have.returncode == 0 and old_id != image:  # the earlier build, now untagged: drop it
        docker.run("rmi", old_id, check=False)
    return IMAGE


@contextlib.contextmanager
def scratch_dir(name: str = "nb04") -> Iterator[Path]:
    """A temporary directory for one cell (``/tmp/labkit-nb04-XXXX``), removed after it.

    Nothing is deleted while something is still mounted below it."""
    from labkit.kernel.mounts import mounts_under

    path = Path(tempfile.mkdtemp(prefix=f"labkit-{name}-"))
    try:
        yield path
    finally:
        if not mounts_under(path):
            shutil.rmtree(path, ignore_errors=True)


def saved_layers(saved: str | os.PathLike[str]) -> list[Path]:
    """The layer tarballs of an unpacked ``docker save``, bottom layer first, as its
    ``manifest.json`` lists them (``<id>/layer.tar`` from Docker 20.10, ``blobs/sha256/<hex>``
    from Docker 25, which writes an OCI layout beside the manifest)."""
    manifest = json.loads(Path(saved, "manifest.json").read_text())
    return [Path(saved, layer) for layer in manifest[0]["Layers"]]


# -- a running container's overlay2 directories ------------------------------------------------


def graph_driver(container: str) -> dict[str, str]:
    """``docker inspect -f '{{json .GraphDriver.Data}}'``: LowerDir, UpperDir, MergedDir ..."""
    return json.loads(docker.inspect(container, "{{json .GraphDriver.Data}}"))


def stack_of(data: dict[str, str]) -> list[tuple[str, Path]]:
    """Docker's overlay2 directories as a stack, top first: the container's upper dir, then
    each lower dir as ``LowerDir`` lists them (the container's ``-init`` layer first, the
    image's bottom layer last)."""
    lowers = [Path(p) for p in data["LowerDir"].split(":")]
    named = [("container (upper)", Path(data["UpperDir"]))]
    for i, path in enumerate(lowers):
        kind = (
            "init layer" if path.parent.name.endswith("-init") else f"image layer {len(lowers) - i}"
        )
        named.append((kind, path))
    return named


@contextlib.contextmanager
def docker_container(name: str, image: str = IMAGE, *command: str) -> Iterator[str]:
    """``docker run -d --name NAME IMAGE COMMAND`` (default: sleep 600); removed on exit."""
    if not name.startswith("labkit-"):
        raise ValueError(f"a Docker container the lab makes is named labkit-...: {name!r}")
    docker.run("rm", "-f", name, check=False)
    try:
        docker.run("run", "-d", "--name", name, image, *(command or ("sleep", "600")))
        yield name
    finally:
        docker.run("rm", "-f", name, check=False)


class KeptContainer:
    """A Docker container that outlives a cell, for a terminal task; ``.stop()`` removes it
    (it also ends by itself after ``minutes``, and with the kernel)."""

    def __init__(self, name: str, image: str = IMAGE, minutes: float = 15) -> None:
        if not name.startswith("labkit-"):
            raise ValueError(f"a Docker container the lab makes is named labkit-...: {name!r}")
        self.name, self.minutes = name, minutes
        docker.run("rm", "-f", name, check=False)
        docker.run("run", "-d", "--rm", "--name", name, image, "sleep", str(int(minutes * 60)))
        self.pid = docker.container_pid(name)
        _kept.append(self)

    def stop(self) -> None:
        docker.run("rm", "-f", self.name, check=False)
        if self in _kept:
            _kept.remove(self)

    def __enter__(self) -> KeptContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_kept: list[KeptContainer] = []


def keep_container(name: str, image: str = IMAGE, minutes: float = 15) -> KeptContainer:
    return KeptContainer(name, image, minutes)


@atexit.register
def _stop_kept() -> None:
    for box in list(_kept):
        box.stop()
