"""The StatefulSet controller, against the session server (which runs it).

There is no kubelet: ``mark_ready`` writes pod status as a node would. Pod templates name a
scheduler that does not exist, so no scheduler binds the pods (binding would make their
deletion graceful, and with no kubelet to finish it, endless) whatever nodes other tests made.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kubling.api import meta
from kubling.client import rest
from kubling.controllers import history, podcontrol, statefulset
from tests.client.helpers import make_namespace, run
from tests.server_fixture import KublingServer

PODS = rest.lookup("v1", "pods")
CLAIMS = rest.lookup("v1", "persistentvolumeclaims")
EVENTS = rest.lookup("v1", "events")
STATEFULSETS = rest.lookup("apps/v1", "statefulsets")
REVISIONS = rest.lookup("apps/v1", "controllerrevisions")
NO_SCHEDULER = "kubling-tests-unscheduled"

Obj = dict[str, Any]


# -- helpers (the DaemonSet tests use them too) -------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def template(labels: dict[str, str], image: str = "nginx") -> Obj:
    return {"metadata": {"labels": dict(labels)},
            "spec": {"schedulerName": NO_SCHEDULER,
                     "containers": [{"name": "c", "image": image}]}}


def stateful_set(name: str, namespace: str, replicas: int, **spec: Any) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "serviceName": name,
                     "selector": {"matchLabels": labels}, "template": template(labels),
                     **spec}}


def claim_template(name: str) -> Obj:
    return {"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(0.05)


async def pods_by_name(client: rest.Client, namespace: str) -> dict[str, Obj]:
    """The namespace's pods that are not being deleted, by name."""
    page = await client.resource(PODS).list(namespace=namespace)
    return {meta.name_of(p): p for p in page.get("items") or []
            if not podcontrol.is_terminating(p)}


async def mark_ready(client: rest.Client, namespace: str, *names: str) -> None:
    """Make pods Running and Ready, as a kubelet would."""
    status = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": meta.now()}]}
    for name in names:
        await client.resource(PODS).patch(name, {"status": status}, namespace=namespace,
                                          subresource="status")


async def mark_all_ready(client: rest.Client, namespace: str) -> list[str]:
    """Make every pod not yet ready Ready; return their names."""
    pods = await pods_by_name(client, namespace)
    names = [n for n, p in pods.items() if not podcontrol.is_pod_ready(p)]
    await mark_ready(client, namespace, *names)
    return names


async def event_messages(client: rest.Client, namespace: str, name: str) -> list[str]:
    page = await client.resource(EVENTS).list(
        namespace=namespace, field_selector=f"involvedObject.name={name}")
    return [f"{e.get('reason')}: {e.get('message')}" for e in page.get("items") or []]


def scenario(server: KublingServer, body: Callable[[rest.Client], Awaitable[None]],
             *, timeout: float = 60.0) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(server.kubeconfig) as client:
            await body(client)
    run(main(), timeout=timeout)


async def kubectl(server: KublingServer, *args: str, check: bool = True) -> str:
    result = await asyncio.to_thread(server.kubectl, *args, check=check)
    return result.stdout + result.stderr


async def patch(client: rest.Client, rt: Any, name: str, namespace: str, body: Obj) -> Obj:
    """A merge patch, retried on 409: the API server (today) answers a patch that races
    with the controller's status write with a Conflict instead of retrying it itself."""
    for _ in range(10):
        try:
            result: Obj = await client.resource(rt).patch(name, body, namespace=namespace)
            return result
        except rest.ApiError as err:
            if not rest.is_conflict(err):
                raise
            await asyncio.sleep(0.05)
    raise AssertionError(f"patch of {name} kept conflicting")


def revision_label(pod: Obj) -> str:
    return meta.labels_of(pod).get(statefulset.REVISION_LABEL, "")


async def get_set(client: rest.Client, namespace: str, name: str) -> Obj:
    return await client.resource(STATEFULSETS).get(name, namespace=namespace)


# -- pure parts ---------------------------------------------------------------------------


def test_pod_identity_and_storage() -> None:
    set_ = stateful_set("web", "ns", 2, volumeClaimTemplates=[claim_template("data")])
    set_["metadata"]["uid"] = "u1"
    set_["spec"]["template"]["spec"]["volumes"] = [
        {"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "x"}}]
    pod = statefulset.new_pod(set_, 1, "web-abc")
    assert meta.name_of(pod) == "web-1"
    assert meta.labels_of(pod) == {
        "app": "web", statefulset.POD_NAME_LABEL: "web-1", statefulset.POD_INDEX_LABEL: "1",
        statefulset.REVISION_LABEL: "web-abc"}
    assert pod["spec"]["hostname"] == "web-1" and pod["spec"]["subdomain"] == "web"
    # The claim replaces the template's volume of the same name; the others stay.
    assert pod["spec"]["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}},
        {"name": "cfg", "configMap": {"name": "x"}}]
    assert podcontrol.controller_of(pod) == {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "u1",
        "controller": True, "blockOwnerDeletion": True}
    claim = statefulset.claims_for(set_, 1)["data"]
    assert meta.name_of(claim) == "data-web-1"
    assert meta.labels_of(claim) == {"app": "web"}
    assert statefulset.parent_and_ordinal("my-set-12") == ("my-set", 12)
    assert statefulset.parent_and_ordinal("nope") == ("", -1)


def test_revision_data_is_the_rollback_patch() -> None:
    set_ = stateful_set("web", "ns", 1)
    set_["metadata"].update(uid="u1", annotations={"kubernetes.io/change-cause": "why"})
    data = history.template_patch(set_)
    assert data["spec"]["template"]["$patch"] == "replace"
    revision = history.new_revision(set_, kind="StatefulSet", data=data, number=3,
                                    hash_label=history.REVISION_HASH_LABEL,
                                    hash_=history.hash_revision(data, 0))
    assert meta.name_of(revision).startswith("web-")
    assert meta.labels_of(revision)["app"] == "web"
    assert revision["metadata"]["annotations"] == {"kubernetes.io/change-cause": "why"}
    assert history.template_of(revision) == set_["spec"]["template"]
    # A collision count changes the hash, hence the name.
    assert history.hash_revision(data, 0) != history.hash_revision(data, 1)
    assert history.hash_revision(data, 0) == history.hash_revision(data, 0)


# -- against the server -------------------------------------------------------------------


def test_ordered_ready_comes_up_in_order_and_scales_down_in_reverse(
        kubling: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("sts-order")
        await make_namespace(client, ns)
        await client.resource(STATEFULSETS).create(stateful_set(
            "web", ns, 3, volumeClaimTemplates=[claim_template("data")]), namespace=ns)

        # web-0 comes first, with its claim; web-1 waits until web-0 is Running and Ready.
        pods = await eventually(lambda: pods_by_name(client, ns))
        assert list(pods) == ["web-0"]
        web0 = pods["web-0"]
        claim = await client.resource(CLAIMS).get("data-web-0", namespace=ns)
        assert meta.labels_of(claim) == {"app": "web"}
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}} in \
            web0["spec"]["volumes"]
        assert web0["spec"]["hostname"] == "web-0" and web0["spec"]["subdomain"] == "web"
        assert meta.labels_of(web0)[statefulset.POD_INDEX_LABEL] == "0"
        await asyncio.sleep(0.5)
        assert list(await pods_by_name(client, ns)) == ["web-0"]

        for i in (1, 2):
            await mark_ready(client, ns, f"web-{i - 1}")

            async def next_pod(i: int = i) -> bool:
                return f"web-{i}" in await pods_by_name(client, ns)

            await eventually(next_pod)
            assert sorted(await pods_by_name(client, ns)) == [f"web-{j}" for j in range(i + 1)]
        await mark_ready(client, ns, "web-2")

        async def all_ready() -> Obj | None:
            set_ = await get_set(client, ns, "web")
            status = set_.get("status") or {}
            return status if status.get("readyReplicas") == 3 else None

        status = await eventually(all_ready)
        assert status["replicas"] == 3 and status["currentReplicas"] == 3
        assert status["updatedReplicas"] == 3 and status["availableReplicas"] == 3
        assert status["currentRevision"] == status["updateRevision"]
        assert status["observedGeneration"] == 1
        out = await kubectl(kubling, "rollout", "status", "sts/web", "-n", ns, "--timeout=10s")
        assert "roll out complete" in out
        messages = await event_messages(client, ns, "web")
        assert "SuccessfulCreate: create Pod web-0 in StatefulSet web successful" in messages
        assert "SuccessfulCreate: create Claim data-web-0 Pod web-0 in StatefulSet web success" \
            in messages

        # Scale down: web-2 goes first, and web-1 only after it.
        await patch(client, STATEFULSETS, "web", ns, {"spec": {"replicas": 1}})

        async def shrunk() -> list[str]:
            return sorted(await pods_by_name(client, ns))

        seen: list[list[str]] = []
        deadline = time.monotonic() + 10
        while (names := await shrunk()) != ["web-0"]:
            if not seen or seen[-1] != names:
                seen.append(names)
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.02)
        assert all(names != ["web-0", "web-2"] for names in seen), seen
        # Claims are kept (whenScaled: Retain).
        claims = await client.resource(CLAIMS).list(namespace=ns)
        assert sorted(meta.name_of(c) for c in claims["items"]) == [
            "data-web-0", "data-web-1", "data-web-2"]
        assert any("SuccessfulDelete: delete Pod web-2 in StatefulSet web successful" == m
                   for m in await event_messages(client, ns, "web"))

    scenario(kubling, body)


def test_parallel_partitioned_rolling_update_history_and_undo(kubling: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("sts-roll")
        await make_namespace(client, ns)
        await client.resource(STATEFULSETS).create(stateful_set(
            "web", ns, 3, podManagementPolicy="Parallel",
            updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}),
            namespace=ns)

        async def three() -> dict[str, Obj] | None:
            pods = await pods_by_name(client, ns)
            return pods if len(pods) == 3 else None

        # Parallel: all three at once, no readiness needed.
        first = await eventually(three)
        old_revision = revision_label(first["web-0"])
        await mark_all_ready(client, ns)
        await kubectl(kubling, "rollout", "status", "sts/web", "-n", ns, "--timeout=10s")

        await patch(client, STATEFULSETS, "web", ns, {"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "nginx:2"}]}}}})

        async def updated(count: int) -> dict[str, Obj] | None:
            await mark_all_ready(client, ns)
            set_ = await get_set(client, ns, "web")
            status = set_.get("status") or {}
            if (status.get("observedGeneration") == set_["metadata"]["generation"]
                    and status.get("updatedReplicas") == count
                    and status.get("readyReplicas") == 3):
                return await pods_by_name(client, ns)
            return None

        # Only ordinals at or above the partition move to the new revision.
        pods = await eventually(lambda: updated(1))
        new_revision = revision_label(pods["web-2"])
        assert new_revision != old_revision
        assert pods["web-2"]["spec"]["containers"][0]["image"] == "nginx:2"
        assert [revision_label(pods[n]) for n in ("web-0", "web-1")] == [old_revision] * 2
        await asyncio.sleep(0.3)
        assert revision_label((await pods_by_name(client, ns))["web-1"]) == old_revision
        status = (await get_set(client, ns, "web"))["status"]
        assert status["currentRevision"] == old_revision
        assert status["updateRevision"] == new_revision
        out = await kubectl(kubling, "rollout", "status", "sts/web", "-n", ns, "--timeout=5s")
        assert "partitioned roll out complete: 1 new pods have been updated" in out

        # Partition 0: the rest follow, highest ordinal first, one at a time.
        await patch(client, STATEFULSETS, "web", ns, {"spec": {"updateStrategy": {
            "rollingUpdate": {"partition": 0}}}})
        pods = await eventually(lambda: updated(3))
        assert {revision_label(p) for p in pods.values()} == {new_revision}
        status = (await get_set(client, ns, "web"))["status"]
        assert status["currentRevision"] == new_revision
        assert status["currentReplicas"] == 3

        # Two revisions, which kubectl lists and rolls back through.
        out = await kubectl(kubling, "rollout", "history", "sts/web", "-n", ns)
        assert out.split("\n")[2:4] == ["1         <none>", "2         <none>"]
        await kubectl(kubling, "rollout", "undo", "sts/web", "-n", ns)
        pods = await eventually(lambda: updated(3))
        assert {revision_label(p) for p in pods.values()} == {old_revision}
        assert {p["spec"]["containers"][0]["image"] for p in pods.values()} == {"nginx"}
        revisions = (await client.resource(REVISIONS).list(namespace=ns))["items"]
        numbers = {meta.name_of(r): r["revision"] for r in revisions}
        assert numbers == {old_revision: 3, new_revision: 2}

    scenario(kubling, body)


def test_on_delete_replaces_only_deleted_pods(kubling: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("sts-ondelete")
        await make_namespace(client, ns)
        await client.resource(STATEFULSETS).create(stateful_set(
            "db", ns, 2, podManagementPolicy="Parallel", updateStrategy={"type": "OnDelete"}),
            namespace=ns)

        async def two_ready() -> dict[str, Obj] | None:
            await mark_all_ready(client, ns)
            set_ = await get_set(client, ns, "db")
            if (set_.get("status") or {}).get("readyReplicas") == 2:
                return await pods_by_name(client, ns)
            return None

        before = await eventually(two_ready)
        await patch(client, STATEFULSETS, "db", ns, {"spec": {"template": {"metadata": {
            "annotations": {"v": "2"}}}}})

        async def update_revision_seen() -> str:
            set_ = await get_set(client, ns, "db")
            status = set_.get("status") or {}
            if status.get("observedGeneration") == 2:
                return str(status["updateRevision"])
            return ""

        update = await eventually(update_revision_seen)
        await asyncio.sleep(0.5)
        pods = await pods_by_name(client, ns)
        assert {n: podcontrol.uid_of(p) for n, p in pods.items()} == \
            {n: podcontrol.uid_of(p) for n, p in before.items()}

        await client.resource(PODS).delete("db-1", namespace=ns)

        async def recreated() -> Obj | None:
            pod = (await pods_by_name(client, ns)).get("db-1")
            if pod is not None and podcontrol.uid_of(pod) != podcontrol.uid_of(before["db-1"]):
                return pod
            return None

        pod = await eventually(recreated)
        assert revision_label(pod) == update
        assert pod["metadata"]["annotations"] == {"v": "2"}
        assert revision_label((await pods_by_name(client, ns))["db-0"]) != update

    scenario(kubling, body)


def test_claim_retention_policy_sets_owner_references(kubling: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("sts-retain")
        await make_namespace(client, ns)
        created = await client.resource(STATEFULSETS).create(stateful_set(
            "web", ns, 2, podManagementPolicy="Parallel",
            volumeClaimTemplates=[claim_template("data")],
            persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete",
                                                  "whenScaled": "Delete"}), namespace=ns)
        set_uid = podcontrol.uid_of(created)

        async def claims() -> dict[str, Obj] | None:
            page = await client.resource(CLAIMS).list(namespace=ns)
            items = {meta.name_of(c): c for c in page["items"]}
            return items if len(items) == 2 else None

        found = await eventually(claims)
        for claim in found.values():
            refs = claim["metadata"]["ownerReferences"]
            assert [(r["kind"], r["uid"]) for r in refs] == [("StatefulSet", set_uid)]
        async def two_pods() -> dict[str, Obj] | None:
            pods = await pods_by_name(client, ns)
            return pods if len(pods) == 2 else None

        pods = await eventually(two_pods)
        await mark_all_ready(client, ns)
        web1_uid = podcontrol.uid_of(pods["web-1"])

        # Scaled down: the claim of the condemned pod now belongs to that pod, so the
        # garbage collector removes it with the pod.
        await patch(client, STATEFULSETS, "web", ns, {"spec": {"replicas": 1}})

        async def handed_to_pod() -> bool:
            try:
                claim = await client.resource(CLAIMS).get("data-web-1", namespace=ns)
            except rest.ApiError as err:
                return rest.is_not_found(err)
            refs = claim["metadata"].get("ownerReferences") or []
            return [(r["kind"], r["uid"]) for r in refs] == [("Pod", web1_uid)]

        await eventually(handed_to_pod)
        claim0 = await client.resource(CLAIMS).get("data-web-0", namespace=ns)
        assert [r["kind"] for r in claim0["metadata"]["ownerReferences"]] == ["StatefulSet"]

    scenario(kubling, body)


def test_failed_pod_is_recreated_and_identity_restored(kubling: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("sts-fail")
        await make_namespace(client, ns)
        await client.resource(STATEFULSETS).create(stateful_set("web", ns, 1), namespace=ns)
        pod = (await eventually(lambda: pods_by_name(client, ns)))["web-0"]
        await client.resource(PODS).patch("web-0", {"status": {"phase": "Failed"}},
                                          namespace=ns, subresource="status")

        async def replaced() -> Obj | None:
            new = (await pods_by_name(client, ns)).get("web-0")
            if new is not None and podcontrol.uid_of(new) != podcontrol.uid_of(pod):
                return new
            return None

        await eventually(replaced)
        messages = await event_messages(client, ns, "web")
        assert any(m.startswith("RecreatingFailedPod: ") for m in messages), messages

        # A label the controller owns, removed by hand, is put back.
        await mark_ready(client, ns, "web-0")
        await client.resource(PODS).patch("web-0", {"metadata": {"labels": {
            statefulset.POD_NAME_LABEL: None}}}, namespace=ns)

        async def relabelled() -> bool:
            current = (await pods_by_name(client, ns))["web-0"]
            return meta.labels_of(current).get(statefulset.POD_NAME_LABEL) == "web-0"

        await eventually(relabelled)

    scenario(kubling, body)


def test_min_ready_seconds_holds_the_next_pod_back(kubling: KublingServer) -> None:
    async def body(client: rest.Client) -> None:
        ns = unique("sts-minready")
        await make_namespace(client, ns)
        await client.resource(STATEFULSETS).create(stateful_set("web", ns, 2,
                                                                minReadySeconds=1), namespace=ns)
        await eventually(lambda: pods_by_name(client, ns))
        await mark_ready(client, ns, "web-0")

        async def ready_not_available() -> bool:
            status = (await get_set(client, ns, "web")).get("status") or {}
            return status.get("readyReplicas") == 1 and status.get("availableReplicas") == 0

        await eventually(ready_not_available)
        assert list(await pods_by_name(client, ns)) == ["web-0"]

        # Ready for a whole second (the condition's time has whole seconds): web-1 follows.
        async def second() -> bool:
            return "web-1" in await pods_by_name(client, ns)

        await eventually(second, timeout=5)
        status = (await get_set(client, ns, "web"))["status"]
        assert status["availableReplicas"] == 1

    scenario(kubling, body)
