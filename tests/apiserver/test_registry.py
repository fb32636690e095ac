"""The generic Store, the watch cache and list/watch semantics, on the memory backend."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kubling import storage
from kubling.api.resources import Catalogue
from kubling.apiserver import errors, watchcache
from kubling.apiserver.registry import listing
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.registry.store import DeleteOptions, Preconditions, Store

Body = Callable[[Registry], Awaitable[None]]


def run(body: Body) -> None:
    async def main() -> None:
        backend = storage.MemoryBackend()
        await backend.start()
        caches = watchcache.CacheSet(backend)
        await caches.start()
        registry = Registry(Catalogue(), backend, caches)
        ns_store = store_of(registry, "", "v1", "namespaces")
        for name in ("default", "other"):
            obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name}}
            ns_store.strategy.default(obj)
            await ns_store.create(obj, namespace="")
        try:
            await body(registry)
        finally:
            await caches.stop()
            await backend.close()

    asyncio.run(main())


def store_of(registry: Registry, group: str, version: str, plural: str) -> Store:
    rt = registry.catalogue.lookup(group, version, plural)
    assert rt is not None
    return registry.store(rt)


def configmap(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": dict(labels)}, "data": {"k": name}}


async def create(store: Store, obj: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    store.strategy.default(obj)
    return await store.create(obj, namespace=ns)


def test_create_sets_metadata_and_rejects_duplicates() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        made = await create(cms, configmap("a"))
        md = made["metadata"]
        assert md["namespace"] == "default" and md["uid"] and md["creationTimestamp"]
        assert int(md["resourceVersion"]) > 0
        with pytest.raises(errors.APIError) as err:
            await create(cms, configmap("a"))
        assert err.value.code == 409 and err.value.reason == "AlreadyExists"
        with pytest.raises(errors.APIError) as err:
            await create(cms, configmap("b"), ns="missing")
        assert err.value.code == 404 and err.value.message == 'namespaces "missing" not found'

    run(body)


def test_update_is_compare_and_swap() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        made = await create(cms, configmap("a"))
        first = dict(made, data={"k": "1"})
        updated, created = await cms.update("default", "a", first)
        assert not created and updated["metadata"]["resourceVersion"] != made[
            "metadata"]["resourceVersion"]
        stale = dict(made, data={"k": "2"})  # carries the old resourceVersion
        with pytest.raises(errors.APIError) as err:
            await cms.update("default", "a", stale)
        assert err.value.code == 409 and err.value.reason == "Conflict"
        # no resourceVersion: an unconditional update wins
        blind = configmap("a")
        blind["data"] = {"k": "3"}
        updated, _ = await cms.update("default", "a", blind)
        assert updated["data"] == {"k": "3"}
        assert updated["metadata"]["uid"] == made["metadata"]["uid"]

    run(body)


def test_generation_tracks_spec_only() -> None:
    async def body(reg: Registry) -> None:
        deps = store_of(reg, "apps", "v1", "deployments")
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                   "metadata": {"labels": {"a": "b"}},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
        made = await create(deps, dep)
        assert made["metadata"]["generation"] == 1

        async def label(obj: dict[str, Any]) -> dict[str, Any]:
            obj["metadata"].setdefault("labels", {})["x"] = "y"
            return obj

        async def scale(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"]["replicas"] = 3
            return obj

        assert (await deps.guaranteed_update("default", "d", label))["metadata"][
            "generation"] == 1
        assert (await deps.guaranteed_update("default", "d", scale))["metadata"][
            "generation"] == 2

    run(body)


def test_finalizers_and_preconditions() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        obj = configmap("f")
        obj["metadata"]["finalizers"] = ["example.com/x"]
        made = await create(cms, obj)
        with pytest.raises(errors.APIError) as err:
            await cms.delete("default", "f", DeleteOptions(preconditions=Preconditions(uid="u")))
        assert err.value.code == 409
        result = await cms.delete("default", "f", DeleteOptions())
        assert not result.deleted and result.obj["metadata"]["deletionTimestamp"]

        async def drop(o: dict[str, Any]) -> dict[str, Any]:
            o["metadata"]["finalizers"] = []
            return o

        await cms.guaranteed_update("default", "f", drop)
        with pytest.raises(errors.APIError) as err:
            await cms.get("default", "f")
        assert err.value.code == 404
        del made

    run(body)


def test_dry_run_writes_nothing() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        await cms.create(configmap("dry"), namespace="default", dry_run=True)
        with pytest.raises(errors.APIError):
            await cms.get("default", "dry")
        await create(cms, configmap("real"))
        await cms.delete("default", "real", DeleteOptions(dry_run=True))
        assert (await cms.get("default", "real"))["metadata"]["name"] == "real"

    run(body)


def test_list_selectors_pagination_and_consistency() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        for i in range(5):
            await create(cms, configmap(f"c{i}", tier="a" if i % 2 else "b"))
        await create(cms, configmap("elsewhere", tier="a"), ns="other")
        # a consistent list sees every acknowledged write at once
        result = await listing.list_objects(cms, reg.caches, "default",
                                            listing.ListOptions())
        assert [c.obj["metadata"]["name"] for c in result.items] == [f"c{i}" for i in range(5)]
        result = await listing.list_objects(cms, reg.caches, "",
                                            listing.ListOptions(label_selector="tier=a"))
        assert [c.obj["metadata"]["name"] for c in result.items] == ["c1", "c3", "elsewhere"]
        page = await listing.list_objects(cms, reg.caches, "default",
                                          listing.ListOptions(limit=2))
        assert len(page.items) == 2 and page.continue_token and page.remaining == 3
        await create(cms, configmap("c9"))  # after the first page: not in this listing
        names = [c.obj["metadata"]["name"] for c in page.items]
        token = page.continue_token
        while token:
            page = await listing.list_objects(
                cms, reg.caches, "default", listing.ListOptions(limit=2, continue_token=token))
            names += [c.obj["metadata"]["name"] for c in page.items]
            token = page.continue_token
        assert names == [f"c{i}" for i in range(5)]

    run(body)


def test_list_and_watch_at_compacted_revision_are_410() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        first = await create(cms, configmap("old"))
        for i in range(5):
            await create(cms, configmap(f"n{i}"))
        rev = int(first["metadata"]["resourceVersion"])
        await reg.backend.compact(await reg.backend.current_revision())
        with pytest.raises(errors.APIError) as err:
            await listing.list_objects(cms, reg.caches, "default", listing.ListOptions(
                resource_version=str(rev), resource_version_match="Exact"))
        assert err.value.code == 410 and err.value.reason == "Expired"
        # the watch cache drops events beyond its window; an older watch is told to relist
        cms.cache.oldest_revision = rev + 1
        with pytest.raises(errors.APIError) as err:
            await listing.open_watch(cms, reg.caches, "default", listing.ListOptions(
                watch=True, resource_version=str(rev)))
        assert err.value.code == 410
        assert err.value.message.startswith(f"too old resource version: {rev}")

    run(body)


def test_watch_replays_and_translates_selector_changes() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        start = await reg.backend.current_revision()
        await create(cms, configmap("w"))

        async def relabel(value: str) -> None:
            async def fn(o: dict[str, Any]) -> dict[str, Any]:
                o["metadata"]["labels"] = {"x": value}
                return o

            await cms.guaranteed_update("default", "w", fn)

        await relabel("y")
        await relabel("z")
        await cms.delete("default", "w", DeleteOptions())
        opened = await listing.open_watch(cms, reg.caches, "default", listing.ListOptions(
            watch=True, resource_version=str(start), label_selector="x=y"))
        seen = []
        while not opened.watcher.queue.empty():
            event = opened.watcher.queue.get_nowait()
            assert event is not None
            seen.append(event.type)
        assert seen == ["ADDED", "DELETED"]  # entered the selector, then left it

    run(body)


def test_send_initial_events_then_live_events() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        await create(cms, configmap("a"))
        opts = listing.parse_list_options({
            "watch": "true", "sendInitialEvents": "true", "allowWatchBookmarks": "true",
            "resourceVersionMatch": "NotOlderThan"})
        opened = await listing.open_watch(cms, reg.caches, "default", opts)
        assert [e.obj.obj["metadata"]["name"] for e in opened.initial] == ["a"]
        assert opened.initial_events_end
        await create(cms, configmap("b"))
        event = await asyncio.wait_for(opened.watcher.queue.get(), 2)
        assert event is not None and event.type == "ADDED"
        assert event.obj.obj["metadata"]["name"] == "b"
        with pytest.raises(errors.APIError) as err:
            listing.parse_list_options({"watch": "true", "sendInitialEvents": "true"})
        assert err.value.code == 422

    run(body)


def test_events_share_storage_across_groups() -> None:
    async def body(reg: Registry) -> None:
        core = store_of(reg, "", "v1", "events")
        modern = store_of(reg, "events.k8s.io", "v1", "events")
        ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
              "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
              "note": "hello", "reason": "Started", "type": "Normal",
              "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "kubelet",
              "reportingInstance": "node-1", "action": "Start"}
        await create(modern, ev)
        as_core = await core.get("default", "e1")
        assert as_core["apiVersion"] == "v1"
        assert as_core["involvedObject"]["name"] == "p" and as_core["message"] == "hello"
        assert as_core["reportingComponent"] == "kubelet"
        back = await modern.get("default", "e1")
        assert back["note"] == "hello" and back["regarding"]["kind"] == "Pod"
        listed = await listing.list_objects(modern, reg.caches, "default", listing.ListOptions(
            field_selector="regarding.name=p"))
        assert [modern.present(c)["note"] for c in listed.items] == ["hello"]

    run(body)


def test_hpa_v1_and_v2_are_one_object() -> None:
    async def body(reg: Registry) -> None:
        v1 = store_of(reg, "autoscaling", "v1", "horizontalpodautoscalers")
        v2 = store_of(reg, "autoscaling", "v2", "horizontalpodautoscalers")
        hpa = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "h"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                           "name": "web"},
                        "minReplicas": 1, "maxReplicas": 5,
                        "targetCPUUtilizationPercentage": 60}}
        await create(v1, hpa)
        as_v2 = await v2.get("default", "h")
        metric = as_v2["spec"]["metrics"][0]
        assert metric["resource"]["target"] == {"type": "Utilization",
                                                "averageUtilization": 60}
        assert (await v1.get("default", "h"))["spec"]["targetCPUUtilizationPercentage"] == 60

    run(body)


def test_graceful_pod_deletion_until_the_node_confirms() -> None:
    async def body(reg: Registry) -> None:
        pods = store_of(reg, "", "v1", "pods")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}
        await create(pods, pod)
        first = await pods.delete("default", "p", DeleteOptions())
        assert not first.deleted
        assert first.obj["metadata"]["deletionGracePeriodSeconds"] == 30
        again = await pods.delete("default", "p", DeleteOptions(grace_period_seconds=60))
        assert not again.deleted  # a second delete never lengthens the grace period
        assert again.obj["metadata"]["deletionGracePeriodSeconds"] == 30

        async def status(o: dict[str, Any]) -> dict[str, Any]:
            o["metadata"].setdefault("labels", {})["x"] = "y"
            return o

        await pods.guaranteed_update("default", "p", status)  # still there while terminating
        assert (await pods.get("default", "p"))["metadata"]["labels"] == {"x": "y"}
        done = await pods.delete("default", "p", DeleteOptions(grace_period_seconds=0))
        assert done.deleted
        with pytest.raises(errors.APIError):
            await pods.get("default", "p")

    run(body)


def test_patch_without_resource_version_retries_a_race() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        await create(cms, configmap("race"))
        raced = False

        async def patch(o: dict[str, Any]) -> dict[str, Any]:
            nonlocal raced
            if not raced:  # another writer commits between our read and our write
                raced = True
                other = configmap("race")
                other["data"] = {"other": "1"}
                await cms.update("default", "race", other)
            o["data"] = {**(o.get("data") or {}), "mine": "1"}
            return o

        result = await cms.guaranteed_update("default", "race", patch)
        assert result["data"] == {"other": "1", "mine": "1"}  # retried on the fresh object

        async def stale(o: dict[str, Any]) -> dict[str, Any]:
            o["metadata"]["resourceVersion"] = "1"  # an explicit, stale precondition
            return o

        with pytest.raises(errors.APIError) as err:
            await cms.guaranteed_update("default", "race", stale)
        assert err.value.code == 409

    run(body)


def test_waits_that_time_out_leave_no_waiter_behind() -> None:
    async def body(reg: Registry) -> None:
        for _ in range(5):
            assert not await reg.caches.wait_for(10**12, timeout=0.01)
        assert reg.caches._waiters == []

    run(body)


def test_a_lagging_cache_lists_from_storage() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        await reg.caches.stop()  # the cache stops following storage
        await create(cms, configmap("late"))
        result = await listing.list_objects(cms, reg.caches, "default", listing.ListOptions())
        assert [c.obj["metadata"]["name"] for c in result.items] == ["late"]

    run(body)


def test_second_delete_with_a_policy_updates_finalizers() -> None:
    async def body(reg: Registry) -> None:
        cms = store_of(reg, "", "v1", "configmaps")
        obj = configmap("held")
        obj["metadata"]["finalizers"] = ["example.com/x"]
        await create(cms, obj)
        first = await cms.delete("default", "held", DeleteOptions())
        stamp = first.obj["metadata"]["deletionTimestamp"]
        await cms.delete("default", "held", DeleteOptions(propagation_policy="Foreground"))
        stored = await cms.get("default", "held")
        assert stored["metadata"]["finalizers"] == ["example.com/x", "foregroundDeletion"]
        assert stored["metadata"]["deletionTimestamp"] == stamp

    run(body)


def test_put_creates_leases_but_not_configmaps() -> None:
    async def body(reg: Registry) -> None:
        leases = store_of(reg, "coordination.k8s.io", "v1", "leases")
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}
        leases.strategy.default(lease)
        made, created = await leases.update("default", "l", lease)
        assert created and made["spec"]["holderIdentity"] == "me"
        cms = store_of(reg, "", "v1", "configmaps")
        with pytest.raises(errors.APIError) as err:
            await cms.update("default", "nope", configmap("nope"))
        assert err.value.code == 404

    run(body)
