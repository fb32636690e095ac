"""Pulling from real registries: Debian's docker-registry (the distribution project's
registry), images pushed to it by the real skopeo, and small proxies in front of it that
demand tokens, corrupt content or cut transfers off. No mocks: every byte crosses a socket.
Also registries.yaml parsing and the pull-secret keyring."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubling.apiserver.pki import ensure_pki
from kubling.node.images import manifest as mf
from kubling.node.images.credentials import Credentials, Keyring
from kubling.node.images.pull import PullError, PullResult, parse_challenges, pull_image
from kubling.node.images.reference import parse_reference
from kubling.node.images.registries import (
    RegistryConfig,
    RegistryConfigError,
    TLSConfig,
    load_registries,
)
from kubling.node.images.store import ImageStore
from tests.node.images.imagefactory import BUSYBOXISH, Built, Files, Layout
from tests.node.images.pull_servers import (
    Behaviour,
    DockerRegistry,
    Hanging,
    ProxyLog,
    Served,
    closed_port,
    expected_files,
    merged_files,
    registry_proxy,
    token_realm,
)


def _require_tools() -> None:
    """The pulls are checked against real registries: without the tools the tests fail
    (install.sh --test installs them) rather than skip."""
    missing = [t for t in ("skopeo", "docker-registry", "htpasswd") if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)} — run ./install.sh --test")

APP_LAYERS: list[Files] = [BUSYBOXISH, {"app/": None, "app/main": b"print('v1')\n"}]
# Random bytes do not compress: a layer big enough to be cut off mid-transfer.
BIG_LAYER: Files = {"data/": None, "data/blob": os.urandom(3 * 1024 * 1024)}
BUSYBOX_MIRROR: Files = {"etc/": None, "etc/origin": b"rewritten mirror\n"}
HOST_ARCH = mf.host_platform().architecture
OTHER_ARCH = "s390x" if HOST_ARCH != "s390x" else "arm64"


def pull(store: ImageStore, image: str, **kwargs: Any) -> PullResult:
    return asyncio.run(pull_image(store, image, **kwargs))


def pull_error(store: ImageStore, image: str, **kwargs: Any) -> PullError:
    with pytest.raises(PullError) as caught:
        pull(store, image, **kwargs)
    return caught.value


def registries_yaml(tmp_path: Path, text: str) -> RegistryConfig:
    path = tmp_path / "registries.yaml"
    path.write_text(text)
    return load_registries(path)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


# ---- registries.yaml ----------------------------------------------------------------------


def test_registries_yaml_endpoints(tmp_path: Path) -> None:
    auth = base64.b64encode(b"bob:s3cret").decode()
    config = registries_yaml(tmp_path, f"""
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000", "mirror.example:8443", "https://m.example/proxy"]
    rewrite:
      "^library/(.*)": "hub/$1"
      "^(?P<org>[a-z]+)/(.*)": "orgs/${{org}}/$2"
  "*":
    endpoint: ["https://catch-all.example"]
configs:
  "127.0.0.1:5000":
    auth: {{username: u, password: p}}
  mirror.example:8443:
    auth: {{auth: {auth}}}
    tls: {{ca_file: /etc/ca.pem, insecure_skip_verify: true}}
  docker.io:
    auth: {{identity_token: refresh-me}}
""")
    eps = config.endpoints(parse_reference("nginx"))
    assert [e.url for e in eps] == [
        "http://127.0.0.1:5000/v2", "https://mirror.example:8443/v2",
        "https://m.example/proxy", "https://registry-1.docker.io/v2",
    ]
    # Rewrites apply to mirrors only; the registry itself gets the name as it is.
    assert [e.repository for e in eps] == ["hub/nginx"] * 3 + ["library/nginx"]
    assert [e.mirror for e in eps] == [True, True, True, False]
    assert eps[0].query == {"ns": "docker.io"} and eps[3].query == {}
    assert eps[0].auth == Credentials(username="u", password="p")
    assert eps[1].auth == Credentials(username="bob", password="s3cret")
    assert eps[1].tls == TLSConfig(ca_file="/etc/ca.pem", insecure_skip_verify=True)
    assert eps[2].auth is None
    assert eps[3].auth == Credentials(identity_token="refresh-me")  # configs: docker.io
    assert config.endpoints(parse_reference("team/app"))[0].repository == "orgs/team/app"
    # The wildcard mirror serves every registry without its own entry.
    quay = config.endpoints(parse_reference("quay.io/org/x:1"))
    assert [e.url for e in quay] == ["https://catch-all.example/v2", "https://quay.io/v2"]
    assert "secret" not in repr(eps[1].auth)


def test_registries_yaml_defaults(tmp_path: Path) -> None:
    empty = load_registries(tmp_path / "absent.yaml")
    assert empty.mirrors == {} and empty.configs == {}
    # Loopback registries are plain HTTP, as containerd reaches localhost; others HTTPS.
    for image, url in [
        ("localhost:5000/app", "http://localhost:5000/v2"),
        ("127.0.0.1:5000/app", "http://127.0.0.1:5000/v2"),
        ("[::1]:5000/app", "http://[::1]:5000/v2"),
        ("registry.example.com/app", "https://registry.example.com/v2"),
        ("busybox", "https://registry-1.docker.io/v2"),
    ]:
        assert [e.url for e in empty.endpoints(parse_reference(image))] == [url], image
    # A mirror listing the registry itself does not make it tried twice.
    same = registries_yaml(tmp_path, 'mirrors: {"r.example": {endpoint: ["https://r.example"]}}')
    assert len(same.endpoints(parse_reference("r.example/a"))) == 1


@pytest.mark.parametrize(("text", "where"), [
    ("mirrors: [docker.io]", "mirrors: expected a mapping"),
    ("mirrors: {docker.io: {endpoint: http://x}}", 'mirrors."docker.io".endpoint: expected a list'),
    ("mirrors: {docker.io: {endpoint: ['ftp://x']}}", 'mirrors."docker.io".endpoint[0]'),
    ("mirrors: {docker.io: {endpoint: [5]}}", "endpoint[0]: expected a string"),
    ("mirrors: {x: {rewrite: {'(': a}}}", "invalid regular expression"),
    ("configs: {r: {auth: {auth: 'not base64!'}}}", "configs.r.auth.auth"),
    ("configs: {r: {tls: {insecure_skip_verify: 'yes'}}}", "insecure_skip_verify: expected"),
    ("configs: {r: {tls: {cert_file: /c.pem}}}", "cert_file and key_file go together"),
    ("mirrors: {docker.io: {endpoint: [\n", "invalid YAML (line"),
    ("- just\n- a list\n", "(top level): expected a mapping"),
])
def test_registries_yaml_errors_name_file_and_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(RegistryConfigError) as caught:
        registries_yaml(tmp_path, text)
    assert str(caught.value).startswith(str(tmp_path / "registries.yaml"))
    assert where in str(caught.value)


# ---- pull secrets ---------------------------------------------------------------------------


def dockerconfigjson(auths: dict[str, Any]) -> dict[str, bytes]:
    return {".dockerconfigjson": json.dumps({"auths": auths}).encode()}


def test_keyring_follows_the_kubelet() -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    keyring = Keyring.from_secrets([
        dockerconfigjson({
            "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
            "registry.example.com": {"username": "all", "password": "x"},
            "registry.example.com/team": {"username": "team", "password": "y",
                                          "auth": b64("fromauth:z")},
            "*.corp.example": {"username": "wild", "password": "w"},
            "127.0.0.1:5000": {"username": "local", "password": "l"},
        }),
        {".dockercfg": json.dumps({"quay.io": {"auth": b64("quay:q")}})},
        {".dockerconfigjson": "not json"},  # skipped, as the kubelet skips it
    ])
    names = [c.username for c in keyring.lookup(parse_reference("nginx"))]
    assert names == ["hub"]  # Docker Hub falls back to index.docker.io's entry
    assert keyring.lookup("docker.io/team/app")[0].password == "pw"
    # More specific paths first; ``auth`` overrides username and password.
    assert [c.username for c in keyring.lookup("registry.example.com/team/app")] == [
        "fromauth", "all"]
    assert [c.username for c in keyring.lookup("registry.example.com/other")] == ["all"]
    assert [c.username for c in keyring.lookup("git.corp.example/x")] == ["wild"]
    assert keyring.lookup("a.b.corp.example/x") == []  # a glob matches one part only
    assert [c.username for c in keyring.lookup("127.0.0.1:5000/app")] == ["local"]
    assert keyring.lookup("127.0.0.1:5001/app") == []  # ports must match
    assert [c.username for c in keyring.lookup("quay.io/org/x")] == ["quay"]
    assert keyring.lookup("ghcr.io/x/y") == []


def test_challenges_are_parsed() -> None:
    [bearer] = parse_challenges(['Bearer realm="https://auth.example/token",'
                                 'service="registry.example",scope="repository:a/b:pull,push"'])
    assert bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.example/token",
                             "service": "registry.example", "scope": "repository:a/b:pull,push"}
    basic, bearer2 = parse_challenges(['Basic realm="x y", Bearer realm="r",error=invalid_token'])
    assert (basic.scheme, basic.params) == ("basic", {"realm": "x y"})
    assert bearer2.params == {"realm": "r", "error": "invalid_token"}


def test_invalid_image_name(store: ImageStore) -> None:
    err = pull_error(store, "UPPER/Case:tag")
    assert err.reason == "InvalidImageName"
    assert "couldn't parse image name" in str(err)


# ---- a plain registry ---------------------------------------------------------------------


class Images:
    """What the module's plain registry holds."""

    def __init__(self, registry: DockerRegistry, layout: Layout):
        self.registry = registry
        self.app: Built = layout.image("app:v1", APP_LAYERS)
        self.big = layout.image("big:v1", [BUSYBOXISH, BIG_LAYER])
        self.multi = layout.multi_platform("multi:v1", {
            OTHER_ARCH: [{"which": b"other"}],
            HOST_ARCH: [{"which": b"host"}],
        })
        self.busybox = layout.image("busybox:latest", [BUSYBOXISH])
        self.rewritten = layout.image("rewritten:latest", [BUSYBOX_MIRROR])
        registry.push(layout, "app:v1", "app:v1")
        registry.push(layout, "big:v1", "big:v1")
        registry.push(layout, "multi:v1", "multi:v1", "--all")
        registry.push(layout, "busybox:latest", "library/busybox:latest")
        registry.push(layout, "rewritten:latest", "mirror/busybox:latest")

    def ref(self, name: str) -> str:
        return f"{self.registry.host}/{name}"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    _require_tools()
    root = tmp_path_factory.mktemp("plain")
    registry = DockerRegistry(root / "registry")
    try:
        yield Images(registry, Layout(root / "layout"))
    finally:
        registry.stop()


def assert_nothing_recorded(store: ImageStore) -> None:
    assert store.images() == [] and store.names() == {}


def test_pull_by_tag_unpacks_the_image(plain: Images, store: ImageStore) -> None:
    lines: list[str] = []
    result = pull(store, plain.ref("app:v1"), progress=lines.append)
    image = result.image
    assert image.id == plain.app.config_digest
    assert image.names == [plain.ref("app:v1")]
    assert image.repo_digests == [f"{plain.ref('app')}@{plain.app.manifest_digest}"]
    assert [la.digest for la in image.layers] == plain.app.layer_digests
    assert merged_files(store.layer_dirs(image)) == expected_files(*APP_LAYERS)
    assert not result.cached and result.downloaded > 0 and result.size == image.size
    assert lines[0] == f"Pulling {plain.ref('app:v1')}"
    assert lines[-1].startswith(f"Pulled {plain.ref('app:v1')}")
    assert any(line.startswith(f"layer {plain.app.layer_digests[0][:19]}") for line in lines)
    assert store.get(plain.ref("app:v1")) is not None

    again = pull(store, plain.ref("app:v1"))
    assert again.cached and again.downloaded == 0 and again.image.id == image.id


def test_pull_by_digest(plain: Images, store: ImageStore) -> None:
    by_digest = f"{plain.ref('app')}@{plain.app.manifest_digest}"
    image = pull(store, by_digest).image
    assert image.id == plain.app.config_digest
    assert store.get(by_digest) is not None
    unknown = f"{plain.ref('app')}@sha256:{'0' * 64}"
    err = pull_error(store, unknown)
    assert err.reason == "NotFound"
    assert str(err) == (f'failed to pull and unpack image "{unknown}": failed to resolve '
                        f'reference "{unknown}": {unknown}: not found')
    assert err.event_message.startswith(f'Failed to pull image "{unknown}": ')


def test_concurrent_pulls_share_a_session_and_the_layers(plain: Images, store: ImageStore) -> None:
    """Two pods starting at once with one image: each layer is fetched once (the second
    pull waits for the first's ingest), through the caller's connection pool."""

    async def both() -> list[PullResult]:
        async with aiohttp.ClientSession() as session:
            return list(await asyncio.gather(*(
                pull_image(store, plain.ref("big:v1"), session=session) for _ in range(2))))

    first, second = asyncio.run(both())
    assert first.image.id == second.image.id == plain.big.config_digest
    # Every blob crossed the network once, whichever pull fetched it.
    assert first.downloaded + second.downloaded == first.image.size


def test_a_manifest_that_does_not_match_its_digest_is_refused(
    plain: Images, store: ImageStore
) -> None:
    log = ProxyLog()
    proxy = Served(registry_proxy(plain.registry.url, Behaviour(
        corrupt={plain.app.manifest_digest}), log))
    try:
        err = pull_error(store, f"{proxy.host}/app@{plain.app.manifest_digest}")
    finally:
        proxy.stop()
    assert "manifest digest mismatch" in str(err) and plain.app.manifest_digest in str(err)
    assert_nothing_recorded(store)
    assert not store.content.has(plain.app.manifest_digest)


def test_index_selects_this_hosts_image(plain: Images, store: ImageStore) -> None:
    result = pull(store, plain.ref("multi:v1"))
    assert result.image.id == plain.multi.config_digest
    assert merged_files(store.layer_dirs(result.image)) == {"which": b"host"}
    assert result.image.repo_digests == [f"{plain.ref('multi')}@{plain.multi.manifest_digest}"]
    other = pull(store, plain.ref("multi:v1"), platform=mf.Platform("linux", OTHER_ARCH))
    assert other.image.id != result.image.id
    missing = pull_error(store, plain.ref("multi:v1"), platform=mf.Platform("linux", "mips"))
    assert "no image for linux/mips" in str(missing)


def test_docker_hub_through_a_mirror(plain: Images, store: ImageStore, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    config = registries_yaml(tmp_path, f"""
mirrors:
  docker.io:
    endpoint: ["{dead}", "{plain.registry.url}"]
""")
    lines: list[str] = []
    image = pull(store, "busybox", registries=config, progress=lines.append).image
    assert image.names == ["docker.io/library/busybox:latest"]
    assert image.id == plain.busybox.config_digest
    assert any(line.startswith(f"{dead}: ") and "connection refused" in line for line in lines)

    rewritten = registries_yaml(tmp_path, f"""
mirrors:
  docker.io:
    endpoint: ["{plain.registry.url}"]
    rewrite: {{"^library/(.*)": "mirror/$1"}}
""")
    image = pull(store, "docker.io/library/busybox:latest", registries=rewritten).image
    assert image.names == ["docker.io/library/busybox:latest"]  # the name pulled, not the mirror's
    assert merged_files(store.layer_dirs(image)) == expected_files(BUSYBOX_MIRROR)


def test_every_endpoint_failure_is_reported(store: ImageStore, tmp_path: Path) -> None:
    first, second = closed_port(), closed_port()
    config = registries_yaml(tmp_path, f"""
mirrors:
  "127.0.0.1:{second}": {{endpoint: ["http://127.0.0.1:{first}"]}}
""")
    err = pull_error(store, f"127.0.0.1:{second}/app:v1", registries=config)
    assert "all 2 endpoints failed" in str(err)
    assert f"http://127.0.0.1:{first}: " in str(err)
    assert f"http://127.0.0.1:{second}: " in str(err)
    assert "connection refused" in str(err)
    assert err.reason == "ErrImagePull"


def test_tls_settings_from_registries_yaml(store: ImageStore, tmp_path: Path) -> None:
    """An HTTPS registry whose certificate comes from a private CA and which demands a
    client certificate: registries.yaml's ``tls`` supplies both."""
    pki = ensure_pki(tmp_path / "pki", hostnames=["localhost"], ips=["127.0.0.1"])
    registry = DockerRegistry(tmp_path / "registry", pki=pki)
    try:
        layout = Layout(tmp_path / "layout")
        built = layout.image("app:v1", APP_LAYERS)
        registry.push(layout, "app:v1", "app:v1")
        image = f"{registry.host}/app:v1"

        def config(tls: str) -> RegistryConfig:
            # A loopback registry is plain HTTP unless its endpoint says https.
            return registries_yaml(tmp_path, f"""
mirrors:
  "{registry.host}": {{endpoint: ["https://{registry.host}"]}}
configs:
  "{registry.host}": {{tls: {tls}}}
""")

        untrusted = pull_error(store, image, registries=config("{}"))
        assert "tls: failed to verify certificate" in str(untrusted)
        no_client_cert = pull_error(store, image, registries=config(f"{{ca_file: {pki.ca_cert}}}"))
        assert "bad certificate" in str(no_client_cert)  # the server's alert: no client cert
        assert_nothing_recorded(store)
        client = f"cert_file: {pki.admin_cert}, key_file: {pki.admin_key}"
        pulled = pull(store, image, registries=config(f"{{ca_file: {pki.ca_cert}, {client}}}"))
        assert pulled.image.id == built.config_digest
        assert pulled.endpoint == f"https://{registry.host}"
        other = ImageStore(tmp_path / "other")
        skip = config(f"{{insecure_skip_verify: true, {client}}}")
        assert pull(other, image, registries=skip).image.id == built.config_digest
        missing = config("{ca_file: /nonexistent/ca.pem}")
        err = pull_error(other, f"{registry.host}/x", registries=missing)
        assert "ca_file /nonexistent/ca.pem: no such file or directory" in str(err)
    finally:
        registry.stop()


# ---- failures in transit --------------------------------------------------------------------


def test_a_registry_that_hangs_times_out(plain: Images, store: ImageStore,
                                         tmp_path: Path) -> None:
    hanging = Hanging()
    try:
        started = time.monotonic()
        err = pull_error(store, f"{hanging.host}/app:v1", connect_timeout=1, read_timeout=1)
        elapsed = time.monotonic() - started
        assert err.reason == "Timeout"
        assert hanging.host in str(err) and "sent nothing for 1s" in str(err)
        assert elapsed < 3
        assert_nothing_recorded(store)
        # As the first of two endpoints, it only delays the pull.
        config = registries_yaml(tmp_path, f"""
mirrors:
  "{plain.registry.host}": {{endpoint: ["http://{hanging.host}"]}}
""")
        image = pull(store, plain.ref("app:v1"), registries=config, read_timeout=1).image
        assert image.id == plain.app.config_digest
    finally:
        hanging.stop()


def test_a_corrupted_layer_is_refused(plain: Images, store: ImageStore) -> None:
    layer = plain.app.layer_digests[1]
    proxy = Served(registry_proxy(plain.registry.url, Behaviour(corrupt={layer}), ProxyLog()))
    try:
        err = pull_error(store, f"{proxy.host}/app:v1")
    finally:
        proxy.stop()
    assert f"failed to copy {layer}" in str(err) and "does not match" in str(err)
    assert_nothing_recorded(store)
    assert not store.content.has(layer)
    # A refused blob leaves no ingest (the others, cancelled, may keep theirs to resume).
    assert not [p for p in store.content.ingest.iterdir() if layer.split(":")[1] in p.name]


def test_a_cut_transfer_is_resumed(plain: Images, store: ImageStore) -> None:
    layer = plain.big.layer_digests[1]
    log = ProxyLog()
    behaviour = Behaviour(cut={layer: 1})
    proxy = Served(registry_proxy(plain.registry.url, behaviour, log))
    try:
        lines: list[str] = []
        result = pull(store, f"{proxy.host}/big:v1", progress=lines.append)
        assert result.image.id == plain.big.config_digest
        first, second = log.blob_requests(layer)
        assert "Range" not in first
        offset = int(second["Range"].removeprefix("bytes=").removesuffix("-"))
        assert offset > 0
        assert any("resuming at byte" in line for line in lines)
        assert merged_files(store.layer_dirs(result.image)) == expected_files(BUSYBOXISH,
                                                                              BIG_LAYER)
    finally:
        proxy.stop()


def test_a_failed_pull_resumes_on_the_next_attempt(plain: Images, store: ImageStore) -> None:
    layer = plain.big.layer_digests[1]
    log = ProxyLog()
    behaviour = Behaviour(cut={layer: 10})
    proxy = Served(registry_proxy(plain.registry.url, behaviour, log))
    try:
        err = pull_error(store, f"{proxy.host}/big:v1")
        assert f"failed to copy {layer}: the transfer was cut off" in str(err)
        assert_nothing_recorded(store)
        [partial] = store.content.ingest.iterdir()
        kept = partial.stat().st_size
        assert kept > 0
        behaviour.cut.clear()
        log.requests.clear()
        pull(store, f"{proxy.host}/big:v1")
        [request] = log.blob_requests(layer)
        assert request["Range"] == f"bytes={kept}-"
    finally:
        proxy.stop()
    assert list(store.content.ingest.iterdir()) == []


# ---- authentication -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    _require_tools()
    root = tmp_path_factory.mktemp("basic")
    registry = DockerRegistry(root / "registry", user="puller", password="s3cret")
    try:
        layout = Layout(root / "layout")
        layout.image("app:v1", APP_LAYERS)
        registry.push(layout, "app:v1", "private/app:v1")
        yield registry
    finally:
        registry.stop()


def test_basic_auth(basic_registry: DockerRegistry, store: ImageStore, tmp_path: Path) -> None:
    image = f"{basic_registry.host}/private/app:v1"
    err = pull_error(store, image)
    assert err.reason == "Unauthorized"
    assert "pull access denied, repository does not exist or may require authorization" in str(
        err)
    assert "401 Unauthorized" in str(err) or "authentication required" in str(err)
    wrong = pull_error(store, image, credentials=[Credentials(username="puller", password="no")])
    assert wrong.reason == "Unauthorized"
    assert_nothing_recorded(store)

    config = registries_yaml(tmp_path, f"""
configs:
  "{basic_registry.host}":
    auth: {{username: puller, password: s3cret}}
""")
    assert pull(store, image, registries=config).image.names == [image]

    other = ImageStore(tmp_path / "other")
    keyring = Keyring.from_secrets([dockerconfigjson({
        basic_registry.host: {"auth": base64.b64encode(b"puller:s3cret").decode()}})])
    # A wrong credential first: each is tried in turn, as the kubelet does.
    creds = [Credentials(username="puller", password="old"), *keyring.lookup(image)]
    assert pull(other, image, credentials=creds).image.names == [image]


@pytest.fixture
def token_proxy(plain: Images) -> Iterator[tuple[Served, Behaviour, ProxyLog, ProxyLog]]:
    """A token realm (user alice, password pw) and a registry proxy that demands its
    tokens, in front of the plain registry."""
    realm_log, proxy_log = ProxyLog(), ProxyLog()
    behaviour = Behaviour()
    realm = Served(token_realm("alice", "pw", behaviour, realm_log))
    behaviour.realm = f"{realm.url}/token"
    proxy = Served(registry_proxy(plain.registry.url, behaviour, proxy_log))
    try:
        yield proxy, behaviour, realm_log, proxy_log
    finally:
        proxy.stop()
        realm.stop()


ALICE = Credentials(username="alice", password="pw")


def test_bearer_tokens(
    plain: Images, store: ImageStore, token_proxy: tuple[Served, Behaviour, ProxyLog, ProxyLog]
) -> None:
    proxy, behaviour, realm_log, proxy_log = token_proxy
    image = f"{proxy.host}/app:v1"
    result = pull(store, image, credentials=[ALICE])
    assert result.image.id == plain.app.config_digest
    # One token for the whole pull: asked for once, with the challenge's scope.
    [(_, query, headers)] = realm_log.requests
    assert "service=test" in query and "scope=repository:app:pull" in query
    assert headers["Authorization"].startswith("Basic ")
    [token] = behaviour.tokens
    blob_auth = {h.get("Authorization") for m, p, h in proxy_log.requests if "/blobs/" in p}
    assert blob_auth == {f"Bearer {token}"}

    other = ImageStore(store.root.parent / "other")
    err = pull_error(other, image, credentials=[Credentials(username="alice", password="x")])
    assert err.reason == "Unauthorized"
    assert f"unexpected status from GET request to {behaviour.realm}: 401" in str(err)
    anonymous = pull_error(other, image)
    assert anonymous.reason == "Unauthorized"
    assert "failed to fetch anonymous token" in str(anonymous)
    assert_nothing_recorded(other)


def test_blobs_redirected_to_storage(
    plain: Images, store: ImageStore, token_proxy: tuple[Served, Behaviour, ProxyLog, ProxyLog]
) -> None:
    """Registries redirect blob downloads to object storage: followed, and the registry's
    token is not sent to the other origin."""
    proxy, behaviour, _, _ = token_proxy
    storage_log = ProxyLog()
    storage = Served(registry_proxy(plain.registry.url, Behaviour(), storage_log))
    try:
        behaviour.redirect_blobs = storage.url
        result = pull(store, f"{proxy.host}/app:v1", credentials=[ALICE])
        assert result.image.id == plain.app.config_digest
        fetched = {p.rsplit("/", 1)[1] for _, p, _ in storage_log.requests}
        assert fetched == {plain.app.config_digest, *plain.app.layer_digests}
        assert all("Authorization" not in h for _, _, h in storage_log.requests)
    finally:
        storage.stop()


def test_an_expired_token_is_renewed(
    plain: Images, store: ImageStore, token_proxy: tuple[Served, Behaviour, ProxyLog, ProxyLog],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token refused after a while is renewed with the credentials that got it (a pull
    can outlast Docker Hub's 5-minute tokens); "a while" is made zero here."""
    proxy, behaviour, realm_log, _ = token_proxy
    monkeypatch.setattr("kubling.node.images.pull._TOKEN_TRUSTED_SECONDS", 0.0)
    behaviour.expire_after_manifest = True
    result = pull(store, f"{proxy.host}/app:v1", credentials=[ALICE])
    assert result.image.id == plain.app.config_digest
    assert len(realm_log.requests) >= 2


def test_loopback_registries_bypass_the_proxy(plain: Images, store: ImageStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Go's rule, so containerd's: HTTP(S)_PROXY never applies to loopback hosts."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
    assert pull(store, plain.ref("app:v1")).image.id == plain.app.config_digest
