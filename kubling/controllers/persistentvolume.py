"""The PersistentVolume binder: claims meet volumes (upstream ``pkg/controller/volume/
persistentvolume``, its binding half).

A pending claim is bound to the smallest Available volume that fits it — same storage
class ("" when the claim names none and no default class applies), the claim's access
modes all offered, enough capacity, the same volume mode, matching the claim's selector;
a volume pre-bound to the claim (``spec.claimRef``) or named by it (``spec.volumeName``)
comes first. Binding writes the volume's ``claimRef`` first and the claim's
``volumeName`` second, then both statuses, so that a crash in between leaves a volume that
points at its claim and is finished on the next pass, never a volume given twice.

A claim nothing fits stays Pending and says why, as upstream does: ``FailedBinding`` (no
class), ``ProvisioningFailed`` (its class does not exist), ``WaitForFirstConsumer`` or
``ExternalProvisioning`` (a class whose provisioner would create the volume — kubling has
no provisioner yet, so an administrator's volume is what binds it). When a bound claim is
deleted its volume is released: ``Retain`` keeps it ``Released``; ``Delete`` removes a
provisioned volume's object and fails a static one (no plugin can delete it), as upstream.
A claim of a ``WaitForFirstConsumer`` class is left to the scheduler, which picks its volume
with the pod's node and pre-binds it (``claimRef``); this controller then finishes the
binding. Claims are looked at again every 15 s, upstream's resync period.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import manager, podcontrol
from kubling.controllers.volumeutil import (
    BIND_COMPLETED,
    BOUND_BY_CONTROLLER,
    DEFAULT_CLASS,
    PROVISIONED_BY,
    SELECTED_NODE,
    best_volume,
    class_of,
    fits,
    is_delay_binding,
)
from kubling.controllers.volumeutil import claim_ref_is as _claim_ref_is

__all__ = ["BIND_COMPLETED", "BOUND_BY_CONTROLLER", "DEFAULT_CLASS", "PROVISIONED_BY",
           "PersistentVolumeController", "best_volume", "class_of", "fits"]

log = logging.getLogger(__name__)

PVS = rest.lookup("v1", "persistentvolumes")
PVCS = rest.lookup("v1", "persistentvolumeclaims")
CLASSES = rest.lookup("storage.k8s.io/v1", "storageclasses")

RESYNC = 15.0


class PersistentVolumeController:
    """Binds claims to volumes and releases volumes of deleted claims."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.wall = podcontrol.WallClock(ctx.clock)
        self.recorder: events.EventRecorder = ctx.recorder_for("persistentvolume-controller")
        self.pvs_api = ctx.client.resource(PVS)
        self.pvcs_api = ctx.client.resource(PVCS)
        self.volumes = ctx.informers.informer(PVS)
        self.claims = ctx.informers.informer(PVCS)
        self.classes = ctx.informers.informer(CLASSES)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
            name="persistentvolume", clock=ctx.clock)
        self.claims.add_event_handler(on_add=self._claim_changed,
                                      on_update=lambda _o, n: self._claim_changed(n),
                                      on_delete=self._claim_deleted)
        self.volumes.add_event_handler(on_add=self._volume_changed,
                                       on_update=lambda _o, n: self._volume_changed(n),
                                       on_delete=self._volume_changed)

    def _claim_changed(self, claim: Object) -> None:
        self.queue.add("claim/" + informer.key_of(claim))

    def _claim_deleted(self, claim: Object) -> None:
        name = (claim.get("spec") or {}).get("volumeName")
        if name:
            self.queue.add("volume/" + str(name))

    def _volume_changed(self, volume: Object) -> None:
        self.queue.add("volume/" + meta.name_of(volume))
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        if ref.get("namespace") and ref.get("name"):
            self.queue.add(f"claim/{ref['namespace']}/{ref['name']}")
        else:  # a new volume may fit a claim that was waiting
            for claim in self.claims.indexer.list():
                if (claim.get("status") or {}).get("phase") in (None, "Pending"):
                    self.queue.add("claim/" + informer.key_of(claim))

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=1)

    async def reconcile(self, key: str) -> float | None:
        kind, _, rest_of_key = key.partition("/")
        try:
            if kind == "claim":
                return await self._sync_claim(rest_of_key)
            await self._sync_volume(rest_of_key)
        except rest.ApiError as err:
            if rest.is_conflict(err) or rest.is_not_found(err):
                return 0.5  # the cache was behind: look again shortly
            raise
        return None

    # -- claims --------------------------------------------------------------------------
    async def _sync_claim(self, key: str) -> float | None:
        claim = self.claims.indexer.get(key)
        if claim is None or (claim.get("metadata") or {}).get("deletionTimestamp"):
            return None
        name = (claim.get("spec") or {}).get("volumeName")
        if name:
            await self._sync_named(claim, str(name))
            return None
        volumes = self.volumes.indexer.list()
        if is_delay_binding(claim, self._classes()):
            # The scheduler picks the volume with the pod's node; only a volume an
            # administrator (or the scheduler's binder) pre-bound to the claim binds here.
            volumes = [v for v in volumes if _claim_ref_is(v, claim)]
        volume = best_volume(volumes, claim)
        if volume is not None:
            await self._bind(volume, claim)
            return None
        self._explain_pending(claim)
        return RESYNC

    async def _sync_named(self, claim: Object, name: str) -> None:
        volume = self.volumes.indexer.get(name)
        annotations = meta.annotations_of(claim)
        if volume is None:
            if annotations.get(BIND_COMPLETED) and (claim.get("status") or {}).get(
                    "phase") != "Lost":
                await self._claim_status(claim, {"phase": "Lost"})
                self.recorder.record(claim, events.WARNING, "ClaimLost",
                                     "Bound claim has lost its PersistentVolume. Data on the "
                                     "volume is lost!")
            return
        ref = (volume.get("spec") or {}).get("claimRef")
        if ref and not _claim_ref_is(volume, claim):
            self.recorder.record(claim, events.WARNING, "FailedBinding",
                                 "volume is already bound to a different claim")
            return
        if fits(volume, claim) or _claim_ref_is(volume, claim):
            await self._bind(volume, claim)

    def _classes(self) -> dict[str, Object]:
        return {meta.name_of(c): c for c in self.classes.indexer.list()}

    def _explain_pending(self, claim: Object) -> None:
        wanted = class_of(claim)
        if not wanted:
            self.recorder.record(claim, events.NORMAL, "FailedBinding",
                                 "no persistent volumes available for this claim and no "
                                 "storage class is set")
            return
        storage_class = self.classes.indexer.get(wanted)
        if storage_class is None:
            self.recorder.record(claim, events.WARNING, "ProvisioningFailed",
                                 f'storageclass.storage.k8s.io "{wanted}" not found')
        elif storage_class.get("volumeBindingMode") == "WaitForFirstConsumer" and \
                not meta.annotations_of(claim).get(SELECTED_NODE):
            self.recorder.record(claim, events.NORMAL, "WaitForFirstConsumer",
                                 "waiting for first consumer to be created before binding")
        else:
            self.recorder.record(claim, events.NORMAL, "ExternalProvisioning",
                                 "waiting for a volume to be created, either by external "
                                 f'provisioner "{storage_class.get("provisioner")}" or '
                                 "manually created by system administrator")

    async def _bind(self, volume: Object, claim: Object) -> None:
        """Volume's claimRef, then the claim's volumeName, then both statuses."""
        md = claim.get("metadata") or {}
        if not _claim_ref_is(volume, claim) or not (volume["spec"].get("claimRef") or {}).get(
                "uid"):
            volume = copy.deepcopy(volume)
            volume["spec"]["claimRef"] = {
                "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": meta.namespace_of(claim), "name": meta.name_of(claim),
                "uid": md.get("uid"), "resourceVersion": md.get("resourceVersion")}
            volume = await self.pvs_api.update(volume)
        if (volume.get("status") or {}).get("phase") != "Bound":
            volume = copy.deepcopy(volume)
            volume["status"] = {"phase": "Bound",
                                "lastPhaseTransitionTime": self.wall.stamp()}
            await self.pvs_api.update_status(volume)
        annotations = meta.annotations_of(claim)
        if (claim.get("spec") or {}).get("volumeName") != meta.name_of(volume) or \
                not annotations.get(BIND_COMPLETED):
            updated = copy.deepcopy(claim)
            updated["spec"]["volumeName"] = meta.name_of(volume)
            added = meta.metadata(updated).setdefault("annotations", {})
            added[BIND_COMPLETED] = "yes"
            if not (claim.get("spec") or {}).get("volumeName"):
                added[BOUND_BY_CONTROLLER] = "yes"
            claim = await self.pvcs_api.update(updated, namespace=meta.namespace_of(claim))
        spec = volume.get("spec") or {}
        status = {"phase": "Bound", "accessModes": list(spec.get("accessModes") or []),
                  "capacity": dict(spec.get("capacity") or {})}
        if {k: (claim.get("status") or {}).get(k) for k in status} != status:
            await self._claim_status(claim, status)
            log.info("bound claim %s/%s to volume %s", meta.namespace_of(claim),
                     meta.name_of(claim), meta.name_of(volume))

    async def _claim_status(self, claim: Object, status: dict[str, Any]) -> None:
        updated = copy.deepcopy(claim)
        updated["status"] = {**(claim.get("status") or {}), **status}
        await self.pvcs_api.update_status(updated, namespace=meta.namespace_of(claim))

    # -- volumes -------------------------------------------------------------------------
    async def _sync_volume(self, name: str) -> None:
        volume = self.volumes.indexer.get(name)
        if volume is None or (volume.get("metadata") or {}).get("deletionTimestamp"):
            return
        spec = volume.get("spec") or {}
        ref = spec.get("claimRef")
        phase = (volume.get("status") or {}).get("phase")
        if not ref:
            if phase != "Available":
                await self._volume_status(volume, "Available")
            return
        claim = self.claims.indexer.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if claim is not None and _claim_ref_is(volume, claim):
            return  # bound, or being bound by the claim's sync
        if not ref.get("uid"):
            if phase != "Available":
                await self._volume_status(volume, "Available")  # pre-bound, claim to come
            return
        await self._release(volume, phase)

    async def _release(self, volume: Object, phase: Any) -> None:
        policy = (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Delete" and meta.annotations_of(volume).get(PROVISIONED_BY):
            await self.pvs_api.delete(meta.name_of(volume))
            return
        if policy == "Retain":
            if phase != "Released":
                await self._volume_status(volume, "Released")
            return
        if phase != "Failed":
            message = (f'error getting deleter volume plugin for volume "'
                       f'{meta.name_of(volume)}": no deletable volume plugin matched'
                       if policy == "Delete" else
                       f'no volume plugin matched name: kubernetes.io/{policy.lower()}')
            await self._volume_status(volume, "Failed", message)
            self.recorder.record(volume, events.WARNING, "VolumeFailedDelete"
                                 if policy == "Delete" else "VolumeFailedRecycle", message)

    async def _volume_status(self, volume: Object, phase: str, message: str = "") -> None:
        updated = copy.deepcopy(volume)
        status: dict[str, Any] = {"phase": phase,
                                  "lastPhaseTransitionTime": self.wall.stamp()}
        if message:
            status["message"] = message
        updated["status"] = status
        await self.pvs_api.update_status(updated)
