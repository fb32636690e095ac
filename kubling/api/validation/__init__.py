"""Per-kind validation of built-in objects, as kube-apiserver's strategies run it.

The Store calls :func:`kubling.api.names.validate_object_meta` first, then
:func:`validate` on create and :func:`validate_update` on update, always on an object that
has been through :func:`kubling.api.defaults.apply_defaults`.  Both return upstream-worded
:class:`~kubling.api.field.FieldError` lists; an empty list means valid.  Kinds without a
validator here are accepted as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubling.api.field import FieldError
from kubling.api.validation import apps, batch, core, pods

Obj = dict[str, Any]
Validator = Callable[[Obj], list[FieldError]]
UpdateValidator = Callable[[Obj, Obj], list[FieldError]]

#: ``(group, kind) -> create-time checks``; a new kind is one line.
VALIDATORS: dict[tuple[str, str], Validator] = {
    ("", "Pod"): pods.validate_pod,
    ("", "PodTemplate"): pods.validate_pod_template,
    ("", "ReplicationController"): core.validate_replication_controller,
    ("", "Service"): core.validate_service,
    ("", "ConfigMap"): core.validate_config_map,
    ("", "Secret"): core.validate_secret,
    ("", "Namespace"): core.validate_namespace,
    ("", "Node"): core.validate_node,
    ("", "PersistentVolumeClaim"): core.validate_pvc,
    ("", "PersistentVolume"): core.validate_pv,
    ("apps", "Deployment"): apps.validate_deployment,
    ("apps", "ReplicaSet"): apps.validate_replica_set,
    ("apps", "StatefulSet"): apps.validate_stateful_set,
    ("apps", "DaemonSet"): apps.validate_daemon_set,
    ("batch", "Job"): batch.validate_job,
    ("batch", "CronJob"): batch.validate_cron_job,
}

#: ``(group, kind) -> extra update-only checks`` (transition rules: immutability etc.).
UPDATE_VALIDATORS: dict[tuple[str, str], UpdateValidator] = {
    ("", "Pod"): pods.validate_pod_update,
    ("", "Service"): core.validate_service_update,
    ("", "ConfigMap"): core.validate_config_map_update,
    ("", "Secret"): core.validate_secret_update,
    ("", "Node"): core.validate_node_update,
    ("", "PersistentVolumeClaim"): core.validate_pvc_update,
    ("apps", "Deployment"): apps.validate_selector_immutable,
    ("apps", "ReplicaSet"): apps.validate_selector_immutable,
    ("apps", "StatefulSet"): apps.validate_stateful_set_update,
    ("apps", "DaemonSet"): apps.validate_selector_immutable,
    ("batch", "Job"): batch.validate_job_update,
}


def validate(group: str, kind: str, obj: Obj) -> list[FieldError]:
    """Create-time validation of ``obj``'s body (not its metadata)."""
    validator = VALIDATORS.get((group, kind))
    return validator(obj) if validator is not None else []


def validate_update(group: str, kind: str, new: Obj, old: Obj) -> list[FieldError]:
    """Update-time validation: ``new`` must be valid on its own *and* a legal change."""
    errs = validate(group, kind, new)
    transition = UPDATE_VALIDATORS.get((group, kind))
    if transition is not None:
        errs.extend(transition(new, old))
    return errs


__all__ = ["UPDATE_VALIDATORS", "VALIDATORS", "validate", "validate_update"]
