"""The node lifecycle controller, in-process with a fake clock and short timings.

There is no kubelet: the test plays it, renewing the node's Lease and posting its Ready
condition, or falls silent to see the node marked Unknown, tainted and its pods evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import nodelifecycle
from tests.client.helpers import make_namespace, run
from tests.controllers.test_podgc import (
    advance_until,
    controller_running,
    create_pod,
    private_server,
    settle,
)
from tests.server_fixture import KublingServer

NODES = rest.lookup("v1", "nodes")
PODS = rest.lookup("v1", "pods")
LEASES = rest.lookup("coordination.k8s.io/v1", "leases")
NS = "lifecycle"
GRACE = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("nodelifecycle")) as started:
        yield started


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Kubelet:
    """What a node agent does for the controller: a Lease and a Ready condition."""

    def __init__(self, client: rest.Client, name: str) -> None:
        self.client = client
        self.name = name
        self.beats = 0

    async def register(self) -> None:
        await self.client.resource(NODES).create({"apiVersion": "v1", "kind": "Node",
                                                  "metadata": {"name": self.name}})
        await self.post_status("True")
        await self.client.resource(LEASES).create({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                     "renewTime": _now()}}, namespace="kube-node-lease")

    async def renew(self) -> None:
        await self.client.resource(LEASES).patch(self.name, {"spec": {"renewTime": _now()}},
                                                 namespace="kube-node-lease")

    async def post_status(self, ready: str) -> None:
        # Heartbeats are the kubelet's clock, which the controller never compares with
        # its own: a heartbeat only has to differ from the last one.
        self.beats += 1
        heartbeat = f"2030-01-01T00:00:{self.beats:02d}Z"
        await self.client.resource(NODES).patch(self.name, {"status": {"conditions": [
            {"type": "Ready", "status": ready, "reason": "KubeletReady",
             "message": "kubelet is posting ready status", "lastHeartbeatTime": heartbeat,
             "lastTransitionTime": heartbeat}]}}, type="strategic", subresource="status")


@contextlib.asynccontextmanager
async def healthy_node(client: rest.Client, name: str = "healthy") -> AsyncIterator[Kubelet]:
    """A node whose kubelet keeps renewing its Lease (in real time, so whatever the fake
    clock does): with one Ready node the cluster is not fully disrupted, and the controller
    taints failing nodes instead of suspecting itself (``node_disruption``). Fake time must
    move in steps well under the grace period, or the node looks silent between renewals."""
    kubelet = Kubelet(client, name)
    try:
        await kubelet.register()
    except rest.ApiError as err:
        if not rest.is_already_exists(err):
            raise
        await kubelet.post_status("True")

    async def renew() -> None:
        while True:
            await kubelet.renew()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(renew())
    try:
        yield kubelet
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _node(client: rest.Client, name: str) -> dict[str, Any]:
    node: dict[str, Any] = await client.resource(NODES).get(name)
    return node


def _ready(node: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


def _taints(node: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in node.get("spec", {}).get("taints") or []}


async def _pod(client: rest.Client, name: str) -> dict[str, Any] | None:
    try:
        pod: dict[str, Any] = await client.resource(PODS).get(name, namespace=NS)
    except rest.ApiError as err:
        if rest.is_not_found(err):
            return None
        raise
    return pod


async def _evicted(client: rest.Client, name: str) -> bool:
    pod = await _pod(client, name)
    return pod is None or bool(pod["metadata"].get("deletionTimestamp"))


async def _ready_pod(client: rest.Client, name: str, node: str, **spec: Any) -> None:
    await create_pod(client, NS, name, node=node, **spec)
    await client.resource(PODS).patch(name, {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}}, namespace=NS, subresource="status")


UNREACHABLE = {("node.kubernetes.io/unreachable", "NoSchedule"),
               ("node.kubernetes.io/unreachable", "NoExecute")}


def test_silent_node_is_tainted_and_its_pods_evicted(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, lambda ctx: nodelifecycle.NodeLifecycleController(
                ctx, node_monitor_grace_period=GRACE, node_startup_grace_period=20.0,
                node_monitor_period=1.0), clock) as (_, client):
            await make_namespace(client, NS)
            async with healthy_node(client):
                kubelet = Kubelet(client, "worker-1")
                await kubelet.register()
                await _ready_pod(client, "plain", "worker-1")  # the API server's 300 s
                await _ready_pod(client, "impatient", "worker-1", tolerations=[
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                     "effect": "NoExecute", "tolerationSeconds": 5}])
                await _ready_pod(client, "patient", "worker-1", tolerations=[
                    {"operator": "Exists", "effect": "NoExecute"}])
                await settle()

                # Renewals keep it healthy past the grace period.
                for _ in range(3):
                    clock.advance(GRACE / 2)
                    await kubelet.renew()
                    await settle(0.2)
                node = await _node(client, "worker-1")
                assert _ready(node)["status"] == "True" and not _taints(node)

                # Silence: Unknown after the grace period, tainted unreachable.
                async def unreachable() -> bool:
                    return _taints(await _node(client, "worker-1")) == UNREACHABLE

                took = await advance_until(clock, unreachable, step=1.0, limit=3 * GRACE)
                assert took >= GRACE
                node = await _node(client, "worker-1")
                ready = _ready(node)
                assert (ready["status"], ready["reason"], ready["message"]) == (
                    "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
                taint = next(t for t in node["spec"]["taints"] if t["effect"] == "NoExecute")
                assert taint.get("timeAdded")

                # Its pods are no longer Ready; the one tolerating 5 s goes after 5 s.
                pod = await _pod(client, "plain")
                assert pod is not None
                assert any(c["type"] == "Ready" and c["status"] == "False"
                           for c in pod["status"]["conditions"])
                took = await advance_until(clock, lambda: _evicted(client, "impatient"),
                                           step=1.0, limit=20.0)
                assert 4.0 <= took
                pod = await _pod(client, "impatient")
                if pod is not None:
                    assert any(c["type"] == "DisruptionTarget" and
                               c["reason"] == "DeletionByTaintManager"
                               for c in pod["status"]["conditions"])
                # The default 300 s toleration runs out later; an unbounded one never does.
                assert not await _evicted(client, "plain")
                took = await advance_until(clock, lambda: _evicted(client, "plain"),
                                           step=4.0, limit=400.0)
                assert took >= 280.0
                assert not await _evicted(client, "patient")

                # The kubelet is back: the taints go.
                await kubelet.renew()
                await kubelet.post_status("True")

                async def untainted() -> bool:
                    return not _taints(await _node(client, "worker-1"))

                await advance_until(clock, untainted, step=0.5, limit=5.0)

                # A NoExecute taint of the administrator's evicts intolerant pods at once.
                await _ready_pod(client, "intolerant", "worker-1")
                await client.resource(NODES).patch("worker-1", {"spec": {"taints": [
                    {"key": "dedicated", "value": "ops", "effect": "NoExecute"}]}})
                await advance_until(clock, lambda: _evicted(client, "intolerant"), step=0.0,
                                    limit=1.0)
                assert not await _evicted(client, "patient")

    run(scenario(), timeout=60)


def test_condition_and_unschedulable_taints(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, lambda ctx: nodelifecycle.NodeLifecycleController(
                ctx, node_monitor_grace_period=GRACE, node_startup_grace_period=20.0,
                node_monitor_period=1.0), clock) as (_, client):
            await client.resource(NODES).create({"apiVersion": "v1", "kind": "Node",
                                                 "metadata": {"name": "never-posted"}})
            # Two nodes stay alive (worker-2 keeps its Lease, whatever Ready it posts), so
            # the zone stays "normal" while the others fall silent.
            async with healthy_node(client), healthy_node(client, "worker-2") as kubelet:
                await _condition_taints(client, clock, kubelet)

    run(scenario(), timeout=40)


async def _condition_taints(client: rest.Client, clock: clocks.FakeClock,
                            kubelet: Kubelet) -> None:

    async def taints_are(name: str, want: set[tuple[str, str]]) -> bool:
        return _taints(await _node(client, name)) == want

    await kubelet.post_status("False")
    await advance_until(clock, lambda: taints_are("worker-2", {
        ("node.kubernetes.io/not-ready", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute")}), step=0.0, limit=1.0)
    await kubelet.post_status("True")
    await client.resource(NODES).patch("worker-2", {"spec": {"unschedulable": True}})
    await advance_until(clock, lambda: taints_are("worker-2", {
        ("node.kubernetes.io/unschedulable", "NoSchedule")}), step=0.0, limit=1.0)
    await client.resource(NODES).patch("worker-2", {"spec": {"unschedulable": None}})
    await advance_until(clock, lambda: taints_are("worker-2", set()), step=0.0,
                        limit=1.0)

    # A node that never posted status gets the startup grace period, then Unknown.
    took = await advance_until(clock, lambda: taints_are("never-posted", UNREACHABLE),
                               step=2.0, limit=60.0)
    assert took >= 10.0  # created just now: most of the 20 s startup grace is left
    ready = _ready(await _node(client, "never-posted"))
    assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusNeverUpdated")
