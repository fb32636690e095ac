"""The embedded registry, driven by the real ``skopeo`` and by raw HTTP requests: pushes
land in the image store as runnable images, pulls give back the same digests, and the
distribution API's errors have the spec's codes and statuses."""

from __future__ import annotations

import asyncio
import errno
import http.client
import json
import shutil
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubling.node.images import manifest as mf
from kubling.node.images.content import sha256_digest
from kubling.node.images.registry import RegistryServer
from kubling.node.images.store import ImageStore
from tests.node.images.imagefactory import BUSYBOXISH, Built, Files, Layout


@pytest.fixture(autouse=True, scope="module")
def _skopeo() -> None:
    """These tests are the registry checked by a client we did not write: without skopeo
    they fail (install.sh installs it) rather than skip."""
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed — run ./install.sh --test")

T = TypeVar("T")


class Running:
    """A RegistryServer on an ephemeral port, its event loop in a background thread so
    the test can call blocking clients (skopeo, http.client) directly."""

    def __init__(self, store: ImageStore, port: int = 0, in_use: list[str] | None = None):
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = RegistryServer(
            store, "127.0.0.1", port, in_use=(lambda: in_use) if in_use is not None else None
        )
        self.call(self.server.start())
        self.port = self.server.port
        self.host = f"127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                method,
                path,
                body=body,
                headers={k.replace("_", "-"): v for k, v in headers.items()},
            )
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def error(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, str]:
        status, _, data = self.request(method, path, body, **headers)
        return status, json.loads(data)["errors"][0]["code"]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def registry(store: ImageStore) -> Iterator[Running]:
    running = Running(store)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "layout")


def skopeo(*args: str) -> str:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def push(layout: Layout, src: str, dest: str, *extra: str) -> None:
    skopeo("copy", "--dest-tls-verify=false", *extra, f"oci:{layout.root}:{src}", dest)


def blob_bytes(layout: Layout, digest: str) -> bytes:
    return (layout.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def push_raw(reg: Running, layout: Layout, built: Built, name: str, tag: str) -> None:
    """Push an image with monolithic blob uploads, then its manifest (no skopeo)."""
    for digest in [built.config_digest, *built.layer_digests]:
        status, _, _ = reg.request(
            "POST", f"/v2/{name}/blobs/uploads/?digest={digest}", blob_bytes(layout, digest)
        )
        assert status == 201
    status, _, _ = reg.request(
        "PUT",
        f"/v2/{name}/manifests/{tag}",
        blob_bytes(layout, built.manifest_digest),
        Content_Type=mf.OCI_MANIFEST,
    )
    assert status == 201


APP: Files = {"app/": None, "app/run": b"#!/bin/sh\necho hello\n"}


# ---- skopeo ---------------------------------------------------------------------------


def test_push_then_pull_with_skopeo(registry: Running, layout: Layout, tmp_path: Path) -> None:
    built = layout.image("app:v1", [BUSYBOXISH, APP])
    dest = f"docker://{registry.host}/app:v1"
    push(layout, "app:v1", dest)

    image = registry.store.get(f"localhost:{registry.port}/app:v1")
    assert image is not None and image.id == built.config_digest
    assert [la.digest for la in image.layers] == built.layer_digests
    dirs = registry.store.layer_dirs(image)
    assert (dirs[0] / "bin" / "sh").read_bytes() == b"#!fake shell\n"
    assert (dirs[1] / "app" / "run").exists()

    inspected = json.loads(skopeo("inspect", "--tls-verify=false", dest))
    assert inspected["Digest"] == built.manifest_digest
    assert json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.host}/app"))[
        "Tags"
    ] == ["v1"]

    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", dest, f"oci:{out}:x")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == built.manifest_digest


def test_push_docker_schema2(registry: Running, layout: Layout) -> None:
    layout.image("app:v1", [BUSYBOXISH])
    push(layout, "app:v1", f"docker://{registry.host}/legacy:v2s2", "--format", "v2s2")

    status, headers, body = registry.request(
        "GET", "/v2/legacy/manifests/v2s2", Accept=mf.DOCKER_MANIFEST
    )
    assert status == 200 and headers["Content-Type"] == mf.DOCKER_MANIFEST
    assert headers["Docker-Content-Digest"] == sha256_digest(body)
    image = registry.store.get(f"localhost:{registry.port}/legacy:v2s2")
    assert image is not None and image.layers[0].media_type.startswith("application/vnd.docker")
    registry.store.layer_dirs(image)


def test_push_multi_platform_index(registry: Running, layout: Layout) -> None:
    host = mf.host_platform().architecture
    other = "arm64" if host != "arm64" else "amd64"
    built = layout.multi_platform("multi:v1", {host: [BUSYBOXISH], other: [BUSYBOXISH, APP]})
    push(layout, "multi:v1", f"docker://{registry.host}/multi:v1", "--all")

    assert registry.store.names()[f"localhost:{registry.port}/multi:v1"] == built.manifest_digest
    image = registry.store.get(f"localhost:{registry.port}/multi:v1")
    assert image is not None and image.id == built.config_digest

    status, headers, body = registry.request("HEAD", "/v2/multi/manifests/v1", Accept=mf.ACCEPT)
    assert status == 200 and headers["Content-Type"] == mf.OCI_INDEX and body == b""
    assert headers["Content-Length"] == str(len(blob_bytes(layout, built.manifest_digest)))
    assert headers["Docker-Content-Digest"] == built.manifest_digest
    # A client that takes no index gets this host's manifest.
    status, headers, body = registry.request(
        "GET", "/v2/multi/manifests/v1", Accept=f"{mf.OCI_MANIFEST}, {mf.DOCKER_MANIFEST}"
    )
    assert status == 200 and headers["Content-Type"] == mf.OCI_MANIFEST
    assert headers["Docker-Content-Digest"] == image.manifest == sha256_digest(body)


def test_second_push_skips_shared_layers(registry: Running, layout: Layout) -> None:
    first = layout.image("one:v1", [BUSYBOXISH, APP])
    second = layout.image("two:v1", [BUSYBOXISH, {"other": b"x"}])
    assert first.layer_digests[0] == second.layer_digests[0]
    push(layout, "one:v1", f"docker://{registry.host}/one:v1")
    before = registry.server.stats.blobs_uploaded
    push(layout, "two:v1", f"docker://{registry.host}/two:v1")
    assert registry.server.stats.blobs_uploaded - before == 2, "config and new layer only"
    blobs = set(registry.store.content.digests())
    assert {first.manifest_digest, second.manifest_digest} <= blobs
    assert len(blobs) == 2 * 2 + 3  # two manifests and configs, three distinct layers
    for name in ("one", "two"):
        assert registry.store.get(f"localhost:{registry.port}/{name}:v1") is not None


# ---- the protocol, raw ----------------------------------------------------------------


def test_chunked_upload(registry: Running) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = sha256_digest(data)
    half = len(data) // 2
    status, headers, _ = registry.request("POST", "/v2/app/blobs/uploads/")
    assert status == 202 and headers["Range"] == "0-0"
    location, upload_id = headers["Location"], headers["Docker-Upload-UUID"]
    assert location == f"/v2/app/blobs/uploads/{upload_id}"

    status, headers, _ = registry.request(
        "PATCH", location, data[:half], Content_Range=f"0-{half - 1}"
    )
    assert status == 202 and headers["Range"] == f"0-{half - 1}"
    status, headers, _ = registry.request(
        "PATCH", location, data[half:], Content_Range=f"10-{len(data) - 1}"
    )
    assert status == 416 and headers["Range"] == f"0-{half - 1}"
    assert registry.error("PATCH", location, b"x", Content_Range="junk") == (
        416,
        "BLOB_UPLOAD_INVALID",
    )
    status, headers, _ = registry.request("GET", location)
    assert status == 204 and headers["Range"] == f"0-{half - 1}"
    status, headers, _ = registry.request(
        "PATCH", location, data[half:], Content_Range=f"{half}-{len(data) - 1}"
    )
    assert status == 202 and headers["Range"] == f"0-{len(data) - 1}"
    status, headers, _ = registry.request("PUT", f"{location}?digest={digest}")
    assert status == 201
    assert headers["Location"] == f"/v2/app/blobs/{digest}"
    assert headers["Docker-Content-Digest"] == digest
    assert registry.error("GET", location) == (404, "BLOB_UPLOAD_UNKNOWN")

    status, headers, body = registry.request("GET", f"/v2/app/blobs/{digest}")
    assert status == 200 and body == data
    assert headers["Docker-Content-Digest"] == digest
    assert headers["Content-Type"] == "application/octet-stream"
    status, headers, body = registry.request("HEAD", f"/v2/other/blobs/{digest}")
    assert status == 200 and headers["Content-Length"] == str(len(data)) and body == b""
    status, headers, body = registry.request(
        "GET", f"/v2/app/blobs/{digest}", Range="bytes=1000-1999"
    )
    assert status == 206 and body == data[1000:2000]
    assert not any(registry.store.content.ingest.iterdir())


def test_streamed_patch_without_content_range(registry: Running) -> None:
    """What docker push sends: one PATCH with a chunked body, then an empty PUT."""
    parts = [b"a" * 70_000, b"b" * 5_000_000, b"c"]
    digest = sha256_digest(b"".join(parts))
    _, headers, _ = registry.request("POST", "/v2/app/blobs/uploads/")
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    conn.request("PATCH", headers["Location"], body=iter(parts), encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 202 and resp.headers["Range"] == f"0-{sum(map(len, parts)) - 1}"
    status, _, _ = registry.request("PUT", f"{headers['Location']}?digest={digest}")
    assert status == 201 and registry.store.content.has(digest)


def test_upload_wrong_digest_and_cancel(registry: Running) -> None:
    ingest = registry.store.content.ingest
    _, headers, _ = registry.request("POST", "/v2/app/blobs/uploads/")
    location = headers["Location"]
    wrong = sha256_digest(b"something else")
    assert registry.error("PUT", f"{location}?digest={wrong}", b"payload") == (
        400,
        "DIGEST_INVALID",
    )
    assert registry.error("GET", location) == (404, "BLOB_UPLOAD_UNKNOWN")
    assert not registry.store.content.has(wrong) and not any(ingest.iterdir())

    _, headers, _ = registry.request("POST", "/v2/app/blobs/uploads/")
    location = headers["Location"]
    registry.request("PATCH", location, b"partial")
    assert registry.error("PUT", f"{location}?digest=sha256:nothex") == (400, "DIGEST_INVALID")
    status, _, _ = registry.request("DELETE", location)
    assert status == 204 and not any(ingest.iterdir())
    assert registry.error("DELETE", location) == (404, "BLOB_UPLOAD_UNKNOWN")
    assert registry.error("PATCH", "/v2/app/blobs/uploads/not-a-uuid", b"x") == (
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    assert registry.error("POST", f"/v2/app/blobs/uploads/?digest={wrong}", b"payload") == (
        400,
        "DIGEST_INVALID",
    )
    assert not any(ingest.iterdir())


def test_monolithic_upload_and_mount(registry: Running) -> None:
    data = b"a small blob"
    digest = sha256_digest(data)
    status, headers, _ = registry.request("POST", f"/v2/app/blobs/uploads/?digest={digest}", data)
    assert status == 201 and headers["Docker-Content-Digest"] == digest
    status, headers, _ = registry.request(
        "POST", f"/v2/copy/blobs/uploads/?mount={digest}&from=app"
    )
    assert status == 201 and headers["Location"] == f"/v2/copy/blobs/{digest}"
    assert registry.server.stats.blobs_mounted == 1
    missing = sha256_digest(b"missing")
    status, headers, _ = registry.request(
        "POST", f"/v2/copy/blobs/uploads/?mount={missing}&from=app"
    )
    assert status == 202 and headers["Location"].startswith("/v2/copy/blobs/uploads/")
    assert registry.error("DELETE", f"/v2/app/blobs/{digest}") == (405, "UNSUPPORTED")
    assert registry.error("GET", f"/v2/app/blobs/{missing}") == (404, "BLOB_UNKNOWN")
    assert registry.error("GET", "/v2/app/blobs/sha256:zz") == (400, "DIGEST_INVALID")


def test_upload_resumes_after_restart(store: ImageStore) -> None:
    data = b"0123456789" * 1000
    first = Running(store)
    try:
        _, headers, _ = first.request("POST", "/v2/app/blobs/uploads/")
        upload_id = headers["Docker-Upload-UUID"]
        first.request("PATCH", headers["Location"], data[:4000], Content_Range="0-3999")
    finally:
        first.stop()
    second = Running(store)
    try:
        location = f"/v2/app/blobs/uploads/{upload_id}"
        status, headers, _ = second.request("GET", location)
        assert status == 204 and headers["Range"] == "0-3999"
        status, _, _ = second.request(
            "PUT",
            f"{location}?digest={sha256_digest(data)}",
            data[4000:],
            Content_Range=f"4000-{len(data) - 1}",
        )
        assert status == 201 and store.content.read(sha256_digest(data)) == data
    finally:
        second.stop()


def test_manifest_errors(registry: Running, layout: Layout) -> None:
    built = layout.image("app:v1", [BUSYBOXISH])
    manifest = blob_bytes(layout, built.manifest_digest)
    assert registry.error(
        "PUT", "/v2/app/manifests/v1", manifest, Content_Type=mf.OCI_MANIFEST
    ) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert registry.error(
        "PUT", "/v2/app/manifests/v1", b"{not json", Content_Type=mf.OCI_MANIFEST
    ) == (400, "MANIFEST_INVALID")
    assert registry.error(
        "PUT", "/v2/app/manifests/v1", b'{"schemaVersion": 1}', Content_Type="application/json"
    ) == (400, "MANIFEST_INVALID")
    assert registry.error(
        "PUT",
        f"/v2/app/manifests/{sha256_digest(b'other')}",
        manifest,
        Content_Type=mf.OCI_MANIFEST,
    ) == (400, "DIGEST_INVALID")
    too_big = b" " * (mf.MAX_DOCUMENT + 1)
    assert registry.error("PUT", "/v2/app/manifests/v1", too_big) == (413, "SIZE_INVALID")
    assert registry.error("GET", "/v2/app/manifests/v1") == (404, "MANIFEST_UNKNOWN")
    assert registry.error("GET", f"/v2/app/manifests/{built.config_digest}") == (
        404,
        "MANIFEST_UNKNOWN",
    )
    assert registry.error("GET", "/v2/UPPER/tags/list") == (400, "NAME_INVALID")
    assert registry.error("GET", "/v2/a//b/manifests/x") == (400, "NAME_INVALID")
    assert registry.error("GET", "/v2/nothing/tags/list") == (404, "NAME_UNKNOWN")
    assert registry.error("POST", "/v2/app/manifests/v1") == (405, "UNSUPPORTED")
    assert registry.error("GET", "/v2/app/tags/list?n=x") == (400, "PAGINATION_NUMBER_INVALID")
    status, headers, body = registry.request("GET", "/v2/")
    assert (status, body) == (200, b"{}")
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"
    # The manifest is accepted once its blobs are there; by digest, it is not tagged.
    for digest in [built.config_digest, *built.layer_digests]:
        registry.request(
            "POST", f"/v2/app/blobs/uploads/?digest={digest}", blob_bytes(layout, digest)
        )
    status, headers, _ = registry.request(
        "PUT", f"/v2/app/manifests/{built.manifest_digest}", manifest, Content_Type=mf.OCI_MANIFEST
    )
    assert status == 201 and headers["Docker-Content-Digest"] == built.manifest_digest
    assert registry.store.names() == {}
    status, headers, body = registry.request("GET", f"/v2/app/manifests/{built.manifest_digest}")
    assert status == 200 and body == manifest and headers["Content-Type"] == mf.OCI_MANIFEST
    status, _, _ = registry.request("DELETE", f"/v2/app/manifests/{built.manifest_digest}")
    assert status == 202 and not registry.store.content.has(built.manifest_digest)
    assert registry.error("GET", f"/v2/app/manifests/{built.manifest_digest}") == (
        404,
        "MANIFEST_UNKNOWN",
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("PUT", "/v2/app/manifests/v1", b"[]", {"Content-Type": mf.OCI_MANIFEST}),
        ("PUT", "/v2/app/manifests/v1", b'{"schemaVersion":2,"layers":5}', {}),
        (
            "PUT",
            "/v2/app/manifests/v1",
            b'{"schemaVersion":2,"mediaType":"%s","manifests":[{"digest":"md5:x","size":1}]}'
            % mf.OCI_INDEX.encode(),
            {"Content-Type": mf.OCI_INDEX},
        ),
        (
            "PUT",
            "/v2/app/manifests/v1",
            b'{"schemaVersion":2,"config":{"digest":"sha256:../../etc","size":1},"layers":[]}',
            {"Content-Type": mf.OCI_MANIFEST},
        ),
        (
            "PUT",
            "/v2/app/manifests/v1",
            b'{"schemaVersion":2,"mediaType":"%s","config":{"digest":"sha256:%s","size":1},'
            b'"layers":[]}' % (mf.DOCKER_MANIFEST.encode(), b"0" * 64),
            {"Content-Type": mf.OCI_MANIFEST},
        ),
        ("PUT", "/v2/app/manifests/bad%20tag", b"{}", {}),
        ("PUT", "/v2/app/manifests/sha256:short", b"{}", {}),
        ("GET", "/v2/app/manifests/sha512:abc", None, {}),
        ("DELETE", "/v2/app/manifests/sha256:short", None, {}),
        ("GET", "/v2/app/tags/list?n=-1", None, {}),
        ("GET", "/v2/app/tags/list?ns=NOT%20A%20HOST", None, {}),
        ("GET", "/v2/_catalog?n=9999999999999999999999&last=%00", None, {}),
        ("GET", "/v2/" + "a/" * 200 + "tags/list", None, {}),
        ("GET", "/v2/-app/tags/list", None, {}),
        ("POST", "/v2/app/blobs/uploads/?digest=sha256:x", b"x", {}),
        ("POST", "/v2/app/blobs/uploads/?mount=nonsense&from=UPPER", None, {}),
        ("PUT", "/v2/app/blobs/uploads/" + "0" * 32 + "?digest=sha256:x", None, {}),
        ("PATCH", "/v2/app/blobs/uploads/../../etc", b"x", {}),
        ("GET", "/v2/app/blobs/sha256:" + "0" * 64, None, {"Range": "bytes=oops"}),
        ("GET", "/v2/app/nothing/here", None, {}),
    ],
)
def test_bad_input_is_a_client_error(
    registry: Running, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    status, _, data = registry.request(method, path, body, **headers)
    assert status < 500, (status, data)
    if status >= 400:
        assert json.loads(data)["errors"][0]["code"]


def test_tags_and_catalog_pagination(registry: Running, layout: Layout) -> None:
    built = layout.image(None, [BUSYBOXISH])
    for tag in ("d", "a", "c", "b"):
        push_raw(registry, layout, built, "app", tag)
    push_raw(registry, layout, built, "team/tool", "1.0")

    status, headers, body = registry.request("GET", "/v2/app/tags/list?n=2")
    assert status == 200 and json.loads(body) == {"name": "app", "tags": ["a", "b"]}
    assert headers["Link"] == '</v2/app/tags/list?n=2&last=b>; rel="next"'
    status, headers, body = registry.request("GET", "/v2/app/tags/list?n=2&last=b")
    assert json.loads(body)["tags"] == ["c", "d"] and "Link" not in headers
    _, _, body = registry.request("GET", "/v2/app/tags/list")
    assert json.loads(body)["tags"] == ["a", "b", "c", "d"]

    status, headers, body = registry.request("GET", "/v2/_catalog?n=1")
    assert status == 200 and json.loads(body) == {"repositories": ["app"]}
    assert headers["Link"] == '</v2/_catalog?n=1&last=app>; rel="next"'
    _, headers, body = registry.request("GET", "/v2/_catalog?n=1&last=app")
    assert json.loads(body) == {"repositories": ["team/tool"]} and "Link" not in headers


def test_delete_manifest(registry: Running, layout: Layout) -> None:
    built = layout.image(None, [BUSYBOXISH])
    push_raw(registry, layout, built, "app", "v1")
    push_raw(registry, layout, built, "app", "v2")
    assert registry.error("DELETE", "/v2/app/manifests/nope") == (404, "MANIFEST_UNKNOWN")
    status, _, _ = registry.request("DELETE", "/v2/app/manifests/v2")
    assert status == 202
    assert json.loads(registry.request("GET", "/v2/app/tags/list")[2])["tags"] == ["v1"]

    status, _, _ = registry.request("DELETE", f"/v2/app/manifests/{built.manifest_digest}")
    assert status == 202
    assert registry.error("GET", "/v2/app/manifests/v1") == (404, "MANIFEST_UNKNOWN")
    assert registry.error("GET", f"/v2/app/manifests/{built.manifest_digest}") == (
        404,
        "MANIFEST_UNKNOWN",
    )
    assert registry.store.get(f"localhost:{registry.port}/app:v1") is None
    assert registry.store.images() == [] and registry.store.names() == {}
    assert registry.error("DELETE", f"/v2/app/manifests/{built.manifest_digest}") == (
        404,
        "MANIFEST_UNKNOWN",
    )


def test_delete_refuses_an_image_in_use(store: ImageStore, layout: Layout) -> None:
    built = layout.image(None, [BUSYBOXISH])
    registry = Running(store, in_use=[built.config_digest])
    try:
        push_raw(registry, layout, built, "app", "v1")
        assert registry.error("DELETE", f"/v2/app/manifests/{built.manifest_digest}") == (
            409,
            "DENIED",
        )
        assert store.get(f"localhost:{registry.port}/app:v1") is not None
    finally:
        registry.stop()


def test_serves_docker_hub_images_as_a_mirror(registry: Running, layout: Layout) -> None:
    built = layout.image(None, [BUSYBOXISH])
    for blob in (layout.root / "blobs" / "sha256").iterdir():
        registry.store.content.put(blob.read_bytes(), "sha256:" + blob.name)
    registry.store.add(built.manifest_digest, ["docker.io/library/busybox:latest"])

    for path in (
        "/v2/library/busybox/manifests/latest?ns=docker.io",
        "/v2/library/busybox/manifests/latest",
        "/v2/busybox/manifests/latest",
    ):
        status, headers, _ = registry.request("GET", path, Accept=mf.ACCEPT)
        assert status == 200, path
        assert headers["Docker-Content-Digest"] == built.manifest_digest
    assert registry.error("GET", "/v2/library/busybox/manifests/latest?ns=registry.k8s.io") == (
        404,
        "MANIFEST_UNKNOWN",
    )
    _, _, body = registry.request("GET", "/v2/library/busybox/tags/list?ns=docker.io")
    assert json.loads(body)["tags"] == ["latest"]
    assert json.loads(registry.request("GET", "/v2/_catalog")[2])["repositories"] == [
        "library/busybox"
    ]
    inspected = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/library/busybox")
    )
    assert inspected["Digest"] == built.manifest_digest
    # Mirrored names are read-only: deletes only touch this registry's own names.
    assert registry.error("DELETE", "/v2/library/busybox/manifests/latest") == (
        404,
        "MANIFEST_UNKNOWN",
    )


def test_port_in_use(registry: Running) -> None:
    other = RegistryServer(registry.store, "127.0.0.1", registry.port)
    with pytest.raises(OSError, match="is in use — stop what uses it") as info:
        registry.call(other.start())
    assert info.value.errno == errno.EADDRINUSE


def test_a_node_pulls_from_the_embedded_registry(
    registry: Running, layout: Layout, tmp_path: Path
) -> None:
    """What another node does: push with skopeo, pull with kubling's puller into an empty
    store, by tag and by digest, and find the source files in the unpacked layers."""
    from kubling.node.images.pull import pull_image
    from tests.node.images.pull_servers import expected_files, merged_files

    built = layout.image("app:v1", [BUSYBOXISH, APP])
    push(layout, "app:v1", f"docker://{registry.host}/app:v1")
    node = ImageStore(tmp_path / "node")
    by_tag = asyncio.run(pull_image(node, f"{registry.host}/app:v1"))
    assert by_tag.image.id == built.config_digest
    assert merged_files(node.layer_dirs(by_tag.image)) == expected_files(BUSYBOXISH, APP)
    other = ImageStore(tmp_path / "other")
    by_digest = asyncio.run(pull_image(other, f"{registry.host}/app@{built.manifest_digest}"))
    assert by_digest.image.id == built.config_digest
    assert merged_files(other.layer_dirs(by_digest.image)) == expected_files(BUSYBOXISH, APP)
