"""Columns of the ``apps`` kinds: the workload summaries of ``kubectl get deploy,rs,sts,ds``.

Replica counts missing from a spec print as 1, the value defaulting gives them before any
object is stored, so a row never disagrees with what ``-o yaml`` shows.
"""

from __future__ import annotations

from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

_NAME, _AGE, _col, _wide = common.NAME, common.AGE, common.column, common.wide
_CONTAINERS = _wide("Containers", common.CONTAINERS_DESCRIPTION)
_IMAGES = _wide("Images", common.IMAGES_DESCRIPTION)
_SELECTOR_DESCRIPTION = (
    "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be "
    "the ones affected by this deployment."
)


def _replicas(obj: Object) -> int:
    return common.integer(common.dig(obj, "spec", "replicas"), 1)


def _status(obj: Object, field: str) -> int:
    return common.integer(common.dig(obj, "status", field))


def _template(obj: Object) -> tuple[str, str]:
    return common.containers_and_images(common.dig(obj, "spec", "template", "spec"))


DEPLOYMENT_COLUMNS = [
    _NAME,
    _col("Ready", "Number of the pod with ready state"),
    _col("Up-to-date", "Total number of non-terminated pods targeted by this deployment that "
         "have the desired template spec."),
    _col("Available", "Total number of available pods (ready for at least minReadySeconds) "
         "targeted by this deployment."),
    _AGE,
    _CONTAINERS,
    _IMAGES,
    _wide("Selector", _SELECTOR_DESCRIPTION),
]


def deployment_cells(obj: Object) -> list[Any]:
    """READY is ``ready/desired``; the selector prints ``""`` when empty, unlike other kinds."""
    names, images = _template(obj)
    selector = common.selector_string(common.dig(obj, "spec", "selector"), invalid="<invalid>")
    return [
        common.name(obj),
        f"{_status(obj, 'readyReplicas')}/{_replicas(obj)}",
        _status(obj, "updatedReplicas"),
        _status(obj, "availableReplicas"),
        common.age(obj),
        names,
        images,
        selector,
    ]


REPLICASET_COLUMNS = [
    _NAME,
    _col("Desired", "Replicas is the number of desired replicas.", col_type="integer"),
    _col("Current", "Replicas is the most recently observed number of replicas.",
         col_type="integer"),
    _col("Ready", "The number of ready replicas for this replica set.", col_type="integer"),
    _AGE,
    _CONTAINERS,
    _IMAGES,
    _wide("Selector", "Selector is a label query over pods that should match the replica count."),
]


def replicaset_cells(obj: Object) -> list[Any]:
    names, images = _template(obj)
    return [
        common.name(obj),
        _replicas(obj),
        _status(obj, "replicas"),
        _status(obj, "readyReplicas"),
        common.age(obj),
        names,
        images,
        common.format_label_selector(common.dig(obj, "spec", "selector")),
    ]


STATEFULSET_COLUMNS = [
    _NAME,
    _col("Ready", "Number of the pod with ready state"),
    _AGE,
    _CONTAINERS,
    _IMAGES,
]


def statefulset_cells(obj: Object) -> list[Any]:
    names, images = _template(obj)
    ready = f"{_status(obj, 'readyReplicas')}/{_replicas(obj)}"
    return [common.name(obj), ready, common.age(obj), names, images]


DAEMONSET_COLUMNS = [
    _NAME,
    _col("Desired", "The total number of nodes that should be running the daemon pod.",
         col_type="integer"),
    _col("Current", "The number of nodes that are running at least 1 daemon pod and are "
         "supposed to run the daemon pod.", col_type="integer"),
    _col("Ready", "The number of nodes that should be running the daemon pod and have one or "
         "more of the daemon pod running and ready.", col_type="integer"),
    _col("Up-to-date", "The total number of nodes that are running updated daemon pod",
         col_type="integer"),
    _col("Available", "The number of nodes that should be running the daemon pod and have one "
         "or more of the daemon pod running and available.", col_type="integer"),
    _col("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on "
         "a node."),
    _AGE,
    _CONTAINERS,
    _IMAGES,
    _wide("Selector", "A label query over pods that are managed by the daemon set."),
]


def daemonset_cells(obj: Object) -> list[Any]:
    names, images = _template(obj)
    node_selector = common.dig(obj, "spec", "template", "spec", "nodeSelector")
    return [
        common.name(obj),
        _status(obj, "desiredNumberScheduled"),
        _status(obj, "currentNumberScheduled"),
        _status(obj, "numberReady"),
        _status(obj, "updatedNumberScheduled"),
        _status(obj, "numberAvailable"),
        common.format_labels(node_selector),
        common.age(obj),
        names,
        images,
        common.format_label_selector(common.dig(obj, "spec", "selector")),
    ]


CONTROLLER_REVISION_COLUMNS = [
    _NAME,
    _col("Controller", "Controller of the object"),
    _col("Revision", "Revision indicates the revision of the state represented by Data."),
    _AGE,
]


def _controller(obj: Object) -> str:
    """The controlling owner as ``kind.group/name`` (``daemonset.apps/web``)."""
    for ref in common.dicts(common.dig(obj, "metadata", "ownerReferences")):
        if ref.get("controller") is not True:
            continue
        group = common.text(ref.get("apiVersion")).rpartition("/")[0]
        kind = common.text(ref.get("kind"))
        ref_name = common.text(ref.get("name"))
        if not group and not kind:
            return ref_name
        group_kind = f"{kind}.{group}" if group else kind
        return f"{group_kind.lower()}/{ref_name}"
    return "<none>"


def controller_revision_cells(obj: Object) -> list[Any]:
    revision = common.integer(obj.get("revision"))
    return [common.name(obj), _controller(obj), revision, common.age(obj)]


PRINTERS: dict[tuple[str, str], common.Printer] = {
    ("apps", "Deployment"): (DEPLOYMENT_COLUMNS, deployment_cells),
    ("apps", "ReplicaSet"): (REPLICASET_COLUMNS, replicaset_cells),
    ("apps", "StatefulSet"): (STATEFULSET_COLUMNS, statefulset_cells),
    ("apps", "DaemonSet"): (DAEMONSET_COLUMNS, daemonset_cells),
    ("apps", "ControllerRevision"): (CONTROLLER_REVISION_COLUMNS, controller_revision_cells),
}
