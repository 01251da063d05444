"""The local image store (OCI layout + unpacked layers), driven through the CLI as a user
would, on images the real Docker builds and saves.

What is proven: a layer two images share is stored and unpacked once; ``rmi`` frees exactly
what no other image uses; ``images`` and ``system df`` print Docker's numbers (checked
against ``docker images`` and ``du``); names and ids behave as in Docker; a container pins
its image; ``labkit reset`` removes what a killed command left and, with ``--images``, the
store.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_kit import Kit, kit_for, table

from labkit import paths


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    yield from kit_for(tmp_path)


def _two_images(kit: Kit) -> tuple[str, str]:
    a = kit.build("a", "RUN echo aaaa > /a.txt", 'CMD ["cat", "/a.txt"]')
    b = kit.build("b", "RUN echo bbbbbbbb > /b.txt", 'CMD ["cat", "/b.txt"]')
    kit.lk("load", stdin=kit.docker_save(a, b))
    return a, b


def _du_bytes(*dirs: Path) -> int:
    """``du`` in apparent bytes, hard links once across all dirs, directories left out (Docker
    and labkit count file bytes; a directory's own size is the file system's business)."""
    total = int(
        subprocess.run(["du", "-scb", *map(str, dirs)], capture_output=True, text=True, check=True)
        .stdout.splitlines()[-1]
        .split()[0]
    )
    dirs_size = subprocess.run(
        ["find", *map(str, dirs), "-type", "d", "-printf", "%s\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return total - sum(map(int, dirs_size))


def test_a_shared_layer_is_stored_once_and_removed_with_its_last_image(kit: Kit) -> None:
    a, b = _two_images(kit)
    base = kit.inspect("labkit/busybox", "{{index .RootFS.Layers 0}}")
    assert kit.inspect(a, "{{index .RootFS.Layers 0}}") == base
    # three layers (busybox, a's, b's), each unpacked once; busybox's is shared
    assert len(kit.layer_dirs()) == 3
    assert base.removeprefix("sha256:") in kit.layer_dirs()
    assert (kit.layers / base[7:] / "diff" / "bin" / "busybox").is_file()
    assert kit.lk("run", a).stdout == "aaaa\n"
    assert kit.lk("run", b).stdout == "bbbbbbbb\n"

    out = kit.lk("rmi", a).stdout.splitlines()
    assert out[0] == f"Untagged: {a}:latest"
    assert f"Deleted: {kit.inspect(a, '{{.Id}}')}" in out
    assert len(kit.layer_dirs()) == 2 and base[7:] in kit.layer_dirs(), "b still needs busybox"
    assert kit.lk("run", b).stdout == "bbbbbbbb\n"

    kit.lk("rmi", b)
    assert kit.layer_dirs() == [] and kit.blobs() == [] and kit.index() == []
    assert kit.lk("images").stdout.splitlines() == [
        "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE"
    ]


def test_images_and_df_print_dockers_numbers(kit: Kit) -> None:
    a, b = _two_images(kit)
    ours = {(r[0], r[1]): r for r in table(kit.lk("images").stdout)[1:]}
    theirs = table(kit.docker("images", "--filter", f"reference={kit.prefix}-*"))[1:]
    assert len(theirs) == 2
    for row in theirs:  # REPOSITORY TAG IMAGE ID CREATED SIZE: the same cells (CREATED
        # may tick between the two commands for an image seconds old)
        mine = ours[(row[0], row[1])]
        assert mine[:3] + mine[4:] == row[:3] + row[4:] and mine[3].endswith(" ago")
    for tag in (a, b):
        size = int(kit.inspect(tag, "{{.Size}}"))
        base = kit.inspect(tag, "{{index .RootFS.Layers 0}}")
        top = kit.inspect(tag, "{{index .RootFS.Layers 1}}")
        assert size == _du_bytes(kit.layers / base[7:] / "diff", kit.layers / top[7:] / "diff")

    df = {r[0]: r for r in table(kit.lk("system", "df", "-v").stdout)[2:-1]}
    shared = int(kit.inspect("labkit/busybox", "{{.Size}}"))
    for tag in (a, b):
        unique = int(kit.inspect(tag, "{{.Size}}")) - shared
        repo, _, _, _, size, shared_col, unique_col, containers = df[tag]
        assert (shared_col, unique_col, containers) == (_human(shared), _human(unique), "0")
    # the total counts the shared layer once, and is what du finds in the layer store
    total = int(kit.lk("system", "df", "-v").stdout.split("(")[-1].split()[0])
    assert total == _du_bytes(*(kit.layers / d / "diff" for d in kit.layer_dirs()))
    summary = table(kit.lk("system", "df").stdout)
    assert summary[1] == ["Images", "2", "0", _human(total), f"{_human(total)} (100%)"]


def test_sizes_and_ages_are_spelled_as_docker_spells_them() -> None:
    from datetime import UTC, datetime, timedelta

    from labkit.images.humanize import human_age, human_size

    assert [human_size(n) for n in (0, 999, 1000, 1985767, 116669267, 2_500_000_000)] == [
        "0B",
        "999B",
        "1kB",
        "1.99MB",
        "117MB",
        "2.5GB",
    ]
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    ages = {
        0.2: "Less than a second ago",
        1: "1 second ago",
        59: "59 seconds ago",
        60: "About a minute ago",
        3599: "59 minutes ago",
        3600: "About an hour ago",
        6 * 3600: "6 hours ago",
        47 * 3600: "47 hours ago",
        3 * 86400: "3 days ago",
        15 * 86400: "2 weeks ago",
        90 * 86400: "3 months ago",
        800 * 86400: "2 years ago",
    }
    for seconds, words in ages.items():
        created = (now - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        assert human_age(created, now) == words, seconds
    assert human_age("2026-12-02T10:59:59.123456789Z", now) == "About an hour ago"  # Go's ns


def _human(n: int) -> str:
    from labkit.images.humanize import human_size

    return human_size(n)


def test_names_and_ids_behave_as_in_docker(kit: Kit) -> None:
    kit.lk("load", stdin=kit.docker_save("labkit/busybox"))
    image_id = kit.inspect("labkit/busybox", "{{.Id}}")
    kit.lk("tag", "labkit/busybox", "127.0.0.1:5999/me/bb:v1")
    rows = table(kit.lk("images").stdout)
    assert ["127.0.0.1:5999/me/bb", "v1", image_id[7:19]] == rows[1][:3] or any(
        r[:3] == ["127.0.0.1:5999/me/bb", "v1", image_id[7:19]] for r in rows
    )
    assert kit.lk("images", "-q").stdout == image_id[7:19] + "\n"
    assert kit.lk("image", "ls", "-q").stdout == image_id[7:19] + "\n"
    refs = sorted(e["annotations"][paths_ref()] for e in kit.index())
    assert refs == ["127.0.0.1:5999/me/bb:v1", "docker.io/labkit/busybox:latest"]
    # by id with two names: Docker's conflict; by one name: only that name goes
    done = kit.lk("rmi", image_id[7:19], check=False)
    assert done.returncode == 125 and "must be forced" in done.stderr
    assert kit.lk("rmi", "127.0.0.1:5999/me/bb:v1").stdout == "Untagged: 127.0.0.1:5999/me/bb:v1\n"
    assert len(kit.blobs()) == 3, "the image itself stays: labkit/busybox still names it"
    for bad, words in (
        ("nosuch", "No such image: nosuch:latest"),
        ("Upper/Case", "must be lowercase"),
    ):
        done = kit.lk("rmi", bad, check=False)
        assert done.returncode == 125 and words in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1
    done = kit.lk("run", "--pull", "never", "nosuch", "true", check=False)  # no DNS query
    assert done.returncode == 125 and "No such image: nosuch:latest" in done.stderr


def paths_ref() -> str:
    from labkit.images.library import REF_NAME

    return REF_NAME


def test_a_container_pins_its_image(kit: Kit) -> None:
    kit.lk("load", stdin=kit.docker_save("labkit/busybox"))
    pid_file = kit.tmp / "pid"
    proc = subprocess.Popen(
        [*_cli(), "run", "--pid-file", str(pid_file), "labkit/busybox", "sleep", "60"],
        cwd=Path(__file__).parent.parent,
        env=kit.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_file.exists(), proc.stderr.read() if proc.poll() is not None else "no pid"
        for flags in ((), ("-f",)):  # running: refused even when forced, as Docker does
            done = kit.lk("rmi", *flags, "labkit/busybox", check=False)
            assert done.returncode == 125 and "being used by running container" in done.stderr
        assert kit.lk("system", "df", "-v").stdout.split("\n")[3].split()[-1] == "1"
        assert table(kit.lk("system", "df").stdout)[1] == ["Images", "1", "1", "1.99MB", "0B (0%)"]
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), 9)
        proc.wait(30)
    assert kit.layer_dirs(), "the image is still there"


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "labkit.cli"]


def test_two_loads_at_once_unpack_a_shared_layer_once(kit: Kit) -> None:
    archive = kit.tmp / "bb.tar"
    archive.write_bytes(kit.docker_save("labkit/busybox"))
    procs = [
        subprocess.Popen(
            [*_cli(), "load", "-i", str(archive)],
            cwd=Path(__file__).parent.parent,
            env=kit.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out == b"Loaded image: labkit/busybox:latest\n"
    assert len(kit.layer_dirs()) == 1 and len(kit.index()) == 1
    assert not [p for p in kit.layers.iterdir() if p.name.startswith(".tmp-")]


def test_store_dirs_are_private(kit: Kit) -> None:
    kit.lk("load", stdin=kit.docker_save("labkit/busybox"))
    # CVE-2021-41091: setuid files in layers must be out of host users' reach. The layers
    # are open to one more: the host gid that is root in a labkit user namespace.
    assert kit.oci.stat().st_mode & 0o777 == 0o700
    layers = kit.layers.stat()
    assert (layers.st_mode & 0o777, layers.st_uid, layers.st_gid) == (0o710, 0, 100000)
    for layer in kit.layers.iterdir():
        if layer.is_dir():
            st = layer.stat()
            assert (st.st_mode & 0o777, st.st_gid) == (0o710, 100000), layer
    layout = json.loads((kit.oci / "oci-layout").read_text())
    assert layout == {"imageLayoutVersion": "1.0.0"}
    # the store is a real OCI layout: skopeo reads it
    out = subprocess.run(
        ["skopeo", "inspect", f"oci:{kit.oci}:docker.io/labkit/busybox:latest"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["Layers"] == [
        kit.inspect("labkit/busybox", "{{index .RootFS.Layers 0}}")
    ]


def test_reset_removes_leftovers_and_with_images_the_store(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkit import reset

    kit.lk("load", stdin=kit.docker_save("labkit/busybox"))
    for name, value in (
        ("STATE_DIR", kit.state),
        ("IMAGES_DIR", kit.state / "images"),
        ("OCI_DIR", kit.oci),
        ("LAYERS_DIR", kit.layers),
    ):
        monkeypatch.setattr(paths, name, value)
    # what a killed pull or load leaves: a half blob, a half layer, a blob nobody names
    part = kit.oci / "blobs" / "sha256" / ".new-4242-1.part"
    part.write_bytes(b"half")
    (kit.layers / (".tmp-" + "a" * 64 + "-4242") / "diff").mkdir(parents=True)
    orphan = kit.oci / "blobs" / "sha256" / ("0" * 64)
    orphan.write_bytes(b"nobody names me")
    planned = [i for i in reset.plan() if i.kind.startswith("image")]
    assert {i.kind for i in planned} == {"image-garbage"} and len(planned) == 3
    assert reset.apply(planned) == []
    assert not part.exists() and not orphan.exists()
    assert [p.name for p in kit.layers.iterdir() if p.name.startswith(".tmp")] == []
    assert kit.lk("run", "labkit/busybox", "true").returncode == 0, "the image is untouched"

    (kit.oci / "index.json").write_text("{damaged")  # a damaged store still goes
    stores = [i for i in reset.plan(images=True) if i.kind.startswith("image")]
    assert sorted(i.name for i in stores) == ["layers", "oci"]
    assert reset.apply(stores) == []
    assert not kit.oci.exists() and not kit.layers.exists()
