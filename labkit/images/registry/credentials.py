"""``labkit login``: check a user name and password with the registry, then keep them.

They are kept in ``STATE_DIR/auth.json``, mode 0600, in the shape of Docker's
``~/.docker/config.json``: ``{"auths": {"HOST": {"auth": base64("user:password")}}}``.
base64 is an encoding, not encryption: the file mode is what protects the password
(Docker's credential helpers hand it to the OS keyring instead; labkit keeps it simple).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.images.registry.auth import Credentials
from labkit.images.registry.transport import RegistryError, Session

HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"}


def auth_file() -> Path:
    return paths.STATE_DIR / "auth.json"


def normal_host(host: str) -> str:
    """``docker.io`` for any of Docker Hub's names; other hosts as given, lower case."""
    host = host.strip().removesuffix("/")
    return "docker.io" if host in HUB_ALIASES else host.lower()


def _load() -> dict[str, dict[str, dict[str, str]]]:
    try:
        data = json.loads(auth_file().read_text())
    except FileNotFoundError:
        return {"auths": {}}
    except (OSError, ValueError) as e:
        raise LabkitError(
            f"cannot read {auth_file()}: {e}", fix="remove it and log in again"
        ) from None
    data.setdefault("auths", {})
    return data


def _save(data: dict[str, dict[str, dict[str, str]]]) -> None:
    """Write atomically, created 0600 from the start (never readable by others for a moment)."""
    path = auth_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def stored(host: str) -> Credentials | None:
    """The credentials kept for ``host``, if ``labkit login`` stored any."""
    entry = _load()["auths"].get(normal_host(host))
    if not entry or "auth" not in entry:
        return None
    try:
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise LabkitError(f"{auth_file()}: bad entry for {host}", fix=f"{{login}} {host}") from None
    return Credentials(user, password)


def verify(host: str, creds: Credentials) -> None:
    """Ask the registry whether ``creds`` are good, as ``docker login`` does: GET /v2/ and
    answer its challenge (a Basic retry, or a token request without a scope)."""
    session = Session(normal_host(host), "", creds, scope="")
    try:
        session.request("GET", session.url(""), what=f"login to {host}").close()
    except RegistryError as e:
        if e.status in (401, 403):
            raise RegistryError(
                f"login to {host} failed: wrong user name or password",
                fix="check them (for Docker Hub, an access token works as the password)",
                status=e.status,
            ) from None
        raise


def login(host: str, username: str, password: str) -> None:
    """Verify ``username``/``password`` with ``host``, then store them for pull and push."""
    if not username or not password:
        raise LabkitError("login needs a user name and a password", fix="{login} HOST -u USER")
    creds = Credentials(username, password)
    verify(host, creds)
    data = _load()
    pair = f"{username}:{password}".encode()
    data["auths"][normal_host(host)] = {"auth": base64.b64encode(pair).decode()}
    _save(data)


def logout(host: str) -> bool:
    """Forget the credentials for ``host``; False if there were none."""
    data = _load()
    if data["auths"].pop(normal_host(host), None) is None:
        return False
    _save(data)
    return True
