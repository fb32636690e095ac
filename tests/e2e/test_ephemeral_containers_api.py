"""``pods/ephemeralcontainers`` end to end, server only: ``kubectl debug`` (1.32 and 1.27)
adds ephemeral containers, the official client reads, patches and replaces them, and the
API refuses what upstream refuses, with upstream's words (changing or removing an existing
ephemeral container, ports/resources/probes, duplicate names, unknown targets, a plain pod
update touching the list). Authorization of the subresource on its own is in
``tests/apiserver/test_ephemeralcontainers.py``: kubling has no RBAC authorizer yet."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.e2e.test_api_errors import _request
from tests.e2e.test_kubectl_crud import _versioned
from tests.server_fixture import KublingServer

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: mypod
spec:
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
"""


@pytest.fixture
def ns(kubling: KublingServer) -> Iterator[str]:
    name = "eph-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", name)
    kubling.kubectl("apply", "-n", name, "-f", "-", input=POD)
    yield name
    kubling.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def core(kubling: KublingServer) -> Iterator[client.CoreV1Api]:
    api = kubling.api_client()
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


def _pod(kubling: KublingServer, ns: str, name: str = "mypod") -> dict[str, Any]:
    pod: dict[str, Any] = json.loads(kubling.kubectl("get", "pod", name, "-n", ns,
                                                     "-o", "json").stdout)
    return pod


def _ephemeral(kubling: KublingServer, ns: str) -> list[dict[str, Any]]:
    return list(_pod(kubling, ns)["spec"].get("ephemeralContainers") or [])


def _debug(kubling: KublingServer, ns: str, name: str, *, binary: str = "kubectl",
           check: bool = True) -> Any:
    return kubling.kubectl("debug", "mypod", "-n", ns, "--image=busybox", "--target=main",
                           "-c", name, "--", "sleep", "3600", binary=binary, check=check)


def _status(err: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(err.body)
    return body


def _refused(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as info:
        call()
    return _status(info.value)


@pytest.mark.parametrize("binary", ["kubectl", "kubectl.1.27"])
def test_kubectl_debug_adds_ephemeral_containers(kubling: KublingServer, ns: str,
                                                 binary: str) -> None:
    kubectl = binary if binary == "kubectl" else _versioned(binary)
    before = _pod(kubling, ns)["metadata"]["resourceVersion"]
    _debug(kubling, ns, "dbg", binary=kubectl)
    after = _pod(kubling, ns)
    assert int(after["metadata"]["resourceVersion"]) > int(before)
    assert after["spec"]["ephemeralContainers"] == [{
        "name": "dbg", "image": "busybox", "command": ["sleep", "3600"],
        "targetContainerName": "main", "imagePullPolicy": "Always", "resources": {},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    }]
    assert [c["name"] for c in after["spec"]["containers"]] == ["main"]
    _debug(kubling, ns, "dbg2", binary=kubectl)
    assert [c["name"] for c in _ephemeral(kubling, ns)] == ["dbg", "dbg2"]


def test_official_client_patch_read_and_watch(kubling: KublingServer, ns: str,
                                              core: client.CoreV1Api) -> None:
    rv = core.read_namespaced_pod("mypod", ns).metadata.resource_version
    body = {"spec": {"ephemeralContainers": [
        {"name": "shell", "image": "busybox:1.36", "command": ["sh"], "stdin": True,
         "tty": True}]}}
    patched = core.patch_namespaced_pod_ephemeralcontainers("mypod", ns, body)
    shell = patched.spec.ephemeral_containers[0]
    assert (shell.name, shell.image, shell.image_pull_policy, shell.stdin) == (
        "shell", "busybox:1.36", "IfNotPresent", True)
    read = core.read_namespaced_pod_ephemeralcontainers("mypod", ns)
    assert [c.name for c in read.spec.ephemeral_containers] == ["shell"]
    assert read.metadata.resource_version == patched.metadata.resource_version
    fields = [f for f in read.metadata.managed_fields if f.subresource == "ephemeralcontainers"]
    assert len(fields) == 1 and "f:ephemeralContainers" in json.dumps(fields[0].fields_v1)
    events = watch.Watch().stream(core.list_namespaced_pod, ns, resource_version=rv,
                                  timeout_seconds=5)
    seen = [(e["type"], e["object"].metadata.resource_version) for e in events
            if e["object"].spec.ephemeral_containers]
    assert ("MODIFIED", patched.metadata.resource_version) in seen


def test_only_ephemeral_containers_change_through_the_subresource(
        kubling: KublingServer, ns: str, core: client.CoreV1Api) -> None:
    body = {"metadata": {"labels": {"sneaky": "yes"}},
            "spec": {"activeDeadlineSeconds": 5,
                     "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}
    core.patch_namespaced_pod_ephemeralcontainers("mypod", ns, body)
    pod = _pod(kubling, ns)
    assert "sneaky" not in pod["metadata"].get("labels", {})
    assert "activeDeadlineSeconds" not in pod["spec"]
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["dbg"]


def test_existing_ephemeral_containers_may_not_change_or_go(
        kubling: KublingServer, ns: str, core: client.CoreV1Api) -> None:
    _debug(kubling, ns, "dbg")
    pod = core.read_namespaced_pod_ephemeralcontainers("mypod", ns)
    pod.spec.ephemeral_containers[0].image = "busybox:1.36"
    status = _refused(lambda: core.replace_namespaced_pod_ephemeralcontainers("mypod", ns, pod))
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["message"].startswith(
        'Pod "mypod" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral '
        'containers "dbg" may not be changed\n')
    assert '"busybox:1.36"' in status["message"]
    pod = core.read_namespaced_pod_ephemeralcontainers("mypod", ns)
    pod.spec.ephemeral_containers = []
    status = _refused(lambda: core.replace_namespaced_pod_ephemeralcontainers("mypod", ns, pod))
    assert status["code"] == 422
    assert status["message"] == ('Pod "mypod" is invalid: spec.ephemeralContainers: Forbidden: '
                                 'existing ephemeral containers "dbg" may not be removed\n')
    assert status["details"]["causes"] == [{
        "reason": "FieldValueForbidden", "field": "spec.ephemeralContainers",
        "message": 'Forbidden: existing ephemeral containers "dbg" may not be removed\n'}]
    assert [c["image"] for c in _ephemeral(kubling, ns)] == ["busybox"]


def test_what_an_ephemeral_container_may_not_have(kubling: KublingServer, ns: str,
                                                  core: client.CoreV1Api) -> None:
    bad = {"name": "dbg", "image": "busybox",
           "ports": [{"containerPort": 80}],
           "resources": {"limits": {"cpu": "1"}},
           "readinessProbe": {"exec": {"command": ["true"]}},
           "lifecycle": {"preStop": {"exec": {"command": ["true"]}}},
           "volumeMounts": []}
    status = _refused(lambda: core.patch_namespaced_pod_ephemeralcontainers(
        "mypod", ns, {"spec": {"ephemeralContainers": [bad]}}))
    assert (status["code"], status["reason"]) == (422, "Invalid")
    path = "spec.ephemeralContainers[0]"
    msg = "Forbidden: cannot be set for an Ephemeral Container"
    for key in ("ports", "resources", "readinessProbe", "lifecycle"):
        assert f"{path}.{key}: {msg}" in status["message"]
    assert _ephemeral(kubling, ns) == []


def test_names_targets_and_images(kubling: KublingServer, ns: str,
                                  core: client.CoreV1Api) -> None:
    def patch(*containers: dict[str, Any]) -> dict[str, Any]:
        return _refused(lambda: core.patch_namespaced_pod_ephemeralcontainers(
            "mypod", ns, {"spec": {"ephemeralContainers": list(containers)}}))

    status = patch({"name": "main", "image": "busybox"})
    assert status["message"] == ('Pod "mypod" is invalid: spec.ephemeralContainers[0].name: '
                                 'Duplicate value: "main"')
    pod = core.read_namespaced_pod_ephemeralcontainers("mypod", ns)
    pod.spec.ephemeral_containers = [client.V1EphemeralContainer(name="a", image="busybox"),
                                     client.V1EphemeralContainer(name="a", image="busybox")]
    status = _refused(lambda: core.replace_namespaced_pod_ephemeralcontainers("mypod", ns, pod))
    assert status["message"] == ('Pod "mypod" is invalid: spec.ephemeralContainers[1].name: '
                                 'Duplicate value: "a"')
    status = patch({"name": "dbg", "image": "busybox", "targetContainerName": "nope"})
    assert status["message"] == ('Pod "mypod" is invalid: spec.ephemeralContainers[0].'
                                 'targetContainerName: Not found: "nope"')
    status = patch({"name": "dbg"})
    assert status["message"] == ('Pod "mypod" is invalid: spec.ephemeralContainers[0].image: '
                                 'Required value')
    assert _ephemeral(kubling, ns) == []


def test_a_missing_pod_is_not_found(kubling: KublingServer, ns: str,
                                    core: client.CoreV1Api) -> None:
    body = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}
    status = _refused(lambda: core.patch_namespaced_pod_ephemeralcontainers("nope", ns, body))
    assert (status["code"], status["reason"], status["message"]) == (
        404, "NotFound", 'pods "nope" not found')
    assert status["details"] == {"name": "nope", "kind": "pods"}
    result = kubling.kubectl("debug", "nope", "-n", ns, "--image=busybox", check=False)
    assert result.returncode == 1 and 'pods "nope" not found' in result.stderr


def test_the_pod_endpoint_refuses_ephemeral_containers(kubling: KublingServer,
                                                       ns: str) -> None:
    patch = json.dumps({"spec": {"ephemeralContainers": [{"name": "x", "image": "busybox"}]}})
    result = kubling.kubectl("patch", "pod", "mypod", "-n", ns, "-p", patch, check=False)
    assert result.returncode == 1
    assert ('The Pod "mypod" is invalid: spec: Forbidden: pod updates may not change fields '
            "other than `spec.containers[*].image`") in result.stderr
    assert "ephemeralContainers" in result.stderr  # the diff names the field
    pod = POD.replace("name: mypod", "name: other") + (
        "  ephemeralContainers:\n  - name: dbg\n    image: busybox\n")
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=pod, check=False)
    assert result.returncode == 1
    assert ('The Pod "other" is invalid: spec.ephemeralContainers: Forbidden: cannot be set '
            "on create") in result.stderr
    assert _ephemeral(kubling, ns) == []


def test_the_agent_reports_ephemeral_container_statuses(ns: str,
                                                        core: client.CoreV1Api) -> None:
    """What the node agent writes through ``pods/status`` stays."""
    core.patch_namespaced_pod_ephemeralcontainers(
        "mypod", ns, {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}})
    state = {"name": "dbg", "image": "busybox", "imageID": "", "ready": False,
             "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
    core.patch_namespaced_pod_status("mypod", ns,
                                     {"status": {"ephemeralContainerStatuses": [state]}})
    statuses = core.read_namespaced_pod("mypod", ns).status.ephemeral_container_statuses
    assert [(s.name, s.state.waiting.reason) for s in statuses] == [("dbg", "ContainerCreating")]


def test_discovery_and_openapi_list_the_subresource(kubling: KublingServer,
                                                    core: client.CoreV1Api) -> None:
    resources = {r.name: r for r in core.get_api_resources().resources}
    sub = resources["pods/ephemeralcontainers"]
    assert (sub.kind, sorted(sub.verbs), sub.namespaced) == (
        "Pod", ["get", "patch", "update"], True)
    code, _, body = _request(kubling, "GET", "/openapi/v3/api/v1")
    assert code == 200
    paths = json.loads(body)["paths"]
    item = paths["/api/v1/namespaces/{namespace}/pods/{name}/ephemeralcontainers"]
    assert item["patch"]["operationId"] == "patchCoreV1NamespacedPodEphemeralcontainers"
    assert item["put"]["operationId"] == "replaceCoreV1NamespacedPodEphemeralcontainers"
    assert item["get"]["operationId"] == "readCoreV1NamespacedPodEphemeralcontainers"
