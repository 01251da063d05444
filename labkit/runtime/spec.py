"""What a container should be: the one description the supervisor hands to the helper.

It can travel as JSON (to a helper started as a fresh interpreter), so everything here is
plain data, and ``validate`` catches every mistake the user can make *before* anything
exists. Fixes name settings as ``{placeholders}`` that each front end words its own way
(the CLI says ``--rootfs``; see ``labkit.errors``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.kernel.cgroups.limits import Limits
from labkit.kernel.cgroups.limits import parse as parse_limits
from labkit.kernel.namespaces import DOCKER_DEFAULT, KINDS
from labkit.kernel.rootfs import missing_mount_points
from labkit.runtime.security import Security

ISOLATIONS = ("pivot_root", "chroot")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


#: Docker's rule for container names; it also keeps names safe as file names.
NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
HOSTNAME_PATTERN = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})")


def new_id() -> str:
    """A random 64-hex-digit id, like Docker's; its first 12 digits are the short form."""
    return os.urandom(32).hex()


@dataclass
class ContainerSpec:
    """Everything needed to start one container process."""

    rootfs: str
    argv: list[str]
    image: str | None = None  # the image it runs (its name); None for a directory of yours
    # The image's layers, top first: the root is an overlay of them and a writable layer of
    # the container's own (labkit.runtime.layer). The supervisor then sets ``rootfs`` to the
    # overlay's mount point (or a flattened copy) and ``layer`` to the container's directory.
    lowers: list[str] = field(default_factory=list)
    layer: str = ""
    read_only: bool = False  # Docker's --read-only: nothing but /tmp and /run may be written
    user: str = ""  # Docker's --user: "", uid, uid:gid, name, name:group
    # Filled in by the supervisor from the image's /etc/passwd and /etc/group:
    # {"uid": 0, "gid": 0, "groups": [0], "home": "/root"}
    identity: dict = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=lambda: sorted(DOCKER_DEFAULT))
    isolation: str = "pivot_root"
    hostname: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    id: str = field(default_factory=new_id)
    name: str = ""  # default: the short id
    interactive: bool = False  # -i: stdin is a pipe from the supervisor, else /dev/null
    tty: bool = False  # -t: a pseudo-terminal of the container's own
    try_escape: bool = False
    # Hardening, with Docker's flags and defaults (see labkit.runtime.security):
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    security_opt: list[str] = field(default_factory=list)
    device_cgroup_rules: list[str] = field(default_factory=list)
    # Resource limits, as Docker's flags spell them (labkit.kernel.cgroups.limits.parse):
    # {"memory": "64m", "cpus": "0.5", "pids_limit": "50", "device_read_bps": ["/dev/vda:1m"]}
    resources: dict = field(default_factory=dict)
    # Filled in by the supervisor, not the user: the cgroups the helper joins first.
    cgroup_paths: list[str] = field(default_factory=list)
    # Docker's --network: "bridge" (the default network), "none" (a network namespace with
    # only lo), "host" (no network namespace: the host's), or a network's name.
    network: str = "bridge"
    # Filled in by the supervisor from the network's lease: what PID 1 gives its eth0
    # ({"address": "10.200.0.2", "prefix": 16, "gateway": "10.200.0.1"}), and the files it
    # binds over the image's ({"/etc/hosts": "<the container's directory>/hosts", ...}).
    net: dict = field(default_factory=dict)
    etc_files: dict = field(default_factory=dict)
    # Docker's -p, as written ("8080:80", "127.0.0.1::53/udp"; labkit.network.ports parses
    # them). The supervisor binds them before anything else is made. Ignored without a
    # network of its own (host, none), as Docker ignores them.
    publish: list[str] = field(default_factory=list)
    # How the host's loopback reaches them: the supervisor's userland proxy (Docker's
    # default), or hairpin NAT (False: the daemon option --userland-proxy=false, here per
    # container).
    userland_proxy: bool = True

    def __post_init__(self) -> None:
        self.name = self.name or self.short_id

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def runs_on_a_copy(self) -> bool:
        """Without a mount namespace there is no overlay (it would be a mount on the host),
        so a container of an image runs on a throwaway copy of it. A directory of your own
        (no ``image``) is used as it is: it is yours to change."""
        return bool(self.layers()) and "mnt" not in self.namespaces

    def layers(self) -> list[str]:
        """The read-only layers the root is made of, top first; [] for a directory of yours
        used as it is. A ``rootfs`` inside labkit's image store is an image, never changed."""
        if self.lowers:
            return list(self.lowers)
        if self.rootfs and _inside(Path(self.rootfs), paths.IMAGES_DIR, paths.LAYERS_DIR):
            return [self.rootfs]
        return []

    def effective_hostname(self) -> str | None:
        """The hostname to set: only meaningful in a new UTS namespace (Docker: short id)."""
        if "uts" not in self.namespaces:
            return None
        return self.hostname or self.short_id

    def network_mode(self) -> str:
        """What its network is: without a network namespace it can only be the host's."""
        return self.network if "net" in self.namespaces else "host"

    def environment(self) -> dict[str, str]:
        """The command's environment: Docker's defaults, then ``env`` (the image's Env under
        the user's), then, if still unset, HOME from the user's passwd entry (as runc)."""
        env = {"PATH": DEFAULT_PATH}
        hostname = self.effective_hostname()
        if hostname:
            env["HOSTNAME"] = hostname
        if self.tty:
            env["TERM"] = "xterm"
        env.update(self.env)
        env.setdefault("HOME", self.identity.get("home", "/root"))  # runc: the user's home
        return env

    def security(self) -> Security:
        """What protects this container: capabilities, seccomp, masks, devices."""
        return Security.of(self)

    def limits(self) -> Limits:
        """What it may use: memory, CPU, PIDs, I/O (checked against this host)."""
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in self.resources.items()}
        return parse_limits(**given)

    def validate(self) -> None:
        """Raise LabkitError naming the problem and the fix; create nothing."""
        self.security()  # a wrong capability, option or device rule is refused here
        self.limits()  # and a limit this host cannot honour
        if not self.argv:
            raise LabkitError("no command given", fix="give {command}, e.g. sh -c 'id'")
        unknown = set(self.namespaces) - set(KINDS)
        if unknown:
            raise LabkitError(
                f"unknown namespace kind(s): {', '.join(sorted(unknown))}",
                fix="give {ns} some of " + ",".join(KINDS),
            )
        if self.publish:
            from labkit.network import ports

            ports.parse_all(self.publish)  # a bad spec is refused here, with Docker's rules
        if self.network == "host" and "net" in self.namespaces:
            raise LabkitError(
                "the host's network was asked for, and a network namespace of its own",
                fix="leave net out of {ns}, or pick another {network}",
            )
        if self.isolation not in ISOLATIONS:
            raise LabkitError(
                f"unknown isolation {self.isolation!r}",
                fix="set {isolation} to pivot_root or chroot",
            )
        if self.isolation == "pivot_root" and "mnt" not in self.namespaces:
            raise LabkitError(
                "pivot_root needs a mount namespace",
                fix="add mnt to {ns}, or set {isolation} to chroot",
            )
        if not NAME_PATTERN.fullmatch(self.name):
            raise LabkitError(
                f"invalid container name {self.name!r}",
                fix="give {name} 1-63 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
            )
        if self.hostname is not None and not HOSTNAME_PATTERN.fullmatch(self.hostname):
            raise LabkitError(
                f"invalid hostname {self.hostname!r}",
                fix="give {hostname} at most 63 letters, digits, '-' or '.'",
            )
        if self.hostname and "uts" not in self.namespaces:
            raise LabkitError(
                "a hostname of its own needs a UTS namespace",
                fix="add uts to {ns}, or leave out {hostname}",
            )
        if self.read_only and "mnt" not in self.namespaces:
            raise LabkitError(
                "a read-only root is a mount of the container's own, which needs a mount namespace",
                fix="add mnt to {ns}, or leave out {read_only}",
            )
        if self.tty and "mnt" not in self.namespaces:
            raise LabkitError(
                "a terminal is made inside the container's own /dev, which needs a mount namespace",
                fix="add mnt to {ns}, or leave out {tty}",
            )
        self._validate_rootfs()
        if not os.path.isabs(self.workdir):
            raise LabkitError(
                f"workdir {self.workdir!r} is not absolute",
                fix="give {workdir} an absolute path such as /tmp",
            )

    def _validate_rootfs(self) -> None:
        if self.lowers:  # an image: mount points it lacks go in a layer of the container's
            missing = [d for d in self.lowers if not Path(d).is_dir()]
            if missing:
                raise LabkitError(
                    f"a layer of image {self.image} is missing: {missing[0]}",
                    fix="remove the image and get it again",
                )
            return
        try:
            self._check_rootfs(Path(self.rootfs))
        except OSError as exc:  # e.g. a /proc/PID/root that even root may not read
            raise LabkitError(
                f"rootfs {self.rootfs} cannot be used: {exc.strerror}",
                fix="give {rootfs} a directory root can read, or use {image} (see {images_ls})",
            ) from exc

    def _check_rootfs(self, root: Path) -> None:
        if not root.is_absolute():
            raise LabkitError(
                f"rootfs {self.rootfs!r} is not an absolute path",
                fix="give {rootfs} an absolute path",
            )
        if not root.is_dir():
            raise LabkitError(
                f"rootfs {self.rootfs} does not exist or is not a directory",
                fix="give {rootfs} an existing directory, or use {image} (see {images_ls})",
            )
        if root.resolve() == Path("/"):
            raise LabkitError(
                f"rootfs {self.rootfs} is the host's own /",
                fix="give {rootfs} the root directory of an image",
            )
        store = paths.IMAGES_DIR.resolve()
        if self.image is None and "mnt" not in self.namespaces and store in root.resolve().parents:
            raise LabkitError(
                f"rootfs {self.rootfs} is inside labkit's image store, and without a mount "
                "namespace nothing would keep the container from changing that image",
                fix="use {image} instead (it runs on a throwaway copy), or add mnt to {ns}",
            )
        overlay = "mnt" in self.namespaces and self.layers()  # an init layer makes them
        missing = missing_mount_points(root) if "mnt" in self.namespaces else []
        if overlay:
            missing = [name for name in missing if (root / name).is_symlink()]
        links = [name for name in missing if (root / name).is_symlink()]
        if links:
            raise LabkitError(
                f"rootfs {self.rootfs}: refusing to mount on {', '.join(links)}: a symlink, "
                "and a mount there would follow it out of the image",
                fix=f"replace {' '.join(str(root / n) for n in links)} with a real directory",
            )
        if missing:
            dirs = " ".join(f"{root / name}" for name in missing)
            raise LabkitError(
                f"rootfs {self.rootfs} has no {', '.join(missing)} director"
                f"{'y' if len(missing) == 1 else 'ies'} to mount over "
                "(labkit never creates anything inside an image)",
                fix=f"create them yourself (mkdir {dirs}), or use {{image}}",
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ContainerSpec:
        return cls(**json.loads(text))


def _inside(path: Path, *dirs: Path) -> bool:
    """``path`` is one of ``dirs`` or below one (symlinks resolved)."""
    real = path.resolve()
    return any(real == d.resolve() or d.resolve() in real.parents for d in dirs)
