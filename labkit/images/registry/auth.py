"""How a registry says who may do what: the ``WWW-Authenticate`` challenge, and its answers.

A registry answers an anonymous request with ``401`` and a challenge. Two schemes exist:

- ``Basic realm="Registry"``: send ``Authorization: Basic base64(user:password)`` with every
  request (the htpasswd mode of the reference registry; many private registries).
- ``Bearer realm="https://auth.example/token",service="registry",scope="repository:x:pull"``:
  go to the *token server* named by ``realm``, ask for a token for that ``service`` and
  ``scope`` (anonymously, or with Basic credentials), then send ``Authorization: Bearer <jwt>``
  to the registry. Docker Hub works this way even for public images: the anonymous token is
  what its rate limit counts.

A header can carry several challenges and quoted values may hold commas
(``scope="repository:a:pull,push"``), so it is read by a small tokenizer, not ``split(",")``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

# One ``key=value`` pair: the value is a quoted string (with \" escapes) or a bare token.
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)")


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or access token) for one registry."""

    username: str
    password: str

    def basic(self) -> str:
        """The value of an ``Authorization`` header in the Basic scheme (RFC 7617)."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def __repr__(self) -> str:  # never print a password into a log or a traceback
        return f"Credentials(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class Challenge:
    """One challenge from ``WWW-Authenticate``: ``scheme`` (lower case) and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in a ``WWW-Authenticate`` header, in order.

    ``Bearer realm="https://a/token",service="reg",scope="repository:x:pull,push"`` gives
    ``Challenge("bearer", {"realm": ..., "service": "reg", "scope": "repository:x:pull,push"})``.
    """
    found: list[Challenge] = []
    pos = 0
    while pos < len(header):
        scheme = _SCHEME.match(header, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while pos < len(header):
            param = _PARAM.match(header, pos)
            # a bare word that is not followed by "=" starts the next challenge
            if param is None or not param.group(0).strip():
                break
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        found.append(Challenge(scheme.group(1).lower(), params))
        while pos < len(header) and header[pos] in ", ":
            pos += 1
    return found


def pick(challenges: list[Challenge]) -> Challenge | None:
    """The challenge we answer: Bearer if offered (safer: a short-lived token, not the
    password, goes to the registry on every request), else Basic."""
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None


def scope_for(path: str, push: bool = False) -> str:
    """The token scope for a repository: ``repository:library/alpine:pull`` (``pull,push``)."""
    return f"repository:{path}:{'pull,push' if push else 'pull'}"


def token_from(reply: dict[str, object]) -> tuple[str, int]:
    """The token in a token server's JSON reply and how many seconds it lasts.

    The Docker token spec calls it ``token``; OAuth2-style servers say ``access_token``; some
    send both. ``expires_in`` defaults to 60 seconds, the spec's minimum."""
    token = reply.get("token") or reply.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("the token server's reply has no token")
    expires = reply.get("expires_in")
    return token, expires if isinstance(expires, int) and expires > 0 else 60
