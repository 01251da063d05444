"""What a container should be: the one description the supervisor hands to the helper.

It travels as JSON on the helper's command line, so everything here is plain data, and
``validate`` catches every mistake the user can make *before* any namespace exists.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit.errors import LabkitError
from labkit.kernel.namespaces import DOCKER_DEFAULT, KINDS

ISOLATIONS = ("pivot_root", "chroot")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Container root maps to this host uid/gid range when a user namespace is asked for.
#: 100000 is where /etc/subuid ranges start on Debian and Ubuntu.
USERNS_HOST_BASE = 100000
USERNS_SIZE = 65536


#: Docker's rule for container names; it also keeps ids safe as file names and hostnames.
NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
HOSTNAME_PATTERN = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})")


def new_id() -> str:
    """A short random id, like Docker's 12-hex-digit container ids."""
    return os.urandom(6).hex()


@dataclass
class ContainerSpec:
    """Everything needed to start one container process."""

    rootfs: str
    argv: list[str]
    namespaces: list[str] = field(default_factory=lambda: sorted(DOCKER_DEFAULT))
    isolation: str = "pivot_root"
    hostname: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    id: str = field(default_factory=new_id)
    try_escape: bool = False

    def effective_hostname(self) -> str | None:
        """The hostname to set: only meaningful in a new UTS namespace."""
        if "uts" not in self.namespaces:
            return None
        return self.hostname or self.id

    def environment(self) -> dict[str, str]:
        """The command's environment: Docker's defaults, then the user's ``env``."""
        env = {"PATH": DEFAULT_PATH, "HOME": "/root"}
        hostname = self.effective_hostname()
        if hostname:
            env["HOSTNAME"] = hostname
        env.update(self.env)
        return env

    def validate(self) -> None:
        """Raise LabkitError naming the problem and the fix; create nothing."""
        if not self.argv:
            raise LabkitError(
                "no command given", fix="put the command after --, e.g. -- sh -c 'id'"
            )
        unknown = set(self.namespaces) - set(KINDS)
        if unknown:
            raise LabkitError(
                f"unknown namespace kind(s): {', '.join(sorted(unknown))}",
                fix="use " + ",".join(KINDS),
            )
        if self.isolation not in ISOLATIONS:
            raise LabkitError(
                f"unknown isolation {self.isolation!r}",
                fix="use --isolation pivot_root or --isolation chroot",
            )
        if self.isolation == "pivot_root" and "mnt" not in self.namespaces:
            raise LabkitError(
                "pivot_root needs a mount namespace",
                fix="add mnt to --ns, or use --isolation chroot",
            )
        if not NAME_PATTERN.fullmatch(self.id):
            raise LabkitError(
                f"invalid container name {self.id!r}",
                fix="use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        if self.hostname is not None and not HOSTNAME_PATTERN.fullmatch(self.hostname):
            raise LabkitError(
                f"invalid hostname {self.hostname!r}",
                fix="use at most 63 letters, digits, '-' or '.'",
            )
        if self.hostname and "uts" not in self.namespaces:
            raise LabkitError(
                "--hostname needs a UTS namespace", fix="add uts to --ns, or drop --hostname"
            )
        root = Path(self.rootfs)
        if not root.is_absolute():
            raise LabkitError(
                f"rootfs {self.rootfs!r} is not an absolute path",
                fix="pass an absolute path to --rootfs",
            )
        if not root.is_dir():
            raise LabkitError(
                f"rootfs {self.rootfs} does not exist or is not a directory",
                fix="pass an existing directory to --rootfs, or use --image NAME "
                "(see: labkit images ls)",
            )
        if root.resolve() == Path("/"):
            raise LabkitError("the rootfs is the host's own /", fix="pass an image's rootfs")
        if not os.path.isabs(self.workdir):
            raise LabkitError(
                f"workdir {self.workdir!r} is not absolute",
                fix="pass an absolute --workdir such as /tmp",
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ContainerSpec:
        return cls(**json.loads(text))
