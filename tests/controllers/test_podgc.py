"""The pod garbage collector, in-process against a server that does not run it.

Time is a ``FakeClock``: the sweep period and the orphan quarantine pass when a test says.
This module also holds the small harness the other in-process controller tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubling.client import clock as clocks
from kubling.client import config, events, informer, rest
from kubling.controllers import manager, podgc
from tests.client.helpers import make_namespace, run
from tests.server_fixture import KublingServer, running_server

C = TypeVar("C", bound=manager.Controller)

PODS = rest.lookup("v1", "pods")
NODES = rest.lookup("v1", "nodes")

#: The controllers a private server runs: none of the ones under test here. The
#: serviceaccount controller makes each namespace's ``default`` account, without which
#: ServiceAccount admission refuses every pod, as upstream; the root-CA publisher gives
#: each namespace its ``kube-root-ca.crt`` (``make_namespace`` waits for it).
BACKGROUND_CONTROLLERS = "namespace,serviceaccount,root-ca-cert-publisher"


@contextlib.contextmanager
def private_server(tmp_path: Path) -> Iterator[KublingServer]:
    """A server with no scheduler and none of this package's controllers running."""
    with running_server(tmp_path / "data", extra_args=[
            "--controllers", BACKGROUND_CONTROLLERS, "--disable-scheduler"]) as server:
        yield server


@contextlib.asynccontextmanager
async def controller_running(server: KublingServer, build: Callable[[manager.ControllerContext], C],
                             clock: clocks.Clock) -> AsyncIterator[tuple[C, rest.Client]]:
    """Build a controller as the manager does, start its informers, and run it."""
    client = rest.Client(config.load_kubeconfig(server.kubeconfig))
    informers = informer.SharedInformerFactory(client)
    recorders: list[events.EventRecorder] = []

    def recorder_for(component: str) -> events.EventRecorder:
        recorders.append(events.EventRecorder(client, component))
        return recorders[-1]

    controller = build(manager.ControllerContext(client, informers, clock, recorder_for))
    informers.start()
    await informers.wait_for_sync(timeout=10)
    task = asyncio.create_task(controller.run(workers=2))
    try:
        yield controller, client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await informers.shutdown()
        for recorder in recorders:
            await recorder.close()
        await client.close()


async def advance_until(clock: clocks.FakeClock, check: Callable[[], Awaitable[bool]], *,
                        step: float, limit: float, real_timeout: float = 15.0) -> float:
    """Move fake time forward ``step`` at a time until ``check`` holds; return the fake
    seconds it took. Real time passes too, for the API round trips."""
    started = clock.monotonic()
    deadline = time.monotonic() + real_timeout
    while not await check():
        if clock.monotonic() - started > limit or time.monotonic() > deadline:
            raise AssertionError(f"not true after {clock.monotonic() - started:.0f} fake "
                                 f"seconds")
        clock.advance(step)
        await asyncio.sleep(0.05)
    return clock.monotonic() - started


async def settle(seconds: float = 0.5) -> None:
    """Let API round trips and watch events land (real time; the fake clock stands)."""
    await asyncio.sleep(seconds)


async def exists(client: rest.Client, namespace: str, name: str) -> bool:
    try:
        await client.resource(PODS).get(name, namespace=namespace)
    except rest.ApiError as err:
        if rest.is_not_found(err):
            return False
        raise
    return True


async def create_pod(client: rest.Client, namespace: str, name: str, *, node: str = "",
                     phase: str = "Running", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    pods = client.resource(PODS)
    await pods.create(body, namespace=namespace)
    pod = await pods.patch(name, {"status": {"phase": phase}}, namespace=namespace,
                           subresource="status")
    return pod


async def create_node(client: rest.Client, name: str, *, ready: str = "True",
                      taints: list[dict[str, Any]] | None = None) -> None:
    nodes = client.resource(NODES)
    await nodes.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                        "spec": {"taints": taints} if taints else {}})
    await nodes.patch(name, {"status": {"conditions": [
        {"type": "Ready", "status": ready, "reason": "Test",
         "lastHeartbeatTime": "2020-01-01T00:00:00Z"}]}}, subresource="status")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("podgc")) as started:
        yield started


def test_orphaned_pods_go_after_the_quarantine(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, lambda ctx: podgc.PodGCController(
                ctx, gc_check_period=5.0, quarantine_time=40.0), clock) as (_, client):
            await make_namespace(client, "podgc-orphans")
            await create_node(client, "podgc-node-a")
            await create_pod(client, "podgc-orphans", "bound", node="podgc-node-a")
            await create_pod(client, "podgc-orphans", "elsewhere", node="podgc-node-b-stays")
            await create_node(client, "podgc-node-b-stays")
            await create_pod(client, "podgc-orphans", "pending")
            await client.resource(NODES).delete("podgc-node-a")
            await settle()
            # Within the quarantine the pod stays (several sweeps run meanwhile).
            for _ in range(7):
                clock.advance(5.0)
                await settle(0.1)
            assert await exists(client, "podgc-orphans", "bound")
            took = await advance_until(
                clock, lambda: _gone(client, "podgc-orphans", "bound"), step=5.0, limit=60.0)
            assert took + 35.0 >= 40.0
            assert await exists(client, "podgc-orphans", "elsewhere")
            assert await exists(client, "podgc-orphans", "pending")

    run(scenario(), timeout=40)


async def _gone(client: rest.Client, namespace: str, name: str) -> bool:
    return not await exists(client, namespace, name)


def test_terminated_pods_beyond_the_threshold_go_oldest_first(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, lambda ctx: podgc.PodGCController(
                ctx, terminated_pod_gc_threshold=3, gc_check_period=5.0), clock) as (_, client):
            await make_namespace(client, "podgc-terminated")
            for name in ("done-a", "done-b", "done-c"):
                await create_pod(client, "podgc-terminated", name, phase="Succeeded")
            await create_pod(client, "podgc-terminated", "failed-d", phase="Failed")
            await create_pod(client, "podgc-terminated", "running-e")
            # Four terminated pods (others' namespaces have none) against a threshold of 3.
            await advance_until(clock, lambda: _gone(client, "podgc-terminated", "done-a"),
                                step=5.0, limit=30.0)
            await settle()
            for name in ("done-b", "done-c", "failed-d", "running-e"):
                assert await exists(client, "podgc-terminated", name), name

    run(scenario(), timeout=30)


def test_terminating_pods_on_out_of_service_nodes_are_force_deleted(
        server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, lambda ctx: podgc.PodGCController(
                ctx, gc_check_period=5.0), clock) as (_, client):
            ns = "podgc-out-of-service"
            await make_namespace(client, ns)
            await create_node(client, "podgc-down", ready="False", taints=[
                {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown",
                 "effect": "NoExecute"}])
            await create_node(client, "podgc-up")
            await create_pod(client, ns, "stuck", node="podgc-down")
            await create_pod(client, ns, "draining", node="podgc-up")
            # Bound and running: a plain delete only marks them (a kubelet would finish).
            await client.resource(PODS).delete("stuck", namespace=ns)
            await client.resource(PODS).delete("draining", namespace=ns)
            assert await exists(client, ns, "stuck")
            await advance_until(clock, lambda: _gone(client, ns, "stuck"), step=5.0,
                                limit=30.0)
            assert await exists(client, ns, "draining")

    run(scenario(), timeout=30)
