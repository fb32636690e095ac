"""The eviction subresource spends a PodDisruptionBudget's allowed disruptions (429 when
there are none), as upstream's EvictionREST."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.server_fixture import running_server


def _running_pod(core: client.CoreV1Api, name: str) -> None:
    core.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "db"}),
        spec=client.V1PodSpec(node_name="n1", containers=[
            client.V1Container(name="c", image="busybox")])))
    core.patch_namespaced_pod_status(name, "default", {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})


def _evict(core: client.CoreV1Api, name: str) -> None:
    core.create_namespaced_pod_eviction(name, "default", client.V1Eviction(
        metadata=client.V1ObjectMeta(name=name, namespace="default")))


def test_eviction_honours_the_disruption_budget(tmp_path: Path) -> None:
    # Only the serviceaccount controller (pods need their ``default`` account): the test
    # plays the disruption controller by writing the status.
    with running_server(tmp_path / "data",
                        extra_args=["--controllers", "serviceaccount"]) as server:
        api = server.api_client()
        core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
        for name in ("db-0", "db-1", "db-2"):
            _running_pod(core, name)
        policy.create_namespaced_pod_disruption_budget("default", client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="db"),
            spec=client.V1PodDisruptionBudgetSpec(
                min_available=2, selector=client.V1LabelSelector(match_labels={"app": "db"}))))
        policy.patch_namespaced_pod_disruption_budget_status("db", "default", {"status": {
            "observedGeneration": 1, "currentHealthy": 3, "desiredHealthy": 2,
            "expectedPods": 3, "disruptionsAllowed": 1}})

        _evict(core, "db-0")  # allowed: spends the one disruption
        pdb = policy.read_namespaced_pod_disruption_budget("db", "default")
        assert pdb.status.disruptions_allowed == 0
        assert "db-0" in (pdb.status.disrupted_pods or {})

        with pytest.raises(ApiException) as err:
            _evict(core, "db-1")
        assert err.value.status == 429
        assert "Cannot evict pod as it would violate the pod's disruption budget." in (
            err.value.body)
        assert core.read_namespaced_pod("db-1", "default").metadata.deletion_timestamp is None
