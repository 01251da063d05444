"""Blobs whose digest is known only once they are written: a layer packed or gzip'd here, a
file streamed out of an archive. The bytes go to a temp name (``.part``, which ``labkit
reset`` collects if the writer is killed) while they are hashed, and the file is renamed to
its digest at the end: content-addressed without reading anything twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

from labkit.images.blobs import TMP_SUFFIX, BlobStore


class BlobSink:
    """A blob whose digest is known only at the end (a layer packed or compressed here, a
    file read from an archive): written to a temp name while hashed, renamed to its digest."""

    def __init__(self, store: BlobStore) -> None:
        store.dir.mkdir(parents=True, exist_ok=True)
        self.tmp = store.dir / f".new-{os.getpid()}-{id(self):x}{TMP_SUFFIX}"
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in new_blob
        self.hash = hashlib.sha256()
        self.size = 0
        self.digest = ""

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


@contextlib.contextmanager
def new_blob(store: BlobStore) -> Iterator[BlobSink]:
    """Yield a sink; on success the blob is in ``store`` under ``sink.digest``."""
    sink = BlobSink(store)
    try:
        yield sink
        sink.file.close()
        sink.digest = "sha256:" + sink.hash.hexdigest()
        os.replace(sink.tmp, store.path(sink.digest))
    finally:
        sink.file.close()
        sink.tmp.unlink(missing_ok=True)
