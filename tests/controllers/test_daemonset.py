"""The DaemonSet controller.

Nodes are cluster-wide, so these tests run against a server of their own (one for the
module, with every controller but no scheduler) rather than the session server, whose other
tests schedule pods onto whatever nodes exist. With no scheduler the daemon pods stay
unbound, targeted at their node only by their node affinity, as upstream's are until the
scheduler binds them; with no kubelet, ``mark_ready`` writes pod status as a node would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubling.api import meta
from kubling.client import rest
from kubling.controllers import daemonset, podcontrol
from tests.client.helpers import make_namespace
from tests.controllers.test_statefulset import (
    event_messages,
    eventually,
    kubectl,
    mark_ready,
    patch,
    scenario,
    template,
    unique,
)
from tests.server_fixture import KublingServer, running_server

PODS = rest.lookup("v1", "pods")
NODES = rest.lookup("v1", "nodes")
DAEMONSETS = rest.lookup("apps/v1", "daemonsets")
REVISIONS = rest.lookup("apps/v1", "controllerrevisions")

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    data: Path = tmp_path_factory.mktemp("daemonset") / "data"
    with running_server(data, extra_args=["--disable-scheduler"]) as running:
        yield running


def daemon_set(name: str, namespace: str, **spec: Any) -> Obj:
    labels = {"app": name}
    pod_spec = spec.pop("pod_spec", {})
    tmpl = template(labels)
    tmpl["spec"].update(pod_spec)
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": labels}, "template": tmpl, **spec}}


def node(name: str, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels or {})}, "spec": spec}


async def pods_on_nodes(client: rest.Client, namespace: str) -> dict[str, list[Obj]]:
    """Daemon pods not being deleted, by the node they target."""
    page = await client.resource(PODS).list(namespace=namespace)
    by_node: dict[str, list[Obj]] = {}
    for pod in page.get("items") or []:
        if not podcontrol.is_terminating(pod):
            by_node.setdefault(daemonset.target_node(pod), []).append(pod)
    return by_node


async def mark_all_ready(client: rest.Client, namespace: str) -> None:
    for pods in (await pods_on_nodes(client, namespace)).values():
        await mark_ready(client, namespace, *[meta.name_of(p) for p in pods
                                              if not podcontrol.is_pod_ready(p)])


async def status_of(client: rest.Client, namespace: str, name: str) -> Obj:
    ds = await client.resource(DAEMONSETS).get(name, namespace=namespace)
    status: Obj = ds.get("status") or {}
    return status


def hash_of(pod: Obj) -> str:
    return meta.labels_of(pod).get(daemonset.HASH_LABEL, "")


# -- pure parts ---------------------------------------------------------------------------


def test_node_eligibility() -> None:
    ds = daemon_set("d", "ns", pod_spec={
        "nodeSelector": {"role": "worker"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In",
                                  "values": ["special"]}]}]}}}})
    worker = {"role": "worker", "zone": "a"}
    assert daemonset.should_run(node("n", worker), ds) == (True, True)
    assert daemonset.should_run(node("n", {"role": "worker", "zone": "b"}), ds) == \
        (False, False)
    assert daemonset.should_run(node("special", {"role": "worker"}), ds) == (True, True)
    assert daemonset.should_run(node("n", {"zone": "a"}), ds) == (False, False)
    # Tolerated, untolerated NoSchedule (existing pods may stay), untolerated NoExecute.
    gpu = [{"key": "gpu", "value": "1", "effect": "NoSchedule"}]
    assert daemonset.should_run(node("n", worker, taints=gpu), ds) == (True, True)
    no_schedule = [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
    assert daemonset.should_run(node("n", worker, taints=no_schedule), ds) == (False, True)
    no_execute = [{"key": "dedicated", "value": "x", "effect": "NoExecute"}]
    assert daemonset.should_run(node("n", worker, taints=no_execute), ds) == (False, False)
    prefer = [{"key": "dedicated", "value": "x", "effect": "PreferNoSchedule"}]
    assert daemonset.should_run(node("n", worker, taints=prefer), ds) == (True, True)
    # The default tolerations: cordoned, not-ready and pressured nodes keep their daemons.
    for key, effect in [("node.kubernetes.io/unschedulable", "NoSchedule"),
                        ("node.kubernetes.io/not-ready", "NoExecute"),
                        ("node.kubernetes.io/unreachable", "NoExecute"),
                        ("node.kubernetes.io/memory-pressure", "NoSchedule")]:
        taints = [{"key": key, "effect": effect}]
        assert daemonset.should_run(node("n", worker, taints=taints), ds) == (True, True)
    # network-unavailable only for host-network pods.
    network = [{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]
    assert daemonset.should_run(node("n", worker, taints=network), ds) == (False, True)
    ds["spec"]["template"]["spec"]["hostNetwork"] = True
    assert daemonset.should_run(node("n", worker, taints=network), ds) == (True, True)


def test_default_tolerations_replace_equal_ones() -> None:
    tolerations = daemonset.daemon_tolerations({"tolerations": [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 10},
        {"key": "mine", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]})
    assert tolerations[0] == {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                              "effect": "NoExecute"}
    assert tolerations[1]["key"] == "mine"
    assert [t["key"] for t in tolerations[2:]] == [
        "node.kubernetes.io/unreachable", "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure", "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable"]


def test_target_node_from_affinity() -> None:
    spec: Obj = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}
    daemonset.bind_to_node(spec, "n7")
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] \
        == {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]}
    assert daemonset.target_node({"spec": spec}) == "n7"
    assert daemonset.target_node({"spec": {**spec, "nodeName": "bound"}}) == "bound"
    assert daemonset.target_node({"spec": {}}) == ""


# -- against the server -------------------------------------------------------------------


def test_pods_follow_eligible_nodes(server: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("ds-nodes")
        key = unique("ds-test")
        await make_namespace(client, ns)
        names = {n: unique(n) for n in ("a", "tainted", "tolerated", "other", "late")}
        nodes = client.resource(NODES)
        await nodes.create(node(names["a"], {key: "yes"}))
        await nodes.create(node(names["tainted"], {key: "yes"}, taints=[
            {"key": "dedicated", "value": "x", "effect": "NoSchedule"}]))
        await nodes.create(node(names["tolerated"], {key: "yes"}, taints=[
            {"key": "gpu", "value": "1", "effect": "NoSchedule"}]))
        await nodes.create(node(names["other"]))
        await client.resource(DAEMONSETS).create(daemon_set("agent", ns, pod_spec={
            "nodeSelector": {key: "yes"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}),
            namespace=ns)

        async def on(*wanted: str) -> dict[str, list[Obj]] | None:
            by_node = await pods_on_nodes(client, ns)
            expected = {names[w] for w in wanted}
            if set(by_node) == expected and all(len(p) == 1 for p in by_node.values()):
                return by_node
            return None

        by_node = await eventually(lambda: on("a", "tolerated"))
        pod = by_node[names["a"]][0]
        assert pod["metadata"]["generateName"] == "agent-"
        assert podcontrol.controller_of(pod)["kind"] == "DaemonSet"  # type: ignore[index]
        assert {"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                "effect": "NoSchedule"} in pod["spec"]["tolerations"]
        assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                "effect": "NoExecute"} in pod["spec"]["tolerations"]
        assert not pod["spec"].get("nodeName")

        async def status_is(**wanted: int) -> bool:
            status = await status_of(client, ns, "agent")
            return all(status.get(k) == v for k, v in wanted.items())

        await eventually(lambda: status_is(desiredNumberScheduled=2, currentNumberScheduled=2,
                                           numberMisscheduled=0, updatedNumberScheduled=2,
                                           numberReady=0, numberUnavailable=2,
                                           observedGeneration=1))
        await mark_all_ready(client, ns)
        await eventually(lambda: status_is(numberReady=2, numberAvailable=2,
                                           numberUnavailable=0))
        out = await kubectl(server, "rollout", "status", "ds/agent", "-n", ns, "--timeout=10s")
        assert "successfully rolled out" in out

        # A node that joins, or is labelled, gets a pod; one that loses the label loses it.
        await nodes.create(node(names["late"], {key: "yes"}))
        await nodes.patch(names["other"], {"metadata": {"labels": {key: "yes"}}})
        await eventually(lambda: on("a", "tolerated", "late", "other"))
        await nodes.patch(names["a"], {"metadata": {"labels": {key: None}}})
        await eventually(lambda: on("tolerated", "late", "other"))

        # Cordoned: the pod stays (unschedulable is tolerated); deleted: the pod goes.
        await nodes.patch(names["tolerated"], {"spec": {"unschedulable": True, "taints": [
            {"key": "gpu", "value": "1", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}})
        await asyncio.sleep(0.5)
        assert await on("tolerated", "late", "other")
        await nodes.delete(names["tolerated"])
        await eventually(lambda: on("late", "other"))

        # A new NoSchedule taint keeps the running pod (misscheduled); NoExecute evicts it.
        await nodes.patch(names["late"], {"spec": {"taints": [
            {"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}})
        await eventually(lambda: status_is(desiredNumberScheduled=1, numberMisscheduled=1))
        assert await on("late", "other")
        await nodes.patch(names["late"], {"spec": {"taints": [
            {"key": "dedicated", "value": "x", "effect": "NoExecute"}]}})
        await eventually(lambda: on("other"))
        await eventually(lambda: status_is(desiredNumberScheduled=1, numberMisscheduled=0,
                                           currentNumberScheduled=1))
        messages = await event_messages(client, ns, "agent")
        assert any(m.startswith("SuccessfulCreate: Created pod: agent-") for m in messages)
        assert any(m.startswith("SuccessfulDelete: Deleted pod: agent-") for m in messages)
        for name in names.values():
            try:
                await nodes.delete(name)
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise

    scenario(server, body)


async def _nodes_for(client: rest.Client, key: str, count: int) -> list[str]:
    names = [unique("n") for _ in range(count)]
    for name in names:
        await client.resource(NODES).create(node(name, {key: "yes"}))
    return names


def test_rolling_update_max_unavailable(server: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("ds-roll")
        key = unique("ds-test")
        await make_namespace(client, ns)
        nodes = await _nodes_for(client, key, 3)
        await client.resource(DAEMONSETS).create(daemon_set(
            "agent", ns, pod_spec={"nodeSelector": {key: "yes"}}), namespace=ns)

        async def settled(count: int) -> dict[str, list[Obj]] | None:
            by_node = await pods_on_nodes(client, ns)
            if len(by_node) == count and all(len(p) == 1 for p in by_node.values()):
                return by_node
            return None

        first = await eventually(lambda: settled(3))
        old_hash = hash_of(next(iter(first.values()))[0])
        await mark_all_ready(client, ns)
        await kubectl(server, "rollout", "status", "ds/agent", "-n", ns, "--timeout=10s")

        await patch(client, DAEMONSETS, "agent", ns, {"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "nginx:2"}]}}}})

        async def one_replaced() -> dict[str, list[Obj]] | None:
            by_node = await pods_on_nodes(client, ns)
            pods = [p for ps in by_node.values() for p in ps]
            new = [p for p in pods if hash_of(p) != old_hash]
            return by_node if len(pods) == 3 and len(new) == 1 else None

        # maxUnavailable 1: one old pod is replaced, and the next waits for it to be ready.
        await eventually(one_replaced)
        await asyncio.sleep(0.5)
        assert await one_replaced()
        for _ in range(2):
            await mark_all_ready(client, ns)
            await asyncio.sleep(0.2)

        async def done() -> dict[str, list[Obj]] | None:
            await mark_all_ready(client, ns)
            by_node = await settled(3)
            if by_node and all(hash_of(ps[0]) != old_hash for ps in by_node.values()):
                status = await status_of(client, ns, "agent")
                if status.get("updatedNumberScheduled") == 3 and \
                        status.get("numberAvailable") == 3:
                    return by_node
            return None

        by_node = await eventually(done)
        assert set(by_node) == set(nodes)
        out = await kubectl(server, "rollout", "status", "ds/agent", "-n", ns, "--timeout=10s")
        assert "successfully rolled out" in out
        revisions = (await client.resource(REVISIONS).list(namespace=ns))["items"]
        assert sorted((r["revision"], meta.labels_of(r)[daemonset.HASH_LABEL])
                      for r in revisions)[0] == (1, old_hash)
        assert len(revisions) == 2
        out = await kubectl(server, "rollout", "history", "ds/agent", "-n", ns)
        assert out.split("\n")[2:4] == ["1         <none>", "2         <none>"]
        for name in nodes:
            await client.resource(NODES).delete(name)

    scenario(server, body)


def test_rolling_update_max_surge(server: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("ds-surge")
        key = unique("ds-test")
        await make_namespace(client, ns)
        nodes = await _nodes_for(client, key, 2)
        await client.resource(DAEMONSETS).create(daemon_set(
            "agent", ns, pod_spec={"nodeSelector": {key: "yes"}}, updateStrategy={
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}), namespace=ns)

        async def count(total: int) -> dict[str, list[Obj]] | None:
            by_node = await pods_on_nodes(client, ns)
            pods = [p for ps in by_node.values() for p in ps]
            return by_node if len(pods) == total else None

        first = await eventually(lambda: count(2))
        old_hash = hash_of(next(iter(first.values()))[0])
        await mark_all_ready(client, ns)
        await patch(client, DAEMONSETS, "agent", ns, {"spec": {"template": {"metadata": {
            "annotations": {"v": "2"}}}}})

        # A new pod starts next to an old one; the old one stays until the new one is ready.
        surged = await eventually(lambda: count(3))
        doubled = [n for n, ps in surged.items() if len(ps) == 2]
        assert len(doubled) == 1
        await asyncio.sleep(0.5)
        assert await count(3)
        new = [p for p in surged[doubled[0]] if hash_of(p) != old_hash]
        await mark_ready(client, ns, meta.name_of(new[0]))

        async def done() -> bool:
            await mark_all_ready(client, ns)
            by_node = await pods_on_nodes(client, ns)
            return (sorted(by_node) == sorted(nodes)
                    and all(len(ps) == 1 and hash_of(ps[0]) != old_hash
                            for ps in by_node.values()))

        await eventually(done)
        out = await kubectl(server, "rollout", "status", "ds/agent", "-n", ns, "--timeout=10s")
        assert "successfully rolled out" in out
        for name in nodes:
            await client.resource(NODES).delete(name)

    scenario(server, body)


def test_on_delete_waits_for_the_user(server: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("ds-ondelete")
        key = unique("ds-test")
        await make_namespace(client, ns)
        nodes = await _nodes_for(client, key, 2)
        await client.resource(DAEMONSETS).create(daemon_set(
            "agent", ns, pod_spec={"nodeSelector": {key: "yes"}},
            updateStrategy={"type": "OnDelete"}), namespace=ns)

        async def two() -> dict[str, list[Obj]] | None:
            by_node = await pods_on_nodes(client, ns)
            return by_node if len(by_node) == 2 else None

        first = await eventually(two)
        old_hash = hash_of(first[nodes[0]][0])
        await mark_all_ready(client, ns)
        await patch(client, DAEMONSETS, "agent", ns, {"spec": {"template": {"metadata": {
            "annotations": {"v": "2"}}}}})

        async def observed() -> bool:
            ds = await client.resource(DAEMONSETS).get("agent", namespace=ns)
            return bool((ds.get("status") or {}).get("observedGeneration") == 2)

        await eventually(observed)
        await asyncio.sleep(0.5)
        by_node = await pods_on_nodes(client, ns)
        assert {hash_of(ps[0]) for ps in by_node.values()} == {old_hash}
        await client.resource(PODS).delete(meta.name_of(first[nodes[0]][0]), namespace=ns)

        async def replaced() -> Obj | None:
            pods = (await pods_on_nodes(client, ns)).get(nodes[0]) or []
            return pods[0] if pods and hash_of(pods[0]) != old_hash else None

        pod = await eventually(replaced)
        assert pod["metadata"]["annotations"] == {"v": "2"}
        assert hash_of((await pods_on_nodes(client, ns))[nodes[1]][0]) == old_hash
        for name in nodes:
            await client.resource(NODES).delete(name)

    scenario(server, body)
