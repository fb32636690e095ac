"""The PersistentVolume binder in-process against a real server: the course's PV and PVC
meet, claims that cannot be served say why, released volumes follow their policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import persistentvolume
from tests.client.helpers import make_namespace, run
from tests.controllers.test_job import wait_for
from tests.controllers.test_podgc import controller_running, private_server, settle
from tests.server_fixture import KublingServer

PVS = rest.lookup("v1", "persistentvolumes")
PVCS = rest.lookup("v1", "persistentvolumeclaims")
CLASSES = rest.lookup("storage.k8s.io/v1", "storageclasses")
EVENTS = rest.lookup("v1", "events")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("pv")) as started:
        yield started


def volume(name: str, size: str, *, modes: tuple[str, ...] = ("ReadWriteOnce",),
           labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"capacity": {"storage": size}, "accessModes": list(modes),
                     "hostPath": {"path": f"/mnt/kubling-test-{name}"}, **spec}}


def claim(name: str, size: str, *, modes: tuple[str, ...] = ("ReadWriteOnce",),
          **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": size}},
                     **spec}}


async def get(client: rest.Client, kind: Any, name: str, ns: str = "") -> dict[str, Any]:
    found: dict[str, Any] = await client.resource(kind).get(name, namespace=ns or None)
    return found


async def phase(client: rest.Client, kind: Any, name: str, ns: str = "") -> str:
    return str((await get(client, kind, name, ns)).get("status", {}).get("phase", ""))


async def event(client: rest.Client, ns: str, name: str) -> dict[str, Any] | None:
    page = await client.resource(EVENTS).list(
        namespace=ns, field_selector=f"involvedObject.name={name}")
    items = page.get("items") or []
    return items[-1] if items else None


def test_the_course_pv_and_pvc_bind(server: KublingServer) -> None:
    ns = "pv-course"

    async def scenario() -> None:
        async with controller_running(server, persistentvolume.PersistentVolumeController,
                                      clocks.FakeClock()) as (_, client):
            await make_namespace(client, ns)
            await client.resource(PVS).create(volume("example-pv", "10Gi"))
            await client.resource(PVS).create(volume("big-pv", "50Gi"))
            await wait_for(lambda: _is(client, PVS, "example-pv", "", "Available"))
            await client.resource(PVCS).create(claim("example-pvc", "10Gi"), namespace=ns)
            await wait_for(lambda: _is(client, PVCS, "example-pvc", ns, "Bound"))
            pvc = await get(client, PVCS, "example-pvc", ns)
            assert pvc["spec"]["volumeName"] == "example-pv"  # the smallest that fits
            assert pvc["status"]["capacity"] == {"storage": "10Gi"}
            assert pvc["status"]["accessModes"] == ["ReadWriteOnce"]
            assert pvc["metadata"]["annotations"][persistentvolume.BIND_COMPLETED] == "yes"
            pv = await get(client, PVS, "example-pv")
            ref = pv["spec"]["claimRef"]
            assert (ref["namespace"], ref["name"], ref["uid"]) == (
                ns, "example-pvc", pvc["metadata"]["uid"])
            assert pv["status"]["phase"] == "Bound"

            # Deleting the claim releases a Retain volume; it is not given out again.
            await client.resource(PVCS).delete("example-pvc", namespace=ns)
            await wait_for(lambda: _is(client, PVS, "example-pv", "", "Released"))
            await client.resource(PVCS).create(claim("again", "10Gi"), namespace=ns)
            await wait_for(lambda: _is(client, PVCS, "again", ns, "Bound"))
            assert (await get(client, PVCS, "again", ns))["spec"]["volumeName"] == "big-pv"

    run(scenario(), timeout=60)


async def _is(client: rest.Client, kind: Any, name: str, ns: str, want: str) -> bool:
    return await phase(client, kind, name, ns) == want


def test_claims_that_cannot_be_served_say_why(server: KublingServer) -> None:
    ns = "pv-pending"

    async def scenario() -> None:
        async with controller_running(server, persistentvolume.PersistentVolumeController,
                                      clocks.FakeClock()) as (_, client):
            await make_namespace(client, ns)
            await client.resource(PVS).create(volume("small-rwo", "1Gi"))
            await client.resource(PVCS).create(claim("too-big", "5Gi"), namespace=ns)
            await client.resource(PVCS).create(
                claim("shared", "1Gi", modes=("ReadWriteMany",)), namespace=ns)
            await client.resource(PVCS).create(
                claim("classy", "1Gi", storageClassName="fast"), namespace=ns)
            for name in ("too-big", "shared"):
                got = await wait_for(lambda n=name: event(client, ns, n))
                assert (got["type"], got["reason"], got["message"]) == (
                    "Normal", "FailedBinding",
                    "no persistent volumes available for this claim and no storage class "
                    "is set")
            got = await wait_for(lambda: event(client, ns, "classy"))
            assert (got["type"], got["reason"], got["message"]) == (
                "Warning", "ProvisioningFailed", 'storageclass.storage.k8s.io "fast" not found')
            assert await phase(client, PVCS, "too-big", ns) == "Pending"

            # The course's StorageClass: its provisioner would make the volume.
            await client.resource(CLASSES).create({
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "fast"}, "provisioner": "kubernetes.io/gce-pd",
                "parameters": {"type": "pd-ssd"}})
            await client.resource(PVCS).create(
                claim("classy-2", "1Gi", storageClassName="fast"), namespace=ns)
            got = await wait_for(lambda: event(client, ns, "classy-2"))
            assert (got["reason"], got["message"]) == (
                "ExternalProvisioning",
                'waiting for a volume to be created, either by external provisioner '
                '"kubernetes.io/gce-pd" or manually created by system administrator')
            # ... or an administrator's volume of that class.
            await client.resource(PVS).create(volume("fast-1", "2Gi", storageClassName="fast"))
            await wait_for(lambda: _is(client, PVCS, "classy-2", ns, "Bound"), timeout=20)

    run(scenario(), timeout=60)


def test_pre_bound_and_selected_volumes(server: KublingServer) -> None:
    ns = "pv-select"

    async def scenario() -> None:
        async with controller_running(server, persistentvolume.PersistentVolumeController,
                                      clocks.FakeClock()) as (_, client):
            await make_namespace(client, ns)
            await client.resource(PVS).create(volume("plain", "1Gi"))
            # (2Gi: the 5Gi claim left pending by the previous test must not take it)
            await client.resource(PVS).create(volume("ssd", "2Gi", labels={"disk": "ssd"}))
            await client.resource(PVS).create(volume("reserved", "1Gi", claimRef={
                "namespace": ns, "name": "owner"}))
            await client.resource(PVCS).create(
                claim("picky", "1Gi", selector={"matchLabels": {"disk": "ssd"}}), namespace=ns)
            await client.resource(PVCS).create(claim("named", "1Gi", volumeName="plain"),
                                               namespace=ns)
            await client.resource(PVCS).create(claim("owner", "1Gi"), namespace=ns)
            for name, wanted in (("picky", "ssd"), ("named", "plain"), ("owner", "reserved")):
                await wait_for(lambda n=name: _is(client, PVCS, n, ns, "Bound"))
                assert (await get(client, PVCS, name, ns))["spec"]["volumeName"] == wanted
            named = await get(client, PVCS, "named", ns)
            assert persistentvolume.BOUND_BY_CONTROLLER not in named["metadata"]["annotations"]
            await settle()

    run(scenario(), timeout=60)


def test_matching_rules() -> None:
    pv = volume("v", "10Gi", modes=("ReadWriteOnce", "ReadOnlyMany"))
    pv["metadata"]["name"] = "v"
    pvc = claim("c", "5Gi")
    pvc["metadata"].update(namespace="d", uid="u1")
    assert persistentvolume.fits(pv, pvc)
    assert not persistentvolume.fits(pv, claim("c", "11Gi"))
    assert not persistentvolume.fits(pv, claim("c", "1Gi", modes=("ReadWriteMany",)))
    assert not persistentvolume.fits(pv, claim("c", "1Gi", volumeMode="Block"))
    assert not persistentvolume.fits({**pv, "status": {"phase": "Released"}}, pvc)
    taken = {**pv, "spec": {**pv["spec"], "claimRef": {"namespace": "d", "name": "other"}}}
    assert not persistentvolume.fits(taken, pvc)
    smaller = volume("w", "6Gi")
    assert persistentvolume.best_volume([pv, smaller], pvc) is smaller


def test_wait_for_first_consumer_claims_wait_for_the_scheduler(server: KublingServer) -> None:
    """A delayed claim is not bound to a fitting volume until the scheduler pre-binds one
    (``claimRef``); the controller then finishes the binding as upstream's does."""
    ns = "pv-wffc"

    async def scenario() -> None:
        async with controller_running(server, persistentvolume.PersistentVolumeController,
                                      clocks.FakeClock()) as (_, client):
            await make_namespace(client, ns)
            await client.resource(CLASSES).create({
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "local-wffc"},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer"})
            await client.resource(PVS).create(
                volume("wffc-1", "1Gi", storageClassName="local-wffc"))
            await client.resource(PVCS).create(
                claim("later", "1Gi", storageClassName="local-wffc"), namespace=ns)
            got = await wait_for(lambda: event(client, ns, "later"))
            assert (got["type"], got["reason"], got["message"]) == (
                "Normal", "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding")
            await settle()
            assert await phase(client, PVCS, "later", ns) == "Pending"
            assert await phase(client, PVS, "wffc-1") == "Available"

            # What the scheduler's binder writes once the pod's node is chosen.
            pvc = await get(client, PVCS, "later", ns)
            pv = await get(client, PVS, "wffc-1")
            pv["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                      "namespace": ns, "name": "later",
                                      "uid": pvc["metadata"]["uid"]}
            pv["metadata"].setdefault("annotations", {})[
                persistentvolume.BOUND_BY_CONTROLLER] = "yes"
            await client.resource(PVS).update(pv)
            await wait_for(lambda: _is(client, PVCS, "later", ns, "Bound"), timeout=20)
            pvc = await get(client, PVCS, "later", ns)
            assert pvc["spec"]["volumeName"] == "wffc-1"
            assert pvc["metadata"]["annotations"][persistentvolume.BIND_COMPLETED] == "yes"
            assert pvc["metadata"]["annotations"][persistentvolume.BOUND_BY_CONTROLLER] == "yes"
            assert await phase(client, PVS, "wffc-1") == "Bound"

    run(scenario(), timeout=60)
