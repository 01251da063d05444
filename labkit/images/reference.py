"""Image references, ``[registry/][namespace/]name[:tag][@digest]``, read exactly as Docker does.

``alpine`` is short for ``docker.io/library/alpine:latest``. Docker's rules (the Go module
distribution/reference: regexp.go for the grammar, normalize.go for the short forms) are:

- The part before the first ``/`` is a registry host only if it looks like one: it contains a
  ``.`` (``ghcr.io``) or a ``:`` (``myhost:5000``), is ``localhost``, or has upper case
  (lower case is required in a repository, so ``LOCALDOMAIN/x`` must be a host). Otherwise it
  is a namespace on Docker Hub: ``me/app`` is ``docker.io/me/app``.
- On Docker Hub, a name with no namespace is an official image: ``library/`` is prepended.
  ``index.docker.io`` (Hub's old name) becomes ``docker.io``.
- The tag ``latest`` is filled in only when neither tag nor digest is given. With both
  (``name:tag@sha256:...``) the digest decides what is pulled; the tag is kept for show.
- A repository path is ``/``-separated components of ``[a-z0-9]`` runs joined by one ``.``, one
  or two ``_``, or any number of ``-``; at most 255 characters. A tag is up to 128 of
  ``[A-Za-z0-9_.-]``, not starting with ``.`` or ``-``. 64 hex digits alone look like an image
  id, so they are refused as a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labkit.errors import LabkitError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

# The grammar, built from small pieces exactly as regexp.go builds it.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
NAME = re.compile(rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})", re.ASCII)
TAG = re.compile(_TAG, re.ASCII)
IMAGE_ID = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """One parsed reference, always in full form: a domain, a path, a tag and/or a digest."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The repository without tag or digest: ``docker.io/library/alpine``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar(self) -> str:
        """As ``docker images`` prints it: Hub's domain and ``library/`` left out."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path
            rest = self.path.removeprefix(OFFICIAL_PREFIX)
            if rest != self.path and "/" not in rest:
                name = rest
        return name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        """The same repository with another tag (and no digest): ``labkit tag``."""
        if not TAG.fullmatch(tag):
            raise _bad(tag, "invalid tag format", "a tag is up to 128 letters, digits, _ . -")
        return Reference(self.domain, self.path, tag, None)

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _bad(text: str, problem: str, fix: str) -> LabkitError:
    return LabkitError(f"invalid reference format: {problem}: {text!r}", fix=fix)


def split_domain(text: str) -> tuple[str, str]:
    """Docker's ``splitDockerDomain``: is the first component a registry host or a namespace?"""
    first, slash, rest = text.partition("/")
    if not slash:
        # "alpine", "alpine:3.19": a bare name is always an official image on Docker Hub.
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + text
    if first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, text
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse(text: str) -> Reference:
    """``text`` as Docker reads it (``ParseDockerRef``); a LabkitError says what is wrong."""
    if not text:
        raise _bad(text, "repository name must have at least one component", "name an image")
    if IMAGE_ID.fullmatch(text):
        raise _bad(
            text,
            "cannot specify 64-byte hexadecimal strings as a repository name",
            "that is an image id; name the image (alpine:3.19), or use sha256:<id> where ids work",
        )
    domain, remainder = split_domain(text)
    repo = remainder.split("@", 1)[0].split(":", 1)[0]
    if repo.lower() != repo:
        raise _bad(
            text,
            f"repository name ({repo}) must be lowercase",
            f"write the repository in lower case: {_lowered(text)}",
        )
    match = REFERENCE.fullmatch(f"{domain}/{remainder}")
    if match is None:
        raise _explain(text, domain, remainder)
    name = NAME.fullmatch(match["name"])
    assert name is not None  # REFERENCE matched, so its name group is a NAME
    path = name["path"]
    if len(path) > NAME_MAX:
        raise _bad(text, f"repository name must not be more than {NAME_MAX} characters", "")
    digest = match["digest"]
    if digest is not None and not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
        raise _bad(
            text,
            f"unsupported digest {digest}",
            "a digest is sha256: and 64 lower-case hex digits (labkit stores only sha256)",
        )
    tag = match["tag"] or (None if digest else DEFAULT_TAG)
    return Reference(name["domain"] or domain, path, tag, digest)


def _lowered(text: str) -> str:
    """``text`` with its name (not the tag, which may have upper case) in lower case."""
    head, at, digest = text.partition("@")
    name, colon, tag = head.rpartition(":") if ":" in head.rsplit("/", 1)[-1] else (head, "", "")
    return name.lower() + colon + tag + at + digest


def _explain(text: str, domain: str, remainder: str) -> LabkitError:
    """The grammar failed: find the part that broke it, so the error can say how to write it."""
    rest, _, digest = remainder.partition("@")
    repo, colon, tag = rest.partition(":")
    if digest and not re.fullmatch(_DIGEST, digest, re.ASCII):
        return _bad(text, "invalid digest format", "write @sha256: and 64 hex digits")
    if colon and not TAG.fullmatch(tag):
        return _bad(
            text,
            f"invalid tag {tag!r}",
            "a tag is 1-128 of letters, digits, _ . - and does not start with . or -",
        )
    if "://" in text:
        return _bad(text, "a reference is not a URL", "drop the scheme: 127.0.0.1:5000/app:1")
    if not re.fullmatch(_DOMAIN, domain, re.ASCII):
        return _bad(
            text,
            f"bad registry host {domain!r} (a first part with '.' or ':' names a host)",
            "a host is letters, digits and '-' between single dots, maybe :port (ghcr.io, "
            "127.0.0.1:5000, [::1]:5000)",
        )
    for part in repo.split("/"):
        if not re.fullmatch(_COMPONENT, part, re.ASCII):
            return _bad(
                text,
                f"bad repository path component {part!r}",
                "each part between / is lower-case letters and digits, joined by one '.', "
                "one or two '_' or any number of '-' (e.g. my-app/web_server.v2)",
            )
    return _bad(text, "does not match [host[:port]/]path[:tag][@digest]", "e.g. alpine:3.19")
