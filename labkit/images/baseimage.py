"""The locally built base images (busybox, debian) as images like any other.

``labkit images build`` makes them as plain directories (``store.py``), so the lab runs
offline. To run one, its directory is the single overlay lower dir. To tag, push or save one,
it becomes a real OCI image of one layer: the directory packed into a tar (with Docker's
whiteout names, ``layers.pack``), gzip'd, and a config written that says what Docker's
``busybox`` and ``debian`` images say: ``Cmd`` sh or bash, the usual ``PATH``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform

from labkit.errors import LabkitError
from labkit.images import library, newblob, store
from labkit.images.reference import Reference, parse

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CMD = {"busybox": ["sh"], "debian": ["bash"]}
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def name_of(name: str) -> str | None:
    """ "busybox" for ``busybox``, ``busybox:latest``, ``docker.io/library/busybox``; else None."""
    try:
        ref = parse(name)
    except LabkitError:
        return None
    for base in store.KNOWN:
        if ref.domain == "docker.io" and ref.path == f"library/{base}" and not ref.digest:
            return base if ref.tag == "latest" else None
    return None


def image_id(base: str) -> str:
    """A stable id of its own: the digest of its image.json (a rebuild changes it)."""
    meta = (store.image_dir(base) / store.META).read_bytes()
    return "sha256:" + hashlib.sha256(meta).hexdigest()


def run_config(base: str) -> dict:
    return {"Env": [PATH_ENV], "Cmd": list(CMD[base])}


def runnable(base: str) -> library.RunnableImage:
    rootfs = store.image_rootfs(base)  # a LabkitError with the fix if it is not built
    return library.RunnableImage(str(parse(base)), image_id(base), [rootfs], run_config(base))


def arch() -> str:
    """This host's architecture as OCI names it (Go's GOARCH)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def to_oci(base: str, ref: Reference, compress: bool = True) -> Reference:
    """Pack the base image into the store as an OCI image named ``ref``; return ``ref``."""
    from labkit.images import layers

    rootfs = store.image_rootfs(base)
    meta = store.image_meta(base)
    blobs = library.blobs()
    with library.busy():
        with newblob.new_blob(blobs) as sink:
            if compress:
                with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=1, mtime=0) as gz:
                    diff_id = layers.pack(rootfs, gz)
            else:
                diff_id = layers.pack(rootfs, sink)
        created = meta.get("created", "")
        cfg = {
            "architecture": arch(),
            "os": "linux",
            "created": created,
            "config": run_config(base),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": f"labkit images build {base}"}],
        }
        raw_config = json.dumps(cfg, separators=(",", ":")).encode()
        config_digest = blobs.put_bytes(raw_config)
        doc = {
            "schemaVersion": 2,
            "mediaType": library.OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(raw_config)},
            "layers": [
                {
                    "mediaType": GZIP_LAYER if compress else layers_media_type(),
                    "digest": sink.digest,
                    "size": sink.size,
                }
            ],
        }
        library.add(ref, json.dumps(doc, separators=(",", ":")).encode())
    return ref


def layers_media_type() -> str:
    return "application/vnd.oci.image.layer.v1.tar"


def built() -> list[str]:
    """Names of the base images built on this host."""
    return [i["name"] for i in store.list_images() if i["name"] in store.KNOWN]
