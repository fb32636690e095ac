"""What a Service create, update or delete allocates and releases.

An ``Operation`` is upstream's allocation transaction (``portallocator.PortAllocationOperation``
and the cluster-IP twin): allocations are made (and stored) at once, before the Service is
written; releases are only recorded. When the Service write succeeds the recorded releases
are made; when it fails the allocations are undone. If the outcome of the write is unknown
(the request was cancelled mid-write) nothing is released: it is better to leak a value,
which repair reclaims at the next start, than to hand out one a stored Service still holds.

Errors are upstream's, field for field: a taken or out-of-range ``clusterIP`` is a 422 on
``spec.clusterIPs`` with the list as value, a taken or out-of-range ``nodePort`` a 422 on
``spec.ports[i].nodePort``, an exhausted range a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from kubling import storage
from kubling.api import field
from kubling.apiserver import errors
from kubling.apiserver.allocation import fields
from kubling.apiserver.allocation.bitmap import AllocationError, IPRange, PortRange
from kubling.apiserver.allocation.record import Draft, RangeRecord

log = logging.getLogger("kubling.apiserver.allocation")

Obj = dict[str, Any]

#: Where upstream keeps the two bitmaps.
SERVICE_IPS_KEY = "/registry/ranges/serviceips"
NODE_PORTS_KEY = "/registry/ranges/servicenodeports"

_SPEC = field.Path("spec")


def _invalid(svc: Obj, errs: list[field.FieldError]) -> errors.APIError:
    name = str((svc.get("metadata") or {}).get("name") or "")
    return errors.invalid("", "Service", name, errs)


class ServiceAllocator:
    """The two allocation records of a cluster and the rules for using them."""

    def __init__(self, backend: storage.Backend, *, service_cidr: str,
                 node_port_range: str = "30000-32767", seed: int | None = None) -> None:
        self.ip_range = IPRange(service_cidr)
        self.port_range = PortRange(node_port_range)
        self.ips: RangeRecord[str] = RangeRecord(backend, SERVICE_IPS_KEY, self.ip_range,
                                                 name="serviceips", seed=seed)
        self.ports: RangeRecord[int] = RangeRecord(backend, NODE_PORTS_KEY, self.port_range,
                                                   name="servicenodeports", seed=seed)

    async def load(self) -> None:
        await self.ips.load()
        await self.ports.load()

    # -- the three moments of a Service's life ------------------------------------------
    async def allocate_create(self, svc: Obj, *, dry_run: bool) -> Operation:
        """Fill and reserve the Service's cluster IP and node ports (raises on failure)."""
        op = Operation(self, dry_run)
        try:
            if fields.needs_cluster_ip(svc) and not fields.is_headless(svc):
                await op.cluster_ip(svc)
            elif fields.is_headless(svc):
                fields.spec_of(svc)["clusterIPs"] = ["None"]
            if fields.needs_node_ports(svc):
                await op.node_ports(svc, None)
        except BaseException:
            await op.finish(False)
            raise
        return op

    async def allocate_update(self, new: Obj, old: Obj, *, dry_run: bool) -> Operation:
        """Allocate what the new state needs and the old did not; defer releasing the rest."""
        op = Operation(self, dry_run)
        try:
            if fields.needs_cluster_ip(new) and not fields.is_headless(new):
                if not fields.needs_cluster_ip(old) or not fields.cluster_ips(old):
                    await op.cluster_ip(new)  # from ExternalName (or never had one)
            if fields.needs_cluster_ip(old) and not fields.needs_cluster_ip(new):
                op.release_ips(fields.cluster_ips(old))
            if fields.needs_node_ports(new) or fields.node_ports(new):
                await op.node_ports(new, old)
            else:
                op.release_ports(fields.node_ports(old))
        except BaseException:
            await op.finish(False)
            raise
        return op

    async def release(self, svc: Obj) -> None:
        """A deleted Service's values go back to the pool (after the delete is stored)."""
        try:
            await self.ips.release(fields.cluster_ips(svc))
            await self.ports.release(fields.node_ports(svc))
        except Exception as err:  # the Service is gone either way; repair reclaims it
            log.error("releasing the addresses of a deleted service failed: %s", err)


class Operation:
    """One Service write's allocations (made) and releases (deferred until commit)."""

    def __init__(self, allocator: ServiceAllocator, dry_run: bool) -> None:
        self.allocator = allocator
        self.dry_run = dry_run
        self.taken_ips: list[str] = []
        self.taken_ports: list[int] = []
        self.deferred_ips: list[str] = []
        self.deferred_ports: list[int] = []
        self.done = False

    # -- cluster IPs ----------------------------------------------------------------------
    async def cluster_ip(self, svc: Obj) -> None:
        spec = fields.spec_of(svc)
        given = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        errs = _check_families(spec, self.allocator.ip_range.family)
        if errs:
            raise _invalid(svc, errs)
        wanted: list[str] = [ip for ip in given if isinstance(ip, str) and ip]

        def allocate(draft: Draft[str]) -> str:
            if wanted:
                try:
                    draft.take(wanted[0])
                except AllocationError as err:
                    raise _invalid(svc, [field.invalid(
                        str(_SPEC.child("clusterIPs")), field.GoStringSlice(wanted),
                        f"failed to allocate IP {wanted[0]}: {err}")]) from None
                return wanted[0]
            try:
                return draft.take_next()
            except AllocationError as err:
                raise errors.internal(f"failed to allocate a serviceIP: {err}") from None

        record = self.allocator.ips
        ip = record.simulate(allocate) if self.dry_run else await record.apply(allocate)
        if not self.dry_run:
            self.taken_ips.append(ip)
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]
        spec.setdefault("ipFamilies", [self.allocator.ip_range.family])
        spec.setdefault("ipFamilyPolicy", "SingleStack")

    def release_ips(self, ips: list[str]) -> None:
        self.deferred_ips.extend(ips)

    # -- node ports -----------------------------------------------------------------------
    async def node_ports(self, svc: Obj, old: Obj | None) -> None:
        """Upstream's initNodePorts / updateNodePorts and the health-check port, in one
        write: ports kept from ``old`` stay, new ones are taken, dropped ones released."""
        spec = fields.spec_of(svc)
        held = set(fields.node_ports(old)) if old is not None else set()
        allocate_missing = fields.should_allocate_node_ports(svc)
        wants_health = fields.needs_health_check_node_port(svc)

        def allocate(draft: Draft[int]) -> tuple[dict[int, int], int | None]:
            chosen: dict[int, int] = {}  # index in spec.ports -> node port
            by_port: dict[Any, int] = {}  # service port -> its node port (TCP+UDP share)
            mine: set[int] = set()
            for i, port in enumerate(fields.ports_of(spec)):
                requested = port.get("nodePort") or 0
                if not requested and not allocate_missing:
                    continue
                if not requested and old is None:
                    requested = by_port.get(port.get("port")) or _requested_for(
                        port.get("port"), fields.ports_of(spec))
                if requested:
                    if requested not in held and requested not in mine:
                        try:
                            draft.take(requested)
                        except AllocationError as err:
                            raise _invalid(svc, [field.invalid(
                                str(_SPEC.child("ports").index(i).child("nodePort")),
                                requested, str(err))]) from None
                        mine.add(requested)
                    chosen[i] = requested
                else:
                    try:
                        chosen[i] = draft.take_next()
                    except AllocationError as err:
                        raise errors.internal(f"failed to allocate a nodePort: {err}") from None
                    mine.add(chosen[i])
                by_port.setdefault(port.get("port"), chosen[i])
            health: int | None = None
            if wants_health:
                requested = spec.get("healthCheckNodePort") or 0
                if requested and (requested in held or requested in mine):
                    health = requested
                elif requested:
                    try:
                        draft.take(requested)
                    except AllocationError as err:
                        raise errors.internal(
                            f"failed to allocate requested HealthCheck NodePort {requested}: "
                            f"{err}") from None
                    health = requested
                else:
                    try:
                        health = draft.take_next()
                    except AllocationError as err:
                        raise errors.internal(
                            f"failed to allocate a HealthCheck NodePort 0: {err}") from None
            return chosen, health

        record = self.allocator.ports
        chosen, health = (record.simulate(allocate) if self.dry_run
                          else await record.apply(allocate))
        ports = fields.ports_of(spec)
        for i, node_port in chosen.items():
            ports[i]["nodePort"] = node_port
        if health is not None:
            spec["healthCheckNodePort"] = health
        now = set(fields.node_ports(svc))
        if not self.dry_run:
            self.taken_ports.extend(p for p in now if p not in held)
        self.deferred_ports.extend(p for p in held if p not in now)

    def release_ports(self, ports: list[int]) -> None:
        self.deferred_ports.extend(ports)

    # -- the end of the transaction -------------------------------------------------------
    async def finish(self, success: bool) -> None:
        """Commit (make the deferred releases) or roll back (undo the allocations)."""
        if self.done or self.dry_run:
            self.done = True
            return
        self.done = True
        ips, ports = ((self.deferred_ips, self.deferred_ports) if success
                      else (self.taken_ips, self.taken_ports))
        try:
            await self.allocator.ips.release(ips)
            await self.allocator.ports.release(ports)
        except Exception as err:  # a leak, not a double allocation: repair reclaims it
            log.error("service allocation %s failed: %s",
                      "commit" if success else "rollback", err)


def _requested_for(service_port: Any, ports: list[Obj]) -> int:
    """A nodePort the user asked for on another entry with the same port (TCP and UDP of
    one port share a node port), as upstream's findRequestedNodePort."""
    for port in ports:
        if port.get("port") == service_port and port.get("nodePort"):
            value = port["nodePort"]
            return value if isinstance(value, int) else 0
    return 0


def _check_families(spec: Obj, family: str) -> list[field.FieldError]:
    """A single-stack cluster serves one family: refuse what asks for another."""
    errs: list[field.FieldError] = []
    policy = spec.get("ipFamilyPolicy")
    if policy == "RequireDualStack":
        errs.append(field.invalid(str(_SPEC.child("ipFamilyPolicy")), policy,
                                  "this cluster is not configured for dual-stack services"))
    for i, requested in enumerate(spec.get("ipFamilies") or []):
        if requested != family:
            errs.append(field.invalid(str(_SPEC.child("ipFamilies").index(i)), requested,
                                      "not configured on this cluster"))
    return errs
