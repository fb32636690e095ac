"""Which PersistentVolume may serve which claim: shared by the PV controller and the
scheduler's VolumeBinding plugin (upstream ``pkg/controller/volume/persistentvolume/util``).

Pure functions over plain objects, so the scheduler can run them per node without a client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from kubling.api import labels
from kubling.api.validation._quantity import parse_quantity
from kubling.scheduler.affinity import parse_node_selector_term

Obj = Mapping[str, Any]
_O = TypeVar("_O", bound=Mapping[str, Any])

BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
#: The provisioner of classes whose volumes an administrator creates (local volumes).
NO_PROVISIONER = "kubernetes.io/no-provisioner"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def namespace_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def annotations_of(obj: Obj) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def class_of(obj: Obj) -> str:
    return str((obj.get("spec") or {}).get("storageClassName") or "")


def _storage(amounts: Any) -> int:
    value = parse_quantity((amounts or {}).get("storage", "0"))
    return int(value) if value is not None else 0


def request_of(claim: Obj) -> int:
    return _storage(((claim.get("spec") or {}).get("resources") or {}).get("requests"))


def capacity_of(volume: Obj) -> int:
    return _storage((volume.get("spec") or {}).get("capacity"))


def claim_ref_is(volume: Obj, claim: Obj) -> bool:
    """Does the volume's ``claimRef`` name this claim (any uid when the ref has none)?"""
    ref = (volume.get("spec") or {}).get("claimRef") or {}
    return (ref.get("namespace") == namespace_of(claim)
            and ref.get("name") == name_of(claim)
            and ref.get("uid") in (None, "", (claim.get("metadata") or {}).get("uid")))


def fits(volume: Obj, claim: Obj) -> bool:
    """Can this volume serve this claim (``checkVolumeSatisfyClaim`` and the matcher)?"""
    spec, want = volume.get("spec") or {}, claim.get("spec") or {}
    if (volume.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if spec.get("claimRef") and not claim_ref_is(volume, claim):
        return False
    if ((volume.get("status") or {}).get("phase") or "Available") not in ("Available",
                                                                          "Pending"):
        return False
    if class_of(volume) != class_of(claim):
        return False
    if (spec.get("volumeMode") or "Filesystem") != (want.get("volumeMode") or "Filesystem"):
        return False
    offered = set(spec.get("accessModes") or [])
    if not set(want.get("accessModes") or []) <= offered:
        return False
    if capacity_of(volume) < request_of(claim):
        return False
    selector = want.get("selector")
    if selector is not None:
        try:
            if not labels.from_label_selector(selector).matches((volume.get("metadata") or {}).get("labels") or {}):
                return False
        except labels.SelectorError:
            return False
    return True


def best_volume(volumes: Iterable[_O], claim: Obj) -> _O | None:
    """A volume pre-bound to the claim first, else the smallest that fits."""
    fitting = [v for v in volumes if fits(v, claim)]
    pre_bound = [v for v in fitting if (v.get("spec") or {}).get("claimRef")]
    if pre_bound:
        return pre_bound[0]
    return min(fitting, key=lambda v: (capacity_of(v), name_of(v)), default=None)


def node_affinity_allows(volume: Obj, node_labels: Mapping[str, str], node_name: str) -> bool:
    """Upstream ``CheckNodeAffinity``: a volume without ``nodeAffinity.required`` is
    reachable from every node; otherwise one of its terms must match the node."""
    required = (((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required"))
    if not required:
        return True
    return any(parse_node_selector_term(term).matches(node_labels, node_name)
               for term in required.get("nodeSelectorTerms") or ())


def is_delay_binding(claim: Obj, classes: Mapping[str, Obj]) -> bool:
    """Is the claim's class ``WaitForFirstConsumer`` (upstream ``IsDelayBindingMode``)?"""
    storage_class = classes.get(class_of(claim)) if class_of(claim) else None
    return bool(storage_class and
                storage_class.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER)
