"""The disruption controller, in-process against a server whose own ReplicaSet and
Deployment controllers are off, so that the test's hand-made "deployment" stays as built:
a Deployment owning a ReplicaSet owning pods, whose readiness the test sets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import disruption
from tests.client.helpers import make_namespace, run
from tests.controllers.test_podgc import controller_running, private_server
from tests.server_fixture import KublingServer

NS = "pdb-status"
PODS = rest.lookup("v1", "pods")
LABELS = {"app": "web"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("disruption")) as started:
        yield started


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"], "controller": True}


async def _deployment(client: rest.Client, replicas: int) -> dict[str, Any]:
    template = {"metadata": {"labels": LABELS},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    deployment = await client.resource(disruption.DEPLOYMENTS).create({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": LABELS},
                 "template": template}}, namespace=NS)
    replica_set = await client.resource(disruption.REPLICA_SETS).create({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-5d4f8", "ownerReferences": [_owner(
            {"apiVersion": "apps/v1", "kind": "Deployment", **deployment})]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": LABELS},
                 "template": template}}, namespace=NS)
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", **replica_set}


async def _pod(client: rest.Client, name: str, owner: dict[str, Any] | None,
               ready: bool) -> None:
    md: dict[str, Any] = {"name": name, "labels": LABELS}
    if owner is not None:
        md["ownerReferences"] = [_owner(owner)]
    await client.resource(PODS).create({"apiVersion": "v1", "kind": "Pod", "metadata": md,
                                        "spec": {"containers": [{"name": "c",
                                                                 "image": "nginx"}]}},
                                       namespace=NS)
    await _set_ready(client, name, ready)


async def _set_ready(client: rest.Client, name: str, ready: bool) -> None:
    await client.resource(PODS).patch(name, {"status": {
        "phase": "Running", "conditions": [{"type": "Ready",
                                            "status": "True" if ready else "False"}]}},
        namespace=NS, subresource="status")


async def _pdb(client: rest.Client, name: str, **spec: Any) -> None:
    await client.resource(disruption.PDBS).create({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": LABELS}, **spec}}, namespace=NS)


async def _status_is(client: rest.Client, name: str, want: dict[str, Any],
                     timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pdb = await client.resource(disruption.PDBS).get(name, namespace=NS)
        status: dict[str, Any] = pdb.get("status") or {}
        seen = {k: status.get(k) for k in want if k != "reason"}
        condition: dict[str, Any] = next((c for c in status.get("conditions") or []
                          if c["type"] == "DisruptionAllowed"), {})
        seen["reason"] = condition.get("reason")
        if seen == want:
            assert status["observedGeneration"] == pdb["metadata"]["generation"]
            assert condition["status"] == ("True" if status["disruptionsAllowed"] else "False")
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: status {seen}, wanted {want}")
        await asyncio.sleep(0.05)


def _numbers(healthy: int, desired: int, expected: int, allowed: int) -> dict[str, Any]:
    return {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            "disruptionsAllowed": allowed,
            "reason": "SufficientPods" if allowed else "InsufficientPods"}


def test_budget_status_follows_pods_and_scale(server: KublingServer) -> None:
    async def scenario() -> None:
        async with controller_running(server, disruption.DisruptionController,
                                      clocks.REAL) as (_, client):
            await make_namespace(client, NS)
            replica_set = await _deployment(client, replicas=4)
            for i in range(3):
                await _pod(client, f"web-{i}", replica_set, ready=i < 2)
            await _pdb(client, "max-one", maxUnavailable=1)
            await _pdb(client, "half", minAvailable="50%")
            await _pdb(client, "two", minAvailable=2)
            await _pdb(client, "none-selected", minAvailable=1, selector={
                "matchLabels": {"app": "nothing"}})

            # The Deployment wants 4: 3 must stay healthy and only 2 are.
            await _status_is(client, "max-one", _numbers(2, 3, 4, 0))
            await _status_is(client, "half", _numbers(2, 2, 4, 0))
            await _status_is(client, "two", _numbers(2, 2, 3, 0))
            await _status_is(client, "none-selected", _numbers(0, 1, 0, 0))

            await _set_ready(client, "web-2", True)
            await _status_is(client, "two", _numbers(3, 2, 3, 1))
            await _status_is(client, "half", _numbers(3, 2, 4, 1))
            await _status_is(client, "max-one", _numbers(3, 3, 4, 0))

            # Scaling the Deployment down to the 3 pods there are frees one disruption.
            await client.resource(disruption.DEPLOYMENTS).patch(
                "web", {"spec": {"replicas": 3}}, namespace=NS)
            await _status_is(client, "max-one", _numbers(3, 2, 3, 1))

            # A pod being deleted is not healthy.
            await client.resource(PODS).patch("web-0", {"metadata": {
                "finalizers": ["example.com/hold"]}}, namespace=NS)
            await client.resource(PODS).delete("web-0", namespace=NS)
            await _status_is(client, "max-one", _numbers(2, 2, 3, 0))
            await client.resource(PODS).patch("web-0", {"metadata": {"finalizers": None}},
                                              namespace=NS)

            # An unowned pod cannot be scaled: a percentage budget still counts the others.
            await _pod(client, "stray", None, ready=True)
            await _status_is(client, "half", _numbers(3, 2, 3, 1))

    run(scenario(), timeout=40)


def test_budget_fails_safe_when_a_pods_controller_is_missing(server: KublingServer) -> None:
    async def scenario() -> None:
        async with controller_running(server, disruption.DisruptionController,
                                      clocks.REAL) as (_, client):
            ns = "pdb-orphans"
            await make_namespace(client, ns)
            ghost = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                     "metadata": {"name": "gone", "uid": "0b9a9c6e-0000-4000-8000-000000000000"}}
            await client.resource(PODS).create({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"app": "ghost"},
                             "ownerReferences": [_owner(ghost)]},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}, namespace=ns)
            await client.resource(disruption.PDBS).create({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "ghost"},
                "spec": {"selector": {"matchLabels": {"app": "ghost"}},
                         "maxUnavailable": 1}}, namespace=ns)
            deadline = time.monotonic() + 10
            while True:
                pdb = await client.resource(disruption.PDBS).get("ghost", namespace=ns)
                conditions = (pdb.get("status") or {}).get("conditions") or []
                if conditions:
                    break
                assert time.monotonic() < deadline, "no status"
                await asyncio.sleep(0.05)
            assert pdb["status"]["disruptionsAllowed"] == 0
            assert conditions[0]["reason"] == "SyncFailed"
            assert 'found no controllers for pod "p"' in conditions[0]["message"]

    run(scenario(), timeout=20)
