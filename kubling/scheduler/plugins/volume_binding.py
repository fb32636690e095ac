"""VolumeBinding: a pod's claims must be usable from the node (upstream ``volumebinding``).

* A bound claim's volume must be reachable from the node (its ``nodeAffinity``), else
  ``node(s) had volume node affinity conflict``.
* An unbound claim of an ``Immediate`` class waits for the PV controller: unresolvable.
* An unbound claim of a ``WaitForFirstConsumer`` class is *delayed*: the scheduler picks its
  volume. A node passes if an Available volume fits the claim (class, access modes,
  capacity, volume mode, selector) and is reachable from it, each volume given to one claim
  of the pod only, smallest first; or if the class has a provisioner (not
  ``kubernetes.io/no-provisioner``) whose ``allowedTopologies`` include the node. Else
  ``node(s) didn't find available persistent volumes to bind``.

Once a node is chosen, :func:`assume_pod_volumes` records the decisions in the snapshot (so
the next cycles do not hand out the same volume) and :func:`bind_pod_volumes`, upstream's
PreBind, writes them through the API — the volume's ``claimRef`` (the PV controller then
finishes the binding) or the claim's ``volume.kubernetes.io/selected-node`` (for a
provisioner) — and waits until every claim is bound before the pod is.

Not done: volume capacity scoring and CSI volume limits (both off by default upstream).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from kubling.client import rest
from kubling.controllers import volumeutil
from kubling.scheduler.interface import SKIP, SUCCESS, CycleState, Handle, PreFilterResult, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.snapshot import Snapshot

NAME = "VolumeBinding"
ERR_REASON_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
ERR_REASON_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
ERR_REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_REASON_PV_NOT_EXIST = (
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)")
#: Upstream's ``bindTimeoutSeconds``: how long PreBind waits for the claims to bind.
BIND_TIMEOUT = 600.0
_STATE_KEY = "PreFilter" + NAME

Obj = Mapping[str, Any]


def claim_names(pod: PodInfo) -> list[str]:
    """Claims the pod uses, including those generated for generic ephemeral volumes."""
    names = []
    for volume in (pod.pod.get("spec") or {}).get("volumes") or ():
        claim = volume.get("persistentVolumeClaim")
        if claim and claim.get("claimName"):
            names.append(str(claim["claimName"]))
        elif volume.get("ephemeral") is not None:
            names.append(f"{pod.name}-{volume.get('name')}")
    return names


@dataclasses.dataclass(frozen=True, slots=True)
class _DelayedClaim:
    claim: Obj
    #: Volumes that fit the claim anywhere, smallest first; the node decides among them.
    candidates: tuple[Obj, ...]
    storage_class: Obj | None


@dataclasses.dataclass(frozen=True, slots=True)
class _State:
    bound_volumes: tuple[Obj, ...]
    missing_volume: bool
    delayed: tuple[_DelayedClaim, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class PodVolumes:
    """What binding the pod on its node needs: volumes to pre-bind, claims to provision."""

    static_bindings: tuple[tuple[Obj, Obj], ...] = ()  # (claim, volume)
    dynamic_provisions: tuple[Obj, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.static_bindings and not self.dynamic_provisions


def _can_provision(storage_class: Obj | None, node: NodeInfo) -> bool:
    """Upstream ``checkVolumeProvisions``: a real provisioner allowed on this node."""
    if storage_class is None:
        return False
    provisioner = storage_class.get("provisioner") or volumeutil.NO_PROVISIONER
    if provisioner == volumeutil.NO_PROVISIONER:
        return False
    topologies = storage_class.get("allowedTopologies") or ()
    if not topologies:
        return True
    for term in topologies:  # OR of terms, AND of expressions, as MatchTopologySelectorTerms
        expressions = term.get("matchLabelExpressions") or ()
        if all(node.labels.get(e.get("key", "")) in (e.get("values") or ())
               for e in expressions):
            return True
    return False


def _match(delayed: tuple[_DelayedClaim, ...], node: NodeInfo) -> PodVolumes | None:
    """The node's decisions for the delayed claims, or None when one cannot be met."""
    chosen: set[str] = set()
    static: list[tuple[Obj, Obj]] = []
    dynamic: list[Obj] = []
    # Smallest requests first, so they take the smallest volumes (upstream's order).
    for item in sorted(delayed, key=lambda d: volumeutil.request_of(d.claim)):
        volume = next((v for v in item.candidates
                       if volumeutil.name_of(v) not in chosen
                       and volumeutil.node_affinity_allows(v, node.labels, node.name)), None)
        if volume is not None:
            chosen.add(volumeutil.name_of(volume))
            static.append((item.claim, volume))
        elif _can_provision(item.storage_class, node):
            dynamic.append(item.claim)
        else:
            return None
    return PodVolumes(tuple(static), tuple(dynamic))


def _candidates(claim: Obj, snapshot: Snapshot) -> tuple[Obj, ...]:
    fitting = [v for v in snapshot.pvs.values() if volumeutil.fits(v, claim)]
    # A volume pre-bound to the claim comes first, then the smallest (best_volume's order).
    fitting.sort(key=lambda v: (not volumeutil.claim_ref_is(v, claim),
                                volumeutil.capacity_of(v), volumeutil.name_of(v)))
    return tuple(fitting)


class VolumeBinding:
    name = NAME

    def pre_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]:
        names = claim_names(pod)
        if not names:
            return None, SKIP
        bound: list[Obj] = []
        delayed: list[_DelayedClaim] = []
        missing = False
        for name in names:
            claim = snapshot.pvcs.get((pod.namespace, name))
            if claim is None:
                return None, Status.unschedulable(
                    f'persistentvolumeclaim "{name}" not found', unresolvable=True
                )
            if (claim.get("metadata") or {}).get("deletionTimestamp"):
                return None, Status.unschedulable(
                    f'persistentvolumeclaim "{name}" is being deleted', unresolvable=True
                )
            volume_name = (claim.get("spec") or {}).get("volumeName")
            if volume_name:
                volume = snapshot.pvs.get(str(volume_name))
                if volume is None:
                    missing = True
                else:
                    bound.append(volume)
                continue
            if not volumeutil.is_delay_binding(claim, snapshot.storage_classes):
                return None, Status.unschedulable(ERR_REASON_UNBOUND_IMMEDIATE, unresolvable=True)
            delayed.append(_DelayedClaim(
                claim, _candidates(claim, snapshot),
                snapshot.storage_classes.get(volumeutil.class_of(claim))))
        state.write(_STATE_KEY, _State(tuple(bound), missing, tuple(delayed)))
        return None, SUCCESS

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        if NAME in state.skip_filter:
            return SUCCESS
        data: _State = state.read(_STATE_KEY)
        reasons: list[str] = []
        if data.missing_volume:
            reasons.append(ERR_REASON_PV_NOT_EXIST)
        elif not all(volumeutil.node_affinity_allows(v, node.labels, node.name)
                     for v in data.bound_volumes):
            reasons.append(ERR_REASON_NODE_CONFLICT)
        if data.delayed and _match(data.delayed, node) is None:
            reasons.append(ERR_REASON_BIND_CONFLICT)
        if reasons:
            return Status.unschedulable(*reasons, unresolvable=True)
        return SUCCESS


def new(args: Mapping[str, Any], handle: Handle) -> VolumeBinding:
    return VolumeBinding()


# -- after the decision: Reserve (assume) and PreBind ---------------------------------------


def assume_pod_volumes(pod: PodInfo, node_name: str, snapshot: Snapshot) -> PodVolumes:
    """Upstream's Reserve: decide the pod's delayed claims on ``node_name`` and record the
    decisions in the snapshot at once, so the next scheduling cycle sees the volumes taken."""
    node = snapshot.get(node_name)
    if node is None:
        return PodVolumes()
    delayed = []
    for name in claim_names(pod):
        claim = snapshot.pvcs.get((pod.namespace, name))
        if claim is None or (claim.get("spec") or {}).get("volumeName"):
            continue
        if volumeutil.is_delay_binding(claim, snapshot.storage_classes):
            delayed.append(_DelayedClaim(
                claim, _candidates(claim, snapshot),
                snapshot.storage_classes.get(volumeutil.class_of(claim))))
    volumes = _match(tuple(delayed), node) if delayed else None
    if volumes is None:
        return PodVolumes()
    bindings = []
    for claim, volume in volumes.static_bindings:
        assumed = _bind_volume_to_claim(volume, claim)
        snapshot.pvs[volumeutil.name_of(assumed)] = assumed
        bindings.append((claim, assumed))
    provisions = []
    for claim in volumes.dynamic_provisions:
        assumed = copy.deepcopy(dict(claim))
        annotations = assumed.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[volumeutil.SELECTED_NODE] = node_name
        snapshot.pvcs[(volumeutil.namespace_of(assumed),
                       volumeutil.name_of(assumed))] = assumed
        provisions.append(assumed)
    return PodVolumes(tuple(bindings), tuple(provisions))


def _bind_volume_to_claim(volume: Obj, claim: Obj) -> dict[str, Any]:
    """Upstream ``GetBindVolumeToClaim``: the volume's ``claimRef`` names the claim, and a
    volume the controller (here the scheduler) bound says so in an annotation."""
    updated = copy.deepcopy(dict(volume))
    md = claim.get("metadata") or {}
    if not volumeutil.claim_ref_is(updated, claim) or not (
            (updated.get("spec") or {}).get("claimRef") or {}).get("uid"):
        updated.setdefault("spec", {})["claimRef"] = {
            "kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": volumeutil.namespace_of(claim),
            "name": volumeutil.name_of(claim),
            "uid": md.get("uid"), "resourceVersion": md.get("resourceVersion")}
        annotations = updated.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[volumeutil.BOUND_BY_CONTROLLER] = "yes"
    return updated


def forget_pod_volumes(volumes: PodVolumes, snapshot: Snapshot) -> None:
    """Undo :func:`assume_pod_volumes` when binding fails (upstream ``RevertAssumedPodVolumes``):
    put back what the API last said, unless the informer already replaced the assumption."""
    for _claim, assumed in volumes.static_bindings:
        name = volumeutil.name_of(assumed)
        if snapshot.pvs.get(name) is assumed:
            ref = dict(assumed)
            ref["spec"] = {k: v for k, v in (assumed.get("spec") or {}).items()
                           if k != "claimRef"}
            snapshot.pvs[name] = ref
    for assumed in volumes.dynamic_provisions:
        key = (volumeutil.namespace_of(assumed), volumeutil.name_of(assumed))
        if snapshot.pvcs.get(key) is assumed:
            plain = copy.deepcopy(dict(assumed))
            plain["metadata"]["annotations"].pop(volumeutil.SELECTED_NODE, None)
            snapshot.pvcs[key] = plain


async def bind_pod_volumes(
    client: rest.Client, volumes: PodVolumes, snapshot: Snapshot, *,
    timeout: float = BIND_TIMEOUT, interval: float = 0.2,
) -> None:
    """Upstream's PreBind: write the decisions, then wait until every claim is bound.

    Raises ``rest.ApiError`` from the writes, ``TimeoutError`` when the claims do not bind
    in time (no provisioner answered, or the volume was taken meanwhile) and
    ``LookupError`` when a claim is deleted meanwhile.
    """
    if volumes.empty:
        return
    pvs = client.resource(rest.lookup("v1", "persistentvolumes"))
    pvcs = client.resource(rest.lookup("v1", "persistentvolumeclaims"))
    for _claim, volume in volumes.static_bindings:
        await pvs.update(dict(volume))
    for claim in volumes.dynamic_provisions:
        await pvcs.patch(volumeutil.name_of(claim), {"metadata": {"annotations": {
            volumeutil.SELECTED_NODE: volumeutil.annotations_of(claim)[
                volumeutil.SELECTED_NODE]}}},
            namespace=volumeutil.namespace_of(claim), type="merge")
    claims = [c for c, _v in volumes.static_bindings] + list(volumes.dynamic_provisions)
    deadline = time.monotonic() + timeout
    while not all(_claim_bound(c, snapshot) for c in claims):
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out waiting for the condition")
        await asyncio.sleep(interval)


def _claim_bound(claim: Obj, snapshot: Snapshot) -> bool:
    """Upstream ``checkBindings``: the claim names a volume and the controller finished."""
    current = snapshot.pvcs.get((volumeutil.namespace_of(claim),
                                 volumeutil.name_of(claim)))
    if current is None:
        raise LookupError(f'persistentvolumeclaim "{volumeutil.name_of(claim)}" not found')
    return bool((current.get("spec") or {}).get("volumeName")) and bool(
        volumeutil.annotations_of(current).get(volumeutil.BIND_COMPLETED))
