"""Real registries for the tests: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1.

Three modes, as in the wild: no auth; ``htpasswd`` (Basic auth, bcrypt hashes made by
``htpasswd -B`` from apache2-utils); and ``token`` auth, where a small token server here issues
RS256 JWTs. Registry 2.8 trusts a token whose header carries the signing certificate (``x5c``)
if that certificate chains to its ``rootcertbundle`` (registry/auth/token/token.go,
``parseAndVerifyCertChain``): so we make one self-signed certificate with ``openssl``, give it
to the registry as the bundle, and sign every token with its key (``openssl dgst -sign``).

Each registry gets its own config.yml and storage under a tmp dir; every process and server
started here is stopped and reaped by ``stop()`` (the fixtures call it).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REGISTRY = "/usr/bin/docker-registry"
SERVICE = "labkit-test-registry"
ISSUER = "labkit-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def self_signed(dir: Path, name: str) -> tuple[Path, Path]:
    """An RSA key and a self-signed certificate for it (for tokens, or for TLS)."""
    key, cert = dir / f"{name}.key", dir / f"{name}.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", key, "-out", cert, "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


class HttpServer:
    """A ThreadingHTTPServer on a free port in a thread, with a handler function."""

    def __init__(self, handle: Callable[[BaseHTTPRequestHandler], None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                handle(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class TokenServer:
    """Issues the JWTs registry 2.8 accepts; records every request it is asked."""

    def __init__(self, tmp: Path, users: dict[str, str]) -> None:
        self.key, self.cert = self_signed(tmp, "token-signer")
        der = subprocess.run(
            ["openssl", "x509", "-in", self.cert, "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        self.x5c = base64.b64encode(der).decode()
        self.users = users
        self.requests: list[dict[str, object]] = []
        self.http = HttpServer(self._handle)
        self.realm = self.http.url + "/token"

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        auth = h.headers.get("Authorization", "")
        self.requests.append({"path": h.path, "query": query, "authorization": auth})
        user = ""
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(name) != password:
                h.send_response(401)
                h.send_header("Content-Type", "application/json")
                h.end_headers()
                h.wfile.write(b'{"errors":[{"code":"UNAUTHORIZED","message":"bad password"}]}')
                return
            user = name
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            if user:  # logged-in users may pull and push; anonymous users get nothing
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        body = json.dumps({"access_token": self.token(user, access), "expires_in": 300})
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        h.wfile.write(body.encode())

    def token(self, subject: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": str(time.monotonic_ns()),
                  "access": access}  # fmt: skip
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout  # fmt: skip
        return f"{signing_input}.{b64url(sig)}"

    def stop(self) -> None:
        self.http.stop()


class Registry:
    """``docker-registry serve`` with a config of our own, storage under ``tmp``."""

    def __init__(
        self, tmp: Path, mode: str = "none", users: dict[str, str] | None = None,
        tls: bool = False,
    ) -> None:  # fmt: skip
        if missing := have_tools():
            # a missing tool is a broken test machine, not a reason to skip: say what to install
            raise RuntimeError(f"missing {missing}: apt-get install docker-registry skopeo "
                               "openssl apache2-utils")  # fmt: skip
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp, self.mode, self.users = tmp, mode, users or {}
        self.port = free_port()
        self.domain = f"127.0.0.1:{self.port}"
        self.storage = tmp / "storage"
        self.token_server: TokenServer | None = None
        lines = [
            "version: 0.1",
            "log: {level: warn, accesslog: {disabled: true}}",
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}}}",
            f"http: {{addr: '127.0.0.1:{self.port}', secret: labkit-test"
            + (", tls: {{certificate: {1}, key: {0}}}".format(*self_signed(tmp, "tls")) if tls
               else "") + "}",
        ]  # fmt: skip
        if mode == "htpasswd":
            hashes = [
                subprocess.run(["htpasswd", "-Bbn", u, p], check=True, capture_output=True,
                               text=True).stdout.strip()
                for u, p in self.users.items()
            ]  # fmt: skip
            (tmp / "htpasswd").write_text("\n".join(hashes) + "\n")
            lines.append(f"auth: {{htpasswd: {{realm: labkit-test, path: {tmp / 'htpasswd'}}}}}")
        elif mode == "token":
            self.token_server = TokenServer(tmp, self.users)
            lines.append(
                f"auth: {{token: {{realm: '{self.token_server.realm}', service: {SERVICE}, "
                f"issuer: {ISSUER}, rootcertbundle: {self.token_server.cert}}}}}"
            )
        (tmp / "config.yml").write_text("\n".join(lines) + "\n")
        self.log = tmp / "registry.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [REGISTRY, "serve", str(self.tmp / "config.yml")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            wait_port(self.port, self.proc)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{e}: {self.log.read_text()[-2000:]}") from None

    def stop_registry(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.stop_registry()
        if self.token_server is not None:
            self.token_server.stop()

    def skopeo_creds(self) -> list[str]:
        if not self.users:
            return []
        user, password = next(iter(self.users.items()))
        return ["--dest-creds", f"{user}:{password}"]

    def push_with_skopeo(self, source: str, repo: str, *extra: str) -> None:
        """``skopeo copy SOURCE docker://127.0.0.1:PORT/REPO``: how images get in."""
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *self.skopeo_creds(),
             *extra, source, f"docker://{self.domain}/{repo}"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip

    def skopeo_raw(self, repo: str, *extra: str) -> bytes:
        """The manifest bytes skopeo gets for ``repo`` (as the registry serves them)."""
        creds = self.skopeo_creds()
        if creds:
            creds = ["--creds", creds[1]]
        return subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", *creds, *extra,
             f"docker://{self.domain}/{repo}"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip

    def blob_file(self, digest: str) -> Path:
        """Where registry 2.8's filesystem driver keeps a blob (to tamper with it)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def have_tools() -> list[str]:
    """The host tools these helpers need that are missing (empty: all there)."""
    return [t for t in (REGISTRY, "skopeo", "openssl", "htpasswd") if not shutil.which(t)]


def fetch(url: str, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
        return r.read()


class RedirectingFront:
    """A registry front on its own port that passes every request to ``upstream`` but answers
    blob GETs with a 307 to a *second* server (another origin, as S3 or a CDN would be).
    Both record the headers they got: the second must never see ``Authorization``."""

    def __init__(self, upstream: Registry, upstream_auth: str) -> None:
        self.upstream = f"http://{upstream.domain}"
        self.upstream_auth = upstream_auth
        self.front_requests: list[dict[str, str]] = []
        self.blob_requests: list[dict[str, str]] = []
        self.blobs = HttpServer(self._blob)
        self.front = HttpServer(self._front)
        self.domain = f"127.0.0.1:{self.front.port}"

    def _front(self, h: BaseHTTPRequestHandler) -> None:
        self.front_requests.append(dict(h.headers) | {"path": h.path})
        if h.command == "GET" and "/blobs/sha256:" in h.path:
            h.send_response(307)
            h.send_header("Location", f"{self.blobs.url}/storage{h.path}")
            h.end_headers()
            return
        keep = ("Authorization", "Accept", "Content-Type")
        headers = {k: h.headers[k] for k in keep if h.headers.get(k)}
        length = int(h.headers.get("Content-Length") or 0)
        req = urllib.request.Request(
            self.upstream + h.path, data=h.rfile.read(length) if length else None,
            headers=headers, method=h.command,
        )  # fmt: skip
        try:
            resp = urllib.request.urlopen(req)
        except urllib.error.HTTPError as e:
            resp = e
        with resp:
            body = resp.read()
            h.send_response(resp.status)
            for k, v in resp.headers.items():
                if k.lower() not in ("content-length", "connection", "date", "server"):
                    h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(body)

    def _blob(self, h: BaseHTTPRequestHandler) -> None:
        self.blob_requests.append(dict(h.headers) | {"path": h.path})
        body = fetch(self.upstream + h.path.removeprefix("/storage"),
                     {"Authorization": self.upstream_auth})  # fmt: skip
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def stop(self) -> None:
        self.front.stop()
        self.blobs.stop()
