"""``labkit save`` and ``labkit load``: images as one tar file, in Docker's format.

The docker-archive format (what ``docker save`` writes and every Docker loads) is a tar of:
``manifest.json`` (per image its ``Config`` file, ``RepoTags`` and ``Layers`` in order, bottom
first), the config as ``<image-id>.json``, each layer as an *uncompressed* ``<dir>/layer.tar``
(with ``VERSION`` and a legacy ``json`` beside it), and ``repositories``. The config is copied
byte for byte, so the image id (its sha256) is the same on both sides. Docker 25 and later
write an OCI layout in the same tar and point ``manifest.json`` at ``blobs/sha256/<hex>``;
``load`` reads both, since it only follows ``manifest.json``.

``load`` reads the tar as a stream (it may come from a pipe: ``docker save x | labkit load``):
small files are kept in memory, big ones go straight into the blob store under their sha256,
then ``manifest.json`` says which is which. A killed load leaves ``.part`` files and blobs no
image names: the next load ignores them, and ``rmi`` or ``labkit reset`` collects them.
"""

from __future__ import annotations

import gzip
import io
import json
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO

from labkit.errors import LabkitError
from labkit.images import library, newblob, unpacked
from labkit.images.reference import parse

SMALL = 4 << 20  # bytes: configs and manifests are kilobytes; layers go to the blob store
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
CHUNK = 1 << 20
FROM_DOCKER_SAVE = "give a file that docker save (or labkit save) wrote"
EPOCH = "1970-01-01T00:00:00Z"


# -- save -------------------------------------------------------------------------------------


def save(names: list[str], out: BinaryIO) -> None:
    """Write the images ``names`` to ``out`` as a docker-archive (a stream: may be a pipe)."""
    from labkit.images import baseimage

    images: dict[str, list[str]] = {}  # config digest -> RepoTags (one image, many tags)
    for name in names:
        entry = library.find(name)
        if entry is None and baseimage.name_of(name) in baseimage.built():
            entry = library.find(str(baseimage.to_oci(baseimage.name_of(name) or "", parse(name))))
        if entry is None:
            raise library.no_such_image(name)
        image_id = library.image_id(entry)
        # by name: that name; by id: every name the image has (as docker save does)
        named = [entry] if _names_ref(name, entry) else [
            e for e in library.entries() if library.image_id(e) == image_id]  # fmt: skip
        refs = [library.ref_of(e) for e in named]
        images.setdefault(image_id, []).extend(_tag_of(r) for r in refs if r and parse(r).tag)
    store = library.blobs()
    written: set[str] = set()
    manifest, repositories = [], {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for config_digest, tags in images.items():
            config = store.read_bytes(config_digest)
            entry = next(e for e in library.entries() if library.image_id(e) == config_digest)
            doc = library.manifest(entry)
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
            layer_files, parent = [], ""
            for desc, diff_id in zip(doc["layers"], diff_ids, strict=True):
                hexid = diff_id.removeprefix("sha256:")
                if diff_id not in written:
                    _add_layer(tar, hexid, store.path(desc["digest"]), diff_id, parent)
                    written.add(diff_id)
                layer_files.append(f"{hexid}/layer.tar")
                parent = hexid
            _add_bytes(tar, f"{config_digest[7:]}.json", config)
            tags = list(dict.fromkeys(tags))
            manifest.append({"Config": f"{config_digest[7:]}.json", "RepoTags": tags or None,
                             "Layers": layer_files})  # fmt: skip
            for t in tags:
                repo, _, tag = t.rpartition(":")
                repositories.setdefault(repo, {})[tag] = parent
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        _add_bytes(tar, "repositories", json.dumps(repositories).encode())


def _names_ref(name: str, entry: dict) -> bool:
    try:
        return str(parse(name)) == library.ref_of(entry)
    except LabkitError:
        return False


def _tag_of(ref: str) -> str:
    """``busybox:latest``, ``127.0.0.1:5000/x:1``: how RepoTags spell a reference."""
    return parse(ref).familiar.split("@")[0]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_layer(tar: tarfile.TarFile, hexid: str, blob: Path, diff_id: str, parent: str) -> None:
    """``<hex>/layer.tar`` uncompressed, as Docker writes it (its size from layer.json: a tar
    header needs it before the data), checked against the diff id as it is copied."""
    info = tarfile.TarInfo(hexid)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)
    _add_bytes(tar, f"{hexid}/VERSION", b"1.0")
    legacy = {"id": hexid, **({"parent": parent} if parent else {}), "created": EPOCH}
    _add_bytes(tar, f"{hexid}/json", json.dumps(legacy).encode())
    size = unpacked.size(diff_id, "tar_size")
    if not size:  # not recorded: inflate once to count (a tar header needs the size first)
        with _inflated(blob) as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
    info = tarfile.TarInfo(f"{hexid}/layer.tar")
    info.size, info.mode = size, 0o644
    with _inflated(blob) as f:
        check = _Checked(f)
        tar.addfile(info, check)
        digest = check.digest()
    if digest != diff_id:  # the caller deletes the half-written archive
        raise LabkitError(
            f"layer {hexid[:12]} in the store does not match its diff id",
            fix="remove the image ({rmi}) and get it again",
        )


class _Checked:
    """Hashes what tarfile copies out of it, so a layer changed on disk is caught."""

    def __init__(self, f: BinaryIO) -> None:
        import hashlib

        self.f, self.sha = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        return data

    def digest(self) -> str:
        while self.read(CHUNK):  # anything past the recorded size counts too
            pass
        return "sha256:" + self.sha.hexdigest()


def _inflated(blob: Path) -> BinaryIO:
    """The blob as a plain tar stream: gzip inflated here; zstd with the zstd tool."""
    f = open(blob, "rb")  # noqa: SIM115 - the caller closes what we return
    magic = f.read(4)
    f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        import subprocess

        f.close()
        done = subprocess.run(["zstd", "-dcq", str(blob)], capture_output=True, check=True)
        return io.BytesIO(done.stdout)
    return f


# -- load -------------------------------------------------------------------------------------


def load(source: BinaryIO) -> list[str]:
    """Read a docker-archive (plain or gzip'd, from a file or a pipe) into the store; return
    Docker's lines ("Loaded image: busybox:latest")."""
    store = library.blobs()
    small: dict[str, bytes] = {}
    big: dict[str, str] = {}  # member name -> blob digest
    links: dict[str, str] = {}
    out: list[str] = []
    with library.busy():
        try:
            tar = tarfile.open(fileobj=source, mode="r|*")  # noqa: SIM115 - `with tar` below
        except tarfile.TarError as exc:
            raise LabkitError(f"not a tar archive: {exc}", fix=FROM_DOCKER_SAVE) from None
        with tar:
            for member in tar:
                name = posixpath.normpath(member.name).lstrip("/")
                if member.issym() or member.islnk():
                    target = member.linkname if member.islnk() else posixpath.join(
                        posixpath.dirname(name), member.linkname)  # fmt: skip
                    links[name] = posixpath.normpath(target).lstrip("/")
                elif member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    if member.size <= SMALL and not name.endswith("layer.tar"):
                        small[name] = f.read()
                    else:
                        with newblob.new_blob(store) as sink:
                            while chunk := f.read(CHUNK):
                                sink.write(chunk)
                        big[name] = sink.digest
        if "manifest.json" not in small and "index.json" in small:
            small["manifest.json"] = _docker_manifest_of(small)
        if "manifest.json" not in small:
            raise LabkitError("no manifest.json in the archive", fix=FROM_DOCKER_SAVE)

        def member(name: str) -> tuple[bytes | None, str | None]:
            for _ in range(8):  # follow symlinks Docker writes for repeated layers
                name = links.get(posixpath.normpath(name), posixpath.normpath(name))
            if name in small:
                return small[name], None
            if name in big:
                return None, big[name]
            raise LabkitError(f"the archive lacks {name}", fix="the archive is incomplete")

        for image in json.loads(small["manifest.json"]):
            out += _load_image(image, member)
    return out


def _docker_manifest_of(small: dict[str, bytes]) -> bytes:
    """An OCI layout alone (skopeo's or buildah's ``oci-archive``) read as Docker's
    manifest.json would describe it: each image manifest of ``index.json``, its name from
    the annotations (a bare tag like ``latest`` names nothing: the image is untagged)."""
    images = []
    for desc in json.loads(small["index.json"]).get("manifests", []):
        doc = json.loads(small.get("blobs/sha256/" + desc["digest"].removeprefix("sha256:"), b"{}"))
        if "config" not in doc:
            continue  # a nested index (multi-platform): not what one archive of ours holds
        notes = desc.get("annotations", {})
        name = notes.get("io.containerd.image.name") or notes.get(library.REF_NAME, "")
        blob = lambda d: "blobs/sha256/" + d["digest"].removeprefix("sha256:")  # noqa: E731
        images.append({"Config": blob(doc["config"]), "Layers": [blob(d) for d in doc["layers"]],
                       "RepoTags": [name] if ":" in name or "/" in name else []})  # fmt: skip
    return json.dumps(images).encode()


def _load_image(image: dict, member) -> list[str]:  # noqa: ANN001 - a closure from load()
    store = library.blobs()
    data, digest = member(image["Config"])
    raw_config = data if data is not None else store.read_bytes(digest or "")
    config_digest = store.put_bytes(raw_config)
    layers = []
    for name in image["Layers"]:
        data, digest = member(name)
        if digest is None:
            digest = store.put_bytes(data or b"")
        with open(store.path(digest), "rb") as f:
            magic = f.read(4)
        media = OCI_LAYER + ("+gzip" if magic[:2] == b"\x1f\x8b" else
                             "+zstd" if magic == b"\x28\xb5\x2f\xfd" else "")  # fmt: skip
        layers.append({"mediaType": media, "digest": digest, "size": store.size(digest)})
    doc = {
        "schemaVersion": 2,
        "mediaType": library.OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(raw_config)},
        "layers": layers,
    }
    raw = json.dumps(doc, separators=(",", ":")).encode()
    tags = image.get("RepoTags") or []
    if not tags:
        library.add(None, raw)
        return [f"Loaded image ID: {config_digest}"]
    for tag in tags:
        library.add(parse(tag), raw)
    return [f"Loaded image: {tag}" for tag in tags]
