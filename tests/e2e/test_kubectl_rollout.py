"""The real kubectl drives Deployments: create, scale, set image, rollout status | history |
undo | pause | resume | restart.

There is no kubelet in these tests, so a background thread plays one: it marks every pod
of the test's namespace Running and Ready through the official Python client.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from tests.server_fixture import KublingServer

HASH = "pod-template-hash"


def _ns(kubling: KublingServer) -> str:
    name = "rollout-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", name)
    return name


@contextlib.contextmanager
def kubelet(kubling: KublingServer, namespace: str) -> Iterator[None]:
    """Mark the namespace's pods ready, every 0.1 s, until the block ends."""
    from kubernetes import client as k8s

    stop = threading.Event()
    api: Any = k8s.CoreV1Api(kubling.api_client())

    def loop() -> None:
        while not stop.is_set():
            for pod in api.list_namespaced_pod(namespace).items:
                ready = any(c.type == "Ready" and c.status == "True"
                            for c in pod.status.conditions or [])
                if ready or pod.metadata.deletion_timestamp:
                    continue
                now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                body = {"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now}]}}
                with contextlib.suppress(k8s.ApiException):
                    api.patch_namespaced_pod_status(pod.metadata.name, namespace, body)
            stop.wait(0.1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def change(kubling: KublingServer, *args: str) -> str:
    """A kubectl command that patches the Deployment, retried on 409 Conflict: kubling's
    API server answers a patch that races a controller's status write with one, where
    upstream re-applies the patch to the fresh object."""
    for attempt in range(10):
        result = kubling.kubectl(*args, check=False)
        if result.returncode == 0:
            return result.stdout
        if "the object has been modified" not in result.stderr or attempt == 9:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        time.sleep(0.05)
    raise AssertionError("unreachable")


def wait_for(check: Callable[[], Any], *, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {result!r}")
        time.sleep(0.1)


def pods(kubling: KublingServer, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubling.kubectl_yaml("get", "pods", "-n", ns)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def pods_if(kubling: KublingServer, ns: str, count: int) -> list[dict[str, Any]] | None:
    found = pods(kubling, ns)
    return found if len(found) == count else None


def image_of(kubling: KublingServer, ns: str) -> str:
    return str(kubling.kubectl("get", "deployment", "web", "-n", ns, "-o",
                               "jsonpath={.spec.template.spec.containers[0].image}").stdout)


def test_create_scale_set_image_status_history_undo(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3", "-n", ns)
    created = wait_for(lambda: pods_if(kubling, ns, 3))
    rs = kubling.kubectl_yaml("get", "replicasets", "-n", ns)["items"]
    assert len(rs) == 1
    rs_name, rs_uid = rs[0]["metadata"]["name"], rs[0]["metadata"]["uid"]
    pod_hash = rs[0]["metadata"]["labels"][HASH]
    assert rs_name == f"web-{pod_hash}"
    for pod in created:
        assert pod["metadata"]["labels"] == {"app": "web", HASH: pod_hash}
        assert pod["metadata"]["name"].startswith(f"{rs_name}-")
        (ref,) = pod["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "ReplicaSet", rs_name, rs_uid, True)

    change(kubling, "scale", "deployment", "web", "--replicas=5", "-n", ns)
    wait_for(lambda: len(pods(kubling, ns)) == 5)
    change(kubling, "scale", "deployment", "web", "--replicas=3", "-n", ns)
    wait_for(lambda: len(pods(kubling, ns)) == 3)

    with kubelet(kubling, ns):
        out = kubling.kubectl("rollout", "status", "deployment/web", "-n", ns,
                              "--timeout=30s").stdout
        assert 'deployment "web" successfully rolled out' in out

        change(kubling, "annotate", "deployment", "web", "-n", ns,
                        "kubernetes.io/change-cause=to nginx:1.27")
        change(kubling, "set", "image", "deployment/web", "nginx=nginx:1.27", "-n", ns)
        out = kubling.kubectl("rollout", "status", "deployment/web", "-n", ns,
                              "--timeout=30s").stdout
        assert 'deployment "web" successfully rolled out' in out
        sets = kubling.kubectl_yaml("get", "replicasets", "-n", ns)["items"]
        by_image = {s["spec"]["template"]["spec"]["containers"][0]["image"]: s for s in sets}
        assert (by_image["nginx"]["spec"]["replicas"],
                by_image["nginx:1.27"]["spec"]["replicas"]) == (0, 3)
        new_pods = pods(kubling, ns)
        assert {p["spec"]["containers"][0]["image"] for p in new_pods} == {"nginx:1.27"}

        history = kubling.kubectl("rollout", "history", "deployment/web", "-n", ns).stdout
        lines = [line.split(None, 1) for line in history.splitlines()[2:] if line.strip()]
        assert [line[0] for line in lines] == ["1", "2"]
        assert lines[1][1].strip() == "to nginx:1.27"
        detail = kubling.kubectl("rollout", "history", "deployment/web", "-n", ns,
                                 "--revision=1").stdout
        assert "revision #1" in detail and "Image:\tnginx\n" in detail

        out = change(kubling, "rollout", "undo", "deployment/web", "-n", ns)
        assert "rolled back" in out
        assert image_of(kubling, ns) == "nginx"
        kubling.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
        history = kubling.kubectl("rollout", "history", "deployment/web", "-n", ns).stdout
        revisions = [line.split()[0] for line in history.splitlines()[2:] if line.strip()]
        assert revisions == ["2", "3"]  # revision 1 came back as revision 3
        annotations = kubling.kubectl_yaml("get", "deployment", "web", "-n", ns)[
            "metadata"]["annotations"]
        assert annotations["deployment.kubernetes.io/revision"] == "3"


def test_pause_resume_and_restart(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", ns)
    with kubelet(kubling, ns):
        kubling.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
        change(kubling, "rollout", "pause", "deployment/web", "-n", ns)
        change(kubling, "set", "image", "deployment/web", "nginx=nginx:2", "-n", ns)
        time.sleep(0.5)
        assert len(kubling.kubectl_yaml("get", "replicasets", "-n", ns)["items"]) == 1
        change(kubling, "rollout", "resume", "deployment/web", "-n", ns)
        kubling.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
        assert len(kubling.kubectl_yaml("get", "replicasets", "-n", ns)["items"]) == 2

        change(kubling, "rollout", "restart", "deployment/web", "-n", ns)
        kubling.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
        sets = kubling.kubectl_yaml("get", "replicasets", "-n", ns)["items"]
        assert len(sets) == 3
        newest = max(sets, key=lambda s: int(
            s["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))
        assert "kubectl.kubernetes.io/restartedAt" in newest["spec"]["template"]["metadata"][
            "annotations"]
        assert newest["spec"]["replicas"] == 2
        assert {p["metadata"]["labels"][HASH] for p in pods(kubling, ns)} == {
            newest["metadata"]["labels"][HASH]}

        change(kubling, "rollout", "pause", "deployment/web", "-n", ns)
        undo = kubling.kubectl("rollout", "undo", "deployment/web", "-n", ns, check=False)
        assert undo.returncode != 0 and "paused" in undo.stderr
