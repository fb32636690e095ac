"""kubectl's typed generators send protobuf bodies; kubling must accept them.

``kubectl create <kind> ...`` builds a Go object and POSTs it as
``application/vnd.kubernetes.protobuf`` (a 415 is not retried as JSON). Each test runs one
generator against a real server and reads the object back as YAML to check the fields that
came through the protobuf decoder.
"""

from __future__ import annotations

import base64
import uuid

from tests.server_fixture import KublingServer


def _ns(kubling: KublingServer) -> str:
    name = "pb-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", name)  # itself a protobuf POST
    return name


def test_create_namespace(kubling: KublingServer) -> None:
    name = _ns(kubling)
    ns = kubling.kubectl_yaml("get", "namespace", name)
    assert ns["kind"] == "Namespace" and ns["metadata"]["name"] == name
    assert ns["metadata"]["creationTimestamp"]  # set by the server, not the client's null
    assert ns["metadata"]["uid"]


def test_create_configmap_from_literal(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=a=b",
                    "--from-literal=color=blue")
    cm = kubling.kubectl_yaml("get", "configmap", "cfg", "-n", ns)
    assert cm["data"] == {"a": "b", "color": "blue"}
    assert "binaryData" not in cm


def test_create_secret_generic(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "secret", "generic", "sec", "-n", ns, "--from-literal=pw=s3cret")
    secret = kubling.kubectl_yaml("get", "secret", "sec", "-n", ns)
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["pw"]) == b"s3cret"


def test_create_deployment(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "deployment", "web", "-n", ns, "--image=nginx", "--replicas=2")
    dep = kubling.kubectl_yaml("get", "deployment", "web", "-n", ns)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "web"}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "nginx" and container["image"] == "nginx"
    # server-side defaults still apply to a protobuf-created object
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"


def test_create_service_clusterip(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "service", "clusterip", "x", "-n", ns, "--tcp=80:8080")
    svc = kubling.kubectl_yaml("get", "service", "x", "-n", ns)
    port = svc["spec"]["ports"][0]
    assert port["port"] == 80
    assert port["targetPort"] == 8080  # an IntOrString that arrived as an int
    assert port["protocol"] == "TCP"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"app": "x"}


def test_create_job(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "job", "once", "-n", ns, "--image=busybox", "--", "echo", "hi")
    job = kubling.kubectl_yaml("get", "job", "once", "-n", ns)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "busybox"
    assert container["command"] == ["echo", "hi"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_create_cronjob(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "cronjob", "tick", "-n", ns, "--image=busybox",
                    "--schedule=*/5 * * * *", "--", "date")
    cj = kubling.kubectl_yaml("get", "cronjob", "tick", "-n", ns)
    assert cj["spec"]["schedule"] == "*/5 * * * *"
    tmpl = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert tmpl["containers"][0]["command"] == ["date"]
    assert tmpl["restartPolicy"] == "OnFailure"


def test_create_role_and_rolebinding(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "role", "reader", "-n", ns, "--verb=get,list",
                    "--resource=pods,deployments.apps")
    role = kubling.kubectl_yaml("get", "role", "reader", "-n", ns)
    rules = role["rules"]
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]} in rules
    assert {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]} in rules
    kubling.kubectl("create", "rolebinding", "reader-binding", "-n", ns, "--role=reader",
                    "--user=alice", f"--serviceaccount={ns}:default")
    rb = kubling.kubectl_yaml("get", "rolebinding", "reader-binding", "-n", ns)
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": "reader"}
    subjects = rb["subjects"]
    assert {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"} in subjects
    assert {"kind": "ServiceAccount", "name": "default", "namespace": ns} in subjects
