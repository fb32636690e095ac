"""The garbage collector: background, foreground and orphan cascades, dangling owners.

End-to-end tests use ConfigMaps owning ConfigMaps on the session server (any kind may own
any other; no other controller touches these). The graph is also checked on its own, and
one in-process test runs the collector with a fake clock to show that a custom resource
defined after it started is covered once discovery is read again.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubling.api.resources import ResourceType
from kubling.client import config, events, informer, rest
from kubling.client.clock import FakeClock
from kubling.controllers import garbagecollector, gc_graph, manager
from tests.client.helpers import eventually, settle
from tests.server_fixture import KublingServer, running_server


def _eventually(check: Callable[[], Any], *, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def _namespace(server: KublingServer) -> str:
    name = "gc-" + uuid.uuid4().hex[:8]
    server.kubectl("create", "namespace", name)
    return name


def _configmap(server: KublingServer, ns: str, name: str, *, owner: dict[str, Any] | None = None,
               block: bool = False, finalizers: list[str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if owner is not None:
        md["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                  "name": owner["metadata"]["name"],
                                  "uid": owner["metadata"]["uid"],
                                  "blockOwnerDeletion": block}]
    if finalizers:
        md["finalizers"] = finalizers
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": md})
    created: dict[str, Any] = json.loads(
        server.kubectl("create", "-n", ns, "-o", "json", "-f", "-", input=body).stdout)
    return created


def _exists(server: KublingServer, ns: str, name: str) -> bool:
    return server.kubectl("get", "configmap", name, "-n", ns, check=False).returncode == 0


def _get(server: KublingServer, ns: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = server.kubectl_yaml("get", "configmap", name, "-n", ns)
    return got


def test_background_deletion_collects_dependents(kubling: KublingServer) -> None:
    ns = _namespace(kubling)
    owner = _configmap(kubling, ns, "owner")
    child = _configmap(kubling, ns, "child", owner=owner)
    _configmap(kubling, ns, "grandchild", owner=child)
    kubling.kubectl("delete", "configmap", "owner", "-n", ns)  # background: returns at once
    _eventually(lambda: not _exists(kubling, ns, "child") and not _exists(kubling, ns, "grandchild"))


def test_foreground_deletion_waits_for_dependents(kubling: KublingServer) -> None:
    ns = _namespace(kubling)
    owner = _configmap(kubling, ns, "owner")
    _configmap(kubling, ns, "child", owner=owner, block=True)
    out = kubling.kubectl("delete", "configmap", "owner", "-n", ns, "--cascade=foreground",
                          timeout=30).stdout
    assert 'configmap "owner" deleted' in out
    assert not _exists(kubling, ns, "owner") and not _exists(kubling, ns, "child")

    # A held dependent shows the order: the owner stays until the dependent has gone.
    owner = _configmap(kubling, ns, "owner2")
    _configmap(kubling, ns, "held", owner=owner, block=True, finalizers=["example.com/hold"])
    kubling.kubectl("delete", "configmap", "owner2", "-n", ns, "--cascade=foreground",
                    "--wait=false")
    _eventually(lambda: _get(kubling, ns, "held")["metadata"].get("deletionTimestamp"))
    time.sleep(0.3)
    waiting = _get(kubling, ns, "owner2")
    assert waiting["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert waiting["metadata"]["deletionTimestamp"]
    kubling.kubectl("patch", "configmap", "held", "-n", ns, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}')
    _eventually(lambda: not _exists(kubling, ns, "owner2"))
    assert not _exists(kubling, ns, "held")


def test_orphan_deletion_leaves_dependents_without_the_reference(kubling: KublingServer) -> None:
    ns = _namespace(kubling)
    owner = _configmap(kubling, ns, "owner")
    other = _configmap(kubling, ns, "other")
    child = _configmap(kubling, ns, "child", owner=owner, block=True)
    # A second owner, added by patch, must survive the orphaning of the first.
    refs = child["metadata"]["ownerReferences"] + [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "other",
         "uid": other["metadata"]["uid"]}]
    kubling.kubectl("patch", "configmap", "child", "-n", ns, "--type=merge",
                    "-p", json.dumps({"metadata": {"ownerReferences": refs}}))
    out = kubling.kubectl("delete", "configmap", "owner", "-n", ns, "--cascade=orphan",
                          timeout=30).stdout
    assert 'configmap "owner" deleted' in out
    assert not _exists(kubling, ns, "owner")
    left = _get(kubling, ns, "child")
    assert [r["name"] for r in left["metadata"]["ownerReferences"]] == ["other"]
    time.sleep(0.3)
    assert _exists(kubling, ns, "child")  # still owned by "other": not collected


def test_dangling_owner_references_are_collected(kubling: KublingServer) -> None:
    ns = _namespace(kubling)
    ghost = {"metadata": {"name": "ghost", "uid": str(uuid.uuid4())}}
    _configmap(kubling, ns, "orphaned", owner=ghost)
    _eventually(lambda: not _exists(kubling, ns, "orphaned"))

    # The owner's name exists, but with another uid: still dangling.
    _configmap(kubling, ns, "impostor")
    _configmap(kubling, ns, "misled",
               owner={"metadata": {"name": "impostor", "uid": str(uuid.uuid4())}})
    _eventually(lambda: not _exists(kubling, ns, "misled"))
    assert _exists(kubling, ns, "impostor")

    # With a live owner too, only the dangling reference goes.
    alive = _configmap(kubling, ns, "alive")
    mixed = _configmap(kubling, ns, "mixed", owner=alive)
    refs = mixed["metadata"]["ownerReferences"] + [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": str(uuid.uuid4())}]
    kubling.kubectl("patch", "configmap", "mixed", "-n", ns, "--type=merge",
                    "-p", json.dumps({"metadata": {"ownerReferences": refs}}))
    _eventually(lambda: [r["name"] for r in _get(kubling, ns, "mixed")["metadata"]
                         ["ownerReferences"]] == ["alive"])


# -- the graph on its own ---------------------------------------------------------------------


def _obj(uid: str, name: str, *owners: gc_graph.OwnerRef, finalizers: tuple[str, ...] = (),
         deleting: bool = False) -> tuple[gc_graph.ObjectRef, dict[str, Any]]:
    md: dict[str, Any] = {"uid": uid, "name": name, "namespace": "ns",
                          "ownerReferences": [
                              {"uid": o.uid, "apiVersion": o.api_version, "kind": o.kind,
                               "name": o.name, "blockOwnerDeletion": o.block_owner_deletion}
                              for o in owners],
                          "finalizers": list(finalizers)}
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return gc_graph.ObjectRef(uid, "v1", "ConfigMap", name, "ns"), {"metadata": md}


def _owner(uid: str, name: str, *, block: bool = False) -> gc_graph.OwnerRef:
    return gc_graph.OwnerRef(uid, "v1", "ConfigMap", name, block_owner_deletion=block)


def test_graph_links_owners_and_makes_virtual_nodes_for_unseen_ones() -> None:
    graph = gc_graph.Graph()
    work = graph.observe(*_obj("c", "child", _owner("o", "owner", block=True)))
    assert list(work.attempt_to_delete) == ["o"]  # the unseen owner gets verified
    assert graph.get("o") is not None and graph.get("o").virtual  # type: ignore[union-attr]
    work = graph.observe(*_obj("o", "owner"))
    assert list(work.attempt_to_delete) == ["c"]  # seen at last: dependents re-checked
    assert not graph.get("o").virtual  # type: ignore[union-attr]
    assert [d.ref.uid for d in graph.blocking_dependents("o")] == ["c"]
    work = graph.forget("o")
    assert list(work.attempt_to_delete) == ["c"]
    assert graph.get("o") is None


def test_graph_foreground_and_orphan_transitions() -> None:
    graph = gc_graph.Graph()
    graph.observe(*_obj("o", "owner"))
    graph.observe(*_obj("c", "child", _owner("o", "owner", block=True)))
    work = graph.observe(*_obj("o", "owner", finalizers=("foregroundDeletion",), deleting=True))
    assert list(work.attempt_to_delete) == ["c", "o"]
    work = graph.forget("c")  # the last blocking dependent left: the owner is looked at
    assert list(work.attempt_to_delete) == ["o"]
    work = graph.observe(*_obj("p", "parent", finalizers=("orphan",), deleting=True))
    assert list(work.attempt_to_orphan) == ["p"]


def test_graph_drops_a_virtual_owner_nobody_references() -> None:
    graph = gc_graph.Graph()
    graph.observe(*_obj("c", "child", _owner("v", "ghost")))
    graph.observe(*_obj("c", "child"))  # the reference was removed
    assert graph.get("v") is None and len(graph) == 1


# -- in process: custom resources are covered after discovery is read again -----------------

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: gizmos.{group}}}
spec:
  group: {group}
  names: {{kind: Gizmo, plural: gizmos}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
"""


GIZMOS = ResourceType("gc.example.com", "v1", "Gizmo", "gizmos", "gizmo", True)


def test_custom_resources_are_collected_after_a_discovery_resync(tmp_path: Path) -> None:
    group = GIZMOS.group
    with running_server(tmp_path / "data",
                        extra_args=["--controllers", "*,-garbagecollector"]) as server:
        clock = FakeClock()

        async def scenario() -> None:
            client = rest.Client(config.load_kubeconfig(server.kubeconfig))
            factory = informer.SharedInformerFactory(client)
            ctx = manager.ControllerContext(client, factory, clock,
                                            lambda c: events.EventRecorder(client, c))
            collector = garbagecollector.GarbageCollector(ctx)
            task = asyncio.create_task(collector.run(workers=2))
            try:
                await eventually(lambda: bool(collector.monitors) and all(
                    m.has_synced for m in collector.monitors.values()))
                assert not any(rt.group == group for rt in collector.monitors)
                server.kubectl("apply", "-f", "-", input=CRD.format(group=group))
                resource = client.resource(GIZMOS)
                owner = await _create_gizmo(resource, "owner")
                await _create_gizmo(resource, "child", owner=owner)
                clock.advance(garbagecollector.RESYNC_PERIOD)
                await settle()
                await eventually(lambda: any(rt.group == group for rt in collector.monitors))
                await resource.delete("owner", namespace="default")

                async def child_gone() -> bool:
                    try:
                        await resource.get("child", namespace="default")
                    except rest.ApiError as err:
                        return rest.is_not_found(err)
                    return False

                await eventually(child_gone)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await client.close()

        asyncio.run(asyncio.wait_for(scenario(), 30))


async def _create_gizmo(resource: rest.Resource, name: str,
                        owner: dict[str, Any] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if owner is not None:
        md["ownerReferences"] = [{"apiVersion": "gc.example.com/v1", "kind": "Gizmo",
                                  "name": owner["metadata"]["name"],
                                  "uid": owner["metadata"]["uid"]}]
    body = {"apiVersion": "gc.example.com/v1", "kind": "Gizmo", "metadata": md}
    deadline = time.monotonic() + 10
    while True:  # the CRD's resource is served a moment after the CRD is created
        try:
            return await resource.create(body, namespace="default")
        except rest.ApiError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)
