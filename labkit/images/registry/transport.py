"""HTTP to one registry: which scheme, the 401 handshake, redirects, and errors in one line.

Three rules a registry client must get right, each of them a real-world bug somewhere:

- **Credentials stay with the registry.** A registry may answer a blob request with a redirect
  to blob storage (S3, a CDN) on another host. urllib's own redirect handler copies the
  request's headers, ``Authorization`` included, to wherever it is sent. So this module
  follows redirects itself and attaches credentials only to URLs of the registry's own
  origin (scheme, host and port), as Go's HTTP client does.
- **Authenticate on demand.** Send the request; if the answer is 401, read the challenge,
  get a Bearer token (or use Basic), and send it again once. A 401 after that is a refusal.
- **Say what went wrong.** A registry error body is JSON ``{"errors": [{"code": ...}]}``;
  network failures are exceptions of several kinds. Both become one LabkitError line.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from typing import Any

from labkit.errors import LabkitError
from labkit.images.registry.auth import Credentials, parse_challenges, pick, token_from

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
HUB = "docker.io"
HUB_API = "registry-1.docker.io"  # docker.io is a name; the registry API lives here
TIMEOUT = float(os.environ.get("LABKIT_REGISTRY_TIMEOUT", "30"))
MAX_REDIRECTS = 10
# The Authorization that worked, per registry, scope and credential, until it expires (a token
# lives for minutes; Basic forever): so each blob request needs no 401 round trip first.
_TOKENS: dict[tuple[str, str, str], tuple[str, float]] = {}


class RegistryError(LabkitError):
    """A LabkitError that remembers the HTTP status and registry error code."""

    def __init__(self, problem: str, fix: str = "", status: int = 0, code: str = "") -> None:
        super().__init__(problem, fix)
        self.status, self.code = status, code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx comes back to us as an HTTPError; we decide where it goes


_OPENER = urllib.request.build_opener(_NoRedirect)


def host_of(domain: str) -> str:
    """``127.0.0.1:5000`` -> ``127.0.0.1``; ``[::1]:5000`` -> ``::1``."""
    return urllib.parse.urlsplit("//" + domain).hostname or domain


def scheme_for(domain: str) -> str:
    """Plain HTTP only for this machine and for hosts the user listed as insecure."""
    insecure = {h.strip() for h in os.environ.get("LABKIT_INSECURE_REGISTRIES", "").split(",")}
    plain = host_of(domain) in LOCAL_HOSTS or domain in insecure or host_of(domain) in insecure
    return "http" if plain else "https"


def origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class Session:
    """Requests to one repository on one registry, with its credentials and token."""

    def __init__(
        self, domain: str, path: str, creds: Credentials | None, scope: str, scheme: str = ""
    ) -> None:
        self.domain, self.path, self.creds, self.scope = domain, path, creds, scope
        host = HUB_API if domain == HUB else domain
        self.base = f"{scheme or scheme_for(domain)}://{host}"
        self.auth: str | None = None
        cached = _TOKENS.get(self._token_key())
        if cached and cached[1] > time.monotonic():
            self.auth = cached[0]

    def url(self, tail: str) -> str:
        return f"{self.base}/v2/{self.path}/{tail}" if tail else f"{self.base}/v2/"

    def _token_key(self) -> tuple[str, str, str]:
        # keyed by the whole credential (hashed), so a wrong password never reuses a token
        who = hashlib.sha256(self.creds.basic().encode()).hexdigest() if self.creds else ""
        return (self.base, self.scope, who)

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        data: Any = None,
        ok: tuple[int, ...] = (),
    ) -> HTTPResponse:
        """Send, answering one 401 challenge and following redirects. A status in ``ok``
        (such as 404 for a HEAD that asks "do you have it?") is returned, not raised."""
        for attempt in (1, 2):
            try:
                return self._follow(method, url, headers or {}, data)
            except urllib.error.HTTPError as e:
                if e.code in ok:
                    return e  # type: ignore[return-value]  # an HTTPError is a response too
                if e.code == 401 and attempt == 1 and self._answer(e.headers, what):
                    if hasattr(data, "seek"):
                        data.seek(0)
                    continue
                if e.code == 401:
                    _TOKENS.pop(self._token_key(), None)  # it did not work: never reuse it
                raise self.error(e, what) from None
        raise AssertionError("unreachable")

    def _follow(self, method: str, url: str, headers: dict[str, str], data: Any) -> HTTPResponse:
        for _ in range(MAX_REDIRECTS):
            sent = dict(headers)
            if self.auth and origin(url) == origin(self.base):
                sent["Authorization"] = self.auth  # never to another host (see module doc)
            req = urllib.request.Request(url, data=data, headers=sent, method=method)
            try:
                return _OPENER.open(req, timeout=TIMEOUT)
            except urllib.error.HTTPError as e:
                location = e.headers.get("Location")
                if e.code not in (301, 302, 303, 307, 308) or not location:
                    raise
                e.close()
                url = urllib.parse.urljoin(url, location)
                if e.code == 303:
                    method, data = "GET", None
            except (urllib.error.URLError, OSError) as e:
                raise self.unreachable(e) from None
        raise RegistryError(f"too many redirects from {self.domain}", fix="report the registry")

    def _answer(self, headers: Any, what: str) -> bool:
        """Prepare ``self.auth`` for the challenge in a 401; False if we have no answer."""
        challenge = pick(parse_challenges(headers.get("WWW-Authenticate", "")))
        if challenge is None:
            return False
        if challenge.scheme == "basic":
            if self.creds is None or self.auth == self.creds.basic():
                return False
            self.auth = self.creds.basic()
            _TOKENS[self._token_key()] = (self.auth, float("inf"))  # kept only if it works
            return True
        realm = challenge.params.get("realm", "")
        if not realm:
            return False
        token, lifetime = self.fetch_token(realm, challenge.params.get("service"), what)
        self.auth = "Bearer " + token
        _TOKENS[self._token_key()] = (self.auth, time.monotonic() + lifetime - 5)
        return True

    def fetch_token(self, realm: str, service: str | None, what: str) -> tuple[str, int]:
        """GET ``realm?service=..&scope=..`` from the token server, with Basic credentials if
        we have any; anonymous otherwise."""
        query = {k: v for k, v in (("service", service), ("scope", self.scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self.creds.basic()} if self.creds else {}
        try:
            with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as r:
                return token_from(json.load(r))
        except urllib.error.HTTPError as e:
            raise self.error(e, what + " (token server)") from None
        except (urllib.error.URLError, OSError) as e:
            raise self.unreachable(e, realm) from None
        except ValueError as e:
            raise RegistryError(f"token server {realm}: {e}", fix="report the registry") from None

    def error(self, e: urllib.error.HTTPError, what: str) -> RegistryError:
        """One line for an HTTP error status, with the registry's own error code if it sent one."""
        body = e.read(65536)
        e.close()
        code, message = "", ""
        try:
            first = json.loads(body)["errors"][0]
            code, message = str(first.get("code", "")), str(first.get("message", ""))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            message = body.decode("utf-8", "replace").strip()[:200]
        detail = f" ({code}: {message})" if code else ""
        on = "" if self.domain in what else f" on {self.domain}"
        login = f"{{login}} {self.domain}"
        if e.code == 404 or code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"):
            return RegistryError(
                f"{what}: not found{on}{detail}",
                fix=f"check the name and tag (the image may not exist, or be private: {login})",
                status=e.code,
                code=code,
            )
        if e.code in (401, 403) or code in ("UNAUTHORIZED", "DENIED"):
            how = "wrong user name or password" if self.creds else "authentication required"
            return RegistryError(
                f"{what}: access denied{on}: {how}{detail}",
                fix=f"{login} with an account that may access {self.path}",
                status=e.code,
                code=code,
            )
        if e.code == 429:
            wait = e.headers.get("Retry-After", "")
            return RegistryError(
                f"{what}: rate limited{on} (429 Too Many Requests)",
                fix=f"wait {wait or 'a while'}{' s' if wait.isdigit() else ''} and retry, or "
                f"{login} (logged-in pulls have a higher limit)",
                status=429,
                code=code,
            )
        if e.code == 400 and b"HTTP request to an HTTPS server" in body:
            return RegistryError(
                f"{self.domain} speaks HTTPS, but labkit sent plain HTTP",
                fix="use the registry's https address; plain HTTP is only for this machine "
                "and LABKIT_INSECURE_REGISTRIES",
                status=400,
            )
        return RegistryError(
            f"{what}: {self.domain} answered {e.code} {e.reason}{detail or ': ' + message}",
            fix="retry later; if it repeats, the registry is broken",
            status=e.code,
            code=code,
        )

    def unreachable(self, e: BaseException, where: str = "") -> RegistryError:
        """Connection refused, DNS, timeout, or TLS trouble, in the user's words."""
        where = where or self.base
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLCertVerificationError):
            return RegistryError(
                f"{where}: its TLS certificate is not trusted ({reason.verify_message})",
                fix="install the registry's CA certificate on this machine",
            )
        if isinstance(reason, ssl.SSLError):
            return RegistryError(
                f"{where} speaks plain HTTP, but labkit expected HTTPS ({reason.reason})",
                fix=f"if you trust the network, add {self.domain} to LABKIT_INSECURE_REGISTRIES",
            )
        if isinstance(reason, socket.gaierror):
            text = f"its name does not resolve ({reason.strerror})"
        elif isinstance(reason, ConnectionRefusedError):
            text = "connection refused (nothing listens there)"
        elif isinstance(reason, TimeoutError):
            text = f"no answer within {TIMEOUT:g} s"
        else:
            text = str(reason)
        return RegistryError(
            f"registry {where} is unreachable: {text}",
            fix="check the address and that the registry runs (and the network, for a remote one)",
        )
