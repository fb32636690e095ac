"""VolumeBinding (stub): pods whose claims are bound, or that have none, pass; a pod with an
unbound claim of an ``Immediate`` class waits for the claim to bind elsewhere.

Not done yet: binding ``WaitForFirstConsumer`` claims to a node (they pass the filter
untouched and are left for the provisioner), PV node affinity, and CSI volume limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubling.scheduler.interface import SKIP, SUCCESS, CycleState, Handle, PreFilterResult, Status
from kubling.scheduler.nodeinfo import PodInfo
from kubling.scheduler.snapshot import Snapshot

NAME = "VolumeBinding"
ERR_REASON_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"


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


class VolumeBinding:
    name = NAME

    def pre_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]:
        names = claim_names(pod)
        if not names:
            return None, SKIP
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
            if (claim.get("spec") or {}).get("volumeName"):
                continue
            class_name = (claim.get("spec") or {}).get("storageClassName") or ""
            storage_class = snapshot.storage_classes.get(class_name) or {}
            if storage_class.get("volumeBindingMode") != "WaitForFirstConsumer":
                return None, Status.unschedulable(ERR_REASON_UNBOUND_IMMEDIATE, unresolvable=True)
        return None, SUCCESS


def new(args: Mapping[str, Any], handle: Handle) -> VolumeBinding:
    return VolumeBinding()
