"""Repair at start: make the bitmaps say exactly what the stored Services hold.

Upstream runs two repair controllers (``ipallocator/controller/repair.go`` and the node-port
twin). Allocation and the Service write are two storage writes, so a crash between them
leaves a value marked with no Service holding it (a leak), and a record written by an older
version, for another range, or lost entirely, can miss values Services hold. Repair lists the
Services, builds fresh bitmaps from them and stores those with a compare-and-swap on the
record's revision read *before* the list: an allocation made meanwhile (by another server)
changes that revision, so the repair is redone on the newer state instead of erasing it.
Values outside the configured range, and values held by two Services, are reported (the
Services must be recreated; upstream says the same).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, TypeVar

import orjson

from kubling import storage
from kubling.apiserver.allocation import fields
from kubling.apiserver.allocation.bitmap import Bitmap
from kubling.apiserver.allocation.record import RangeRecord
from kubling.apiserver.allocation.service import ServiceAllocator

log = logging.getLogger("kubling.apiserver.allocation")

V = TypeVar("V", str, int)

_ATTEMPTS = 8


@dataclasses.dataclass(slots=True)
class RepairReport:
    """What one repair of one record found (values as users see them)."""

    name: str
    leaked: list[Any] = dataclasses.field(default_factory=list)
    missing: list[Any] = dataclasses.field(default_factory=list)
    out_of_range: list[str] = dataclasses.field(default_factory=list)
    duplicates: list[str] = dataclasses.field(default_factory=list)
    used: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.leaked or self.missing)


async def repair(allocator: ServiceAllocator, backend: storage.Backend,
                 services_prefix: str) -> list[RepairReport]:
    """Rebuild both records from the Services under ``services_prefix``; log what changed."""
    reports = [
        await _repair_record(allocator.ips, backend, services_prefix, fields.cluster_ips),
        await _repair_record(allocator.ports, backend, services_prefix, fields.node_ports),
    ]
    for report in reports:
        _log(report)
    return reports


async def _repair_record(record: RangeRecord[V], backend: storage.Backend, prefix: str,
                         values_of: Any) -> RepairReport:
    async with record.lock:  # no batch of this server writes meanwhile
        for _attempt in range(_ATTEMPTS):
            await record.load()  # the revision the compare-and-swap expects
            listed = await backend.list(prefix)
            report = RepairReport(record.name)
            fresh = Bitmap(record.range.size)
            owners: dict[int, str] = {}
            for kv in listed.items:
                try:
                    svc = orjson.loads(kv.value)
                except orjson.JSONDecodeError:
                    continue
                who = _name_of(svc)
                for value in values_of(svc):
                    if not record.range.contains(value):
                        report.out_of_range.append(f"{value} ({who})")
                        continue
                    offset = record.range.offset(value)
                    if offset in owners and owners[offset] != who:
                        report.duplicates.append(f"{value} ({owners[offset]}, {who})")
                    owners[offset] = who
                    fresh.set(offset)
            before = set(record.bitmap.offsets())
            after = set(owners)
            report.leaked = [record.range.value(o) for o in sorted(before - after)]
            report.missing = [record.range.value(o) for o in sorted(after - before)]
            report.used = len(after)
            if record.revision and fresh.bits == record.bitmap.bits:
                return report
            try:
                await record.write(fresh)
            except storage.ConflictError:
                continue  # someone allocated meanwhile: redo on the newer state
            return report
    raise storage.StorageError(f"{record.name}: repair kept losing races with other writers")


def _name_of(svc: dict[str, Any]) -> str:
    md = svc.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


def _log(report: RepairReport) -> None:
    for value in report.leaked:
        log.warning("repair %s: %s was allocated but no service holds it; released",
                    report.name, value)
    for value in report.missing:
        log.warning("repair %s: %s is held by a service but was not allocated; marked",
                    report.name, value)
    for entry in report.out_of_range:
        log.error("repair %s: %s is not within the range; please recreate the service",
                  report.name, entry)
    for entry in report.duplicates:
        log.error("repair %s: %s is assigned to more than one service; please recreate "
                  "one of them", report.name, entry)
    log.info("repair %s: %d in use, %d leak(s) released, %d missing marked",
             report.name, report.used, len(report.leaked), len(report.missing))
