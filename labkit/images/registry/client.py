"""Pulling from a registry (the OCI distribution spec): a manifest, then its blobs.

The whole protocol for a pull is two kinds of GET:

1. ``GET /v2/<path>/manifests/<tag or digest>`` with an ``Accept`` header listing the manifest
   formats we understand. The answer is either an image *manifest* (a config blob and a list of
   layer blobs) or an *index* (Docker calls it a manifest list): one manifest per platform,
   from which we pick ours and GET that one by digest.
2. ``GET /v2/<path>/blobs/<digest>`` for the config and each layer: plain bytes, named by
   their sha256, so every byte can be checked; a blob we already have is not fetched again.

A tag is a pointer the registry may move; a digest is not. So the manifest is hashed as it
arrives and the digest we report is that hash, checked against the one we asked for.

The same code pulls from Docker Hub where there is internet (the learner's VM): ``alpine`` is
``docker.io/library/alpine``, whose API is https://registry-1.docker.io; its 401 names the
token server (auth.docker.io), which hands out anonymous pull tokens. The tests use a local
registry on 127.0.0.1 instead, spoken to in plain HTTP (see ``transport.scheme_for``).
"""

from __future__ import annotations

import json
import platform as host_platform
from dataclasses import dataclass

from labkit.errors import LabkitError
from labkit.images.blobs import BlobStore, digest_of
from labkit.images.progress import Progress
from labkit.images.reference import Reference
from labkit.images.registry import credentials
from labkit.images.registry.auth import Credentials, scope_for
from labkit.images.registry.transport import RegistryError, Session

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join(MANIFESTS + INDEXES)
MANIFEST_MAX = 4 * 1024 * 1024  # the spec's advice; a bigger "manifest" is an attack
CHUNK = 1024 * 1024
# Go's names for CPU architectures, which image platforms use.
ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass
class Descriptor:
    """What a manifest says about a blob: its media type, digest and size."""

    media_type: str
    digest: str
    size: int


@dataclass
class Pulled:
    """The result of resolving a reference: the manifest chosen and the blobs it names."""

    reference: Reference
    manifest_digest: str
    index_digest: str | None
    manifest: bytes
    config: Descriptor
    layers: list[Descriptor]
    media_type: str = DOCKER_MANIFEST


def host_platform_name() -> str:
    """This machine as an image platform: ``linux/amd64`` or ``linux/arm64``."""
    machine = host_platform.machine().lower()
    return f"linux/{ARCH.get(machine, machine)}"


def _platform_key(text: str) -> tuple[str, str, str]:
    """``linux/arm64`` -> ("linux", "arm64", "v8"): arm64 without a variant *is* v8."""
    os_, _, rest = text.partition("/")
    arch, _, variant = rest.partition("/")
    arch = ARCH.get(arch, arch)
    if arch == "arm64" and not variant:
        variant = "v8"
    return os_, arch, variant


def choose(index: dict, wanted: str, where: str) -> dict:
    """The entry of an index for platform ``wanted``; a LabkitError listing what there is."""
    goal = _platform_key(wanted)
    offered = []
    for entry in index.get("manifests", []):
        p = entry.get("platform") or {}
        name = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
        if _platform_key(name) == goal:
            return entry
        if p.get("os") not in (None, "unknown"):  # skip attestations ("unknown/unknown")
            offered.append(name)
    raise LabkitError(
        f"{where} has no image for {wanted} (it has: {', '.join(offered) or 'none'})",
        fix="pick one of those with {platform}, or another image",
    )


def session_for(ref: Reference, auth: Credentials | None, push: bool = False) -> Session:
    """A session for ``ref``'s repository, with the given or the stored credentials."""
    creds = auth if auth is not None else credentials.stored(ref.domain)
    return Session(ref.domain, ref.path, creds, scope_for(ref.path, push))


def _get_manifest(s: Session, ref: Reference, target: str) -> tuple[bytes, str]:
    what = f"manifest for {ref.familiar}"
    with s.request("GET", s.url(f"manifests/{target}"), what=what, headers={"Accept": ACCEPT}) as r:
        body = r.read(MANIFEST_MAX + 1)
        ctype = r.headers.get("Content-Type", "").split(";")[0].strip()
        said = r.headers.get("Docker-Content-Digest")
    if len(body) > MANIFEST_MAX:
        raise LabkitError(f"{what}: larger than {MANIFEST_MAX} bytes", fix="not a real manifest")
    got = digest_of(body)
    expected = target if target.startswith("sha256:") else said
    if expected and expected != got:
        raise LabkitError(
            f"{what}: the registry sent a manifest whose digest is {got}, not {expected}",
            fix="pull again; if it repeats, the registry serves damaged or forged data",
        )
    try:
        media = json.loads(body).get("mediaType") or ctype
    except ValueError:
        raise LabkitError(f"{what}: not JSON", fix="the registry is broken") from None
    return body, media


def _descriptor(d: dict) -> Descriptor:
    return Descriptor(str(d["mediaType"]), str(d["digest"]), int(d["size"]))


def fetch_manifest(
    ref: Reference, *, platform: str | None = None, auth: Credentials | None = None
) -> Pulled:
    """Resolve ``ref`` to one image manifest, picking ``platform`` (default: this host's)
    from an index; the config and layer descriptors come with it, no blobs yet."""
    s = session_for(ref, auth)
    body, media = _get_manifest(s, ref, ref.digest or ref.tag or "latest")
    index_digest = None
    if media in INDEXES:
        index_digest = digest_of(body)
        entry = choose(json.loads(body), platform or host_platform_name(), ref.familiar)
        body, media = _get_manifest(s, ref, str(entry["digest"]))
    if media not in MANIFESTS:
        raise LabkitError(
            f"{ref.familiar}: manifest type {media or '(none)'} is not supported",
            fix="labkit reads Docker schema 2 and OCI manifests; schema 1 is long deprecated",
        )
    doc = json.loads(body)
    return Pulled(
        reference=ref,
        manifest_digest=digest_of(body),
        index_digest=index_digest,
        manifest=body,
        config=_descriptor(doc["config"]),
        layers=[_descriptor(d) for d in doc.get("layers", [])],
        media_type=media,
    )


def fetch_blob(
    ref: Reference,
    desc: Descriptor,
    blobs: BlobStore,
    progress: Progress | None = None,
    auth: Credentials | None = None,
) -> None:
    """Stream one blob into ``blobs``, hashed as it is written (BlobStore.writer keeps it only
    if digest and size match). A blob already in the store is not downloaded again."""
    progress = progress or Progress()
    if blobs.has(desc.digest):
        progress.done(desc.digest, "Already exists")
        return
    s = session_for(ref, auth)
    progress.start(desc.digest, desc.size)
    what = f"blob {desc.digest[:19]} of {ref.familiar}"
    url = s.url(f"blobs/{desc.digest}")
    with s.request("GET", url, what=what) as r, blobs.writer(desc.digest, desc.size) as sink:
        try:
            while chunk := r.read(CHUNK):
                sink.write(chunk)
                progress.advance(desc.digest, len(chunk))
        except OSError as e:  # a connection cut off mid-blob: nothing half-written stays
            raise RegistryError(f"{what}: download broke off ({e})", fix="pull again") from e
    progress.done(desc.digest, "Download complete")
