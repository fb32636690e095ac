"""The Deployment controller, against the session server (which runs it and the
ReplicaSet controller). Pods become ready only when a test marks them, so a test decides
when each step of a rollout may proceed."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

from kubling.api import meta
from kubling.client import rest
from kubling.controllers import deployment_util as util
from tests.client.helpers import make_namespace
from tests.controllers.test_replicaset import (
    EVENTS,
    REPLICASETS,
    eventually,
    list_pods,
    mark_ready,
    pod_template,
    retrying_patch,
    unique,
    with_client,
)
from tests.server_fixture import KublingServer

DEPLOYMENTS = rest.lookup("apps/v1", "deployments")

Obj = dict[str, Any]


def deployment(name: str, namespace: str, replicas: int, image: str = "nginx:1",
               **spec: Any) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": pod_template(labels, image), **spec}}


async def patch(client: rest.Client, ns: str, name: str, body: Obj,
                type: rest.PatchType = "merge") -> None:
    await retrying_patch(client.resource(DEPLOYMENTS), name, body, namespace=ns, type=type)


async def set_image(client: rest.Client, ns: str, name: str, image: str) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}
    await patch(client, ns, name, body, type="strategic")


async def replica_sets(client: rest.Client, ns: str) -> dict[str, Obj]:
    """The namespace's ReplicaSets by the image of their template."""
    page = await client.resource(REPLICASETS).list(namespace=ns)
    return {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs
            for rs in page.get("items") or []}


async def sizes(client: rest.Client, ns: str) -> dict[str, int]:
    return {image: rs["spec"]["replicas"] for image, rs in (await replica_sets(client, ns)).items()}


async def get(client: rest.Client, ns: str, name: str) -> Obj:
    found: Obj = await client.resource(DEPLOYMENTS).get(name, namespace=ns)
    return found


def condition(d: Obj, type_: str) -> Obj:
    found = util.get_condition(d.get("status") or {}, type_)
    assert found is not None, f"no {type_} condition in {d.get('status')}"
    return found


@contextlib.asynccontextmanager
async def kubelet(client: rest.Client, ns: str) -> AsyncIterator[None]:
    """Mark every pod of ``ns`` ready as soon as it appears, until the block ends."""
    async def loop() -> None:
        while True:
            await mark_ready(client, ns)
            await asyncio.sleep(0.1)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def rolled_out(client: rest.Client, ns: str, name: str) -> Obj | None:
    """The Deployment once ``kubectl rollout status`` would call it done."""
    d = await get(client, ns, name)
    status = d.get("status") or {}
    want = d["spec"]["replicas"]
    done = (status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == want == status.get("replicas", 0)
            and status.get("availableReplicas", 0) == want)
    return d if done else None


# -- pure parts ------------------------------------------------------------------------------


def test_fenceposts_round_surge_up_and_unavailability_down() -> None:
    assert util.resolve_fenceposts("25%", "25%", 3) == (1, 0)
    assert util.resolve_fenceposts("25%", "25%", 10) == (3, 2)
    assert util.resolve_fenceposts(0, 0, 5) == (0, 1)  # never both zero
    assert util.resolve_fenceposts("0%", 2, 5) == (0, 2)
    d = deployment("d", "ns", 4, strategy={"type": "RollingUpdate", "rollingUpdate": {
        "maxSurge": "50%", "maxUnavailable": 9}})
    assert (util.max_surge(d), util.max_unavailable(d)) == (2, 4)  # capped at replicas
    assert util.max_surge(deployment("d", "ns", 4, strategy={"type": "Recreate"})) == 0


def test_template_hash_and_equality_ignore_the_hash_label() -> None:
    template = pod_template({"app": "web"})
    first = util.compute_hash(template, None)
    assert first == util.compute_hash(dict(template), None)
    assert first != util.compute_hash(template, 1)
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789")
    labelled = pod_template({"app": "web", util.POD_TEMPLATE_HASH: first})
    labelled["metadata"]["creationTimestamp"] = None
    assert util.equal_ignore_hash(labelled, template)
    assert not util.equal_ignore_hash(pod_template({"app": "web"}, "nginx:2"), template)


def test_revision_annotations_keep_a_history() -> None:
    d = deployment("d", "ns", 3)
    d["metadata"]["annotations"] = {"kubernetes.io/change-cause": "v2", util.REVISION: "7",
                                    util.LAST_APPLIED: "{}"}
    rs: Obj = {"metadata": {"annotations": {util.REVISION: "1"}}, "spec": {"replicas": 0}}
    assert util.set_new_rs_annotations(d, rs, "3", exists=False)
    assert rs["metadata"]["annotations"] == {
        "kubernetes.io/change-cause": "v2", util.REVISION: "3", util.REVISION_HISTORY: "1",
        util.DESIRED_REPLICAS: "3", util.MAX_REPLICAS: "4"}
    assert not util.set_new_rs_annotations(d, rs, "2", exists=True)  # never lowered


def test_proportions_follow_the_size_each_replica_set_had() -> None:
    d = deployment("d", "ns", 15, strategy={"type": "RollingUpdate", "rollingUpdate": {
        "maxSurge": 3, "maxUnavailable": 2}})
    old = {"metadata": {"annotations": {util.MAX_REPLICAS: "13"}}, "spec": {"replicas": 8}}
    new = {"metadata": {"annotations": {util.MAX_REPLICAS: "13"}}, "spec": {"replicas": 5}}
    assert util.rs_proportion(old, d, 5, 0) == 3  # round(8 * 18 / 13) - 8
    assert util.rs_proportion(new, d, 5, 3) == 2  # at most what is left to add


# -- rollouts against the session server -----------------------------------------------------


def test_new_deployment_gets_a_hashed_replica_set_revision_and_conditions(
        kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("deploy-new"), "web"
        await make_namespace(client, ns)
        await client.resource(DEPLOYMENTS).create(deployment(name, ns, 3), namespace=ns)
        rss = await eventually(lambda: replica_sets(client, ns))
        rs = rss["nginx:1"]
        pod_hash = rs["metadata"]["labels"][util.POD_TEMPLATE_HASH]
        assert rs["metadata"]["name"] == f"web-{pod_hash}"
        assert rs["spec"]["selector"]["matchLabels"] == {"app": name,
                                                         util.POD_TEMPLATE_HASH: pod_hash}
        annotations = rs["metadata"]["annotations"]
        assert (annotations[util.REVISION], annotations[util.DESIRED_REPLICAS],
                annotations[util.MAX_REPLICAS]) == ("1", "3", "4")
        assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
        pods = await eventually(lambda: _pods(client, ns, 3))
        assert all(p["metadata"]["labels"] == {"app": name, util.POD_TEMPLATE_HASH: pod_hash}
                   for p in pods)

        d = await get(client, ns, name)
        assert condition(d, "Available")["reason"] == "MinimumReplicasUnavailable"
        await mark_ready(client, ns)
        d = await eventually(lambda: rolled_out(client, ns, name))
        assert d["metadata"]["annotations"][util.REVISION] == "1"
        assert (condition(d, "Available")["status"],
                condition(d, "Available")["reason"]) == ("True", "MinimumReplicasAvailable")
        progressing = condition(d, "Progressing")
        assert (progressing["reason"], progressing["message"]) == (
            "NewReplicaSetAvailable", f'ReplicaSet "web-{pod_hash}" has successfully progressed.')
        status = d["status"]
        assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"],
                status["observedGeneration"]) == (3, 3, 3, 1)
        assert "unavailableReplicas" not in status
        page = await client.resource(EVENTS).list(namespace=ns,
                                                  field_selector=f"involvedObject.name={name}")
        assert f"Scaled up replica set web-{pod_hash} from 0 to 3" in [
            e["message"] for e in page["items"]]

    with_client(kubling, scenario)


def test_rolling_update_surges_one_and_keeps_every_replica_available(
        kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("deploy-surge"), "surge"
        await make_namespace(client, ns)
        await client.resource(DEPLOYMENTS).create(deployment(
            name, ns, 4, strategy={"type": "RollingUpdate",
                                   "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
            namespace=ns)
        async with kubelet(client, ns):
            await eventually(lambda: rolled_out(client, ns, name))
        await set_image(client, ns, name, "nginx:2")
        # Step one: one new pod on top of the four old ones, nothing removed yet.
        await eventually(lambda: _sizes_are(client, ns, {"nginx:1": 4, "nginx:2": 1}))
        await asyncio.sleep(0.3)
        assert await sizes(client, ns) == {"nginx:1": 4, "nginx:2": 1}
        while not await rolled_out(client, ns, name):
            current = await sizes(client, ns)
            assert sum(current.values()) <= 5, current
            ready = [p for p in await list_pods(client, ns) if _ready(p)]
            assert len(ready) >= 4, current
            await mark_ready(client, ns)
            await asyncio.sleep(0.05)
        assert await sizes(client, ns) == {"nginx:1": 0, "nginx:2": 4}
        d = await get(client, ns, name)
        assert d["metadata"]["annotations"][util.REVISION] == "2"

    with_client(kubling, scenario)


def test_rolling_update_with_max_unavailable_scales_old_down_first(
        kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("deploy-unavail"), "unavail"
        await make_namespace(client, ns)
        await client.resource(DEPLOYMENTS).create(deployment(
            name, ns, 4, strategy={"type": "RollingUpdate",
                                   "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            namespace=ns)
        async with kubelet(client, ns):
            await eventually(lambda: rolled_out(client, ns, name))
        await set_image(client, ns, name, "nginx:2")
        await eventually(lambda: _sizes_are(client, ns, {"nginx:1": 3, "nginx:2": 1}))
        await asyncio.sleep(0.3)
        assert await sizes(client, ns) == {"nginx:1": 3, "nginx:2": 1}  # waits for readiness
        while not await rolled_out(client, ns, name):
            assert sum((await sizes(client, ns)).values()) <= 4
            await mark_ready(client, ns)
            await asyncio.sleep(0.05)
        assert await sizes(client, ns) == {"nginx:1": 0, "nginx:2": 4}

    with_client(kubling, scenario)


def test_recreate_removes_every_old_pod_before_creating_new_ones(
        kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("deploy-recreate"), "recreate"
        await make_namespace(client, ns)
        await client.resource(DEPLOYMENTS).create(
            deployment(name, ns, 3, strategy={"type": "Recreate"}), namespace=ns)
        async with kubelet(client, ns):
            await eventually(lambda: rolled_out(client, ns, name))
        await set_image(client, ns, name, "nginx:2")
        seen_images: list[set[str]] = []
        while True:
            pods = await list_pods(client, ns)
            images = {p["spec"]["containers"][0]["image"] for p in pods}
            seen_images.append(images)
            assert len(images) <= 1, "old and new pods at once"
            if images == {"nginx:2"} and len(pods) == 3:
                break
            await asyncio.sleep(0.02)
        assert set() in seen_images  # there was a moment with no pods at all
        assert await sizes(client, ns) == {"nginx:1": 0, "nginx:2": 3}

    with_client(kubling, scenario)


def test_pause_holds_a_rollout_and_resume_starts_it(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("deploy-pause"), "paused"
        await make_namespace(client, ns)
        deployments = client.resource(DEPLOYMENTS)
        await deployments.create(deployment(name, ns, 2), namespace=ns)
        async with kubelet(client, ns):
            await eventually(lambda: rolled_out(client, ns, name))
            await patch(client, ns, name, {"spec": {"paused": True}})
            await set_image(client, ns, name, "nginx:2")

            async def paused_condition() -> bool:
                cond = condition(await get(client, ns, name), "Progressing")
                return (cond["status"], cond["reason"], cond["message"]) == (
                    "Unknown", "DeploymentPaused", "Deployment is paused")

            await eventually(paused_condition)
            await patch(client, ns, name, {"spec": {"replicas": 3}})
            await eventually(lambda: _sizes_are(client, ns, {"nginx:1": 3}))  # scaling works
            await patch(client, ns, name, {"spec": {"paused": False}})
            d = await eventually(lambda: _rolled_to(client, ns, name, "nginx:2"))
        assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
        assert await sizes(client, ns) == {"nginx:1": 0, "nginx:2": 3}

    with_client(kubling, scenario)


def test_revision_history_limit_deletes_the_oldest_replica_sets(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("deploy-history"), "history"
        await make_namespace(client, ns)
        await client.resource(DEPLOYMENTS).create(
            deployment(name, ns, 1, revisionHistoryLimit=1), namespace=ns)
        async with kubelet(client, ns):
            await eventually(lambda: rolled_out(client, ns, name))
            for version in (2, 3, 4):
                await set_image(client, ns, name, f"nginx:{version}")
                await eventually(functools.partial(_rolled_to, client, ns, name,
                                                   f"nginx:{version}"))
            await eventually(lambda: _images_are(client, ns, {"nginx:3", "nginx:4"}))
        rss = await replica_sets(client, ns)
        assert rss["nginx:3"]["metadata"]["annotations"][util.REVISION] == "3"
        assert rss["nginx:4"]["metadata"]["annotations"][util.REVISION] == "4"

    with_client(kubling, scenario)


def test_progress_deadline_exceeded(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("deploy-deadline"), "stuck"
        await make_namespace(client, ns)
        await client.resource(DEPLOYMENTS).create(
            deployment(name, ns, 2, progressDeadlineSeconds=1), namespace=ns)

        async def timed_out() -> Obj | None:
            d = await get(client, ns, name)
            cond = util.get_condition(d.get("status") or {}, "Progressing")
            return cond if cond and cond["reason"] == "ProgressDeadlineExceeded" else None

        cond = await eventually(timed_out, timeout=10)
        rs_name = meta.name_of((await replica_sets(client, ns))["nginx:1"])
        assert cond["status"] == "False"
        assert cond["message"] == f'ReplicaSet "{rs_name}" has timed out progressing.'

    with_client(kubling, scenario)


def test_scaling_during_a_rollout_is_proportional(kubling: KublingServer) -> None:
    async def scenario(client: rest.Client) -> None:
        ns, name = unique("deploy-prop"), "prop"
        await make_namespace(client, ns)
        deployments = client.resource(DEPLOYMENTS)
        await deployments.create(deployment(
            name, ns, 10, strategy={"type": "RollingUpdate",
                                    "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}),
            namespace=ns)
        async with kubelet(client, ns):
            await eventually(lambda: rolled_out(client, ns, name))
        await set_image(client, ns, name, "nginx:bad")  # its pods never become ready
        await eventually(lambda: _sizes_are(client, ns, {"nginx:1": 8, "nginx:bad": 5}))
        await patch(client, ns, name, {"spec": {"replicas": 15}})
        # 18 allowed (15 + 3 surge): 5 more, shared as 8 and 5 were of the 13 before.
        await eventually(lambda: _sizes_are(client, ns, {"nginx:1": 11, "nginx:bad": 7}))
        rss = await replica_sets(client, ns)
        for rs in rss.values():
            assert rs["metadata"]["annotations"][util.DESIRED_REPLICAS] == "15"
            assert rs["metadata"]["annotations"][util.MAX_REPLICAS] == "18"

    with_client(kubling, scenario)


def _ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


async def _pods(client: rest.Client, ns: str, want: int) -> list[Obj]:
    pods = await list_pods(client, ns)
    return pods if len(pods) == want else []


async def _sizes_are(client: rest.Client, ns: str, want: dict[str, int]) -> bool:
    return await sizes(client, ns) == want


async def _images_are(client: rest.Client, ns: str, want: set[str]) -> bool:
    return set(await replica_sets(client, ns)) == want


async def _rolled_to(client: rest.Client, ns: str, name: str, image: str) -> Obj | None:
    d = await rolled_out(client, ns, name)
    if d is None or d["spec"]["template"]["spec"]["containers"][0]["image"] != image:
        return None
    return d
