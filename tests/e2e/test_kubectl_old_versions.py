"""kubectl 1.27 and 1.28 work against kubling: they read ``/openapi/v2`` only as protobuf.

Those releases fetch the OpenAPI v2 document as gnostic's ``openapi.v2.Document``
(``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf``) for client-side
apply's strategic-merge-patch metadata, for the field-validation probe and for
``explain --output=plaintext-openapiv2``; a server that only speaks JSON there breaks
``apply``, ``create -f`` and ``explain``. The versioned binaries ship beside the default
``kubectl``; a machine without them skips these tests.
"""

from __future__ import annotations

import http.client
import shutil
import uuid
from pathlib import Path

import pytest

from kubling.api import protobuf
from tests.server_fixture import KublingServer


def _binary(version: str) -> str | None:
    default = shutil.which("kubectl")
    if default is None:
        return None
    candidate = Path(default).resolve().parent / f"kubectl.{version}"
    return str(candidate) if candidate.is_file() else None


VERSIONS = [
    pytest.param(v, marks=pytest.mark.skipif(_binary(v) is None, reason=f"no kubectl.{v}"))
    for v in ("1.27", "1.28")
]

_MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: nginx
        image: {image}
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: {ns}
data:
  color: {color}
"""


def _namespace(kubling: KublingServer) -> str:
    name = "old-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", name)
    return name


@pytest.mark.parametrize("version", VERSIONS)
def test_apply_created_unchanged_configured(kubling: KublingServer, version: str,
                                            tmp_path: Path) -> None:
    binary = _binary(version)
    assert binary is not None
    ns = _namespace(kubling)
    manifest = tmp_path / "app.yaml"

    def apply(image: str, color: str) -> str:
        manifest.write_text(_MANIFEST.format(ns=ns, image=image, color=color))
        return kubling.kubectl("apply", "-f", str(manifest), binary=binary).stdout

    assert apply("nginx:1.25", "blue").split("\n")[:2] == [
        "deployment.apps/web created", "configmap/cfg created"]
    assert apply("nginx:1.25", "blue").split("\n")[:2] == [
        "deployment.apps/web unchanged", "configmap/cfg unchanged"]
    assert apply("nginx:1.26", "green").split("\n")[:2] == [
        "deployment.apps/web configured", "configmap/cfg configured"]

    dep = kubling.kubectl_yaml("get", "deployment", "web", "-n", ns)
    containers = dep["spec"]["template"]["spec"]["containers"]
    # a strategic merge patch (merge key "name") kept both containers and their order
    assert [(c["name"], c["image"]) for c in containers] == [
        ("nginx", "nginx:1.26"), ("sidecar", "busybox")]
    cm = kubling.kubectl_yaml("get", "configmap", "cfg", "-n", ns)
    assert cm["data"] == {"color": "green"}


@pytest.mark.parametrize("version", VERSIONS)
def test_create_from_file_and_get_yaml(kubling: KublingServer, version: str,
                                       tmp_path: Path) -> None:
    binary = _binary(version)
    assert binary is not None
    ns = _namespace(kubling)
    manifest = tmp_path / "app.yaml"
    manifest.write_text(_MANIFEST.format(ns=ns, image="nginx:1.25", color="red"))
    out = kubling.kubectl("create", "-f", str(manifest), binary=binary).stdout
    assert "deployment.apps/web created" in out and "configmap/cfg created" in out
    got = kubling.kubectl("get", "configmap", "cfg", "-n", ns, "-o", "yaml",
                          binary=binary).stdout
    assert "color: red" in got and "kind: ConfigMap" in got
    got = kubling.kubectl("get", "deployment", "web", "-n", ns, "-o", "yaml",
                          binary=binary).stdout
    assert "image: nginx:1.25" in got and "kind: Deployment" in got


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("output", [None, "plaintext-openapiv2"])
def test_explain_deployment_strategy(kubling: KublingServer, version: str,
                                     output: str | None) -> None:
    binary = _binary(version)
    assert binary is not None
    args = ["explain", "deployment.spec.strategy"]
    if output is not None:
        args.append(f"--output={output}")  # forces the v2 (protobuf) models
    out = kubling.kubectl(*args, binary=binary).stdout
    assert "DeploymentStrategy describes how to replace existing pods" in out
    assert "rollingUpdate" in out and "type" in out


def test_openapi_v2_protobuf_content_type(kubling: KublingServer) -> None:
    """Answered with the dotted media type: Go's mime parser rejects the ``@`` spelling."""
    conn = http.client.HTTPSConnection("127.0.0.1", kubling.port,
                                       context=kubling.ssl_context(), timeout=30)
    try:
        conn.request("GET", "/openapi/v2", headers={
            "Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == protobuf.OPENAPI_V2_MEDIA_TYPE
        doc = protobuf.message_class("openapi.v2.Document").FromString(body)
        assert doc.swagger == "2.0" and len(doc.definitions.additional_properties) > 100
        conn.request("GET", "/openapi/v2", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read().startswith(b"{")
    finally:
        conn.close()
