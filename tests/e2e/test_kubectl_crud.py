"""The real kubectl against a real kubling server: the everyday object workflows."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from tests.server_fixture import KublingServer


def _ns(kubling: KublingServer) -> str:
    name = "t-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


def test_version_and_system_namespaces(kubling: KublingServer) -> None:
    out = kubling.kubectl("version").stdout
    assert "Server Version: v1.32" in out
    names = kubling.kubectl("get", "namespaces", "-o", "name").stdout.split()
    for ns in ("namespace/default", "namespace/kube-system", "namespace/kube-public",
               "namespace/kube-node-lease"):
        assert ns in names
    svc = kubling.kubectl_yaml("get", "service", "kubernetes", "-n", "default")
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    assert svc["spec"]["ports"][0]["port"] == 443
    slice_ = kubling.kubectl_yaml("get", "endpointslice", "kubernetes", "-n", "default")
    assert slice_["ports"][0]["port"] == kubling.port


def test_api_resources_short_names_and_categories(kubling: KublingServer) -> None:
    out = kubling.kubectl("api-resources").stdout
    # The first row of a name wins: core pods and nodes before metrics.k8s.io's.
    lines: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        lines.setdefault(line.split()[0], line)
    assert " po " in lines["pods"] and " deploy " in lines["deployments"]
    assert " svc " in lines["services"]
    # short names resolve through discovery
    kubling.kubectl("get", "deploy", "-A")
    cats = kubling.kubectl("api-resources", "--categories=all", "-o", "name").stdout.split()
    assert "pods" in cats and "deployments.apps" in cats and "configmaps" not in cats


#: The ConfigMap the root-CA publisher keeps in every namespace, as upstream.
ROOT_CA = "configmap/kube-root-ca.crt"

CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: demo}
data:
  color: blue
"""


def test_configmap_create_get_update_delete(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    out = kubling.kubectl("apply", "-n", ns, "-f", "-", input=CONFIGMAP).stdout
    assert "configmap/settings created" in out
    cm = kubling.kubectl_yaml("get", "configmap", "settings", "-n", ns)
    assert cm["data"] == {"color": "blue"}
    assert cm["metadata"]["uid"] and cm["metadata"]["resourceVersion"]
    assert cm["metadata"]["creationTimestamp"].endswith("Z")
    out = kubling.kubectl("apply", "-n", ns, "-f", "-", input=CONFIGMAP).stdout
    assert "configmap/settings unchanged" in out
    changed = CONFIGMAP.replace("blue", "red")
    out = kubling.kubectl("apply", "-n", ns, "-f", "-", input=changed).stdout
    assert "configmap/settings configured" in out
    assert kubling.kubectl_yaml("get", "cm", "settings", "-n", ns)["data"]["color"] == "red"
    kubling.kubectl("label", "cm", "settings", "-n", ns, "tier=web")
    got = kubling.kubectl("get", "cm", "-n", ns, "-l", "tier=web", "-o", "name").stdout
    assert got.strip() == "configmap/settings"
    assert kubling.kubectl("get", "cm", "-n", ns, "-l", "app=demo,tier!=web", "-o",
                           "name").stdout == ""
    out = kubling.kubectl("delete", "cm", "settings", "-n", ns).stdout
    assert 'configmap "settings" deleted' in out
    missing = kubling.kubectl("get", "cm", "settings", "-n", ns, check=False)
    assert missing.returncode == 1
    assert 'configmaps "settings" not found' in missing.stderr


def test_secret_string_data_is_folded_into_data(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input="""
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
""")
    secret = kubling.kubectl_yaml("get", "secret", "creds", "-n", ns)
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"password": "czNjcmV0"}
    assert "stringData" not in secret


def test_service_defaults(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input="""
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
""")
    svc = kubling.kubectl_yaml("get", "svc", "web", "-n", ns)
    port = svc["spec"]["ports"][0]
    assert port["protocol"] == "TCP" and port["targetPort"] == 80
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["sessionAffinity"] == "None"
    kubling.kubectl("delete", "svc", "web", "-n", ns)


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
"""


def test_deployment_defaults_scale_and_generation(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=DEPLOYMENT)
    dep = kubling.kubectl_yaml("get", "deploy", "web", "-n", ns)
    spec = dep["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    container = spec["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert spec["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    assert dep["metadata"]["generation"] == 1
    kubling.kubectl("scale", "deploy", "web", "-n", ns, "--replicas=5")
    dep = kubling.kubectl_yaml("get", "deploy", "web", "-n", ns)
    assert dep["spec"]["replicas"] == 5 and dep["metadata"]["generation"] == 2
    kubling.kubectl("set", "image", "deploy/web", "-n", ns, "nginx=nginx:1.28")
    dep = kubling.kubectl_yaml("get", "deploy", "web", "-n", ns)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert dep["metadata"]["generation"] == 3
    kubling.kubectl("delete", "deploy", "web", "-n", ns)


def test_invalid_deployment_is_422_with_upstream_wording(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    bad = DEPLOYMENT.replace("template:\n    metadata: {labels: {app: web}}",
                             "template:\n    metadata: {labels: {app: other}}")
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=bad, check=False)
    assert result.returncode == 1
    assert 'The Deployment "web" is invalid: spec.template.metadata.labels' in result.stderr
    assert "`selector` does not match template `labels`" in result.stderr


def test_selector_is_immutable(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=DEPLOYMENT)
    changed = DEPLOYMENT.replace("{app: web}", "{app: web2}")
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=changed, check=False)
    assert result.returncode == 1
    assert "field is immutable" in result.stderr


def test_nodes_are_cluster_scoped(kubling: KublingServer) -> None:
    name = "node-" + uuid.uuid4().hex[:6]
    kubling.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    names = kubling.kubectl("get", "nodes", "-o", "name").stdout.split()
    assert f"node/{name}" in names
    kubling.kubectl("label", "node", name, "zone=a")
    node = kubling.kubectl_yaml("get", "node", name)
    assert node["metadata"]["labels"]["zone"] == "a"
    assert "namespace" not in node["metadata"]
    kubling.kubectl("delete", "node", name)


def test_get_watch_sees_changes(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    watch = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(kubling.kubeconfig), "--cache-dir",
         str(kubling.cache_dir), "get", "configmaps", "-n", ns, "-w", "-o", "name",
         "--request-timeout=30s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.0)  # let the watch start (list, then watch from its revision)
        for i in range(3):
            kubling.kubectl("create", "configmap", f"w{i}", "-n", ns, "--dry-run=client",
                            "-o", "yaml", check=True)
            kubling.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"w{i}"}}))
        kubling.kubectl("delete", "configmap", "w0", "-n", ns)
        deadline = time.monotonic() + 15
        seen: list[str] = []
        assert watch.stdout is not None
        while time.monotonic() < deadline and len(seen) < 4:
            line = watch.stdout.readline()
            if not line:
                break
            if line.strip() != ROOT_CA:  # every namespace has it (root-CA publisher)
                seen.append(line.strip())
    finally:
        watch.terminate()
        watch.wait(10)
    assert seen[:3] == ["configmap/w0", "configmap/w1", "configmap/w2"]
    assert seen[3] == "configmap/w0"  # the deletion event


def test_conflict_on_stale_resource_version(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=CONFIGMAP)
    stale = kubling.kubectl_yaml("get", "cm", "settings", "-n", ns)
    kubling.kubectl("label", "cm", "settings", "-n", ns, "x=1")
    stale["data"]["color"] = "green"
    result = kubling.kubectl("replace", "-n", ns, "-f", "-", input=json.dumps(stale),
                             check=False)
    assert result.returncode == 1
    assert ('Operation cannot be fulfilled on configmaps "settings": the object has been '
            "modified; please apply your changes to the latest version and try again"
            in result.stderr)


def test_delete_namespace_is_accepted(kubling: KublingServer) -> None:
    """``kubectl delete namespace`` waits, as upstream, until the namespace controller has
    emptied it and the API server has removed it (Terminating is covered in
    tests/controllers/test_namespace.py)."""
    ns = _ns(kubling)
    kubling.kubectl("create", "-n", ns, "-f", "-", input=CONFIGMAP)
    out = kubling.kubectl("delete", "namespace", ns, timeout=30).stdout
    assert f'namespace "{ns}" deleted' in out
    result = kubling.kubectl("get", "namespace", ns, check=False)
    assert result.returncode == 1
    assert f'namespaces "{ns}" not found' in result.stderr
    result = kubling.kubectl("get", "configmaps", "-n", ns, "-o", "name", check=False)
    assert result.stdout.strip() == ""


def test_create_in_missing_namespace_is_404(kubling: KublingServer) -> None:
    result = kubling.kubectl("apply", "-n", "does-not-exist", "-f", "-", input=CONFIGMAP,
                             check=False)
    assert result.returncode == 1
    assert 'namespaces "does-not-exist" not found' in result.stderr


def _versioned(binary: str) -> str:
    import shutil
    from pathlib import Path

    real = Path(shutil.which("kubectl") or "kubectl").resolve().parent / binary
    if not real.exists():
        pytest.fail(f"{real} is missing: the version-skew binaries come with the SDK")
    return str(real)


@pytest.mark.parametrize("binary", ["kubectl.1.29", "kubectl.1.33"])
def test_version_skew_kubectl_reads_and_writes(kubling: KublingServer, binary: str) -> None:
    ns = _ns(kubling)
    kubectl = _versioned(binary)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=CONFIGMAP, binary=kubectl)
    out = kubling.kubectl("get", "cm", "-n", ns, "-o", "name", binary=kubectl).stdout
    assert [n for n in out.split() if n != ROOT_CA] == ["configmap/settings"]


def test_oldest_kubectl_reads(kubling: KublingServer) -> None:
    """kubectl 1.27 reads too (its writes are covered in test_kubectl_old_versions.py)."""
    kubectl = _versioned("kubectl.1.27")
    out = kubling.kubectl("get", "ns", "default", "-o", "name", binary=kubectl).stdout
    assert out.strip() == "namespace/default"


APPLY_FIRST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: multi, labels: {app: multi}}
spec:
  replicas: 1
  selector: {matchLabels: {app: multi}}
  template:
    metadata: {labels: {app: multi}}
    spec:
      containers:
      - name: a
        image: busybox
        env: [{name: XX, value: "1"}, {name: YY, value: "2"}]
      - name: b
        image: nginx
        ports: [{containerPort: 80}, {containerPort: 443}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: pruneme, labels: {app: multi}}
data: {a: b}
"""

APPLY_SECOND = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: multi, labels: {app: multi}}
spec:
  replicas: 1
  selector: {matchLabels: {app: multi}}
  template:
    metadata: {labels: {app: multi}}
    spec:
      containers:
      - name: b
        image: nginx
        ports: [{containerPort: 443}]
      - name: a
        image: busybox
        env: [{name: YY, value: "2"}]
"""


def test_client_side_apply_removes_fields_reorders_and_prunes(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=APPLY_FIRST)
    out = kubling.kubectl("apply", "-n", ns, "--prune", "-l", "app=multi", "-f", "-",
                          input=APPLY_SECOND).stdout
    assert "deployment.apps/multi configured" in out and "configmap/pruneme pruned" in out
    containers = kubling.kubectl_yaml("get", "deploy", "multi", "-n", ns)["spec"]["template"][
        "spec"]["containers"]
    assert [c["name"] for c in containers] == ["b", "a"]  # $setElementOrder
    assert containers[0]["ports"] == [{"containerPort": 443, "protocol": "TCP"}]
    assert containers[1]["env"] == [{"name": "YY", "value": "2"}]
    missing = kubling.kubectl("get", "cm", "pruneme", "-n", ns, check=False)
    assert missing.returncode == 1
