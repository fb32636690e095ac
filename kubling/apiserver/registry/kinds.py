"""The strategies of kinds whose rules differ from the default, and the registration table.

Each class is the Python twin of an upstream ``pkg/registry/<group>/<kind>/strategy.go``:
only the differences from ``Strategy``. ``strategy_for`` is the one registration point.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from kubling.api import field
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.api.validation import pods as pods_validation
from kubling.apiserver.allocation import fields as service_fields
from kubling.apiserver.allocation.service import ServiceAllocator
from kubling.apiserver.registry.customresources import CRDStrategy
from kubling.apiserver.registry.strategy import Strategy, Transaction

_TERMINAL_PHASES = ("Succeeded", "Failed")


def _qos_class(spec: dict[str, Any]) -> str:
    """BestEffort, Burstable or Guaranteed, from the containers' requests and limits."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        requests = res.get("requests") or {}
        limits = res.get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits.get(name)) != limits[name]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


class PodStrategy(Strategy):
    return_deleted_object = True

    def initial_status(self, obj: Object) -> None:
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj.get("spec") or {})}

    def validate(self, obj: Object) -> list[field.FieldError]:
        """Create: also ``ValidatePodCreate``'s create-only rules."""
        return super().validate(obj) + pods_validation.validate_pod_create(obj)

    def grace_period(self, obj: Object, requested: int | None) -> int:
        """A pod bound to a node and still running gets time to stop; others go at once."""
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in _TERMINAL_PHASES:
            return 0
        if requested is not None:
            return max(requested, 0)
        default = spec.get("terminationGracePeriodSeconds", 30)
        return int(default) if isinstance(default, int) else 30



class NamespaceStrategy(Strategy):
    """Namespaces carry ``spec.finalizers`` and a phase; the name is also a label."""

    return_deleted_object = True

    def prepare_for_create(self, obj: Object) -> None:
        super().prepare_for_create(obj)
        _name_label(obj)

    def initial_status(self, obj: Object) -> None:
        obj["status"] = {"phase": "Active"}

    def prepare_for_update(self, new: Object, old: Object) -> None:
        super().prepare_for_update(new, old)
        # spec.finalizers change only through the finalize subresource.
        new["spec"] = copy.deepcopy(old.get("spec") or {})
        _name_label(new)

    def pending_finalizers(self, obj: Object) -> bool:
        return super().pending_finalizers(obj) or bool(
            (obj.get("spec") or {}).get("finalizers")
        )

    def mark_deleting(self, obj: Object) -> None:
        obj.setdefault("status", {})["phase"] = "Terminating"


class NamespaceFinalizeStrategy(NamespaceStrategy):
    """``namespaces/<ns>/finalize``: only ``spec.finalizers`` may change."""

    def prepare_for_update(self, new: Object, old: Object) -> None:
        finalizers = (new.get("spec") or {}).get("finalizers")
        replacement = copy.deepcopy(old)
        replacement["metadata"]["resourceVersion"] = new["metadata"].get("resourceVersion", "")
        spec = replacement.setdefault("spec", {})
        if finalizers:
            spec["finalizers"] = finalizers
        else:
            spec.pop("finalizers", None)
        new.clear()
        new.update(replacement)


def _name_label(obj: Object) -> None:
    md = obj["metadata"]
    labels = md.get("labels")
    if not isinstance(labels, dict):
        labels = {}
        md["labels"] = labels
    labels["kubernetes.io/metadata.name"] = md.get("name", "")


class SecretStrategy(Strategy):
    """``stringData`` is a write-only convenience folded into ``data`` (base64)."""

    def default(self, obj: Object) -> None:
        super().default(obj)
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict):
            data = obj.get("data")
            if not isinstance(data, dict):
                data = {}
                obj["data"] = data
            for key, value in string_data.items():
                if isinstance(value, str):
                    data[key] = base64.b64encode(value.encode()).decode()

    def validate_update(self, new: Object, old: Object) -> list[field.FieldError]:
        errors = super().validate_update(new, old)
        if new.get("type") != old.get("type"):
            errors.append(field.immutable("type", new.get("type")))
        return errors


class ServiceStrategy(Strategy):
    """Services take cluster IPs and node ports from the cluster's pools (upstream's
    ``service/storage`` REST). Without an allocator (unit tests of the generic registry)
    they are stored as sent."""

    return_deleted_object = True

    def __init__(self, rt: ResourceType, allocator: ServiceAllocator | None = None) -> None:
        super().__init__(rt)
        self.allocator = allocator

    def initial_status(self, obj: Object) -> None:
        obj["status"] = {"loadBalancer": {}}

    def prepare_for_create(self, obj: Object) -> None:
        super().prepare_for_create(obj)
        service_fields.normalize_cluster_ips(obj, None)

    def prepare_for_update(self, new: Object, old: Object) -> None:
        super().prepare_for_update(new, old)
        service_fields.normalize_cluster_ips(new, old)
        service_fields.patch_allocated_values(new, old)
        service_fields.drop_type_dependent_fields(new, old)

    async def begin_create(self, obj: Object, *, dry_run: bool) -> Transaction | None:
        if self.allocator is None:
            return None
        return await self.allocator.allocate_create(obj, dry_run=dry_run)

    async def begin_update(self, new: Object, old: Object, *,
                           dry_run: bool) -> Transaction | None:
        if self.allocator is None:
            return None
        return await self.allocator.allocate_update(new, old, dry_run=dry_run)

    async def after_delete(self, obj: Object) -> None:
        if self.allocator is not None:
            await self.allocator.release(obj)


_JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
_JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


class JobStrategy(Strategy):
    """Jobs select their own pods by uid unless ``manualSelector`` says otherwise."""

    def validate(self, obj: Object) -> list[field.FieldError]:
        if not (obj.get("spec") or {}).get("manualSelector"):
            _generate_job_selector(obj)
        return super().validate(obj)


def _generate_job_selector(job: Object) -> None:
    """Upstream's generated selector: the Job's uid, also stamped on the pod template with
    the Job's name (both the ``batch.kubernetes.io/`` labels and the legacy short ones)."""
    md = job["metadata"]
    uid, name = md.get("uid", ""), md.get("name", "")
    spec = job.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    tmeta = template.setdefault("metadata", {})
    labels = tmeta.get("labels")
    if not isinstance(labels, dict):
        labels = {}
        tmeta["labels"] = labels
    labels.update({_JOB_UID_LABEL: uid, _JOB_NAME_LABEL: name, "controller-uid": uid,
                   "job-name": name})
    if not spec.get("selector"):
        spec["selector"] = {"matchLabels": {_JOB_UID_LABEL: uid}}


class PendingPhaseStrategy(Strategy):
    """PersistentVolumes and claims start ``Pending``: upstream's defaulting sets that phase
    on every read of an object whose status was reset on create."""

    def initial_status(self, obj: Object) -> None:
        obj["status"] = {"phase": "Pending"}


class CreateOnUpdateStrategy(Strategy):
    """Kinds whose PUT of a missing object creates it (upstream AllowCreateOnUpdate):
    endpoints, events, leases and the RBAC objects, which agents "ensure" with a PUT."""

    allow_create_on_update = True


_STRATEGIES: dict[tuple[str, str], type[Strategy]] = {
    ("", "Endpoints"): CreateOnUpdateStrategy,
    ("", "Event"): CreateOnUpdateStrategy,
    ("events.k8s.io", "Event"): CreateOnUpdateStrategy,
    ("coordination.k8s.io", "Lease"): CreateOnUpdateStrategy,
    ("rbac.authorization.k8s.io", "Role"): CreateOnUpdateStrategy,
    ("rbac.authorization.k8s.io", "RoleBinding"): CreateOnUpdateStrategy,
    ("rbac.authorization.k8s.io", "ClusterRole"): CreateOnUpdateStrategy,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): CreateOnUpdateStrategy,
    ("", "Pod"): PodStrategy,
    ("", "PersistentVolume"): PendingPhaseStrategy,
    ("", "PersistentVolumeClaim"): PendingPhaseStrategy,
    ("", "Namespace"): NamespaceStrategy,
    ("", "Secret"): SecretStrategy,
    ("", "Service"): ServiceStrategy,
    ("batch", "Job"): JobStrategy,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): CRDStrategy,
}


def strategy_for(rt: ResourceType) -> Strategy:
    """The strategy of a resource: its own class when it has one, else the default."""
    return _STRATEGIES.get((rt.group, rt.kind), Strategy)(rt)
