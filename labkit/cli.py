"""The ``labkit`` command. Start-up time counts, so every command imports what it needs
only when it runs (pyroute2 alone takes ~170 ms to import)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable, Sequence

from labkit import __version__
from labkit.errors import LabkitError
from labkit.kernel.namespaces import DOCKER_DEFAULT, KINDS

EXIT_LABKIT_ERROR = 125  # what `docker run` returns when the runtime itself failed

DEFAULT_NAMESPACES = ",".join(sorted(DOCKER_DEFAULT))
ISOLATIONS = ("pivot_root", "chroot")  # kept cheap to build; tests/test_cli.py checks runtime's

#: How the CLI words the settings and commands that fixes name as {placeholders}
#: (labkit.errors): below the front ends nobody knows what a flag is called.
WORDS = {
    "rootfs": "--rootfs",
    "image": "--image NAME",
    "ns": "--ns",
    "isolation": "--isolation",
    "hostname": "--hostname",
    "name": "--name",
    "workdir": "--workdir",
    "user": "--user",
    "entrypoint": "--entrypoint",
    "read_only": "--read-only",
    "tty": "-t",
    "cap_add": "--cap-add",
    "cap_drop": "--cap-drop",
    "security_opt": "--security-opt",
    "seccomp_unconfined": "--security-opt seccomp=unconfined",
    "memory": "--memory",
    "memory_swap": "--memory-swap",
    "memory_reservation": "--memory-reservation",
    "cpus": "--cpus",
    "cpu_shares": "--cpu-shares",
    "pids_limit": "--pids-limit",
    "cpuset_cpus": "--cpuset-cpus",
    "systempaths_unconfined": "--security-opt systempaths=unconfined",
    "command": "a command after the image",
    "doctor": "labkit doctor",
    "reset": "labkit reset",
    "images_ls": "labkit images ls",
    "images_build": "labkit images build",
    "reset_images": "labkit reset --images",
    "rmi": "labkit rmi",
    "rmi_force": "labkit rmi -f",
    "pull": "labkit pull",
    "login": "labkit login",
    "platform": "--platform",
    "network": "--network",
    "network_ls": "labkit network ls",
    "network_create": "labkit network create",
    "network_rm": "labkit network rm",
    "subnet": "--subnet",
    "publish": "-p",
    "userland_proxy": "--userland-proxy=false",
    "port": "labkit port",
}


def _cmd_run(args: argparse.Namespace) -> int:
    from labkit.runtime.spec import ContainerSpec
    from labkit.runtime.supervisor import Supervisor

    image, command = _image_and_command(args)
    env = _parse_env(args.env)
    lowers: list[str] = []
    if image is None:  # a directory of yours: no image config, the flags alone
        rootfs = os.path.abspath(args.rootfs)
        entrypoint = [args.entrypoint] if args.entrypoint else []
        argv, workdir, user = entrypoint + command, args.workdir or "/", args.user or ""
    else:  # an image: its Entrypoint, Cmd, Env, WorkingDir and User under the flags
        from labkit.runtime.image_config import merge

        found = _runnable_or_pull(image, args.pull)
        merged = merge(found.config, command, args.entrypoint, env, args.workdir, args.user)
        rootfs, lowers = "", [str(p) for p in found.lowers]
        argv, env, workdir, user = merged.argv, merged.env, merged.workdir, merged.user
    spec = ContainerSpec(
        rootfs=rootfs,
        argv=argv,
        image=image,
        lowers=lowers,
        read_only=args.read_only,
        user=user,
        namespaces=sorted(_namespaces(args)),
        network=args.network,
        publish=args.publish,
        userland_proxy=args.userland_proxy,
        isolation=args.isolation,
        hostname=args.hostname,
        env=env,
        workdir=workdir,
        name=args.name or "",
        interactive=args.interactive,
        tty=args.tty,
        try_escape=args.try_escape,
        cap_add=args.cap_add,
        cap_drop=args.cap_drop,
        privileged=args.privileged,
        security_opt=args.security_opt,
        device_cgroup_rules=args.device_cgroup_rule,
        resources={key: getattr(args, key) for key in RESOURCE_FLAGS if getattr(args, key)},
    )
    if spec.publish and spec.network_mode() == "host":  # Docker's words, and it runs
        print(
            "WARNING: Published ports are discarded when using host network mode", file=sys.stderr
        )
    supervisor = Supervisor()
    try:
        container = supervisor.start(spec)
        if args.pid_file:
            try:
                _write_atomically(args.pid_file, f"{container.pid}\n")
            except OSError as exc:
                container.signal(signal.SIGKILL)  # nobody could find it: do not leave it running
                supervisor.wait(container)
                raise LabkitError(
                    f"cannot write --pid-file {args.pid_file}: {exc.strerror}",
                    fix="pass a path in an existing, writable directory",
                ) from exc
        code = supervisor.wait(container)
    finally:
        supervisor.close()
    error = container.error
    if error:
        print(f"labkit: {_render(LabkitError(error['message'], error['fix']))}", file=sys.stderr)
    return code


def _namespaces(args: argparse.Namespace) -> set[str]:
    """--ns, less the network namespace with --network host (Docker: the host's network)."""
    from labkit.kernel.namespaces import parse_kinds

    kinds = parse_kinds(args.ns)
    if args.network == "host" and args.ns == DEFAULT_NAMESPACES:
        kinds = set(kinds) - {"net"}
    return set(kinds)


def _image_and_command(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """Docker's ``run [OPTIONS] IMAGE [COMMAND [ARG...]]``, and labkit's older spellings:
    with ``--image`` or ``--rootfs`` everything after the options is the command, and a
    leading ``--`` (with no image named) means busybox."""
    rest = list(args.command)
    if args.image or args.rootfs:
        return args.image, rest[1:] if rest[:1] == ["--"] else rest
    if rest[:1] == ["--"]:
        return "busybox", rest[1:]
    if not rest:
        raise LabkitError(
            '"labkit run" requires at least 1 argument',
            fix="labkit run [OPTIONS] IMAGE [COMMAND [ARG...]], e.g. labkit run busybox id",
        )
    return rest[0], rest[1:]


def _cmd_diff(args: argparse.Namespace) -> int:
    from labkit.runtime import layer, records

    for kind, path in layer.changes(records.find(args.container, running=False)):
        print(f"{kind} {path}")
    return 0


def _runnable_or_pull(image: str, when: str = "missing"):  # -> library.RunnableImage
    """The image to run; one that is not here is pulled first, as ``docker run`` does
    (``--pull``; its lines on stderr, so that stdout is the container's alone)."""
    from labkit.images import baseimage, library

    here = library.find(image) is not None or baseimage.name_of(image) is not None
    if when == "always" or (when == "missing" and not here):
        from labkit.images.progress import TerminalProgress
        from labkit.images.pull import pull
        from labkit.images.reference import parse

        if not here:
            print(f"Unable to find image '{parse(image).familiar}' locally", file=sys.stderr)
        pull(image, progress=TerminalProgress(sys.stderr), out=sys.stderr)
    return library.runnable(image)


#: The resource flags, by the name ContainerSpec.resources uses (Docker's, with underscores).
RESOURCE_FLAGS = (
    "memory", "memory_swap", "memory_reservation", "cpus", "cpu_shares", "pids_limit",
    "cpuset_cpus", "device_read_bps", "device_write_bps",
)  # fmt: skip


def _cmd_stats(args: argparse.Namespace) -> int:
    from labkit.kernel.cgroups.group import ContainerCgroups
    from labkit.runtime import records

    record = records.find(args.container)
    stats = ContainerCgroups(record.id).stats()
    if args.json:
        import json

        print(json.dumps({"id": record.id, "name": record.name, **stats.as_dict()}, indent=2))
    else:
        print(f"{record.id[:12]}  {record.name:<16} {stats.line()}")
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    from labkit.kernel.cgroups.group import ContainerCgroups
    from labkit.runtime import records

    record = records.find(args.container)
    ContainerCgroups(record.id).freeze(args.command_name == "pause")
    print(record.name)
    return 0


def _true_or_false(text: str) -> bool:
    """Go's strconv.ParseBool, as Docker reads --userland-proxy=false."""
    if text.lower() in ("1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _render(exc: LabkitError) -> str:
    return exc.render(WORDS)


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LabkitError(f"bad --env {pair!r}", fix="write it as KEY=VALUE")
        env[key] = value
    return env


def _write_atomically(path: str, text: str) -> None:
    """Write a temp file beside ``path`` and rename it over ``path``; the temp file never
    outlives a failure (``path`` may be a directory, or in one we cannot write)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".pid-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _cmd_ns(args: argparse.Namespace) -> int:
    from labkit.kernel.namespaces import list_namespaces

    rows = list_namespaces()
    if args.json:
        import json

        print(json.dumps([row._asdict() for row in rows], indent=2))
        return 0
    print(f"{'NS':>10} {'TYPE':<6} {'NPROCS':>6} {'PID':>7} COMMAND")
    for row in rows:
        print(f"{row.inode:>10} {row.kind:<6} {row.nprocs:>6} {row.pid:>7} {row.command[:60]}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from labkit import doctor

    return doctor.main(as_json=args.json)


def _cmd_reset(args: argparse.Namespace) -> int:
    from labkit import reset

    return reset.main(dry_run=args.dry_run, images=args.images)


def _cmd_lab(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labkit.lab import workcopy

    return workcopy.main(args.action, args.step, Path(args.repo) if args.repo else None)


class _Parser(argparse.ArgumentParser):
    """Bad flags are a labkit error like any other: one line, the fix, exit 125 (as Docker)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"labkit: {message} (fix: see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_LABKIT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="labkit", description="A container runtime built one kernel primitive at a time."
    )
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(
        dest="command_name", required=True, metavar="COMMAND", parser_class=_Parser
    )

    run = sub.add_parser(
        "run",
        help="run a command in a new container",
        description="Run a command in a new container of IMAGE (its layers under a writable "
        "layer of the container's own), as `docker run` does; or of a directory of yours "
        "(--rootfs DIR -- COMMAND).",
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument(
        "--image", help="the image (as the IMAGE argument; then everything else is the command)"
    )
    source.add_argument("--rootfs", help="a directory to use as the root filesystem")
    run.add_argument(
        "--ns",
        default=DEFAULT_NAMESPACES,
        metavar="KINDS",
        help=f"namespaces to create: {','.join(KINDS)}, or none "
        f"(default: {DEFAULT_NAMESPACES}, as Docker)",
    )
    run.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        default="pivot_root",
        help="how the rootfs becomes / (default: pivot_root; chroot moves the root onto / "
        "first, as runc --no-pivot, when there is a mount namespace)",
    )
    run.add_argument(
        "-i", "--interactive", action="store_true", help="keep stdin open (else /dev/null)"
    )
    run.add_argument(
        "-t", "--tty", action="store_true", help="give the container a pseudo-terminal"
    )
    run.add_argument("--hostname", help="hostname inside (needs uts; default: the short id)")
    run.add_argument("--name", help="a unique name (default: the short id)")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("-w", "--workdir", help="working directory inside (default: the image's)")
    run.add_argument("-u", "--user", help="user[:group] or uid[:gid] (default: the image's)")
    run.add_argument("--entrypoint", help="replaces the image's ENTRYPOINT (and drops its CMD)")
    run.add_argument(
        "--pull",
        choices=("missing", "always", "never"),
        default="missing",
        help="pull the image first: if it is not here (default), always, or never",
    )
    run.add_argument(
        "--read-only", action="store_true", help="mount the root read-only (/tmp, /run: tmpfs)"
    )
    run.add_argument(
        "--network",
        "--net",
        default="bridge",
        metavar="NETWORK",
        help="bridge (default: labkit0, as Docker's docker0), none, host, or a network made "
        "with `labkit network create`",
    )
    run.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="[IP:][HOSTPORT:]PORT[/PROTO]",
        help="publish a container's port on the host, as Docker does (8080:80; 80: a random "
        "host port, see `labkit port`); repeatable",
    )
    run.add_argument(
        "--userland-proxy",
        type=_true_or_false,
        default=True,
        metavar="true|false",
        help="how the host's own localhost reaches published ports: a proxy in the supervisor "
        "(true, the default) or hairpin NAT (false); Docker's daemon option, per container",
    )
    run.add_argument("--pid-file", help="write the container's host PID here once it runs")
    hardening = run.add_argument_group("security (Docker's flags and defaults)")
    hardening.add_argument("--cap-add", action="append", default=[], metavar="CAP")
    hardening.add_argument("--cap-drop", action="append", default=[], metavar="CAP")
    hardening.add_argument(
        "--privileged", action="store_true", help="all capabilities, no seccomp, no masks"
    )
    hardening.add_argument(
        "--security-opt",
        action="append",
        default=[],
        metavar="OPT",
        help="seccomp=unconfined, systempaths=unconfined, no-new-privileges",
    )
    hardening.add_argument(
        "--device-cgroup-rule", action="append", default=[], metavar="'c 1:3 rwm'"
    )
    resources = run.add_argument_group("resources (Docker's flags, units like 64m, 1.5, 512k)")
    resources.add_argument("-m", "--memory", help="memory limit, e.g. 64m")
    resources.add_argument(
        "--memory-swap", help="memory + swap limit (default 2x --memory; -1: no limit)"
    )
    resources.add_argument("--memory-reservation", help="soft memory limit")
    resources.add_argument("--cpus", help="CPUs, e.g. 0.5")
    resources.add_argument("-c", "--cpu-shares", help="relative CPU weight (1024 is normal)")
    resources.add_argument("--pids-limit", help="most processes at once")
    resources.add_argument("--cpuset-cpus", help="CPUs it may run on, e.g. 0-1")
    resources.add_argument("--device-read-bps", action="append", default=[], metavar="DEV:RATE")
    resources.add_argument("--device-write-bps", action="append", default=[], metavar="DEV:RATE")
    run.add_argument(
        "--try-escape",
        action="store_true",
        help="teaching aid: attempt the classic chroot escape before exec",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="IMAGE [COMMAND [ARG...]]")
    run.set_defaults(func=_cmd_run)

    diff = sub.add_parser("diff", help="what a container changed in its own layer")
    diff.add_argument("container", help="its name or id")
    diff.set_defaults(func=_cmd_diff)

    stats = sub.add_parser("stats", help="what a running container uses (its cgroups)")
    stats.add_argument("container", help="its name or id")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=_cmd_stats)
    for name, what in (("pause", "freeze"), ("unpause", "thaw")):
        command = sub.add_parser(name, help=f"{what} every process of a running container")
        command.add_argument("container", help="its name or id")
        command.set_defaults(func=_cmd_pause)

    ns = sub.add_parser("ns", help="namespaces on this host")
    ns.add_argument("action", choices=("ls",))
    ns.add_argument("--json", action="store_true")
    ns.set_defaults(func=_cmd_ns)

    doctor = sub.add_parser("doctor", help="check this host and say what to fix")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=_cmd_doctor)

    reset = sub.add_parser("reset", help="remove everything labkit made on this host")
    reset.add_argument("--dry-run", action="store_true", help="only list what would go")
    reset.add_argument(
        "--images", action="store_true", help="remove images too (built, pulled and loaded)"
    )
    reset.set_defaults(func=_cmd_reset)

    lab = sub.add_parser("lab", help="your working copies of the notebooks (in work/)")
    lab.add_argument("--repo", help="the lab's checkout (default: the one labkit runs from)")
    lab.add_argument("action", choices=("init", "restore", "ls"))
    lab.add_argument("step", nargs="?", help="for restore: a notebook, e.g. 02a")
    lab.set_defaults(func=_cmd_lab)
    from labkit.cli_images import add_parsers
    from labkit.cli_network import add_parsers as add_network_parsers

    add_parsers(sub)
    add_network_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _require_linux()
        return func(args)
    except LabkitError as exc:
        print(f"labkit: {_render(exc)}", file=sys.stderr)
        return EXIT_LABKIT_ERROR
    except OSError as exc:  # the host refused something: still one line, not a traceback
        print(f"labkit: {_render(_explain(exc))}", file=sys.stderr)
        return EXIT_LABKIT_ERROR
    except KeyboardInterrupt:
        return 130


def _explain(exc: OSError) -> LabkitError:
    """An OSError as one line; "run as root" only when the errno and the user say so."""
    where = f": {exc.filename}" if exc.filename else ""
    name = errno.errorcode.get(exc.errno or 0, "")
    problem = f"{exc.strerror or exc}{where}" + (f" ({name})" if name else "")
    if exc.errno in (errno.EPERM, errno.EACCES) and os.geteuid() != 0:
        return LabkitError(problem, fix="run it as root (sudo)")
    return LabkitError(problem, fix="check this host with {doctor}")


def _require_linux() -> None:
    if sys.platform != "linux":
        raise LabkitError(
            f"labkit needs Linux, this is {sys.platform}",
            fix="use the lab VM: cd vagrant && vagrant up",
        )


if __name__ == "__main__":
    sys.exit(main())
