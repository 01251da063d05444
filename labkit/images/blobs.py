"""Content-addressed storage: a blob's name is the sha256 of its bytes, so it is verified by
construction and stored once however many images share it.

This is the ``blobs/sha256/<hex>`` half of an OCI image layout. A blob is written to a temp
file beside its final place, hashed while it is written, and renamed into place only if the
hash is the digest it was announced under: a download cut off half-way, or a registry that
sends other bytes than it promised, leaves nothing that looks like a finished blob.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from labkit.errors import LabkitError

DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
TMP_SUFFIX = ".part"


def check_digest(digest: str) -> str:
    """``digest`` if it is ``sha256:`` and 64 lower-case hex digits, else a LabkitError.

    Only sha256: it is what every registry and Docker use, and a digest is also a file name
    here, so nothing but hex may reach the file system."""
    if not DIGEST.fullmatch(digest):
        raise LabkitError(
            f"not a sha256 digest: {digest!r}",
            fix="a digest is sha256: followed by 64 lower-case hex digits",
        )
    return digest


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobStore:
    """``root/blobs/sha256/<hex>``: write once, verified; read many."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "blobs" / "sha256"

    def path(self, digest: str) -> Path:
        return self.dir / check_digest(digest).removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read_bytes(self, digest: str) -> bytes:
        """A small blob (manifest, config), checked again: a file on disk can be changed."""
        data = self.path(digest).read_bytes()
        if digest_of(data) != digest:
            raise LabkitError(
                f"blob {digest[:19]} in {self.dir} does not match its digest (changed on disk)",
                fix="remove the image and pull or load it again",
            )
        return data

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its digest."""
        digest = digest_of(data)
        if not self.has(digest):
            with self.writer(digest, len(data)) as w:
                w.write(data)
        return digest

    def writer(self, digest: str, size: int | None = None) -> BlobWriter:
        """A file-like sink for the blob ``digest``; verified and renamed in place on close."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return BlobWriter(self.path(digest), digest, size)

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        if self.dir.is_dir():
            for p in sorted(self.dir.iterdir()):
                if DIGEST.fullmatch("sha256:" + p.name):
                    yield "sha256:" + p.name

    def stale_parts(self) -> list[Path]:
        """Temp files of writes that never finished (a killed pull): safe to delete when no
        pull runs."""
        return sorted(self.dir.glob("*" + TMP_SUFFIX)) if self.dir.is_dir() else []


class BlobWriter:
    """Hashes and counts what is written; ``close`` keeps the blob only if both match."""

    def __init__(self, final: Path, digest: str, size: int | None) -> None:
        self.final = final
        self.digest = digest
        self.expected_size = size
        # Unique per writer: two downloads of one layer (threads of one pull, or two pulls)
        # each write their own temp file; whichever finishes second replaces an equal blob.
        self.tmp = final.with_name(f"{final.name}.{os.getpid()}-{os.urandom(4).hex()}{TMP_SUFFIX}")
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
        self.hash = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.written += len(data)
        if self.expected_size is not None and self.written > self.expected_size:
            self.abort()
            raise LabkitError(
                f"blob {self.digest[:19]} is larger than the {self.expected_size} bytes announced",
                fix="the source is broken or hostile; pull from another registry",
            )
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()
        got = "sha256:" + self.hash.hexdigest()
        if got != self.digest or (
            self.expected_size is not None and self.written != self.expected_size
        ):
            self.tmp.unlink(missing_ok=True)
            raise LabkitError(
                f"blob {self.digest[:19]} arrived as {got[:19]} ({self.written} bytes): "
                "it does not match its digest",
                fix="pull again; if it repeats, the registry serves damaged or forged data",
            )
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
