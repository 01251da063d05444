"""Where labkit keeps things on the host, and the name tag every host object carries.

Everything labkit creates is named with ``NAME_PREFIX`` (or lives under one of these
directories), so ``labkit reset`` can remove exactly what labkit made and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

NAME_PREFIX = "labkit"

#: Persistent data: base images and, later, layers and volumes.
STATE_DIR = Path(os.environ.get("LABKIT_STATE_DIR", "/var/lib/labkit"))
#: Runtime data that must not survive a reboot: pid files, per-container scratch.
RUN_DIR = Path(os.environ.get("LABKIT_RUN_DIR", "/run/labkit"))

IMAGES_DIR = STATE_DIR / "images"

#: Pulled and imported images, as an OCI image layout: ``oci-layout``, ``index.json`` (one
#: manifest per reference) and ``blobs/sha256/<hex>`` (manifests, configs, layer archives).
OCI_DIR = STATE_DIR / "oci"
#: Every layer unpacked once, by its uncompressed digest (diff id): ``<hex>/diff`` is one
#: overlayfs lower directory, shared by every image that has that layer.
LAYERS_DIR = STATE_DIR / "layers"

#: Networks are host-wide (one bridge ``labkit0``, one set of iptables chains), so their
#: state is too: it does not follow LABKIT_STATE_DIR. Network definitions, address leases,
#: and what labkit changed on the host (ip_forward) to put back on ``labkit reset``.
NET_DIR = Path(os.environ.get("LABKIT_NET_DIR", "/var/lib/labkit-network"))
