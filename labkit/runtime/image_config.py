"""An image's config applied as Docker applies it: command, environment, directory, user.

An image carries defaults for the containers made from it (the ``config`` object of its
OCI config): ``Entrypoint`` and ``Cmd``, ``Env``, ``WorkingDir`` and ``User``. ``docker run``
merges them with its flags by fixed rules, which ``merge`` follows:

* **command**: ``Entrypoint + Cmd``. A command given on the command line replaces ``Cmd``;
  ``--entrypoint X`` replaces ``Entrypoint`` *and* drops the image's ``Cmd`` (an entrypoint
  of your own gets only the arguments you give it); ``--entrypoint ""`` clears it.
* **environment**: the image's ``Env``, then each ``-e`` replaces a variable of the same name.
* **directory**: ``-w``, else ``WorkingDir``, else ``/``; made in the container if missing.
* **user**: ``-u``, else ``User``, else root. Names are looked up in the *container's*
  /etc/passwd and /etc/group (``identity``), never the host's: uid 1000 may be "alice" on
  the host and "app" in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit.errors import LabkitError


@dataclass(frozen=True)
class Merged:
    """What ``docker run`` would run, after merging the image's config with the flags."""

    argv: list[str]
    env: dict[str, str]
    workdir: str
    user: str


def merge(
    config: dict,
    command: list[str],
    entrypoint: str | None = None,
    env: dict[str, str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
) -> Merged:
    """The image's ``config`` (its Env, Cmd, Entrypoint, WorkingDir, User) under the flags."""
    if entrypoint is None:
        argv = list(config.get("Entrypoint") or []) + (command or list(config.get("Cmd") or []))
    else:
        argv = ([entrypoint] if entrypoint else []) + command
    if not argv:
        raise LabkitError("No command specified", fix="give {command}, or an image with a Cmd")
    merged = parse_env(config.get("Env") or [])
    merged.update(env or {})
    return Merged(
        argv=argv,
        env=merged,
        workdir=workdir or config.get("WorkingDir") or "/",
        user=user if user is not None else config.get("User") or "",
    )


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``["A=1", "B"]`` as a dict, the way an image config stores it (no '=': empty)."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = value
    return out


# -- users --------------------------------------------------------------------------------------

#: What runc assumes when the image says nothing: root, group root, home "/".
DEFAULT = (0, 0, "/")


@dataclass(frozen=True)
class Identity:
    """Who the command runs as: uid, primary gid, every group, and $HOME."""

    uid: int
    gid: int
    groups: list[int]
    home: str


def _rows(text: str | None, fields: int) -> list[list[str]]:
    """The well-formed lines of an /etc/passwd (7 fields) or /etc/group (4) text."""
    rows = [line.split(":") for line in (text or "").splitlines()]
    return [r for r in rows if len(r) >= fields and r[0] and not r[0].startswith("#")]


def identity(user: str, passwd: str | None, group: str | None) -> Identity:
    """Resolve Docker's ``--user`` forms against the image's files, with runc's rules.

    ``""`` is root; ``uid`` and ``name`` are looked up in /etc/passwd (a uid without an
    entry is fine, a name without one is an error); ``:group`` likewise in /etc/group. Only
    the implicit form (no ``:group``) adds the groups that list the user as a member; the
    primary group is always one of the process's groups, as under Docker.
    """
    name, _, group_arg = user.partition(":")
    users = _rows(passwd, 7)
    uid, gid, home = DEFAULT
    if name.isdigit() or not name:
        wanted = int(name) if name else 0
        entry = next((u for u in users if u[2].isdigit() and int(u[2]) == wanted), None)
        uid = wanted
    else:
        entry = next((u for u in users if u[0] == name), None)
        if entry is None:
            raise LabkitError(
                f"unable to find user {name}: no matching entries in passwd file",
                fix="give {user} a uid, or a name from the image's /etc/passwd",
            )
    matched = ""
    if entry is not None and entry[2].isdigit() and entry[3].isdigit():
        matched, uid, gid, home = entry[0], int(entry[2]), int(entry[3]), entry[5]
    groups = _rows(group, 4)
    extra: list[int] = []
    if group_arg:
        found = next((g for g in groups if g[0] == group_arg), None)
        if group_arg.isdigit():
            gid = int(group_arg)
        elif found is not None and found[2].isdigit():
            gid = int(found[2])
        else:
            raise LabkitError(
                f"unable to find group {group_arg}: no matching entries in group file",
                fix="give {user} a gid, or a group from the image's /etc/group",
            )
    elif matched:
        extra = [int(g[2]) for g in groups if g[2].isdigit() and matched in g[3].split(",")]
    return Identity(uid, gid, sorted({gid, *extra}), home or "/")
