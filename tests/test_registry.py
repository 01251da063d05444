"""The registry client against real registries (Debian's docker-registry 2.8 on 127.0.0.1).

Images get into the registries with skopeo from the local Docker daemon (labkit/busybox,
imported by ``labkit images docker-import``); what labkit pulls is compared with what skopeo
and Docker say about the same image. Nothing is mocked: where a registry cannot misbehave on
demand (a lying blob store, a rate limit, a redirect to blob storage) a small real HTTP server
in tests/registry_server.py does it.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_server import (
    SERVICE,
    HttpServer,
    RedirectingFront,
    Registry,
)

from labkit import paths
from labkit.cli import WORDS
from labkit.errors import LabkitError
from labkit.images.blobs import BlobStore, digest_of
from labkit.images.progress import Progress, TerminalProgress
from labkit.images.reference import parse
from labkit.images.registry import (
    OCI_INDEX,
    Credentials,
    fetch_blob,
    fetch_manifest,
    host_platform_name,
    login,
    logout,
    push,
    stored,
    transport,
)
from labkit.images.registry.auth import parse_challenges, token_from
from labkit.images.registry.transport import RegistryError, Session

SOURCE = "docker-daemon:labkit/busybox:latest"
REPO = "labkit/busybox:1"
USERS = {"alice": "s3cret"}
ALICE = Credentials("alice", "s3cret")


class Recorder(Progress):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def start(self, digest: str, total: int) -> None:
        self.events.append(("start", digest, total))

    def advance(self, digest: str, n: int) -> None:
        self.events.append(("advance", digest, n))

    def done(self, digest: str, status: str) -> None:
        self.events.append(("done", digest, status))


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Registry]]:
    """One registry per auth mode for the whole module, started when first asked for."""
    running: dict[str, Registry] = {}
    yield running
    for reg in running.values():
        reg.stop()


def _get(started: dict[str, Registry], mode: str, factory: pytest.TempPathFactory) -> Registry:
    if mode not in started:
        users = USERS if mode != "none" else None
        started[mode] = Registry(factory.mktemp(f"reg-{mode}"), mode, users)
        started[mode].push_with_skopeo(SOURCE, REPO)
    return started[mode]


@pytest.fixture(params=["none", "htpasswd", "token"])
def registry(
    request: pytest.FixtureRequest, started: dict[str, Registry], tmp_path_factory
) -> Registry:
    return _get(started, request.param, tmp_path_factory)


@pytest.fixture(params=["htpasswd", "token"])
def auth_registry(
    request: pytest.FixtureRequest, started: dict[str, Registry], tmp_path_factory
) -> Registry:
    return _get(started, request.param, tmp_path_factory)


@pytest.fixture
def token_registry(started: dict[str, Registry], tmp_path_factory) -> Registry:
    return _get(started, "token", tmp_path_factory)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Registry]:
    """A registry of its own (no auth), for tests that break or stop it."""
    reg = Registry(tmp_path / "plain")
    try:
        reg.push_with_skopeo(SOURCE, REPO)
        yield reg
    finally:
        reg.stop()


def creds_for(reg: Registry) -> Credentials | None:
    return ALICE if reg.users else None


def pull_all(ref_text: str, store: BlobStore, auth: Credentials | None, **kw: object):
    ref = parse(ref_text)
    pulled = fetch_manifest(ref, auth=auth, **kw)  # type: ignore[arg-type]
    for desc in [pulled.config, *pulled.layers]:
        fetch_blob(ref, desc, store, auth=auth)
    return pulled


def test_pull_matches_skopeo_and_docker(registry: Registry, tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    pulled = pull_all(f"{registry.domain}/{REPO}", store, creds_for(registry))
    raw = registry.skopeo_raw(REPO)
    assert pulled.manifest == raw
    assert pulled.manifest_digest == digest_of(raw)
    # skopeo's own copy of the same image, digests preserved: the same blobs, byte for byte
    creds = ["--src-creds", "alice:s3cret"] if registry.users else []
    oci = tmp_path / "oci"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", *creds, "--preserve-digests",
         f"docker://{registry.domain}/{REPO}", f"oci:{oci}:x"],
        check=True, capture_output=True,
    )  # fmt: skip
    index = json.loads((oci / "index.json").read_text())
    assert index["manifests"][0]["digest"] == pulled.manifest_digest
    for desc in [pulled.config, *pulled.layers]:
        theirs = (oci / "blobs/sha256" / desc.digest.removeprefix("sha256:")).read_bytes()
        assert store.read_bytes(desc.digest) == theirs
        assert len(theirs) == desc.size
    # Docker's image id is the digest of the config; its layers are the config's diff ids
    inspect = json.loads(
        subprocess.run(["docker", "image", "inspect", "labkit/busybox:latest"],
                       check=True, capture_output=True).stdout
    )[0]  # fmt: skip
    assert pulled.config.digest == inspect["Id"]
    config = json.loads(store.read_bytes(pulled.config.digest))
    assert config["rootfs"]["diff_ids"] == inspect["RootFS"]["Layers"]


def test_token_server_asked_for_the_right_scope(token_registry: Registry, tmp_path: Path) -> None:
    registry = token_registry
    assert registry.token_server is not None
    transport._TOKENS.clear()
    registry.token_server.requests.clear()
    pull_all(f"{registry.domain}/{REPO}", BlobStore(tmp_path / "s"), ALICE)
    asked = registry.token_server.requests
    assert len(asked) == 1, "one token serves the whole pull"
    assert asked[0]["query"] == {"service": [SERVICE], "scope": ["repository:labkit/busybox:pull"]}
    assert asked[0]["authorization"] == ALICE.basic()


def test_wrong_password_is_denied(auth_registry: Registry) -> None:
    registry = auth_registry
    fetch_manifest(parse(f"{registry.domain}/{REPO}"), auth=ALICE)  # a good token is cached...
    with pytest.raises(RegistryError) as info:
        fetch_manifest(parse(f"{registry.domain}/{REPO}"), auth=Credentials("alice", "nope"))
    assert "access denied" in info.value.problem and "wrong user name or password" in str(
        info.value
    )
    with pytest.raises(RegistryError) as info:
        fetch_manifest(parse(f"{registry.domain}/{REPO}"))
    assert "authentication required" in info.value.problem
    assert f"labkit login {registry.domain}" in info.value.render(WORDS)


def test_unknown_image_and_tag(registry: Registry) -> None:
    for name in ("labkit/nothing:1", "labkit/busybox:nosuchtag"):
        with pytest.raises(RegistryError) as info:
            fetch_manifest(parse(f"{registry.domain}/{name}"), auth=creds_for(registry))
        assert "not found" in info.value.problem
        assert info.value.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
        assert "\n" not in str(info.value)


def test_stopped_registry_is_unreachable_but_cached_blobs_need_no_network(
    plain: Registry, tmp_path: Path
) -> None:
    store = BlobStore(tmp_path / "store")
    pulled = pull_all(f"{plain.domain}/{REPO}", store, None)
    plain.stop_registry()
    with pytest.raises(RegistryError, match="unreachable: connection refused") as info:
        fetch_manifest(parse(f"{plain.domain}/{REPO}"))
    assert "\n" not in str(info.value)
    seen = Recorder()
    fetch_blob(parse(f"{plain.domain}/{REPO}"), pulled.layers[0], store, seen)
    assert seen.events == [("done", pulled.layers[0].digest, "Already exists")]


def test_corrupted_blob_is_refused_and_not_kept(plain: Registry, tmp_path: Path) -> None:
    ref = parse(f"{plain.domain}/{REPO}")
    pulled = fetch_manifest(ref)
    layer = pulled.layers[0]
    data = plain.blob_file(layer.digest)
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one byte changed
    data.write_bytes(bytes(damaged))
    store = BlobStore(tmp_path / "store")
    with pytest.raises(LabkitError, match="does not match its digest"):
        fetch_blob(ref, layer, store)
    assert not store.has(layer.digest)
    assert list(store.dir.iterdir()) == []  # no finished blob, no .part left behind


def test_tampered_manifest_is_refused(plain: Registry) -> None:
    ref = parse(f"{plain.domain}/{REPO}")
    good = fetch_manifest(ref)
    stored_manifest = plain.blob_file(good.manifest_digest)
    data = stored_manifest.read_bytes()
    at = data.index(b'"size":') + len(b'"size":')  # one digit of a size, changed in place
    stored_manifest.write_bytes(data[:at] + (b"9" if data[at:at + 1] != b"9" else b"8")
                                + data[at + 1:])  # fmt: skip
    with pytest.raises(LabkitError, match=f"whose digest is sha256:.*, not {good.manifest_digest}"):
        fetch_manifest(ref)
    with pytest.raises(LabkitError, match="damaged or forged"):
        fetch_manifest(parse(f"{plain.domain}/labkit/busybox@{good.manifest_digest}"))


def test_platform_selection_from_an_index(plain: Registry, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    index_digest, per_platform = make_multiarch_layout(layout)
    plain.push_with_skopeo(f"oci:{layout}:multi", "labkit/multi:1", "--all")
    assert digest_of(plain.skopeo_raw("labkit/multi:1")) == index_digest
    ref = parse(f"{plain.domain}/labkit/multi:1")
    host = host_platform_name()
    for wanted, expected in [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64", "linux/arm64/v8"),  # arm64 means v8
        ("linux/arm64/v8", "linux/arm64/v8"),
        (None, {"linux/arm64": "linux/arm64/v8"}.get(host, host)),  # default: this host's
    ]:
        pulled = fetch_manifest(ref, platform=wanted)
        assert pulled.index_digest == index_digest
        assert pulled.manifest_digest == per_platform[expected]
    with pytest.raises(LabkitError, match=r"no image for linux/s390x \(it has: linux/amd64, "):
        fetch_manifest(ref, platform="linux/s390x")
    by_digest = parse(f"{plain.domain}/labkit/multi@{per_platform['linux/arm64/v8']}")
    assert fetch_manifest(by_digest).index_digest is None


def test_push_an_index(plain: Registry, tmp_path: Path) -> None:
    """A multi-platform image pushed by labkit: every platform's manifest, then the index."""
    layout = tmp_path / "layout"
    index_digest, per_platform = make_multiarch_layout(layout)
    store = BlobStore(layout)
    index = store.read_bytes(index_digest)
    target = parse(f"{plain.domain}/labkit/multi-copy:3")
    got = push(target, index, OCI_INDEX, store, [])
    assert got == index_digest
    assert plain.skopeo_raw("labkit/multi-copy:3") == index
    for name, digest in per_platform.items():
        pulled = pull_all(str(target), BlobStore(tmp_path / name.replace("/", "-")), None,
                          platform=name)  # fmt: skip
        assert (pulled.index_digest, pulled.manifest_digest) == (index_digest, digest)


def make_multiarch_layout(layout: Path) -> tuple[str, dict[str, str]]:
    """An OCI layout holding an index of two real images: busybox as it is (amd64), and the
    same layers with an arm64/v8 config. Returns the index digest and each manifest digest."""
    subprocess.run(["skopeo", "copy", "--quiet", SOURCE, f"oci:{layout}:amd64"],
                   check=True, capture_output=True)  # fmt: skip
    store = BlobStore(layout)
    amd = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads(store.read_bytes(amd["digest"]))
    config = json.loads(store.read_bytes(manifest["config"]["digest"]))
    config.update(architecture="arm64", variant="v8")
    arm_config = json.dumps(config).encode()
    manifest["config"] = dict(manifest["config"], digest=store.put_bytes(arm_config),
                              size=len(arm_config))  # fmt: skip
    arm_bytes = json.dumps(manifest).encode()
    arm = {"mediaType": amd["mediaType"], "digest": store.put_bytes(arm_bytes),
           "size": len(arm_bytes)}  # fmt: skip
    entries = [
        {**{k: amd[k] for k in ("mediaType", "digest", "size")},
         "platform": {"architecture": "amd64", "os": "linux"}},
        {**arm, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    ]  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    index_digest = store.put_bytes(index.encode())
    top = {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": index_digest, "size": len(index),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(top))
    return index_digest, {"linux/amd64": amd["digest"], "linux/arm64/v8": arm["digest"]}


def test_push_then_pull_back(registry: Registry, tmp_path: Path) -> None:
    auth = creds_for(registry)
    store = BlobStore(tmp_path / "store")
    pulled = pull_all(f"{registry.domain}/{REPO}", store, auth)
    target = parse(f"{registry.domain}/labkit/copy-{registry.mode}:2")
    digests = [pulled.config.digest, *(d.digest for d in pulled.layers)]
    seen = Recorder()
    got = push(target, pulled.manifest, pulled.media_type, store, digests, seen, auth=auth)
    assert got == pulled.manifest_digest
    # same registry, other repository: the registry already has every blob... but per
    # repository: a blob is "known" to a repository once pushed or mounted into it
    assert [e[2] for e in seen.events if e[0] == "done"] == ["Pushed"] * len(digests)
    again = Recorder()
    push(target, pulled.manifest, pulled.media_type, store, digests, again, auth=auth)
    assert [e[2] for e in again.events] == ["Layer already exists"] * len(digests)
    back = pull_all(str(target), BlobStore(tmp_path / "back"), auth)
    assert back.manifest == pulled.manifest
    assert digest_of(registry.skopeo_raw(target.path + ":2")) == got


def test_push_needs_blobs_present(plain: Registry, tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "empty")
    with pytest.raises(LabkitError, match="not in the local store"):
        push(parse(f"{plain.domain}/x:1"), b"{}", OCI_INDEX, store, ["sha256:" + "0" * 64])


def test_credentials_not_sent_across_a_redirect(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg", "htpasswd", USERS)
    front = None
    try:
        reg.push_with_skopeo(SOURCE, REPO)
        front = RedirectingFront(reg, ALICE.basic())
        pulled = pull_all(f"{front.domain}/{REPO}", BlobStore(tmp_path / "s"), ALICE)
        assert len(front.blob_requests) == 1 + len(pulled.layers)  # every blob came from there
        assert all("Authorization" not in h for h in front.blob_requests)
        assert any(h.get("Authorization") == ALICE.basic() for h in front.front_requests)
        # Basic was needed once: after the first 401 it is sent with every request
        assert sum("Authorization" not in h for h in front.front_requests) == 1
    finally:
        if front is not None:
            front.stop()
        reg.stop()


def test_login_stores_and_logout_forgets(
    auth_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = auth_registry
    monkeypatch.setattr(paths, "STATE_DIR", tmp_path / "state")
    transport._TOKENS.clear()
    auth_json = tmp_path / "state/auth.json"
    with pytest.raises(RegistryError, match="wrong user name or password"):
        login(registry.domain, "alice", "nope")
    assert not auth_json.exists()
    login(registry.domain, "alice", "s3cret")
    assert stat.S_IMODE(auth_json.stat().st_mode) == 0o600
    entry = json.loads(auth_json.read_text())["auths"][registry.domain]
    assert base64.b64decode(entry["auth"]) == b"alice:s3cret"
    assert stored(registry.domain) == ALICE
    fetch_manifest(parse(f"{registry.domain}/{REPO}"))  # no auth= : the stored ones are used
    assert logout(registry.domain) and not logout(registry.domain)
    transport._TOKENS.clear()
    with pytest.raises(RegistryError, match="authentication required"):
        fetch_manifest(parse(f"{registry.domain}/{REPO}"))


def test_https_registry_when_http_expected(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "tls", tls=True)
    try:
        with pytest.raises(RegistryError, match="speaks HTTPS, but labkit sent plain HTTP"):
            fetch_manifest(parse(f"{reg.domain}/{REPO}"))
    finally:
        reg.stop()


def test_http_registry_when_https_expected(plain: Registry) -> None:
    s = Session(plain.domain, "labkit/busybox", None, "", scheme="https")
    with pytest.raises(RegistryError, match="speaks plain HTTP, but labkit expected HTTPS"):
        s.request("GET", s.url("manifests/1"), what="manifest")


def test_rate_limited(tmp_path: Path) -> None:
    def handle(h) -> None:  # noqa: ANN001
        h.send_response(429)
        h.send_header("Retry-After", "7")
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        h.wfile.write(b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')

    server = HttpServer(handle)
    try:
        with pytest.raises(RegistryError) as info:
            fetch_manifest(parse(f"127.0.0.1:{server.port}/x:1"))
        assert "rate limited" in info.value.problem and "wait 7 s" in info.value.fix
    finally:
        server.stop()


def test_silent_registry_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "TIMEOUT", 0.5)
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(RegistryError, match=r"unreachable: no answer within 0.5 s"):
            fetch_manifest(parse(f"127.0.0.1:{port}/x:1"))


def test_scheme_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABKIT_INSECURE_REGISTRIES", raising=False)
    assert transport.scheme_for("127.0.0.1:5000") == "http"
    assert transport.scheme_for("localhost") == "http"
    assert transport.scheme_for("[::1]:5000") == "http"
    assert transport.scheme_for("ghcr.io") == "https"
    assert transport.scheme_for("lab.example:5000") == "https"
    monkeypatch.setenv("LABKIT_INSECURE_REGISTRIES", "lab.example:5000, other")
    assert transport.scheme_for("lab.example:5000") == "http"
    assert transport.scheme_for("other:443") == "http"
    assert Session("docker.io", "library/x", None, "").base == "https://registry-1.docker.io"


def test_challenges() -> None:
    (c,) = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params["scope"] == "repository:samalba/my-app:pull,push"  # the comma is kept
    assert c.params["service"] == "registry.docker.io"
    basic, bearer = parse_challenges('Basic realm="a \\"quoted\\" realm", Bearer realm=x,error=y')
    assert basic.params == {"realm": 'a "quoted" realm'}
    assert bearer.params == {"realm": "x", "error": "y"}
    assert token_from({"access_token": "a", "expires_in": 300}) == ("a", 300)
    assert token_from({"token": "t"}) == ("t", 60)
    with pytest.raises(ValueError):
        token_from({})
    assert "s3cret" not in repr(ALICE)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_progress_plain_and_tty() -> None:
    digest = "sha256:" + "ab" * 32
    log = io.StringIO()
    p = TerminalProgress(log)
    p.start(digest, 3_400_000)
    for _ in range(1000):
        p.advance(digest, 3400)
    p.done(digest, "Pull complete")
    assert log.getvalue().splitlines() == [
        "abababababab: Downloading 0B/3.4MB",
        "abababababab: Pull complete",
    ]
    tty = FakeTty()
    p = TerminalProgress(tty)
    p.start(digest, 2000)
    p.start("sha256:" + "cd" * 32, 10)
    p.done(digest, "Download complete")
    out = tty.getvalue()
    assert "\x1b[2A" in out and "\r" in out  # redrawn in place
    assert out.rstrip("\n").endswith("cdcdcdcdcdcd: Downloading 0B/10B\x1b[K")


def test_host_arch_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.images.registry import client

    monkeypatch.setattr(client.host_platform, "machine", lambda: "aarch64")
    assert client.host_platform_name() == "linux/arm64"
