"""The ReplicaSet and ReplicationController controllers.

Most tests run against the session server, which runs these controllers; the ones that
need control over time or over the informer run the controller in-process against a
private server that does not. There is no kubelet: ``mark_ready`` writes pod status as a
node would. Pod templates name a scheduler that does not exist, so no scheduler binds the
pods (which would make their deletion graceful) whatever nodes other tests made.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from kubling.api import meta
from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import podcontrol, replicaset
from tests.client.helpers import make_namespace, run
from tests.controllers.test_podgc import controller_running, private_server
from tests.server_fixture import KublingServer

PODS = rest.lookup("v1", "pods")
EVENTS = rest.lookup("v1", "events")
REPLICASETS = rest.lookup("apps/v1", "replicasets")
RCS = rest.lookup("v1", "replicationcontrollers")
NO_SCHEDULER = "kubling-tests-unscheduled"

Obj = dict[str, Any]


# -- helpers (the Deployment tests use them too) ------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod_template(labels: dict[str, str], image: str = "nginx") -> Obj:
    return {"metadata": {"labels": dict(labels)},
            "spec": {"schedulerName": NO_SCHEDULER,
                     "containers": [{"name": "c", "image": image}]}}


def replica_set(name: str, namespace: str, replicas: int, **spec: Any) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": pod_template(labels), **spec}}


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0,
                     tick: Callable[[], None] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy (calling ``tick`` between polls)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        if tick is not None:
            tick()
        await asyncio.sleep(0.05)


async def retrying_patch(resource: rest.Resource, name: str, body: Obj, *, namespace: str,
                         type: rest.PatchType = "merge", subresource: str = "") -> Obj:
    """A user's patch (no resourceVersion), retried on 409 Conflict: kubling's API server
    answers a patch that races another write (a controller's status update) with one,
    where upstream re-applies the patch to the fresh object."""
    for attempt in range(10):
        try:
            return await resource.patch(name, body, namespace=namespace, type=type,
                                        subresource=subresource)
        except rest.ApiError as err:
            if not rest.is_conflict(err) or attempt == 9:
                raise
            await asyncio.sleep(0.02)
    raise AssertionError("unreachable")


async def list_pods(client: rest.Client, namespace: str, selector: str = "") -> list[Obj]:
    """The active pods (not being deleted) of a namespace, oldest name first."""
    page = await client.resource(PODS).list(namespace=namespace, label_selector=selector)
    pods = [p for p in page.get("items") or [] if podcontrol.is_pod_active(p)]
    return sorted(pods, key=meta.name_of)


async def mark_ready(client: rest.Client, namespace: str, selector: str = "", *,
                     pods: list[Obj] | None = None) -> int:
    """Make pods Running and Ready, as a kubelet would; returns how many changed."""
    targets = pods if pods is not None else await list_pods(client, namespace, selector)
    changed = 0
    for pod in targets:
        if podcontrol.is_pod_ready(pod):
            continue
        status = {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": meta.now()}]}
        try:
            await retrying_patch(client.resource(PODS), meta.name_of(pod),
                                 {"status": status}, namespace=namespace,
                                 subresource="status")
            changed += 1
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise
    return changed


async def event_messages(client: rest.Client, namespace: str, name: str) -> list[str]:
    page = await client.resource(EVENTS).list(
        namespace=namespace, field_selector=f"involvedObject.name={name}")
    return [f"{e.get('reason')}: {e.get('message')}" for e in page.get("items") or []]


def with_client(server: KublingServer,
                scenario: Callable[[rest.Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(server.kubeconfig) as client:
            await scenario(client)
    run(main(), timeout=60)


# -- pure parts ------------------------------------------------------------------------------


def _pod(name: str, *, node: str = "", phase: str = "Pending", ready: str | None = None,
         created: str = "2024-01-01T00:00:00Z", **annotations: str) -> Obj:
    status: Obj = {"phase": phase}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True",
                                 "lastTransitionTime": ready}]
    return {"metadata": {"name": name, "uid": name, "creationTimestamp": created,
                         "annotations": annotations},
            "spec": {"nodeName": node} if node else {}, "status": status}


def test_pods_to_delete_ranks_least_useful_first() -> None:
    now = podcontrol.parse_time("2024-01-02T00:00:00Z")
    assert now is not None
    ready_old = _pod("ready-old", node="n1", phase="Running", ready="2024-01-01T00:00:00Z")
    ready_new = _pod("ready-new", node="n1", phase="Running", ready="2024-01-01T23:59:00Z")
    running = _pod("running", node="n1", phase="Running")
    unknown = _pod("unknown", node="n1", phase="Unknown")
    pending = _pod("pending", node="n1")
    unassigned = _pod("unassigned", phase="Running")
    pods = [ready_old, ready_new, running, unknown, pending, unassigned]
    order = [meta.name_of(p) for p in podcontrol.pods_to_delete(pods, pods, len(pods) - 1, now)]
    assert order == ["unassigned", "pending", "unknown", "running", "ready-new"]
    # A lower deletion cost goes before anything of the same readiness.
    cheap = _pod("cheap", node="n1", phase="Running", ready="2024-01-01T00:00:00Z",
                 **{podcontrol.DELETION_COST_ANNOTATION: "-10"})
    chosen = podcontrol.pods_to_delete([ready_new, cheap], [], 1, now)
    assert [meta.name_of(p) for p in chosen] == ["cheap"]
    # Pods doubled up on a node go before a pod alone on its node.
    alone = _pod("alone", node="n2", phase="Running", ready="2024-01-01T00:00:00Z")
    crowded = _pod("crowded", node="n1", phase="Running", ready="2024-01-01T00:00:00Z")
    chosen = podcontrol.pods_to_delete([alone, crowded], [alone, crowded, ready_old], 1, now)
    assert [meta.name_of(p) for p in chosen] == ["crowded"]


def test_expectations_block_until_observed_or_expired() -> None:
    clock = clocks.FakeClock()
    exp = podcontrol.Expectations(clock)
    assert exp.satisfied("ns/rs")
    exp.expect_creations("ns/rs", 2)
    exp.creation_observed("ns/rs")
    assert not exp.satisfied("ns/rs")
    exp.creation_observed("ns/rs")
    assert exp.satisfied("ns/rs")
    exp.expect_deletions("ns/rs", ["ns/a", "ns/b"])
    exp.deletion_observed("ns/rs", "ns/a")
    exp.deletion_observed("ns/rs", "ns/a")  # seen terminating, then deleted: counted once
    assert not exp.satisfied("ns/rs") and exp.pending("ns/rs") == (0, 1)
    clock.advance(podcontrol.EXPECTATIONS_TIMEOUT + 1)
    assert exp.satisfied("ns/rs")  # a lost event must not block forever


def test_slow_start_batches_double_and_stop_at_the_first_failure() -> None:
    calls: list[int] = []

    async def main() -> None:
        async def ok() -> None:
            calls.append(1)

        assert await podcontrol.slow_start_batch(10, 1, ok) == (10, None)
        calls.clear()

        async def failing() -> None:
            calls.append(1)
            if len(calls) > 4:
                raise RuntimeError("quota")

        successes, err = await podcontrol.slow_start_batch(20, 1, failing)
        assert isinstance(err, RuntimeError)
        assert len(calls) == 1 + 2 + 4  # the batch of 4 failed partly; no batch of 8 ran
        assert successes == 4

    run(main())


# -- against the session server --------------------------------------------------------------


def test_scale_up_and_down_with_names_labels_owner_and_events(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("rs-scale"), "web"
        await make_namespace(client, ns)
        rss = client.resource(REPLICASETS)
        rs = await rss.create(replica_set(name, ns, 3), namespace=ns)
        pods = await eventually(lambda: _count(client, ns, 3))
        for pod in pods:
            md = pod["metadata"]
            assert md["name"].startswith("web-") and len(md["name"]) == len("web-") + 5
            assert md["labels"] == {"app": name}
            assert md["ownerReferences"] == [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name,
                "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        await eventually(lambda: _status_is(client, ns, name, replicas=3,
                                            fullyLabeledReplicas=3, observedGeneration=1))
        messages = await eventually(lambda: _events(client, ns, name, "SuccessfulCreate", 3))
        assert f"SuccessfulCreate: Created pod: {meta.name_of(pods[0])}" in messages

        await retrying_patch(rss, name, {"spec": {"replicas": 5}}, namespace=ns)
        await eventually(lambda: _count(client, ns, 5))
        await retrying_patch(rss, name, {"spec": {"replicas": 1}}, namespace=ns)
        await eventually(lambda: _count(client, ns, 1))
        await eventually(lambda: _status_is(client, ns, name, replicas=1, observedGeneration=3))
        assert any(m.startswith("SuccessfulDelete: Deleted pod: web-")
                   for m in await event_messages(client, ns, name))

    with_client(kubling, scenario)


def test_adopts_orphans_and_releases_pods_that_stop_matching(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("rs-adopt"), "adopter"
        await make_namespace(client, ns)
        orphan = {"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "orphan", "namespace": ns, "labels": {"app": name}},
                  "spec": pod_template({})["spec"]}
        await client.resource(PODS).create(orphan, namespace=ns)
        rs = await client.resource(REPLICASETS).create(replica_set(name, ns, 2), namespace=ns)
        pods = await eventually(lambda: _count(client, ns, 2))
        assert "orphan" in [meta.name_of(p) for p in pods]  # adopted: only one was created
        adopted = await client.resource(PODS).get("orphan", namespace=ns)
        ref = adopted["metadata"]["ownerReferences"][0]
        assert (ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
            rs["metadata"]["uid"], True, True)

        await retrying_patch(client.resource(PODS), "orphan",
                             {"metadata": {"labels": {"app": "other"}}}, namespace=ns)

        async def released() -> bool:
            pod = await client.resource(PODS).get("orphan", namespace=ns)
            return not pod["metadata"].get("ownerReferences")

        await eventually(released)
        replacement = await eventually(lambda: _count(client, ns, 2, f"app={name}"))
        assert "orphan" not in [meta.name_of(p) for p in replacement]

    with_client(kubling, scenario)


def test_scale_down_deletes_the_least_ready_pods_first(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("rs-rank"), "ranked"
        await make_namespace(client, ns)
        rss = client.resource(REPLICASETS)
        await rss.create(replica_set(name, ns, 4), namespace=ns)
        pods = await eventually(lambda: _count(client, ns, 4))
        ready = pods[:2]
        await mark_ready(client, ns, pods=ready)
        await eventually(lambda: _status_is(client, ns, name, readyReplicas=2))
        await retrying_patch(rss, name, {"spec": {"replicas": 2}}, namespace=ns)
        left = await eventually(lambda: _count(client, ns, 2))
        assert sorted(meta.name_of(p) for p in left) == sorted(meta.name_of(p) for p in ready)

    with_client(kubling, scenario)


def test_a_burst_of_syncs_never_creates_too_many_pods(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("rs-burst"), "burst"
        await make_namespace(client, ns)
        rss = client.resource(REPLICASETS)
        await rss.create(replica_set(name, ns, 30), namespace=ns)
        most = 0

        async def poke_and_count() -> bool:
            nonlocal most
            # Every write is an event, hence another reconcile while creations are in flight.
            await retrying_patch(rss, name, {"metadata": {"annotations": {
                "poke": str(time.time())}}}, namespace=ns)
            count = len(await list_pods(client, ns))
            most = max(most, count)
            return count == 30

        await eventually(poke_and_count, timeout=20)
        await asyncio.sleep(0.5)
        assert len(await list_pods(client, ns)) == 30
        assert most == 30

    with_client(kubling, scenario)


def test_replica_failure_condition_on_create_errors(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("rs-fail"), "failing"
        await make_namespace(client, ns)
        body = replica_set(name, ns, 2)
        # Template metadata is not validated as object metadata, a pod's is: every create
        # of this template fails validation.
        body["spec"]["template"]["metadata"]["finalizers"] = ["a/b/c"]
        rss = client.resource(REPLICASETS)
        await rss.create(body, namespace=ns)

        async def failed() -> Obj | None:
            rs = await rss.get(name, namespace=ns)
            return next((c for c in rs.get("status", {}).get("conditions") or []
                         if c["type"] == "ReplicaFailure"), None)

        cond = await eventually(failed)
        assert (cond["status"], cond["reason"]) == ("True", "FailedCreate")
        assert "is invalid" in cond["message"]
        messages = await event_messages(client, ns, name)
        assert any(m.startswith("FailedCreate: Error creating: Pod") for m in messages)
        # Fixed template: pods appear and the condition goes away.
        await retrying_patch(rss, name, {"spec": {"template": {"metadata": {
            "finalizers": None}}}}, namespace=ns)
        await eventually(lambda: _count(client, ns, 2))
        await eventually(lambda: _no_failure(client, ns, name))

    with_client(kubling, scenario)


def test_replication_controller_keeps_its_replicas(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("rc"), "legacy"
        await make_namespace(client, ns)
        body = {"apiVersion": "v1", "kind": "ReplicationController",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": 2, "template": pod_template({"app": name})}}
        rc = await client.resource(RCS).create(body, namespace=ns)
        pods = await eventually(lambda: _count(client, ns, 2))
        ref = pods[0]["metadata"]["ownerReferences"][0]
        assert (ref["apiVersion"], ref["kind"], ref["uid"]) == (
            "v1", "ReplicationController", rc["metadata"]["uid"])
        await mark_ready(client, ns)

        async def status() -> bool:
            got = (await client.resource(RCS).get(name, namespace=ns)).get("status") or {}
            return (got.get("readyReplicas"), got.get("availableReplicas")) == (2, 2)

        await eventually(status)
        await client.resource(PODS).delete(meta.name_of(pods[0]), namespace=ns)
        again = await eventually(lambda: _count(client, ns, 2))
        assert meta.name_of(pods[0]) not in [meta.name_of(p) for p in again]

    with_client(kubling, scenario)


async def _count(client: rest.Client, ns: str, want: int, selector: str = "") -> list[Obj]:
    pods = await list_pods(client, ns, selector)
    return pods if len(pods) == want else []


async def _status_is(client: rest.Client, ns: str, name: str, **want: int) -> bool:
    status = (await client.resource(REPLICASETS).get(name, namespace=ns)).get("status") or {}
    return all(status.get(k, 0) == v for k, v in want.items())


async def _events(client: rest.Client, ns: str, name: str, reason: str,
                  count: int) -> list[str]:
    messages = await event_messages(client, ns, name)
    return messages if sum(m.startswith(reason) for m in messages) >= count else []


async def _no_failure(client: rest.Client, ns: str, name: str) -> bool:
    rs = await client.resource(REPLICASETS).get(name, namespace=ns)
    return not (rs.get("status") or {}).get("conditions")


# -- in-process, against a server that does not run the controller --------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("replicaset")) as started:
        yield started


def test_expectations_stop_a_second_reconcile_before_the_cache_catches_up(
        server: KublingServer) -> None:
    async def scenario() -> None:
        clock = clocks.FakeClock()
        async with controller_running(server, replicaset.ReplicaSetController,
                                      clock) as (ctl, client):
            ctl.queue.shut_down()  # the test calls reconcile itself
            ns, name = "rs-expect", "exp"
            await make_namespace(client, ns)
            await client.resource(REPLICASETS).create(replica_set(name, ns, 5), namespace=ns)
            key = f"{ns}/{name}"
            await eventually(lambda: _cached(ctl, key))
            await ctl.pod_informer.stop()  # the cache will never show the new pods
            await ctl.reconcile(key)
            assert ctl.expectations.pending(key) == (5, 0)
            await ctl.reconcile(key)  # the cache still shows no pods: must not create more
            await ctl.reconcile(key)
            assert len(await list_pods(client, ns)) == 5
            # Once the expectation is too old to trust, the controller acts on its cache.
            clock.advance(podcontrol.EXPECTATIONS_TIMEOUT + 1)
            await ctl.reconcile(key)
            assert len(await list_pods(client, ns)) == 10

    run(scenario(), timeout=30)


def test_available_replicas_wait_for_min_ready_seconds(server: KublingServer) -> None:
    async def scenario() -> None:
        clock = clocks.FakeClock()
        async with controller_running(server, replicaset.ReplicaSetController,
                                      clock) as (_, client):
            ns, name = "rs-minready", "slow"
            await make_namespace(client, ns)
            await client.resource(REPLICASETS).create(
                replica_set(name, ns, 2, minReadySeconds=30), namespace=ns)
            await eventually(lambda: _count(client, ns, 2))
            await mark_ready(client, ns)
            await eventually(lambda: _status_is(client, ns, name, readyReplicas=2,
                                                availableReplicas=0))
            await asyncio.sleep(0.3)
            assert await _status_is(client, ns, name, availableReplicas=0)
            clock.advance(40)  # past minReadySeconds: the requeued sync counts them
            await eventually(lambda: _status_is(client, ns, name, readyReplicas=2,
                                                availableReplicas=2),
                             tick=lambda: clock.advance(0.01))

    run(scenario(), timeout=30)


async def _cached(ctl: replicaset.ReplicaSetController, key: str) -> bool:
    return ctl.owner_informer.indexer.get(key) is not None
