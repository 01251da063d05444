"""labkit.docker against the real Docker daemon (CI and the lab VM run one).

The image tests use the shared busybox image and the global ``labkit/busybox:latest`` tag, as
the notebooks do; containers made here are named ``labkit-test-docker-<pid>-*`` and removed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import docker, reset
from labkit.errors import LabkitError
from labkit.images import store

PREFIX = f"labkit-test-docker-{os.getpid()}-"


@pytest.fixture(scope="module")
def busybox_tag() -> str:
    assert docker.reachable(), "no Docker daemon answers: start dockerd (CI and the lab VM run one)"
    store.build("busybox")
    return docker.import_image("busybox")


@pytest.fixture
def names() -> Iterator[str]:
    """Container names for one test; whatever was made under them is removed afterwards."""
    yield PREFIX
    docker.remove_containers(PREFIX)


def _one_line(exc: LabkitError) -> None:
    assert "\n" not in str(exc) and exc.problem and exc.fix, str(exc)


def test_probe_finds_the_daemon() -> None:
    assert docker.installed()
    version = docker.server_version()
    assert version is not None and re.match(r"\d+\.\d+", version), version
    assert docker.reachable()
    docker.require()


def test_import_round_trip(busybox_tag: str) -> None:
    assert busybox_tag == "labkit/busybox:latest" == docker.image_tag("busybox")
    first = docker.inspect(busybox_tag, "{{.Id}}")
    meta = store.image_meta("busybox")
    assert docker.inspect(busybox_tag, "{{.Comment}}") == f"labkit busybox {meta['created']}"
    assert docker.import_image("busybox") == busybox_tag
    assert docker.inspect(busybox_tag, "{{.Id}}") == first, "second import should be skipped"
    out = docker.run("run", "--rm", "--network", "none", busybox_tag, "echo", "ok")
    assert out.stdout.strip() == "ok"
    assert busybox_tag in docker.labkit_images()


def test_reset_finds_and_removes_a_labkit_tag(busybox_tag: str) -> None:
    """On a tag of this test's own: the shared labkit/* images belong to everyone here."""
    tag = f"labkit/test-docker-{os.getpid()}:latest"
    docker.run("tag", busybox_tag, tag)
    try:
        found = [i for i in reset.find_docker_images() if i.name == tag]
        assert [i.kind for i in found] == ["docker-image"]
        assert reset.apply(found) == []
        assert tag not in docker.labkit_images()
        assert busybox_tag in docker.labkit_images(), "only the one tag goes"
    finally:
        docker.run("rmi", tag, check=False)


def test_container_pid_and_cgroupns_mode(busybox_tag: str, names: str) -> None:
    name = names + "sleeper"
    docker.run("run", "-d", "--network", "none", "--name", name, busybox_tag, "sleep", "300")
    pid = docker.container_pid(name)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]
    assert docker.cgroupns_mode(name) in ("host", "private")
    assert docker.remove_containers(names) == [name]
    assert docker.remove_containers(names) == []


def test_a_container_that_is_not_running_has_no_pid(busybox_tag: str, names: str) -> None:
    name = names + "created"
    docker.run("create", "--network", "none", "--name", name, busybox_tag, "true")
    with pytest.raises(LabkitError, match="is not running") as err:
        docker.container_pid(name)
    _one_line(err.value)


def test_a_failing_command_is_one_line_with_a_fix() -> None:
    missing = PREFIX + "missing"
    assert docker.run("inspect", missing, check=False).returncode != 0
    with pytest.raises(LabkitError) as err:
        docker.inspect(missing, "{{.Id}}")
    _one_line(err.value)
    assert f"docker inspect -f {{{{.Id}}}} {missing}" in err.value.problem
    assert "No such" in err.value.problem and "docker ps -a" in err.value.fix


def test_a_command_that_hangs_is_killed_after_its_timeout() -> None:
    with pytest.raises(LabkitError, match=r"`docker events` did not finish within 0\.5 s") as err:
        docker.run("events", timeout=0.5)
    _one_line(err.value)


def test_without_the_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not docker.installed()
    assert docker.server_version() is None
    assert docker.labkit_images() == []
    assert docker.remove_containers(PREFIX) == []
    for call in (docker.require, lambda: docker.run("ps")):
        with pytest.raises(LabkitError, match="docker CLI is not installed") as err:
            call()
        assert err.value.fix == docker.INSTALL_FIX


def test_without_a_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert docker.installed() and not docker.reachable()
    with pytest.raises(LabkitError, match="daemon is not reachable") as err:
        docker.require()
    assert err.value.fix == docker.START_FIX
    with pytest.raises(LabkitError, match="Cannot connect to the Docker daemon") as err:
        docker.run("ps")
    _one_line(err.value)
    assert err.value.fix == docker.START_FIX
    assert docker.labkit_images() == []


def test_only_labkit_names_are_removed() -> None:
    for call, name in ((docker.remove_containers, "web"), (docker.remove_image, "busybox")):
        with pytest.raises(LabkitError, match="not a labkit name"):
            call(name)
    with pytest.raises(LabkitError, match="not a labkit name"):
        docker.remove_image("labkit-bench")  # images are labkit/<name>, containers labkit-*
