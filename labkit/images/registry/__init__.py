"""A registry client (OCI distribution spec) on urllib: pull, push, log in.

``client`` pulls (manifests, indexes and platform choice, blobs), ``push`` pushes,
``transport`` is the HTTP underneath (auth handshake, safe redirects, one-line errors),
``auth`` reads challenges and ``credentials`` keeps what ``labkit login`` verified.
"""

from labkit.images.registry.auth import Credentials
from labkit.images.registry.client import (
    ACCEPT,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Pulled,
    fetch_blob,
    fetch_manifest,
    host_platform_name,
)
from labkit.images.registry.credentials import login, logout, stored
from labkit.images.registry.push import push
from labkit.images.registry.transport import RegistryError

__all__ = [
    "ACCEPT",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Credentials",
    "Descriptor",
    "Pulled",
    "RegistryError",
    "fetch_blob",
    "fetch_manifest",
    "host_platform_name",
    "login",
    "logout",
    "push",
    "stored",
]
