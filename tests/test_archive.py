"""``labkit save`` / ``labkit load`` against the real Docker 20.10, both ways.

Docker → labkit: what ``docker save`` writes (layers, symlinked duplicate layers, a config
with Entrypoint, Cmd, Env, WorkingDir, User) loads and runs under labkit with the output it
has under Docker. labkit → Docker: what ``labkit save`` writes, ``docker load`` accepts with
the same image id and diff ids, and ``docker run`` prints what ``labkit run`` printed. A load
killed half-way leaves nothing the next load trips on.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_kit import REPO, Kit, kit_for


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    yield from kit_for(tmp_path)


#: An image that uses every part of the config a runtime applies.
CONFIGURED = (
    "RUN mkdir -p /srv/app && echo from-the-image > /srv/app/msg",
    "ENV GREETING=hello LEVEL=3",
    "WORKDIR /srv/app",
    "USER 1234:1234",
    'ENTRYPOINT ["sh", "-c", "echo $GREETING $LEVEL $(id -u) $(pwd) $(cat msg) $0 \\"$@\\""]',
    'CMD ["default-arg"]',
)


def _manifest_tags(archive: bytes) -> list[str]:
    """The repo tags of a docker-archive, in the order its manifest.json lists them."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return [t for image in json.load(member) for t in image.get("RepoTags") or []]


def _run_both(kit: Kit, tag: str, *args: str) -> str:
    ours = kit.lk("run", tag, *args).stdout
    theirs = kit.docker("run", "--rm", "--network", "none", tag, *args)
    assert ours == theirs, (ours, theirs)
    return ours


def test_docker_save_loads_and_runs_as_under_docker(kit: Kit) -> None:
    tag = kit.build("cfg", *CONFIGURED)
    archive = kit.docker_save(tag, "labkit/busybox")
    # `docker save` lists the images in an order of its own (it varies from run to run);
    # `docker load` reports them in the archive's order, and so must we
    order = _manifest_tags(archive)
    assert sorted(order) == sorted([f"{tag}:latest", "labkit/busybox:latest"])
    out = kit.lk("load", stdin=archive).stdout
    assert out == "".join(f"Loaded image: {t}\n" for t in order)
    assert _run_both(kit, tag) == "hello 3 1234 /srv/app from-the-image default-arg\n"
    assert _run_both(kit, tag, "given", "args") == (
        "hello 3 1234 /srv/app from-the-image given args\n"
    )
    _run_both(kit, "labkit/busybox", "sh", "-c", "cat /etc/os-release; ls -l /bin | head -3")
    # the image id is the config's digest on both sides
    assert kit.lk("images", "-q").stdout.split() == [kit.inspect(t, "{{.Id}}")[7:19] for t in order]


def test_labkit_save_loads_into_docker_and_runs_the_same(kit: Kit) -> None:
    built = kit.build("src", *CONFIGURED)
    kit.lk("load", stdin=kit.docker_save(built, "labkit/busybox"))
    fresh = kit.tag("saved")  # a name Docker has never seen: it can only come from our file
    kit.lk("tag", built, f"{fresh}:v1")
    archive = kit.tmp / "out.tar"
    kit.lk("save", "-o", str(archive), f"{fresh}:v1", "labkit/busybox")
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        names = tar.getnames()
    assert manifest[0]["RepoTags"] == [f"{fresh}:v1"]
    layer_tars = [n for n in names if n.endswith("/layer.tar")]
    assert len(layer_tars) == 2, "the busybox layer both images share is in the file once"
    assert "repositories" in names and manifest[0]["Config"] in names

    kit.docker("load", "-i", str(archive))
    assert kit.inspect(f"{fresh}:v1", "{{.Id}}") == kit.inspect(built, "{{.Id}}")
    assert kit.inspect(f"{fresh}:v1", "{{json .RootFS.Layers}}") == kit.inspect(
        built, "{{json .RootFS.Layers}}"
    )
    assert _run_both(kit, f"{fresh}:v1", "x") == ("hello 3 1234 /srv/app from-the-image x\n")


def test_save_to_a_pipe_and_load_from_a_pipe_gzip_too(kit: Kit) -> None:
    kit.lk("load", stdin=gzip.compress(kit.docker_save("labkit/busybox"), compresslevel=1))
    fresh = kit.tag("piped")
    kit.lk("tag", "labkit/busybox", fresh)
    saved = kit.lk_bytes("save", fresh)
    kit.docker("load", stdin=saved)
    assert kit.docker("run", "--rm", "--network", "none", fresh, "echo", "ok") == "ok\n"
    done = kit.lk("load", stdin=b"not a tar at all", check=False)
    assert done.returncode == 125 and len(done.stderr.splitlines()) == 1, done.stderr


def test_a_base_image_saves_as_a_docker_image(kit: Kit) -> None:
    kit.lk("images", "build", "busybox")
    fresh = kit.tag("base")
    kit.lk("tag", "busybox", fresh)
    kit.docker("load", stdin=kit.lk_bytes("save", fresh))
    script = "head -1 /etc/os-release; echo $PATH; ls /bin | wc -l"
    assert _run_both(kit, fresh, "sh", "-c", script).startswith('NAME="labkit busybox"\n')
    # the base image itself still runs from its directory, untouched
    assert kit.lk("run", "busybox", "true").returncode == 0


def _killed_load(kit: Kit, archive: Path, when) -> None:  # noqa: ANN001
    """Start ``labkit load -i archive``, SIGKILL it as soon as ``when()`` is true."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit.cli", "load", "-i", str(archive)],
        cwd=REPO,
        env=kit.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not when() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the load finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_a_killed_load_leaves_nothing_the_next_load_trips_on(kit: Kit) -> None:
    archive = kit.tmp / "debian.tar"
    with open(archive, "wb") as f:
        subprocess.run(["docker", "save", "labkit/debian"], stdout=f, check=True, timeout=300)
    blobs = kit.oci / "blobs" / "sha256"

    def writing_blob() -> bool:
        return blobs.is_dir() and any(p.suffix == ".part" for p in blobs.iterdir())

    def unpacking() -> bool:
        return kit.layers.is_dir() and any(p.name.startswith(".tmp-") for p in kit.layers.iterdir())

    _killed_load(kit, archive, writing_blob)  # killed while a layer streams into the store
    assert kit.lk("images").stdout.count("\n") == 1, "no image appears from a killed load"
    _killed_load(kit, archive, unpacking)  # killed while the layer is unpacked
    assert not (kit.layers.is_dir() and kit.layer_dirs()), "no half layer looks finished"

    assert kit.lk("load", "-i", str(archive)).stdout == "Loaded image: labkit/debian:latest\n"
    assert _run_both(kit, "labkit/debian", "sh", "-c", "cat /etc/debian_version; ls /usr | wc -l")
    # what the killed loads left is garbage `rmi` (or reset) collects, nothing more
    kit.lk("rmi", "labkit/debian")
    assert kit.blobs() == [] and kit.layer_dirs() == []
    assert [p.name for p in kit.layers.iterdir() if p.name.startswith(".tmp")] == []


def test_a_docker_25_archive_oci_layout_inside_loads(kit: Kit) -> None:
    """Docker 25+ ``save`` writes an OCI layout and a manifest.json that points into its
    ``blobs/sha256/``: made here from skopeo's OCI layout of the same image."""
    layout = kit.tmp / "layout"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "docker-daemon:labkit/busybox:latest", f"oci:{layout}:x"],
        check=True,
        capture_output=True,
    )
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(
        (layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    fresh = kit.tag("oci")
    (layout / "manifest.json").write_text(
        json.dumps(
            [
                {
                    "Config": "blobs/sha256/" + manifest["config"]["digest"][7:],
                    "RepoTags": [f"{fresh}:25"],
                    "Layers": ["blobs/sha256/" + d["digest"][7:] for d in manifest["layers"]],
                }
            ]
        )
    )
    archive = kit.tmp / "docker25.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    assert kit.lk("load", "-i", str(archive)).stdout == f"Loaded image: {fresh}:25\n"
    assert kit.lk("images", "-q").stdout.strip() == manifest["config"]["digest"][7:19]
    assert kit.lk("run", f"{fresh}:25", "echo", "ok").stdout == "ok\n"


def test_an_oci_archive_without_manifest_json_loads(kit: Kit) -> None:
    """skopeo's (and buildah's) ``oci-archive``: an OCI layout in a tar, nothing else."""
    archive = kit.tmp / "oci.tar"
    fresh = kit.tag("ocionly")
    subprocess.run(
        ["skopeo", "copy", "--quiet", "docker-daemon:labkit/busybox:latest",
         f"oci-archive:{archive}:{fresh}:1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with tarfile.open(archive) as tar:
        assert "manifest.json" not in tar.getnames() and "index.json" in tar.getnames()
    assert kit.lk("load", "-i", str(archive)).stdout == f"Loaded image: {fresh}:1\n"
    assert kit.lk("run", f"{fresh}:1", "echo", "ok").stdout == "ok\n"
