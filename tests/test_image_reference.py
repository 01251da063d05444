"""Image references parsed as Docker parses them (distribution/reference's own examples)."""

from __future__ import annotations

import pytest

from labkit.errors import LabkitError
from labkit.images.reference import parse

DIGEST = "sha256:" + "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
        ("alpine:3.19", "docker.io/library/alpine:3.19", "alpine:3.19"),
        ("library/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
        ("docker.io/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
        ("index.docker.io/library/debian", "docker.io/library/debian:latest", "debian:latest"),
        ("dmcgowan/myapp", "docker.io/dmcgowan/myapp:latest", "dmcgowan/myapp:latest"),
        ("docker.io/library/foo/bar", "docker.io/library/foo/bar:latest", "library/foo/bar:latest"),
        ("store/foo/bar", "docker.io/store/foo/bar:latest", "store/foo/bar:latest"),
        ("test_com/foo", "docker.io/test_com/foo:latest", "test_com/foo:latest"),
        ("localhost/fooo", "localhost/fooo:latest", "localhost/fooo:latest"),
        ("localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000/x:1"),
        ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase:latest",
         "127.0.0.1:8000/private/moonbase:latest"),
        ("example.com/privatebase", "example.com/privatebase:latest",
         "example.com/privatebase:latest"),
        ("test-com:8080/foo", "test-com:8080/foo:latest", "test-com:8080/foo:latest"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest", "xn--n3h.com:18080/foo:latest"),
        ("[fc00::1]:5000/docker/docker", "[fc00::1]:5000/docker/docker:latest",
         "[fc00::1]:5000/docker/docker:latest"),
        ("ghcr.io/me/app:v1.2_rc-3", "ghcr.io/me/app:v1.2_rc-3", "ghcr.io/me/app:v1.2_rc-3"),
        ("docker---rules/docker", "docker.io/docker---rules/docker:latest",
         "docker---rules/docker:latest"),
        ("dock__er/docker", "docker.io/dock__er/docker:latest", "dock__er/docker:latest"),
        ("LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo:latest", "LOCALDOMAIN/fooo:latest"),
        ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base:latest",
         "ubuntu-12.04-base:latest"),
        ("alpine:UPPER_ok", "docker.io/library/alpine:UPPER_ok", "alpine:UPPER_ok"),
        ("localhost", "docker.io/library/localhost:latest", "localhost:latest"),
        ("docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
         "docker.io/library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest",
         "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest"),
    ],
)  # fmt: skip
def test_normalised_like_docker(text: str, full: str, familiar: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert parse(full) == ref  # the full form parses back to the same reference


def test_parts() -> None:
    ref = parse("localhost:5000/team/app:2")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("localhost:5000", "team/app", "2", None)
    assert ref.name == "localhost:5000/team/app"


def test_digest_and_tag() -> None:
    only = parse(f"busybox@{DIGEST}")
    assert (only.tag, only.digest) == (None, DIGEST)  # no "latest" when a digest is given
    assert str(only) == f"docker.io/library/busybox@{DIGEST}"
    both = parse(f"busybox:latest@{DIGEST}")
    assert (both.tag, both.digest) == ("latest", DIGEST)
    assert both.familiar == f"busybox:latest@{DIGEST}"
    assert str(both) == f"docker.io/library/busybox:latest@{DIGEST}"


def test_with_tag() -> None:
    assert str(parse("alpine@" + DIGEST).with_tag("x")) == "docker.io/library/alpine:x"
    with pytest.raises(LabkitError, match="invalid tag format"):
        parse("alpine").with_tag("-x")


def test_length_limit() -> None:
    ok = "x/" + "a" * 253  # the limit counts the path (without the domain): 255 is allowed
    assert len(parse(ok).path) == 255
    too_long = "x/" + "a" * 254
    with pytest.raises(LabkitError, match="not be more than 255 characters"):
        parse(too_long)


def test_tag_length() -> None:
    assert parse("a:" + "t" * 128).tag == "t" * 128
    with pytest.raises(LabkitError, match="invalid tag"):
        parse("a:" + "t" * 129)


@pytest.mark.parametrize(
    ("text", "problem", "fix"),
    [
        ("", "at least one component", "name an image"),
        ("Alpine", "repository name (library/Alpine) must be lowercase", "alpine"),
        ("docker/Docker:Tag", "repository name (docker/Docker) must be lowercase",
         "docker/docker:Tag"),
        ("docker.io/docker/Docker", "must be lowercase", "docker.io/docker/docker"),
        ("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
         "64-byte hexadecimal", "image id"),
        ("https://github.com/docker/docker", "not a URL", "drop the scheme"),
        ("-docker", "bad repository path component '-docker'", "lower-case letters"),
        ("-docker/docker", "component '-docker'", "joined by"),
        ("docker-/docker", "component 'docker-'", "joined by"),
        ("____/____", "component '____'", "joined by"),
        ("_docker/_docker", "component '_docker'", "joined by"),
        ("dock_.er/docker", "bad registry host 'dock_.er'", "ghcr.io"),  # has a '.': a host
        ("docker///docker", "component ''", "joined by"),
        ("docker/", "component ''", "joined by"),
        ("dock..er/docker", "bad registry host 'dock..er'", "ghcr.io"),
        ("-docker.io/docker/docker", "bad registry host", "127.0.0.1:5000"),
        ("fc00::1:5000/debian", "bad registry host", "[::1]:5000"),
        ("[fe80::1%eth0]:5000/debian", "bad registry host", "[::1]:5000"),
        ("alpine:-x", "invalid tag '-x'", "does not start with"),
        ("alpine:.x", "invalid tag", "does not start with"),
        ("alpine:a/b", "", ""),
        ("alpine@sha256:abc", "invalid digest format", "64 hex digits"),
        ("alpine@sha512:" + "a" * 128, "unsupported digest", "only sha256"),
        ("alpine@sha256:" + "A" * 64, "unsupported digest", "lower-case"),
        ("alpine:1:2", "invalid tag", ""),
        ("a b", "", ""),
        ("alpiné", "", ""),
    ],
)  # fmt: skip
def test_bad_references(text: str, problem: str, fix: str) -> None:
    with pytest.raises(LabkitError) as info:
        parse(text)
    err = info.value
    assert err.problem.startswith("invalid reference format: ")
    assert problem in err.problem
    assert fix in err.fix
    assert err.fix, "every bad reference says how to write it"
    assert "\n" not in str(err)
