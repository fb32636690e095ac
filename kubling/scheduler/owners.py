"""What a pod belongs to, for the scheduler's default spreading.

Upstream's ``helper.DefaultSelector``: the pods that "belong together" with a pod are those
selected by every Service that selects it and by its controlling ReplicationController,
ReplicaSet or StatefulSet. PodTopologySpread's cluster-level default constraints spread
pods by that selector, so replicas of a Deployment land on different nodes without the
user writing any constraint. The lookups read informer caches the scheduler keeps.
"""

from __future__ import annotations

from collections.abc import Callable

from kubling.api import labels
from kubling.api.meta import Object
from kubling.client import informer
from kubling.scheduler.nodeinfo import PodInfo

#: A cache lookup: the objects of one kind in a namespace.
InNamespace = Callable[[str], list[Object]]
#: A cache lookup: one object by ``namespace/name``, or ``None``.
ByKey = Callable[[str], Object | None]


class OwnerSelectors:
    """Default selectors from cached Services, ReplicationControllers, ReplicaSets and
    StatefulSets."""

    def __init__(self, *, services: InNamespace, replication_controllers: ByKey,
                 replica_sets: ByKey, stateful_sets: ByKey) -> None:
        self._services = services
        self._by_kind: dict[tuple[str, str], ByKey] = {
            ("v1", "ReplicationController"): replication_controllers,
            ("apps/v1", "ReplicaSet"): replica_sets,
            ("apps/v1", "StatefulSet"): stateful_sets,
        }

    @classmethod
    def from_informers(cls, services: informer.Informer, replication_controllers:
                       informer.Informer, replica_sets: informer.Informer,
                       stateful_sets: informer.Informer) -> OwnerSelectors:
        def in_namespace(namespace: str) -> list[Object]:
            return services.indexer.by_index(informer.NAMESPACE_INDEX, namespace)

        return cls(services=in_namespace,
                   replication_controllers=replication_controllers.indexer.get,
                   replica_sets=replica_sets.indexer.get,
                   stateful_sets=stateful_sets.indexer.get)

    def default_selector(self, pod: PodInfo) -> labels.Selector:
        """The AND of the selecting Services' selectors and the controller's selector;
        empty (selects everything) when nothing owns or selects the pod."""
        namespace, pod_labels = pod.namespace, pod.labels
        merged: dict[str, str] = {}
        for service in self._services(namespace):
            wanted = (service.get("spec") or {}).get("selector")
            if isinstance(wanted, dict) and wanted and labels.selector_from_set(
                    wanted).matches(pod_labels):
                merged.update(wanted)
        selector = labels.selector_from_set(merged)
        owner = next((ref for ref in (pod.pod.get("metadata") or {}).get("ownerReferences") or []
                      if isinstance(ref, dict) and ref.get("controller")), None)
        if owner is None:
            return selector
        lookup = self._by_kind.get((str(owner.get("apiVersion")), str(owner.get("kind"))))
        found = lookup(f"{namespace}/{owner.get('name')}") if lookup else None
        if found is None:
            return selector
        raw = (found.get("spec") or {}).get("selector")
        if str(owner.get("kind")) == "ReplicationController":
            if isinstance(raw, dict):
                merged.update(raw)
            return labels.selector_from_set(merged)
        try:
            other = labels.from_label_selector(raw)
        except labels.SelectorError:
            return selector
        return selector if other.is_nothing else selector.add(*other.requirements)
