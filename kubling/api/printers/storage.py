"""Columns of ``storage.k8s.io``: storage classes, CSI drivers and nodes, attachments."""

from __future__ import annotations

from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

_NAME, _AGE, _col = common.NAME, common.AGE, common.column
_GROUP = "storage.k8s.io"
_DEFAULT_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)

STORAGE_CLASS_COLUMNS = [
    _NAME,
    _col("Provisioner", "provisioner indicates the type of the provisioner."),
    _col("ReclaimPolicy", "reclaimPolicy controls the reclaimPolicy for dynamically "
         "provisioned PersistentVolumes of this storage class."),
    _col("VolumeBindingMode", "volumeBindingMode indicates how PersistentVolumeClaims should "
         "be provisioned and bound."),
    _col("AllowVolumeExpansion", "allowVolumeExpansion shows whether the storage class allow "
         "volume expand."),
    _AGE,
]


def is_default_class(obj: Object) -> bool:
    annotations = common.mapping(common.dig(obj, "metadata", "annotations"))
    return any(annotations.get(key) == "true" for key in _DEFAULT_ANNOTATIONS)


def storage_class_cells(obj: Object) -> list[Any]:
    """The default class's NAME carries `` (default)``; unset policies show their defaults."""
    shown = common.name(obj) + (" (default)" if is_default_class(obj) else "")
    expansion = obj.get("allowVolumeExpansion")
    return [
        shown,
        common.text(obj.get("provisioner")),
        common.text(obj.get("reclaimPolicy"), "Delete"),
        common.text(obj.get("volumeBindingMode"), "Immediate"),
        expansion if isinstance(expansion, bool) else False,
        common.age(obj),
    ]


CSI_DRIVER_COLUMNS = [
    _NAME,
    _col("AttachRequired", "attachRequired indicates this CSI volume driver requires an attach "
         "operation.", col_type="boolean"),
    _col("PodInfoOnMount", "podInfoOnMount indicates this CSI volume driver requires additional "
         "pod information during mount operations.", col_type="boolean"),
    _col("StorageCapacity", "storageCapacity indicates that the CSI volume driver wants pod "
         "scheduling to consider the storage capacity.", col_type="boolean"),
    _col("TokenRequests", "tokenRequests indicates the CSI driver needs pods' service account "
         "tokens it is mounting volume for to do necessary authentication."),
    _col("RequiresRepublish", "requiresRepublish indicates the CSI driver wants NodePublishVolume "
         "being periodically called.", col_type="boolean"),
    _col("Modes", "volumeLifecycleModes defines what kind of volumes this CSI volume driver "
         "supports."),
    _AGE,
]


def _flag(value: Any, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def csi_driver_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    tokens = spec.get("tokenRequests")
    token_requests = (
        ",".join(common.text(t.get("audience")) for t in common.dicts(tokens))
        if isinstance(tokens, list)
        else "<unset>"
    )
    modes = ",".join(common.strings(spec.get("volumeLifecycleModes"))) or "<none>"
    return [
        common.name(obj),
        _flag(spec.get("attachRequired"), True),
        _flag(spec.get("podInfoOnMount"), False),
        _flag(spec.get("storageCapacity"), False),
        token_requests,
        _flag(spec.get("requiresRepublish"), False),
        modes,
        common.age(obj),
    ]


CSI_NODE_COLUMNS = [
    _NAME,
    _col("Drivers", "Drivers indicates the number of CSI drivers registered on the node",
         col_type="integer"),
    _AGE,
]


def csi_node_cells(obj: Object) -> list[Any]:
    drivers = common.length(common.dig(obj, "spec", "drivers"))
    return [common.name(obj), drivers, common.age(obj)]


VOLUME_ATTACHMENT_COLUMNS = [
    _NAME,
    _col("Attacher", "attacher indicates the name of the volume driver that MUST handle this "
         "request.", fmt="name"),
    _col("PV", "persistentVolumeName represents the name of the persistent volume to attach."),
    _col("Node", "nodeName represents the node that the volume should be attached to."),
    _col("Attached", "attached indicates the volume is successfully attached.",
         col_type="boolean"),
    _AGE,
]


def volume_attachment_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    return [
        common.name(obj),
        common.text(spec.get("attacher")),
        common.text(common.dig(spec, "source", "persistentVolumeName")),
        common.text(spec.get("nodeName")),
        common.dig(obj, "status", "attached") is True,
        common.age(obj),
    ]


PRINTERS: dict[tuple[str, str], common.Printer] = {
    (_GROUP, "StorageClass"): (STORAGE_CLASS_COLUMNS, storage_class_cells),
    (_GROUP, "CSIDriver"): (CSI_DRIVER_COLUMNS, csi_driver_cells),
    (_GROUP, "CSINode"): (CSI_NODE_COLUMNS, csi_node_cells),
    (_GROUP, "VolumeAttachment"): (VOLUME_ATTACHMENT_COLUMNS, volume_attachment_cells),
}
