"""Names of images: ``labkit tag`` adds one, ``labkit rmi`` takes them away.

A name is only an index entry pointing at a manifest: tagging copies no blob, and untagging
deletes none. What no name points at any more is collected afterwards (``usage.collect``),
so removing one of two tags of an image frees nothing, as in Docker.
"""

from __future__ import annotations

import fcntl

from labkit.errors import LabkitError
from labkit.images import library
from labkit.images.library import REF_NAME, REPO_DIGEST_ANNOTATION, entries, find, image_id, ref_of
from labkit.images.reference import parse


def tag(source: str, target: str) -> str:
    """Give the image ``source`` the name ``target`` (another index entry, same manifest).
    A locally built base image becomes an OCI image of one layer first. Returns the name."""
    ref = parse(target)
    if ref.digest:
        raise LabkitError(f"cannot tag with a digest: {target}", fix="give a tag: name:tag")
    entry = find(source)
    if entry is None:
        from labkit.images import baseimage

        if baseimage.name_of(source) is None:
            raise library.no_such_image(source)
        return str(baseimage.to_oci(baseimage.name_of(source) or "", ref))
    new = {**entry, "annotations": {**entry.get("annotations", {}), REF_NAME: str(ref)}}
    new["annotations"].pop(REPO_DIGEST_ANNOTATION, None)
    with library.flock(".lock", fcntl.LOCK_EX):
        library.put_entry(new)
    return str(ref)


def untag(name: str, force: bool = False) -> list[str]:
    """Remove a reference (or, by id, every reference of that image; ``force`` if it has
    several); return what Docker prints ("Untagged: ..."). Blobs go in ``collect``."""
    entry = find(name)
    if entry is None:
        raise library.no_such_image(name)
    by_id = ref_of(entry) == "" or not _is_reference(name, entry)
    same = [e for e in entries() if image_id(e) == image_id(entry)]
    doomed = same if by_id else [entry]
    if by_id and len(same) > 1 and not force:
        raise LabkitError(
            f"conflict: unable to delete {image_id(entry)[7:19]} (must be forced) - image is "
            "referenced in multiple repositories",
            fix="remove it by name, or force it: {rmi_force}",
        )
    with library.flock(".lock", fcntl.LOCK_EX):
        names = {ref_of(e) for e in doomed}
        library.save_entries([e for e in entries() if not (ref_of(e) in names and e in doomed)])
    return [f"Untagged: {parse(r).familiar}" for r in sorted(names) if r]


def _is_reference(name: str, entry: dict) -> bool:
    try:
        return str(parse(name)) == ref_of(entry)
    except LabkitError:
        return False
