"""Pushing to a registry: every blob the registry lacks, then the manifest that names them.

The order matters: a registry refuses a manifest whose blobs it does not have
(``MANIFEST_BLOB_UNKNOWN``). For each blob:

1. ``HEAD /v2/<path>/blobs/<digest>``: 200 means the registry has it (pushed before, or shared
   with another image); skip it. This is "Layer already exists" in ``docker push``.
2. ``POST /v2/<path>/blobs/uploads/``: 202 and a ``Location``, the address of a new upload.
3. ``PUT <Location>?digest=<digest>`` with all the bytes (a *monolithic* upload): the registry
   hashes them and answers 201 only if they match the digest.

Then ``PUT /v2/<path>/manifests/<tag>`` with the manifest's media type as Content-Type.
A multi-platform image is an index of manifests: each of them is pushed first (its blobs,
then itself under its digest), and the index last.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import BinaryIO

from labkit.errors import LabkitError
from labkit.images.blobs import BlobStore, digest_of
from labkit.images.progress import Progress
from labkit.images.reference import Reference
from labkit.images.registry.auth import Credentials
from labkit.images.registry.client import INDEXES, session_for
from labkit.images.registry.transport import Session


class _Counting:
    """A file reader that tells ``progress`` how much of the blob has been sent."""

    def __init__(self, f: BinaryIO, digest: str, progress: Progress) -> None:
        self.f, self.digest, self.progress = f, digest, progress

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.progress.advance(self.digest, len(data))
        return data

    def seek(self, pos: int) -> None:  # a retry after a 401 starts the body again
        self.f.seek(pos)


def _upload(s: Session, digest: str, blobs: BlobStore, progress: Progress) -> None:
    what = f"blob {digest[:19]}"
    with s.request("HEAD", s.url(f"blobs/{digest}"), what=what, ok=(404,)) as r:
        if r.status == 200:
            progress.done(digest, "Layer already exists")
            return
    size = blobs.size(digest)
    progress.start(digest, size)
    with s.request("POST", s.url("blobs/uploads/"), what=f"upload of {what}", data=b"") as r:
        location = r.headers.get("Location")
    if not location:
        raise LabkitError(f"{s.domain} gave no upload location", fix="report the registry")
    url = urllib.parse.urljoin(s.base, location)
    url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    with blobs.path(digest).open("rb") as f:
        body = _Counting(f, digest, progress)
        s.request("PUT", url, what=f"upload of {what}", headers=headers, data=body).close()
    progress.done(digest, "Pushed")


def _children(index: bytes) -> list[str]:
    return [str(e["digest"]) for e in json.loads(index).get("manifests", [])]


def push(
    ref: Reference,
    manifest: bytes,
    media_type: str,
    blobs: BlobStore,
    digests: list[str],
    progress: Progress | None = None,
    auth: Credentials | None = None,
) -> str:
    """Upload the blobs in ``digests`` that the registry lacks, then ``manifest`` as ``ref``'s
    tag (or digest). Returns the manifest's digest, as the registry confirmed it."""
    progress = progress or Progress()
    missing = [d for d in digests if not blobs.has(d)]
    if missing:
        raise LabkitError(
            f"cannot push {ref.familiar}: blob {missing[0][:19]} is not in the local store",
            fix="pull or load the image again",
        )
    if media_type in INDEXES:
        # an index names manifests, not blobs: each goes first, under its own digest
        for entry in json.loads(manifest)["manifests"]:
            child = blobs.read_bytes(entry["digest"])
            doc = json.loads(child)
            inner = [doc["config"]["digest"], *(d["digest"] for d in doc.get("layers", []))]
            child_ref = Reference(ref.domain, ref.path, None, entry["digest"])
            push(child_ref, child, entry["mediaType"], blobs, inner, progress, auth)
        digests = [d for d in digests if d not in set(_children(manifest))]
    s = session_for(ref, auth, push=True)
    for digest in dict.fromkeys(digests):  # each once, in order
        _upload(s, digest, blobs, progress)
    digest = digest_of(manifest)
    target = ref.tag if ref.tag and not ref.digest else (ref.digest or digest)
    if ref.digest and ref.digest != digest:
        raise LabkitError(
            f"cannot push to {ref}: the manifest's digest is {digest}",
            fix="push by tag, or by the manifest's own digest",
        )
    with s.request(
        "PUT",
        s.url(f"manifests/{target}"),
        what=f"manifest for {ref.familiar}",
        headers={"Content-Type": media_type},
        data=manifest,
    ) as r:
        said = r.headers.get("Docker-Content-Digest")
    if said and said != digest:
        raise LabkitError(
            f"{s.domain} stored the manifest as {said}, not {digest}",
            fix="the registry rewrote it; pull by tag to see what it serves",
        )
    return digest
