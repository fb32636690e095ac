"""ClusterIP and NodePort allocation: bitmaps, the stored record, Service writes, repair.

Everything runs on the memory backend through the real Store and ServiceStrategy, so the
allocation is exercised exactly as a request would (allocate → write → commit/rollback).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from kubling import storage
from kubling.api.resources import Catalogue
from kubling.apiserver import errors, watchcache
from kubling.apiserver.allocation import fields, repair
from kubling.apiserver.allocation.bitmap import (
    AlreadyAllocatedError,
    Bitmap,
    IPRange,
    NotInRangeError,
    PortRange,
    RangeFullError,
    band_offset,
    parse_port_range,
)
from kubling.apiserver.allocation.record import Draft, RangeRecord
from kubling.apiserver.allocation.service import NODE_PORTS_KEY, SERVICE_IPS_KEY, ServiceAllocator
from kubling.apiserver.registry.kinds import ServiceStrategy
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.registry.store import DeleteOptions, Store

Obj = dict[str, Any]


# -- ranges and bitmaps ---------------------------------------------------------------------


def test_ip_range_skips_network_and_broadcast() -> None:
    r = IPRange("10.43.0.0/16")
    assert r.size == 65534 and r.band == 256
    assert r.offset("10.43.0.1") == 0 and r.value(0) == "10.43.0.1"
    assert r.value(r.size - 1) == "10.43.255.254"
    for bad in ("10.43.0.0", "10.43.255.255", "10.99.0.1", "fd00::1", "nonsense"):
        with pytest.raises(NotInRangeError) as err:
            r.offset(bad)
        assert str(err.value) == (f"the provided IP ({bad}) is not in the valid range. "
                                  "The range of valid IPs is 10.43.0.0/16")
    assert IPRange("10.0.0.0/28").band == 0  # too small for a static band (upstream)
    assert IPRange("10.0.0.0/24").band == 16


def test_port_range_and_its_band() -> None:
    r = PortRange("30000-32767")
    assert (r.base, r.last, r.size, r.band) == (30000, 32767, 2768, 86)
    assert parse_port_range("30000+2768") == (30000, 32767)
    with pytest.raises(NotInRangeError) as err:
        r.offset(40080)
    assert str(err.value) == ("provided port is not in the valid range. "
                              "The range of valid ports is 30000-32767")
    with pytest.raises(ValueError):
        parse_port_range("32767-30000")
    assert band_offset(2768, (16, 128, 32)) == 86


def test_bitmap_round_trips_upstream_bytes() -> None:
    bm = Bitmap(65534)
    for offset in (0, 9, 300, 65533):
        bm.set(offset)
    data = bm.to_bytes()
    # upstream's big.Int: big-endian bytes of sum(1 << offset)
    assert int.from_bytes(data, "big") == (1 << 0) | (1 << 9) | (1 << 300) | (1 << 65533)
    back = Bitmap.from_bytes(65534, data)
    assert back.offsets() == [0, 9, 300, 65533] and back.count() == 4
    back.clear(9)
    assert not back.has(9) and back.has(300)


def test_dynamic_allocation_prefers_the_upper_band() -> None:
    r = IPRange("10.0.0.0/24")  # 254 usable, band 16
    draft: Draft[str] = Draft(Bitmap(r.size), r, random.Random(1))
    taken = [r.offset(draft.take_next()) for _ in range(r.size - r.band)]
    assert all(o >= r.band for o in taken) and len(set(taken)) == len(taken)
    low = [r.offset(draft.take_next()) for _ in range(r.band)]  # upper full: the lower band
    assert sorted(low) == list(range(r.band))
    with pytest.raises(RangeFullError):
        draft.take_next()


def test_scan_survives_a_crowded_map() -> None:
    r = PortRange("30000-32767")
    bm = Bitmap(r.size)
    for offset in range(r.size):
        if offset != 2000:
            bm.set(offset)
    draft: Draft[int] = Draft(bm, r, random.Random(7))
    assert draft.take_next() == 32000
    with pytest.raises(AlreadyAllocatedError):
        draft.take(32000)


# -- the stored record ----------------------------------------------------------------------


def run(body: Callable[[storage.Backend], Awaitable[None]]) -> None:
    async def main() -> None:
        backend = storage.MemoryBackend()
        await backend.start()
        try:
            await body(backend)
        finally:
            await backend.close()

    asyncio.run(main())


def test_record_persists_and_reloads() -> None:
    async def body(backend: storage.Backend) -> None:
        r = IPRange("10.43.0.0/16")
        rec: RangeRecord[str] = RangeRecord(backend, SERVICE_IPS_KEY, r, name="serviceips")
        await rec.load()
        ip = await rec.apply(lambda d: d.take_next())
        await rec.apply(lambda d: d.take("10.43.0.10"))
        kv = await backend.get(SERVICE_IPS_KEY)
        assert kv is not None
        stored = orjson.loads(kv.value)
        assert stored["kind"] == "RangeAllocation" and stored["range"] == "10.43.0.0/16"
        assert Bitmap.from_bytes(r.size, base64.b64decode(stored["data"])).count() == 2
        again: RangeRecord[str] = RangeRecord(backend, SERVICE_IPS_KEY, r, name="serviceips")
        await again.load()
        assert set(again.values()) == {ip, "10.43.0.10"}
        with pytest.raises(AlreadyAllocatedError):
            await again.apply(lambda d: d.take(ip))
        await again.release([ip, "10.99.0.1"])  # out of range: ignored, as upstream
        assert again.values() == ["10.43.0.10"]

    run(body)


def test_two_writers_never_share_a_value() -> None:
    """Two records on one store (two API servers): compare-and-swap keeps them honest."""

    async def body(backend: storage.Backend) -> None:
        r = IPRange("10.0.0.0/24")
        a: RangeRecord[str] = RangeRecord(backend, SERVICE_IPS_KEY, r, name="a", seed=1)
        b: RangeRecord[str] = RangeRecord(backend, SERVICE_IPS_KEY, r, name="b", seed=1)
        await a.load()
        await b.load()
        got = await asyncio.gather(*[rec.apply(lambda d: d.take_next())
                                     for _ in range(60) for rec in (a, b)])
        assert len(set(got)) == 120
        final: RangeRecord[str] = RangeRecord(backend, SERVICE_IPS_KEY, r, name="c")
        await final.load()
        assert sorted(final.values()) == sorted(got)

    run(body)


def test_concurrent_allocations_share_writes() -> None:
    async def body(backend: storage.Backend) -> None:
        rec: RangeRecord[str] = RangeRecord(backend, SERVICE_IPS_KEY, IPRange("10.43.0.0/16"),
                                            name="serviceips")
        await rec.load()
        got = await asyncio.gather(*[rec.apply(lambda d: d.take_next()) for _ in range(200)])
        assert len(set(got)) == 200 and rec.used() == 200
        assert rec.writes <= 3, rec.writes  # group commit: one write per batch

    run(body)


def test_a_failed_operation_leaves_its_batch_intact() -> None:
    async def body(backend: storage.Backend) -> None:
        rec: RangeRecord[int] = RangeRecord(backend, NODE_PORTS_KEY, PortRange("30000-30100"),
                                            name="servicenodeports")
        await rec.load()

        def two(d: Draft[int]) -> None:
            d.take(30001)
            d.take(30001)  # fails: the first take of this operation is undone too

        results = await asyncio.gather(rec.apply(lambda d: d.take(30050)), rec.apply(two),
                                       return_exceptions=True)
        assert results[0] is None and isinstance(results[1], AlreadyAllocatedError)
        assert rec.values() == [30050]

    run(body)


def test_cancelled_request_leaks_nothing() -> None:
    async def body(backend: storage.Backend) -> None:
        rec: RangeRecord[str] = RangeRecord(backend, SERVICE_IPS_KEY, IPRange("10.43.0.0/16"),
                                            name="serviceips")
        await rec.load()
        task = asyncio.create_task(rec.apply(lambda d: d.take("10.43.1.1")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(20):
            await asyncio.sleep(0.01)
            if not rec.values():
                break
        assert rec.values() == []

    run(body)


# -- Services through the Store ---------------------------------------------------------------


class Cluster:
    def __init__(self, registry: Registry, allocator: ServiceAllocator, store: Store) -> None:
        self.registry = registry
        self.allocator = allocator
        self.services = store

    async def create(self, name: str, dry_run: bool = False, **spec: Any) -> Obj:
        obj: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                    "spec": {"ports": [{"port": 80}], **spec}}
        self.services.strategy.default(obj)
        return await self.services.create(obj, namespace="default", dry_run=dry_run)

    async def patch_spec(self, name: str, **changes: Any) -> Obj:
        async def change(current: Obj) -> Obj:
            current["spec"].update(changes)
            for key, value in changes.items():
                if value is None:
                    current["spec"].pop(key)
            self.services.strategy.default(current)
            return current

        return await self.services.guaranteed_update("default", name, change)

    async def delete(self, name: str) -> None:
        await self.services.delete("default", name, DeleteOptions())


def with_cluster(body: Callable[[Cluster], Awaitable[None]], *,
                 cidr: str = "10.43.0.0/16") -> None:
    async def main() -> None:
        backend = storage.MemoryBackend()
        await backend.start()
        caches = watchcache.CacheSet(backend)
        await caches.start()
        registry = Registry(Catalogue(), backend, caches)
        namespaces = registry.catalogue.lookup("", "v1", "namespaces")
        services = registry.catalogue.lookup("", "v1", "services")
        assert namespaces is not None and services is not None
        ns: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        await registry.store(namespaces).create(ns, namespace="")
        allocator = ServiceAllocator(backend, service_cidr=cidr)
        await allocator.load()
        await repair.repair(allocator, backend, services.storage_prefix)
        registry.set_strategy(services, ServiceStrategy(services, allocator))
        try:
            await body(Cluster(registry, allocator, registry.store(services)))
        finally:
            await caches.stop()
            await backend.close()

    asyncio.run(main())


def message(err: pytest.ExceptionInfo[errors.APIError]) -> str:
    return err.value.message


def test_create_allocates_and_fills_the_fields() -> None:
    async def body(c: Cluster) -> None:
        svc = await c.create("web")
        spec = svc["spec"]
        ip = spec["clusterIP"]
        assert spec["clusterIPs"] == [ip] and c.allocator.ips.has(ip)
        assert c.allocator.ip_range.offset(ip) >= 256  # the upper band
        assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
        dns = await c.create("kube-dns", clusterIP="10.43.0.10")
        assert dns["spec"]["clusterIPs"] == ["10.43.0.10"]
        headless = await c.create("db", clusterIP="None")
        assert headless["spec"]["clusterIPs"] == ["None"]
        ext = await c.create("ext", type="ExternalName", externalName="example.com", ports=[])
        assert "clusterIP" not in ext["spec"] and "clusterIPs" not in ext["spec"]
        assert sorted(c.allocator.ips.values()) == sorted([ip, "10.43.0.10"])

    with_cluster(body)


def test_create_errors_are_upstreams() -> None:
    async def body(c: Cluster) -> None:
        await c.create("a", clusterIP="10.43.0.5")
        with pytest.raises(errors.APIError) as err:
            await c.create("b", clusterIP="10.43.0.5")
        assert err.value.code == 422
        assert message(err) == (
            'Service "b" is invalid: spec.clusterIPs: Invalid value: []string{"10.43.0.5"}: '
            "failed to allocate IP 10.43.0.5: provided IP is already allocated")
        with pytest.raises(errors.APIError) as err:
            await c.create("c", clusterIP="10.99.0.1")
        assert message(err) == (
            'Service "c" is invalid: spec.clusterIPs: Invalid value: []string{"10.99.0.1"}: '
            "failed to allocate IP 10.99.0.1: the provided IP (10.99.0.1) is not in the "
            "valid range. The range of valid IPs is 10.43.0.0/16")
        await c.create("np", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
        with pytest.raises(errors.APIError) as err:
            await c.create("np2", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
        assert message(err) == ('Service "np2" is invalid: spec.ports[0].nodePort: Invalid '
                                "value: 30080: provided port is already allocated")
        with pytest.raises(errors.APIError) as err:
            await c.create("np3", type="NodePort", ports=[{"port": 80, "nodePort": 40080}])
        assert message(err) == (
            'Service "np3" is invalid: spec.ports[0].nodePort: Invalid value: 40080: provided '
            "port is not in the valid range. The range of valid ports is 30000-32767")
        # A failed node port gives back the cluster IP it had already taken.
        assert len(c.allocator.ips.values()) == 2 and c.allocator.ports.values() == [30080]
        with pytest.raises(errors.APIError) as err:
            await c.create("dual", ipFamilyPolicy="RequireDualStack")
        assert message(err) == (
            'Service "dual" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack":'
            " this cluster is not configured for dual-stack services")

    with_cluster(body)


def test_failed_write_releases_and_dry_run_keeps_nothing() -> None:
    async def body(c: Cluster) -> None:
        await c.create("web")
        before = c.allocator.ips.values()
        with pytest.raises(errors.APIError) as err:
            await c.create("web", type="NodePort")  # AlreadyExists after allocating
        assert err.value.code == 409
        assert c.allocator.ips.values() == before and c.allocator.ports.values() == []
        dry = await c.create("dry", dry_run=True, type="NodePort", clusterIP="10.43.0.7")
        assert dry["spec"]["clusterIP"] == "10.43.0.7" and dry["spec"]["ports"][0]["nodePort"]
        assert c.allocator.ips.values() == before and c.allocator.ports.values() == []
        with pytest.raises(errors.APIError):  # dry run still checks availability
            await c.create("dry", dry_run=True, clusterIP=before[0])

    with_cluster(body)


def test_node_ports_for_nodeport_and_loadbalancer() -> None:
    async def body(c: Cluster) -> None:
        svc = await c.create("dns", type="NodePort", ports=[
            {"name": "udp", "port": 53, "protocol": "UDP"},
            {"name": "tcp", "port": 53, "protocol": "TCP"},
            {"name": "web", "port": 80}])
        ports = [p["nodePort"] for p in svc["spec"]["ports"]]
        assert ports[0] == ports[1] and ports[2] != ports[0]  # one port, both protocols
        assert all(30086 <= p <= 32767 for p in ports)  # the upper band
        lb = await c.create("lb", type="LoadBalancer", externalTrafficPolicy="Local")
        assert lb["spec"]["ports"][0]["nodePort"] and lb["spec"]["healthCheckNodePort"]
        quiet = await c.create("quiet", type="LoadBalancer",
                               allocateLoadBalancerNodePorts=False)
        assert "nodePort" not in quiet["spec"]["ports"][0]
        assert len(c.allocator.ports.values()) == 4

    with_cluster(body)


def test_updates_keep_change_and_release() -> None:
    async def body(c: Cluster) -> None:
        svc = await c.create("web", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
        ip = svc["spec"]["clusterIP"]
        # Re-sending the manifest without allocated values keeps them.
        async def resend(current: Obj) -> Obj:
            fresh: Obj = copy.deepcopy(current)
            fresh["spec"].pop("clusterIP")
            fresh["spec"].pop("clusterIPs")
            fresh["spec"]["ports"] = [{"port": 80, "protocol": "TCP", "targetPort": 80}]
            return fresh

        kept = await c.services.guaranteed_update("default", "web", resend)
        assert kept["spec"]["clusterIP"] == ip and kept["spec"]["ports"][0]["nodePort"] == 30080
        with pytest.raises(errors.APIError) as err:
            await c.patch_spec("web", clusterIP="10.43.9.9")
        assert message(err) == ('Service "web" is invalid: spec.clusterIPs[0]: Invalid value: '
                                '[]string{"10.43.9.9"}: may not change once set')
        # NodePort -> ClusterIP releases the node port; it can be taken again.
        plain = await c.patch_spec("web", type="ClusterIP")
        assert "nodePort" not in plain["spec"]["ports"][0]
        assert c.allocator.ports.values() == []
        await c.create("other", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
        # To ExternalName releases the IP; back allocates a new one.
        ext = await c.patch_spec("web", type="ExternalName", externalName="example.com")
        assert "clusterIP" not in ext["spec"] and not c.allocator.ips.has(ip)
        back = await c.patch_spec("web", type="ClusterIP", externalName=None)
        assert c.allocator.ips.has(back["spec"]["clusterIP"])
        # Changing the port's nodePort takes the new one and gives back the old.
        moved = await c.patch_spec("other", ports=[{"port": 80, "nodePort": 30081}])
        assert moved["spec"]["ports"][0]["nodePort"] == 30081
        assert c.allocator.ports.values() == [30081]

    with_cluster(body)


def test_delete_releases_after_the_delete() -> None:
    async def body(c: Cluster) -> None:
        svc = await c.create("web", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
        await c.delete("web")
        assert not c.allocator.ips.has(svc["spec"]["clusterIP"])
        assert c.allocator.ports.values() == []
        again = await c.create("web2", type="NodePort", clusterIP=svc["spec"]["clusterIP"],
                               ports=[{"port": 80, "nodePort": 30080}])
        assert again["spec"]["clusterIP"] == svc["spec"]["clusterIP"]

    with_cluster(body)


def test_many_concurrent_creates_get_distinct_ips() -> None:
    async def body(c: Cluster) -> None:
        made = await asyncio.gather(*[c.create(f"s{i}", type="NodePort") for i in range(100)])
        ips = [m["spec"]["clusterIP"] for m in made]
        ports = [m["spec"]["ports"][0]["nodePort"] for m in made]
        assert len(set(ips)) == 100 and len(set(ports)) == 100
        assert sorted(c.allocator.ips.values()) == sorted(ips)
        assert c.allocator.ips.writes < 20, c.allocator.ips.writes

    with_cluster(body)


def test_a_small_range_fills_up() -> None:
    async def body(c: Cluster) -> None:
        for i in range(6):  # a /29 has 6 usable addresses
            await c.create(f"s{i}")
        with pytest.raises(errors.APIError) as err:
            await c.create("full")
        assert err.value.code == 500
        assert "failed to allocate a serviceIP: range is full" in message(err)

    with_cluster(body, cidr="10.43.0.0/29")


def test_repair_frees_leaks_and_marks_missing() -> None:
    async def body(c: Cluster) -> None:
        await c.create("a", clusterIP="10.43.0.20", type="NodePort",
                       ports=[{"port": 80, "nodePort": 30020}])
        b = await c.create("b")
        backend = c.allocator.ips.backend
        # A crash after allocating, before the Service was written: a leak.
        await c.allocator.ips.apply(lambda d: d.take("10.43.0.99"))
        await c.allocator.ports.apply(lambda d: d.take(30099))
        # A Service whose address never reached the bitmap (an older record, say).
        await c.allocator.ips.release([b["spec"]["clusterIP"]])
        services = c.services.rt.storage_prefix
        reports = await repair.repair(c.allocator, backend, services)
        ips, ports = reports
        assert ips.leaked == ["10.43.0.99"] and ips.missing == [b["spec"]["clusterIP"]]
        assert ports.leaked == [30099] and ports.missing == []
        assert sorted(c.allocator.ips.values()) == sorted(
            ["10.43.0.20", b["spec"]["clusterIP"]])
        fresh = ServiceAllocator(backend, service_cidr="10.43.0.0/16")
        await fresh.load()  # what is stored agrees
        assert sorted(fresh.ips.values()) == sorted(c.allocator.ips.values())
        assert fresh.ports.values() == [30020]
        again = await repair.repair(c.allocator, backend, services)
        assert not any(r.changed for r in again)

    with_cluster(body)


def test_repair_after_the_range_changed() -> None:
    async def body(c: Cluster) -> None:
        await c.create("a", clusterIP="10.43.0.20")
        await c.create("b", clusterIP="10.43.200.1")
        backend = c.allocator.ips.backend
        smaller = ServiceAllocator(backend, service_cidr="10.43.0.0/24")
        await smaller.load()
        assert smaller.ips.values() == []  # the stored record is for another range
        ips, _ports = await repair.repair(smaller, backend, c.services.rt.storage_prefix)
        assert ips.missing == ["10.43.0.20"] and ips.out_of_range == ["10.43.200.1 (default/b)"]
        assert smaller.ips.values() == ["10.43.0.20"]

    with_cluster(body)


def test_field_rules() -> None:
    svc: Obj = {"spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1"}}
    fields.normalize_cluster_ips(svc, None)
    assert svc["spec"]["clusterIPs"] == ["10.0.0.1"]
    old: Obj = {"spec": {"type": "NodePort", "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"],
                         "externalTrafficPolicy": "Cluster",
                         "ports": [{"name": "a", "port": 80, "nodePort": 30001}]}}
    new = copy.deepcopy(old)
    new["spec"]["type"] = "ClusterIP"
    fields.drop_type_dependent_fields(new, old)
    assert "nodePort" not in new["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in new["spec"]
    resent: Obj = {"spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80}]}}
    fields.patch_allocated_values(resent, old)
    assert resent["spec"]["clusterIP"] == "10.0.0.1"
    assert resent["spec"]["ports"][0]["nodePort"] == 30001
