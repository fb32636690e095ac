"""The eviction subresource's PodDisruptionBudget check (upstream's EvictionREST).

An eviction is a delete that first asks the pod's budget: when the matching
PodDisruptionBudget allows no disruption the answer is 429 TooManyRequests (``kubectl
drain`` retries); otherwise the budget's ``disruptionsAllowed`` is decremented and the pod
recorded in ``disruptedPods`` with a compare-and-swap on the budget, and only then is the
pod deleted, so that two concurrent evictions cannot both spend the last allowed
disruption. The disruption controller recomputes the budget from the pods afterwards.
"""

from __future__ import annotations

from typing import Any

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.apiserver import errors
from kubling.apiserver.registry.store import Store
from kubling.apiserver.registry.strategy import StatusStrategy

_VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def _matching(budgets: list[Object], pod: Object) -> list[Object]:
    pod_labels = meta.labels_of(pod)
    found = []
    for pdb in budgets:
        selector = (pdb.get("spec") or {}).get("selector")
        if selector is None:
            continue
        try:
            if labels.from_label_selector(selector).matches(pod_labels):
                found.append(pdb)
        except labels.SelectorError:
            continue
    return found


def _exempt(pod: Object) -> bool:
    """Pods that are already done, or not yet running, do not count against a budget."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed", "Pending"):
        return True
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


async def check_budget(pdbs: Store, pod: Object, *, dry_run: bool) -> None:
    """Spend one allowed disruption of the pod's budget, or refuse with 429."""
    if _exempt(pod):
        return
    namespace = meta.namespace_of(pod)
    budgets = [c.obj for c in pdbs.cache.snapshot(namespace)]
    matching = _matching(budgets, pod)
    if not matching:
        return
    if len(matching) > 1:
        raise errors.APIError(
            500, "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource "
            "does not support.")
    name = meta.name_of(matching[0])
    pod_name = meta.name_of(pod)

    async def spend(pdb: Object) -> Object:
        status: dict[str, Any] = pdb.setdefault("status", {})
        if (pdb["metadata"].get("generation") or 0) > (status.get("observedGeneration") or 0):
            raise _too_many(name, "the disruption budget is still being processed by the "
                            "server")
        allowed = int(status.get("disruptionsAllowed") or 0)
        if allowed <= 0:
            raise _too_many(name, f"The disruption budget {name} needs "
                            f"{status.get('desiredHealthy', 0)} healthy pods and has "
                            f"{status.get('currentHealthy', 0)} currently")
        status["disruptionsAllowed"] = allowed - 1
        disrupted = dict(status.get("disruptedPods") or {})
        disrupted[pod_name] = meta.now()
        status["disruptedPods"] = disrupted
        return pdb

    await pdbs.guaranteed_update(namespace, name, spend, strategy=StatusStrategy(pdbs.strategy),
                                 dry_run=dry_run)


def _too_many(name: str, why: str) -> errors.APIError:
    return errors.APIError(
        429, "TooManyRequests", _VIOLATION,
        details={"causes": [{"reason": "DisruptionBudget", "message": why}]},
    )
