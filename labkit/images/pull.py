"""``labkit pull`` and ``labkit push``: the registry client and the image store, put together.

A pull is: read the reference, ask the registry for the manifest (an index first, if the
image is multi-platform, then this host's entry), fetch the config, fetch the layers the
store lacks (three at a time, as Docker does), unpack each layer as soon as it is in, and
index the image under its name. What is printed is what ``docker pull`` prints, so the two
can be compared line by line. The whole pull holds the store's ``busy`` lock, so a
concurrent ``rmi`` cannot collect a blob this pull has fetched but not yet indexed.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from labkit.errors import LabkitError
from labkit.images import library, unpacked
from labkit.images.progress import Progress, short
from labkit.images.reference import parse

PARALLEL = 3  # Docker's max-concurrent-downloads default


class _Serialized(Progress):
    """One progress display fed by several download threads: one report at a time."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    def start(self, digest: str, total: int) -> None:
        with self.lock:
            self.inner.start(digest, total)

    def advance(self, digest: str, n: int) -> None:
        with self.lock:
            self.inner.advance(digest, n)

    def done(self, digest: str, status: str) -> None:
        with self.lock:
            self.inner.done(digest, status)


def pull(
    name: str,
    *,
    platform: str | None = None,
    progress: Progress | None = None,
    out: TextIO | None = None,
) -> dict:
    """Pull ``name`` into the store; print Docker's lines to ``out``; return the entry."""
    import sys

    from labkit.images import registry

    out = out or sys.stdout
    say = lambda line: print(line, file=out, flush=True)  # noqa: E731
    ref = parse(name)
    if "@" not in name and ref.tag == "latest" and not name.endswith(":latest"):
        say("Using default tag: latest")
    say(f"{ref.tag if ref.tag and not ref.digest else ref.digest}: Pulling from {ref.path}")
    shown = _Serialized(progress or Progress())
    blobs = library.blobs()
    with library.busy():
        pulled = registry.fetch_manifest(ref, platform=platform)
        registry.fetch_blob(ref, pulled.config, blobs)
        diff_ids = json.loads(blobs.read_bytes(pulled.config.digest))["rootfs"]["diff_ids"]
        if len(diff_ids) != len(pulled.layers):
            raise LabkitError(
                f"{ref.familiar}: {len(pulled.layers)} layers but {len(diff_ids)} diff ids",
                fix="the image is damaged in the registry",
            )
        had = {d.digest for d in pulled.layers if blobs.has(d.digest)}
        with ThreadPoolExecutor(PARALLEL) as pool:
            # each blob once: an image may list one layer twice (empty layers often are)
            futures = {
                d.digest: pool.submit(registry.fetch_blob, ref, d, blobs, shown)
                for d in {d.digest: d for d in pulled.layers}.values()
            }
            try:
                for desc, diff_id in zip(pulled.layers, diff_ids, strict=True):
                    futures[desc.digest].result()  # a failed download raises here
                    unpacked.ensure(diff_id, blobs.path(desc.digest), desc.media_type)
                    if desc.digest not in had:
                        had.add(desc.digest)
                        shown.done(desc.digest, "Pull complete")
            except BaseException:  # Ctrl-C or a failure: start no more downloads
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        before = library.find(str(ref))
        repo_digest = pulled.index_digest or pulled.manifest_digest
        entry = library.add(ref, pulled.manifest, pulled.media_type, repo_digest=repo_digest)
    say(f"Digest: {repo_digest}")
    fresh = before is None or before["digest"] != entry["digest"]
    status = "Downloaded newer image for" if fresh else "Image is up to date for"
    say(f"Status: {status} {ref.familiar}")
    say(str(ref))
    return entry


def push(name: str, *, progress: Progress | None = None, out: TextIO | None = None) -> str:
    """Push the stored image ``name`` (a base image is packed into the store first, as one
    gzip'd layer); print Docker's lines; return the manifest digest."""
    import sys

    from labkit.images import baseimage, registry

    out = out or sys.stdout
    ref = parse(name)
    entry = library.find(str(ref))
    if entry is None:
        base = baseimage.name_of(name)
        if base is None:
            raise library.no_such_image(name)
        baseimage.to_oci(base, ref)
        entry = library.find(str(ref))
        assert entry is not None
    print(f"The push refers to repository [{ref.name.removeprefix('docker.io/')}]", file=out)
    raw = library.blobs().read_bytes(entry["digest"])
    doc = json.loads(raw)
    layers = [d["digest"] for d in doc.get("layers", [])]
    shown = progress or _PushLines(out, skip=doc["config"]["digest"])
    digest = registry.push(
        ref, raw, entry["mediaType"], library.blobs(), [*layers, doc["config"]["digest"]], shown
    )
    print(f"{ref.tag or 'latest'}: digest: {digest} size: {len(raw)}", file=out, flush=True)
    return digest


class _PushLines(Progress):
    """``docker push`` prints a line per layer when it is done ("Pushed", "Layer already
    exists"), none for the config blob."""

    def __init__(self, out: TextIO, skip: str) -> None:
        self.out, self.skip = out, skip

    def done(self, digest: str, status: str) -> None:
        if digest != self.skip:
            print(f"{short(digest)}: {status}", file=self.out, flush=True)
