"""The image commands of ``labkit``, named and printed as Docker's are: ``pull``, ``push``,
``images``, ``rmi``, ``tag``, ``save``, ``load``, ``login``, ``logout``, ``system df``.

Start-up time counts: the handlers import the image modules when they run, so ``labkit
run`` never pays for the registry client. ``labkit images`` with no action lists images as
``docker images`` does; ``images build|ls|docker-import`` still manage the base images.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_pull(args: argparse.Namespace) -> int:
    from labkit.images import pull
    from labkit.images.progress import TerminalProgress

    pull.pull(args.name, platform=args.platform, progress=TerminalProgress())
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from labkit.images import pull

    pull.push(args.name)
    return 0


def _cmd_images(args: argparse.Namespace) -> int:
    if args.action is not None:
        return _base_images(args)
    from labkit.images import humanize, usage

    rows = usage.rows()
    if args.quiet:
        for short_id in dict.fromkeys(r.id[7:19] for r in rows):  # one line per image
            print(short_id)
        return 0
    _table(
        ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
        [
            (
                r.repository,
                r.tag,
                r.id[7:19],
                humanize.human_age(r.created),
                humanize.human_size(r.size),
            )
            for r in rows
        ],  # fmt: skip
    )
    return 0


def _base_images(args: argparse.Namespace) -> int:
    """The base images' own commands, as they were before images could be pulled."""
    from labkit.images import store

    if args.action == "build":
        for name in store.KNOWN if args.name in (None, "all") else [args.name]:
            print(f"{name}: {store.build(name, force=args.force)}")
    elif args.action == "ls":
        for image in store.list_images():
            print(
                f"{image['name']:<10} {image['size_bytes'] / 2**20:8.1f} MiB  "
                f"{image['files']:>6} files  {image['rootfs']}"
            )
    else:  # docker-import
        from labkit import docker

        built = [i["name"] for i in store.list_images()]
        for name in built if args.name in (None, "all") else [args.name]:
            print(docker.import_image(name))
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Columns as Docker's tabwriter lays them out: the widest cell plus three spaces, at
    least ten characters (``tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)``)."""
    cells = [tuple(map(str, header))] + [tuple(map(str, r)) for r in rows]
    widths = [max(10, 3 + max(len(r[i]) for r in cells)) for i in range(len(header))]
    for r in cells:
        print("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _cmd_rmi(args: argparse.Namespace) -> int:
    from labkit.images import usage

    for line in usage.rmi(args.names, force=args.force):
        print(line)
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    from labkit.images import tags

    tags.tag(args.source, args.target)
    return 0


def _cmd_save(args: argparse.Namespace) -> int:
    import os

    from labkit.images import archive

    if args.output is None:
        if sys.stdout.isatty():
            from labkit.errors import LabkitError

            raise LabkitError(
                "cowardly refusing to save to a terminal", fix="use -o FILE or redirect stdout"
            )
        archive.save(args.names, sys.stdout.buffer)
        return 0
    tmp = f"{args.output}.{os.getpid()}.part"  # a failed save leaves no file that looks whole
    try:
        with open(tmp, "wb") as out:
            archive.save(args.names, out)
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    from labkit.images import archive

    if args.input is None:
        lines = archive.load(sys.stdin.buffer)
    else:
        with open(args.input, "rb") as f:
            lines = archive.load(f)
    for line in lines:
        print(line)
    return 0


def _cmd_login(args: argparse.Namespace) -> int:
    import getpass

    from labkit.images import registry

    user = args.username or input("Username: ")
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\n")
    else:
        password = args.password or getpass.getpass("Password: ")
    registry.login(args.server, user, password)
    print("Login Succeeded")
    return 0


def _cmd_logout(args: argparse.Namespace) -> int:
    from labkit.images import registry

    if registry.logout(args.server):
        print(f"Removing login credentials for {args.server}")
    else:
        print(f"Not logged in to {args.server}")
    return 0


def _cmd_system_df(args: argparse.Namespace) -> int:
    from labkit.images import humanize, usage

    images, total = usage.disk_usage()
    if not args.verbose:
        active = sum(1 for u in images if u.containers)
        unused = usage.reclaimable(images, total)
        pct = f" ({100 * unused // total}%)" if total else ""
        _table(
            ("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"),
            [
                (
                    "Images",
                    len(images),
                    active,
                    humanize.human_size(total),
                    humanize.human_size(unused) + pct,
                )
            ],  # fmt: skip
        )
        return 0
    print("Images space usage:\n")
    _table(
        ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE",
         "CONTAINERS"),
        [(u.row.repository, u.row.tag, u.row.id[7:19], humanize.human_age(u.row.created),
          humanize.human_size(u.row.size), humanize.human_size(u.shared),
          humanize.human_size(u.unique), u.containers) for u in images],
    )  # fmt: skip
    print(f"\nTotal: {humanize.human_size(total)} ({total} bytes, each shared layer once)")
    return 0


def _names(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="IMAGE")


#: The commands Docker has both at the top and under ``docker image``: (name, name under
#: ``image``, help, its arguments, its handler).
_COMMANDS: tuple[tuple[str, str, str, Any, Any], ...] = (
    ("pull", "pull", "download an image from a registry", lambda p: (
        p.add_argument("--platform", help="os/arch[/variant], e.g. linux/arm64 (default: this "
                       "host)"), p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")), _cmd_pull),
    ("push", "push", "upload an image to a registry",
     lambda p: p.add_argument("name", metavar="NAME[:TAG]"), _cmd_push),
    ("rmi", "rm", "remove images (and layers no other image uses)", lambda p: (
        p.add_argument("-f", "--force", action="store_true",
                       help="even with several tags or a stopped container"), _names(p)), _cmd_rmi),
    ("tag", "tag", "give an image another name", lambda p: (
        p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]"),
        p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")), _cmd_tag),
    ("save", "save", "write images to a tar archive (docker-archive format)", lambda p: (
        p.add_argument("-o", "--output", help="the file (default: stdout)"), _names(p)), _cmd_save),
    ("load", "load", "read images from a tar archive (docker save's)",
     lambda p: p.add_argument("-i", "--input", help="the file (default: stdin)"), _cmd_load),
)  # fmt: skip


def add_parsers(sub: Any) -> None:
    """Add the image commands to the ``labkit`` subcommand table ``sub``."""
    image = sub.add_parser("image", help="manage images: ls, rm, pull, push, tag, save, load")
    under = image.add_subparsers(dest="image_action", required=True, metavar="ACTION")
    p = under.add_parser("ls", help="list images")
    p.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    p.set_defaults(func=_cmd_images, action=None)
    for name, short, what, arguments, func in _COMMANDS:
        for table, called in ((sub, name), (under, short)):
            p = table.add_parser(called, help=what)
            arguments(p)
            p.set_defaults(func=func)

    p = sub.add_parser("images", help="list images (build|ls|docker-import: base images)")
    p.add_argument("action", nargs="?", choices=("build", "ls", "docker-import"))
    p.add_argument("name", nargs="?", help="busybox, debian or all (default: all)")
    p.add_argument("--force", action="store_true", help="rebuild even if built")
    p.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    p.set_defaults(func=_cmd_images)

    p = sub.add_parser("login", help="log in to a registry (kept in STATE_DIR/auth.json)")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="visible in ps: prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("server", metavar="SERVER")
    p.set_defaults(func=_cmd_login)

    p = sub.add_parser("logout", help="forget the credentials for a registry")
    p.add_argument("server", metavar="SERVER")
    p.set_defaults(func=_cmd_logout)

    system = sub.add_parser("system", help="disk usage of images (system df)")
    actions = system.add_subparsers(dest="system_action", required=True, metavar="ACTION")
    p = actions.add_parser("df", help="show disk usage; -v per image, shared counted once")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_cmd_system_df)
