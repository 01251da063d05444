"""The local image store: pulled and loaded images, in the OCI image layout, by reference.

On disk (``paths.OCI_DIR``) it is what ``skopeo copy ... oci:DIR`` writes: ``oci-layout``,
``index.json`` and ``blobs/sha256/``. ``index.json`` lists one manifest per reference, the
full reference in the annotation ``org.opencontainers.image.ref.name``; the manifest names a
config blob (its digest is the image id) and layer blobs; each layer is also unpacked once
into ``LAYERS_DIR`` (``unpacked.py``). Nothing is stored twice: two tags of one image are
two index entries pointing at one manifest, and images that share a layer share its blob
and its directory.

Two locks keep concurrent commands apart. ``.lock`` is held for the moment ``index.json``
changes. ``.busy`` is held *shared* by every pull, load or tag while it adds blobs and
layers, and taken *exclusively* (without waiting) by garbage collection: blobs and layers
no index entry names are deleted only when nobody can be about to name them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.images import unpacked
from labkit.images.blobs import BlobStore
from labkit.images.reference import Reference, parse

REF_NAME = "org.opencontainers.image.ref.name"
#: The config digest (the image id), cached so listing needs no manifest read.
CONFIG_ANNOTATION = "io.labkit.image.config"
#: The digest a registry knows the image by (an index's, if it had one): Docker's RepoDigest.
REPO_DIGEST_ANNOTATION = "io.labkit.image.repo-digest"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
TMP_SUFFIX = ".part"


def blobs() -> BlobStore:
    return BlobStore(paths.OCI_DIR)


def _init() -> None:
    """Create the layout (0700, like STATE_DIR: layers hold setuid files) if missing."""
    unpacked.ensure_dir(paths.OCI_DIR)
    layout = paths.OCI_DIR / "oci-layout"
    if not layout.exists():
        _write_json(layout, {"imageLayoutVersion": "1.0.0"})


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def flock(name: str, mode: int) -> Iterator[None]:
    _init()
    with open(paths.OCI_DIR / name, "w") as fh:
        fcntl.flock(fh, mode)
        yield


def busy() -> contextlib.AbstractContextManager[None]:
    """Hold this (shared) while adding blobs or layers that no index entry names yet."""
    return flock(".busy", fcntl.LOCK_SH)


def entries() -> list[dict]:
    """index.json's manifest descriptors (with their annotations), [] if there is no store."""
    try:
        index = json.loads((paths.OCI_DIR / "index.json").read_text())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise LabkitError(
            f"{paths.OCI_DIR}/index.json is damaged: {exc}",
            fix="remove the image store: {reset_images}",
        ) from None
    return list(index.get("manifests", []))


def save_entries(items: list[dict]) -> None:
    _write_json(
        paths.OCI_DIR / "index.json",
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": items},
    )


def ref_of(entry: dict) -> str:
    return entry.get("annotations", {}).get(REF_NAME, "")


def image_id(entry: dict) -> str:
    return entry.get("annotations", {}).get(CONFIG_ANNOTATION, "")


def find(name: str) -> dict | None:
    """The index entry for a reference (``alpine``, ``alpine:3.19``, full form) or else an
    image id (``sha256:...``, or 12 or more of its hex digits), in the order Docker tries
    them; None if neither names an image here."""
    items = entries()
    if not name.startswith("sha256:"):
        try:
            full = str(parse(name))
        except LabkitError:
            full = ""  # not a reference; maybe an id (64 hex digits are refused as a name)
        found = next((e for e in items if full and ref_of(e) == full), None)
        if found is not None:
            return found
    bare = name.removeprefix("sha256:")
    if len(bare) < 12 or any(c not in "0123456789abcdef" for c in bare):
        if not name.startswith("sha256:"):
            parse(name)  # a bad reference says why
        return None
    hits = {image_id(e) for e in items if image_id(e).removeprefix("sha256:").startswith(bare)}
    if len(hits) > 1:
        raise LabkitError(f"{name} matches several images", fix="give more of the id")
    return next((e for e in items if image_id(e) in hits), None)


def manifest(entry: dict) -> dict:
    return json.loads(blobs().read_bytes(entry["digest"]))


def config(entry: dict) -> dict:
    return json.loads(blobs().read_bytes(image_id(entry) or manifest(entry)["config"]["digest"]))


def diff_ids(entry: dict) -> list[str]:
    return list(config(entry).get("rootfs", {}).get("diff_ids", []))


def add(
    reference: Reference | str | None,
    raw_manifest: bytes,
    media_type: str = OCI_MANIFEST,
    *,
    repo_digest: str | None = None,
) -> dict:
    """Index an image whose config and layer blobs are already in ``blobs()``: unpack each
    layer (once), store the manifest, point ``reference`` at it (None: untagged, as a
    ``docker load`` of an image without RepoTags). Returns the index entry."""
    store = blobs()
    doc = json.loads(raw_manifest)
    if doc.get("mediaType", media_type) not in MANIFEST_TYPES:
        raise LabkitError(
            f"not an image manifest: {doc.get('mediaType')}",
            fix="labkit stores Docker schema 2 and OCI image manifests",
        )
    config_digest = doc["config"]["digest"]
    with busy():
        missing = [d["digest"] for d in doc.get("layers", []) if not store.has(d["digest"])]
        if missing or not store.has(config_digest):
            raise LabkitError(
                f"blob {(missing or [config_digest])[0][:19]} is not in {store.dir}",
                fix="get the image again (an rmi at the same moment may have collected it)",
            )
        diffs = json.loads(store.read_bytes(config_digest)).get("rootfs", {}).get("diff_ids", [])
        layer_descs = doc.get("layers", [])
        if len(diffs) != len(layer_descs):
            raise LabkitError(
                f"the manifest has {len(layer_descs)} layers, its config {len(diffs)} diff ids",
                fix="the image is damaged; get it again",
            )
        for desc, diff_id in zip(layer_descs, diffs, strict=True):
            unpacked.ensure(diff_id, store.path(desc["digest"]), desc.get("mediaType", ""))
        digest = store.put_bytes(raw_manifest)
        annotations = {CONFIG_ANNOTATION: config_digest}
        if reference is not None:
            annotations[REF_NAME] = str(parse(str(reference)))
        if repo_digest:
            annotations[REPO_DIGEST_ANNOTATION] = repo_digest
        entry = {
            "mediaType": doc.get("mediaType", media_type),
            "digest": digest,
            "size": len(raw_manifest),
            "annotations": annotations,
        }
        with flock(".lock", fcntl.LOCK_EX):
            put_entry(entry)
    return entry


def put_entry(entry: dict) -> None:
    """Replace the entry of the same reference (an untagged one: of the same image id)."""
    ref = ref_of(entry)
    keep = [
        e
        for e in entries()
        if (ref_of(e) != ref if ref else (ref_of(e) or image_id(e) != image_id(entry)))
    ]
    save_entries(keep + [entry])


def no_such_image(name: str) -> LabkitError:
    try:
        shown = parse(name).familiar
    except LabkitError:
        shown = name
    return LabkitError(f"No such image: {shown}", fix=f"pull it first: {{pull}} {name}")


@dataclass
class RunnableImage:
    """What the runtime needs to run an image: its layers as overlay lower dirs (top
    first, as overlayfs lists them) and the config Docker applies (Env, Cmd, ...)."""

    reference: str
    id: str
    lowers: list[Path]
    config: dict = field(default_factory=dict)


#: The keys of an image config's ``config`` a runtime applies (absent keys stay absent).
RUN_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
            "StopSignal", "Labels")  # fmt: skip


def runnable(name: str) -> RunnableImage:
    """The image ``name`` ready to run: from this store if it holds that reference (or id),
    else the locally built base image of that name (busybox, debian), else an error."""
    entry = find(name)
    if entry is None:
        from labkit.images import baseimage

        base = baseimage.name_of(name)
        if base is None:
            raise no_such_image(name)
        return baseimage.runnable(base)
    cfg = config(entry)
    lowers: list[Path] = []
    # Top first. overlayfs refuses one dir twice (ELOOP), and an image may list a layer
    # twice; the lower copy can go: a layer applied again on top of itself changes nothing.
    for diff_id in dict.fromkeys(reversed(cfg.get("rootfs", {}).get("diff_ids", []))):
        if not unpacked.has(diff_id):
            raise LabkitError(
                f"layer {diff_id[:19]} of {name} is missing from {paths.LAYERS_DIR}",
                fix=f"remove the image and get it again: {{rmi}} {name}",
            )
        lowers.append(unpacked.diff_dir(diff_id))
    run = {k: v for k, v in (cfg.get("config") or {}).items() if k in RUN_KEYS and v is not None}
    return RunnableImage(ref_of(entry) or image_id(entry), image_id(entry), lowers, run)
