"""The cluster converges on simulated nodes: workloads driven by the real kubectl end up
scheduled and running through the controllers, the scheduler and the node simulation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.server_fixture import KublingServer, running_server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    data = tmp_path_factory.mktemp("converge") / "data"
    with running_server(data, extra_args=["--simulated-nodes", "3"]) as server:
        _eventually(lambda: server.kubectl("get", "nodes", "--no-headers").stdout.count(
            " Ready ") == 3)
        yield server


def _eventually(check: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError("condition not reached in time")


def _running(server: KublingServer, ns: str, selector: str) -> list[dict[str, object]]:
    pods = server.kubectl_yaml("get", "pods", "-n", ns, "-l", selector)["items"]
    return [p for p in pods if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def test_deployment_scales_rolls_out_and_back(cluster: KublingServer) -> None:
    cluster.kubectl("create", "namespace", "conv-deploy")
    ns = "conv-deploy"
    cluster.kubectl("create", "deployment", "web", "-n", ns, "--image=nginx:1.27",
                    "--replicas=3")
    _eventually(lambda: len(_running(cluster, ns, "app=web")) == 3)
    nodes = {p["spec"]["nodeName"] for p in _running(cluster, ns, "app=web")}  # type: ignore[index]
    assert all(str(n).startswith("kubling-sim-") for n in nodes)
    cluster.kubectl("scale", "deploy/web", "-n", ns, "--replicas=5")
    _eventually(lambda: len(_running(cluster, ns, "app=web")) == 5)
    cluster.kubectl("scale", "deploy/web", "-n", ns, "--replicas=2")
    _eventually(lambda: len(_running(cluster, ns, "app=web")) == 2)
    cluster.kubectl("set", "image", "deploy/web", "-n", ns, "nginx=nginx:1.28")
    out = cluster.kubectl("rollout", "status", "deploy/web", "-n", ns, "--timeout=60s").stdout
    assert 'deployment "web" successfully rolled out' in out
    cluster.kubectl("rollout", "undo", "deploy/web", "-n", ns)
    cluster.kubectl("rollout", "status", "deploy/web", "-n", ns, "--timeout=60s")
    image = cluster.kubectl("get", "deploy/web", "-n", ns, "-o",
                            "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "nginx:1.27"
    # foreground deletion: the ReplicaSets and pods go before the Deployment
    cluster.kubectl("delete", "deploy/web", "-n", ns, "--cascade=foreground",
                    "--timeout=60s")
    assert cluster.kubectl("get", "rs,pods", "-n", ns, "-o", "name").stdout.strip() == ""


def test_job_with_parallelism_completes(cluster: KublingServer) -> None:
    cluster.kubectl("create", "namespace", "conv-job")
    cluster.kubectl("apply", "-n", "conv-job", "-f", "-", input="""
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: work, image: busybox}]
""")
    cluster.kubectl("wait", "-n", "conv-job", "--for=condition=complete", "job/batch",
                    "--timeout=60s")
    job = cluster.kubectl_yaml("get", "job", "batch", "-n", "conv-job")
    assert job["status"]["succeeded"] == 5


def test_daemonset_covers_every_node(cluster: KublingServer) -> None:
    cluster.kubectl("create", "namespace", "conv-ds")
    cluster.kubectl("apply", "-n", "conv-ds", "-f", "-", input="""
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: busybox}]
""")
    _eventually(lambda: len(_running(cluster, "conv-ds", "app=agent")) == 3)
    nodes = {p["spec"]["nodeName"] for p in _running(cluster, "conv-ds", "app=agent")}  # type: ignore[index]
    assert nodes == {"kubling-sim-0", "kubling-sim-1", "kubling-sim-2"}
    cluster.kubectl("rollout", "status", "ds/agent", "-n", "conv-ds", "--timeout=60s")


def test_statefulset_comes_up_in_order(cluster: KublingServer) -> None:
    cluster.kubectl("create", "namespace", "conv-sts")
    cluster.kubectl("apply", "-n", "conv-sts", "-f", "-", input="""
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: busybox}]
""")
    cluster.kubectl("rollout", "status", "sts/db", "-n", "conv-sts", "--timeout=60s")
    pods = _running(cluster, "conv-sts", "app=db")
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1", "db-2"]  # type: ignore[index]
    started = {p["metadata"]["name"]: p["metadata"]["creationTimestamp"] for p in pods}  # type: ignore[index]
    assert started["db-0"] <= started["db-1"] <= started["db-2"]


def test_namespace_deletion_removes_its_workloads(cluster: KublingServer) -> None:
    cluster.kubectl("create", "namespace", "conv-gone")
    cluster.kubectl("create", "deployment", "web", "-n", "conv-gone", "--image=nginx",
                    "--replicas=2")
    _eventually(lambda: len(_running(cluster, "conv-gone", "app=web")) == 2)
    cluster.kubectl("delete", "namespace", "conv-gone", "--timeout=60s")
    result = cluster.kubectl("get", "namespace", "conv-gone", check=False)
    assert 'namespaces "conv-gone" not found' in result.stderr
