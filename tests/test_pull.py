"""``labkit pull``, ``push``, ``login`` end to end: a real registry (Debian's docker-registry
on 127.0.0.1, started and stopped here), images put in by skopeo from the real Docker, and
what labkit pulled compared with what skopeo and Docker see and run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_kit import Kit, kit_for
from registry_server import Registry


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    yield from kit_for(tmp_path)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path / "registry")
    try:
        yield reg
    finally:
        reg.stop()


def _docker_pull_and_run(kit: Kit, ref: str, *args: str) -> str:
    kit.docker_tags.append(ref)  # removed at the end of the test
    kit.docker("pull", "-q", ref)
    return kit.docker("run", "--rm", "--network", "none", ref, *args)


def test_pull_prints_dockers_lines_and_stores_what_skopeo_sees(
    kit: Kit, registry: Registry
) -> None:
    two = kit.build("two", "RUN echo second > /second.txt", 'CMD ["cat", "/second.txt"]')
    registry.push_with_skopeo("docker-daemon:labkit/busybox:latest", "lab/busybox:1")
    registry.push_with_skopeo(f"docker-daemon:{two}:latest", "lab/two")
    ref = f"{registry.domain}/lab/two"
    manifest = json.loads(registry.skopeo_raw("lab/two"))
    layers = [d["digest"][7:19] for d in manifest["layers"]]

    out = kit.lk("pull", f"{registry.domain}/lab/busybox:1").stdout.splitlines()
    assert (
        out[0] == "1: Pulling from lab/busybox" and out[-1] == f"{ref.rsplit('/', 1)[0]}/busybox:1"
    )
    assert f"{layers[0]}: Pull complete" in out

    out = kit.lk("pull", ref).stdout.splitlines()
    digest = "sha256:" + __import__("hashlib").sha256(registry.skopeo_raw("lab/two")).hexdigest()
    assert out[:2] == ["Using default tag: latest", "latest: Pulling from lab/two"]
    assert f"{layers[0]}: Already exists" in out, "the busybox layer came with the first image"
    assert f"{layers[1]}: Pull complete" in out
    assert out[-3:] == [
        f"Digest: {digest}",
        f"Status: Downloaded newer image for {ref}:latest",
        f"{ref}:latest",
    ]
    again = kit.lk("pull", ref).stdout.splitlines()
    assert f"Status: Image is up to date for {ref}:latest" in again
    assert f"{layers[1]}: Already exists" in again

    # stored verbatim: the manifest bytes skopeo sees, the blobs it names, one dir per layer
    entry = next(
        e
        for e in kit.index()
        if e["annotations"]["org.opencontainers.image.ref.name"] == f"{ref}:latest"
    )
    assert entry["digest"] == digest
    assert (kit.oci / "blobs/sha256" / digest[7:]).read_bytes() == registry.skopeo_raw("lab/two")
    for d in [manifest["config"], *manifest["layers"]]:
        assert d["digest"][7:] in kit.blobs()
    diff_ids = json.loads((kit.oci / "blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    assert sorted(d[7:] for d in diff_ids["rootfs"]["diff_ids"]) == kit.layer_dirs()

    # and it runs as Docker runs the same image pulled from the same registry
    ours = kit.lk("run", f"{ref}:latest").stdout
    assert ours == "second\n" == _docker_pull_and_run(kit, f"{ref}:latest")


def test_push_and_docker_pulls_what_labkit_pushed(kit: Kit, registry: Registry) -> None:
    built = kit.build("p", "RUN echo pushed > /p.txt", 'ENTRYPOINT ["cat"]', 'CMD ["/p.txt"]')
    kit.lk("load", stdin=kit.docker_save(built))
    target = f"{registry.domain}/me/pushed:v1"
    kit.lk("tag", built, target)
    out = kit.lk("push", target).stdout.splitlines()
    raw = registry.skopeo_raw("me/pushed:v1")
    digest = "sha256:" + __import__("hashlib").sha256(raw).hexdigest()
    assert out[0] == f"The push refers to repository [{registry.domain}/me/pushed]"
    assert out[-1] == f"v1: digest: {digest} size: {len(raw)}"
    assert sum(line.endswith(": Pushed") for line in out) == 2, out  # two layers, no config
    again = kit.lk("push", target).stdout
    assert again.count("Layer already exists") == 2, again
    assert _docker_pull_and_run(kit, target) == "pushed\n" == kit.lk("run", target).stdout
    image_id = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", target],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert image_id == kit.inspect(built, "{{.Id}}"), "the same config, so the same image id"


def test_a_base_image_is_pushed_as_one_layer(kit: Kit, registry: Registry) -> None:
    kit.lk("images", "build", "busybox")
    target = f"{registry.domain}/base/busybox:1"
    kit.lk("tag", "busybox", target)
    kit.lk("push", target)
    manifest = json.loads(registry.skopeo_raw("base/busybox:1"))
    assert [d["mediaType"] for d in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ]
    script = "head -1 /etc/os-release; echo $PATH"
    assert (
        _docker_pull_and_run(kit, target, "sh", "-c", script)
        == kit.lk("run", "busybox", "sh", "-c", script).stdout
    )


def test_login_then_pull_from_a_registry_that_wants_a_password(kit: Kit, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "auth-registry", mode="htpasswd", users={"alice": "s3cret"})
    try:
        reg.push_with_skopeo("docker-daemon:labkit/busybox:latest", "private/bb:1")
        ref = f"{reg.domain}/private/bb:1"
        denied = kit.lk("pull", ref, check=False)
        assert denied.returncode == 125 and len(denied.stderr.splitlines()) == 1, denied.stderr
        wrong = kit.lk(
            "login", "-u", "alice", "--password-stdin", reg.domain, stdin=b"nope\n", check=False
        )
        assert wrong.returncode == 125 and "wrong user name or password" in wrong.stderr
        ok = kit.lk("login", "-u", "alice", "--password-stdin", reg.domain, stdin=b"s3cret\n")
        assert ok.stdout == "Login Succeeded\n"
        assert (kit.state / "auth.json").stat().st_mode & 0o777 == 0o600
        kit.lk("pull", ref)
        assert kit.lk("run", ref, "echo", "in").stdout == "in\n"
        assert (
            kit.lk("logout", reg.domain).stdout == f"Removing login credentials for {reg.domain}\n"
        )
        assert kit.lk("pull", ref, check=False).returncode == 125
    finally:
        reg.stop()


def test_a_failed_pull_says_why_in_one_line_and_leaves_nothing(
    kit: Kit, registry: Registry
) -> None:
    registry.push_with_skopeo("docker-daemon:labkit/busybox:latest", "lab/busybox:1")
    for ref in (
        f"{registry.domain}/lab/busybox:nosuchtag",
        f"{registry.domain}/no/such",
        "127.0.0.1:1/lab/busybox:1",
        "Bad/Name",
    ):
        done = kit.lk("pull", ref, check=False)
        assert done.returncode == 125, done
        assert len(done.stderr.splitlines()) == 1 and "fix:" in done.stderr, done.stderr
    assert not kit.oci.exists() or (
        kit.index() == [] if (kit.oci / "index.json").exists() else True
    )
    parts = list(kit.oci.rglob("*.part")) if kit.oci.exists() else []
    assert parts == []


def _image_with_a_layer_twice(kit: Kit, tag: str) -> Path:
    """A docker-archive of busybox plus one small layer listed twice (as identical layers
    are: an image built by ``COPY`` of the same file twice has them)."""
    import hashlib
    import io
    import tarfile

    base = tarfile.open(fileobj=io.BytesIO(kit.docker_save("labkit/busybox")))  # noqa: SIM115
    manifest = json.loads(base.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
    config = json.loads(base.extractfile(manifest["Config"]).read())  # type: ignore[union-attr]
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("end")
        info.size, info.mode = 4, 0o644
        t.addfile(info, io.BytesIO(b"end\n"))
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config["rootfs"]["diff_ids"] += [diff_id, diff_id]
    raw = json.dumps(config).encode()
    out = kit.tmp / "twice.tar"
    with tarfile.open(out, "w") as t:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))

        add("base/layer.tar", base.extractfile(manifest["Layers"][0]).read())  # type: ignore[union-attr]
        add("end/layer.tar", layer.getvalue())
        add("config.json", raw)
        add(
            "manifest.json",
            json.dumps(
                [
                    {
                        "Config": "config.json",
                        "RepoTags": [tag],
                        "Layers": ["base/layer.tar", "end/layer.tar", "end/layer.tar"],
                    }
                ]
            ).encode(),
        )
    return out


def test_an_image_that_lists_one_layer_twice(kit: Kit, registry: Registry) -> None:
    """One blob listed twice is fetched once, unpacked once, and the image still runs (also
    under Docker)."""
    tag = f"{kit.tag('twice')}:latest"
    archive = _image_with_a_layer_twice(kit, tag)
    registry.push_with_skopeo(f"docker-archive:{archive}", "lab/twice")
    out = kit.lk("pull", f"{registry.domain}/lab/twice").stdout
    assert out.count(": Pull complete") == 2, out
    assert len(kit.layer_dirs()) == 2
    assert kit.lk("run", f"{registry.domain}/lab/twice", "cat", "/end").stdout == "end\n"
    kit.docker("load", "-i", str(archive))
    assert kit.docker("run", "--rm", "--network", "none", tag, "cat", "/end") == "end\n"


def _kill_when(kit: Kit, args: list[str], when) -> None:  # noqa: ANN001
    import os
    import signal
    import sys
    import time

    from image_kit import REPO

    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", *args], cwd=REPO, env=kit.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while not when() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, "it finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_a_killed_pull_leaves_nothing_the_next_pull_trips_on(kit: Kit, registry: Registry) -> None:
    registry.push_with_skopeo("docker-daemon:labkit/debian:latest", "lab/debian:1")
    ref = f"{registry.domain}/lab/debian:1"
    blobs = kit.oci / "blobs" / "sha256"

    def downloading() -> bool:
        return blobs.is_dir() and any(p.name.endswith(".part") for p in blobs.iterdir())

    def unpacking() -> bool:
        return kit.layers.is_dir() and any(p.name.startswith(".tmp-") for p in kit.layers.iterdir())

    _kill_when(kit, ["pull", ref], downloading)
    _kill_when(kit, ["pull", ref], unpacking)
    assert kit.lk("images").stdout.count("\n") == 1, "no image appears from a killed pull"
    assert not kit.layers.exists() or kit.layer_dirs() == [], "no half layer looks finished"
    out = kit.lk("pull", ref).stdout
    assert f"Status: Downloaded newer image for {ref}" in out
    assert kit.lk("run", ref, "cat", "/etc/debian_version").stdout == kit.docker(
        "run", "--rm", "--network", "none", "labkit/debian", "cat", "/etc/debian_version"
    )
    kit.lk("rmi", ref)  # and what the killed pulls left is collected with it
    assert kit.blobs() == [] and kit.layer_dirs() == []
    assert [p for p in kit.layers.iterdir() if p.name.startswith(".tmp")] == []
    assert [p for p in blobs.iterdir()] == []


def test_run_pulls_an_image_that_is_not_here_as_docker_run_does(
    kit: Kit, registry: Registry
) -> None:
    registry.push_with_skopeo("docker-daemon:labkit/busybox:latest", "lab/auto:1")
    ref = f"{registry.domain}/lab/auto:1"
    first = kit.lk("run", ref, "cat", "/etc/hostname", "/etc/os-release")
    assert first.stderr.splitlines()[0] == f"Unable to find image '{ref}' locally"
    assert "Status: Downloaded newer image for" in first.stderr
    assert "busybox" in first.stdout and "Unable" not in first.stdout  # stdout is the container's
    again = kit.lk("run", ref, "true")
    assert again.stderr == "", "the second run finds it here"
    missing = kit.lk("run", f"{registry.domain}/lab/none:1", "true", check=False)
    assert missing.returncode == 125 and "not found" in missing.stderr
