"""Server-side apply and managedFields with the real kubectl."""

from __future__ import annotations

import json
import uuid

from tests.server_fixture import KublingServer

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: ssa, labels: {app: ssa}}
spec:
  replicas: 2
  selector: {matchLabels: {app: ssa}}
  template:
    metadata: {labels: {app: ssa}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env: [{name: A, value: "1"}]
"""


def _ns(kubling: KublingServer) -> str:
    name = "ssa-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", name)
    return name


def _managers(obj: dict[str, object]) -> list[tuple[str, str, str]]:
    """kubectl's entries (controllers record their own, e.g. kube-controller-manager)."""
    entries = obj["metadata"]["managedFields"]  # type: ignore[index]
    return [(e["manager"], e["operation"], e.get("subresource", "")) for e in entries
            if e["manager"].startswith("kubectl")]


def test_apply_creates_then_tracks_ownership(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    out = kubling.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=DEPLOYMENT)
    assert "deployment.apps/ssa serverside-applied" in out.stdout
    dep = kubling.kubectl_yaml("get", "deploy", "ssa", "-n", ns, "--show-managed-fields")
    assert _managers(dep) == [("kubectl", "Apply", "")]
    fields = dep["metadata"]["managedFields"][0]["fieldsV1"]
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert set(container) == {".", "f:env", "f:image", "f:name"}
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"  # defaults still applied

    # another manager takes spec.replicas through /scale: a later apply conflicts
    kubling.kubectl("scale", "deploy", "ssa", "-n", ns, "--replicas=5")
    changed = DEPLOYMENT.replace("replicas: 2", "replicas: 3")
    result = kubling.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=changed,
                             check=False)
    assert result.returncode == 1
    assert ("Apply failed with 1 conflict: conflict with \"kubectl\" with subresource "
            "\"scale\" using apps/v1: .spec.replicas") in result.stderr
    kubling.kubectl("apply", "--server-side", "--force-conflicts", "-n", ns, "-f", "-",
                    input=changed)
    assert kubling.kubectl_yaml("get", "deploy", "ssa", "-n", ns)["spec"]["replicas"] == 3

    # dropping a field from the configuration removes it (nobody else owns it)
    without_env = changed.replace('        env: [{name: A, value: "1"}]\n', "")
    kubling.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=without_env)
    container = kubling.kubectl_yaml("get", "deploy", "ssa", "-n", ns)["spec"]["template"][
        "spec"]["containers"][0]
    assert "env" not in container


def test_ordinary_writes_are_recorded_as_updates(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "configmap", "cm", "-n", ns, "--from-literal=a=b")
    kubling.kubectl("label", "configmap", "cm", "-n", ns, "x=y")
    cm = kubling.kubectl_yaml("get", "cm", "cm", "-n", ns, "--show-managed-fields")
    managers = {m for m, op, _ in _managers(cm) if op == "Update"}
    assert {"kubectl-create", "kubectl-label"} <= managers
    labels = next(e for e in cm["metadata"]["managedFields"]
                  if e["manager"] == "kubectl-label")["fieldsV1"]
    assert labels == {"f:metadata": {"f:labels": {".": {}, "f:x": {}}}}


def test_apply_requires_a_field_manager_and_matching_kind(kubling: KublingServer) -> None:
    import http.client

    ns = _ns(kubling)
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "c"}, "data": {"a": "b"}})
    conn = http.client.HTTPSConnection("127.0.0.1", kubling.port,
                                       context=kubling.ssl_context(), timeout=10)
    try:
        for query, code in (("", 422), ("?fieldManager=me", 201), ("?fieldManager=me", 200)):
            conn.request("PATCH", f"/api/v1/namespaces/{ns}/configmaps/c{query}", body=body,
                         headers={"Content-Type": "application/apply-patch+yaml"})
            resp = conn.getresponse()
            raw = resp.read()
            assert resp.status == code, raw
        conn.request("PATCH", f"/api/v1/namespaces/{ns}/configmaps/c?fieldManager=me",
                     body=body.replace("ConfigMap", "Secret"),
                     headers={"Content-Type": "application/apply-patch+yaml"})
        resp = conn.getresponse()
        assert resp.status == 400 and json.loads(resp.read())["reason"] == "BadRequest"
    finally:
        conn.close()


def test_apply_status(kubling: KublingServer) -> None:
    """ApplyStatus: apply on /status records its own Apply entry for the status subresource
    (a Service: no controller writes its conditions, so nobody takes them over)."""
    import http.client

    ns = _ns(kubling)
    kubling.kubectl("create", "service", "clusterip", "st", "-n", ns, "--tcp=80:80")
    condition = {"type": "Ready", "status": "True", "reason": "Checked", "message": "ok",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
    body = json.dumps({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "st", "namespace": ns},
                       "status": {"conditions": [condition]}})
    conn = http.client.HTTPSConnection("127.0.0.1", kubling.port,
                                       context=kubling.ssl_context(), timeout=10)
    try:
        conn.request("PATCH", f"/api/v1/namespaces/{ns}/services/st/status"
                     "?fieldManager=status-writer&force=true", body=body,
                     headers={"Content-Type": "application/apply-patch+yaml"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, raw
    svc = kubling.kubectl_yaml("get", "svc", "st", "-n", ns, "--show-managed-fields")
    assert svc["status"]["conditions"] == [condition]
    entry = next(e for e in svc["metadata"]["managedFields"] if e["manager"] == "status-writer")
    assert entry["operation"] == "Apply" and entry["subresource"] == "status"
    assert "f:conditions" in entry["fieldsV1"]["f:status"]
