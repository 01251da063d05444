"""The byte streams around a layer's tar: decompression in, hashing through, hashing out.

A layer's *diff id* is the sha256 of its uncompressed tar, so it is computed here while the
tar streams by, never by reading the whole layer into memory; the same count of bytes stops a
decompression bomb. gzip is in the standard library; zstd needs the ``zstandard`` module or
the ``zstd`` program of the host (never one from an image: CVE-2014-9357).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import shutil
from collections.abc import Callable
from typing import BinaryIO

from labkit.errors import LabkitError

GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
HOSTILE = "the image is broken or hostile: do not use it"


class _Reader(io.RawIOBase):
    """A readable stream made of a ``read(n)`` function (what tarfile and gzip want)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class Hashing(_Reader):
    """Hashes and counts the uncompressed tar as it streams by: the diff id and the bomb cap."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        super().__init__(self._through)
        self.raw, self.limit, self.count, self.sha = raw, limit, 0, hashlib.sha256()

    def _through(self, n: int) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        if self.count > self.limit:
            raise LabkitError(
                f"layer is larger than {self.limit} bytes uncompressed: a decompression bomb?",
                fix="if the image is genuine, pass a larger max_bytes",
            )
        self.sha.update(data)
        return data


def decompressed(source: BinaryIO, media_type: str, stack: contextlib.ExitStack) -> BinaryIO:
    """The tar inside ``source``: the magic bytes decide (as Docker does), not the media type."""
    head = source.read(4)
    rest = [head]

    def whole(n: int) -> bytes:
        return rest.pop() if rest else source.read(n)

    raw = io.BufferedReader(_Reader(whole))
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if head.startswith(ZSTD_MAGIC):
        return _zstd(raw, media_type, stack)
    return raw  # type: ignore[return-value]


def _zstd(raw: BinaryIO, media_type: str, stack: contextlib.ExitStack) -> BinaryIO:
    """zstd: the ``zstandard`` module if installed, else the host's ``zstd -dc`` (run from the
    host's PATH, never from an image: CVE-2014-9357) fed by a thread."""
    try:
        import zstandard  # type: ignore[import-not-found]

        return zstandard.ZstdDecompressor().stream_reader(raw)
    except ImportError:
        pass
    import subprocess
    import threading

    binary = shutil.which("zstd")
    if binary is None:
        raise LabkitError(
            f"the layer is zstd-compressed ({media_type or 'by its magic bytes'}), and there is "
            "no zstandard module and no zstd program",
            fix="apt-get install zstd",
        )
    proc = subprocess.Popen(
        [binary, "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin and proc.stdout and proc.stderr

    def feed() -> None:
        with contextlib.suppress(OSError, ValueError), proc.stdin:  # type: ignore[union-attr]
            while chunk := raw.read(1 << 16):
                proc.stdin.write(chunk)  # type: ignore[union-attr]

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        feeder.join()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]

    stack.callback(stop)

    def read(n: int) -> bytes:
        data = proc.stdout.read(n)  # type: ignore[union-attr]
        if not data and proc.wait() != 0:
            why = proc.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
            raise LabkitError(f"zstd could not decompress the layer: {why}", fix=HOSTILE)
        return data

    return io.BufferedReader(_Reader(read))  # type: ignore[return-value]


class HashingWriter:
    """Writes through to ``out`` and hashes: the diff id of the tar as it is written."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha = out, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.out.write(data) or len(data)
