"""``apps/v1`` workloads: Deployment, ReplicaSet, StatefulSet, DaemonSet.

They share one shape — a selector that must pick the template's labels, and a template
whose pods run forever — and one update rule: the selector is fixed once created, since
changing it would orphan (or adopt) pods behind the controller's back.
"""

from __future__ import annotations

from typing import Any

from kubling.api.field import (
    FieldError,
    Path,
    forbidden,
    immutable,
    invalid,
    not_supported,
    required,
)
from kubling.api.validation import _common as c
from kubling.api.validation.core import controller_template_rules
from kubling.api.validation.pods import validate_pod_template_spec

Obj = dict[str, Any]
Errs = list[FieldError]

_SPEC = Path("spec")


def _validate_selector(spec: Obj, kind_word: str, empty_msg: str) -> Errs:
    selector = spec.get("selector")
    path = _SPEC.child("selector")
    if selector is None:
        return [required(str(path))]
    errs = c.validate_label_selector(selector, path)
    if c.selector_is_empty(selector):
        errs.append(invalid(str(path), selector, empty_msg.format(kind_word)))
    return errs


def _claim_names(spec: Obj) -> frozenset[str]:
    """Volume names a StatefulSet's pods get from its ``volumeClaimTemplates``."""
    return frozenset(
        str(c.sub(t, "metadata").get("name")) for t in c.dicts(spec, "volumeClaimTemplates")
    )


def _validate_template(spec: Obj, selector_ok: bool) -> Errs:
    template = spec.get("template")
    path = _SPEC.child("template")
    if not isinstance(template, dict):
        return [required(str(path))]
    errs: Errs = []
    if selector_ok:
        labels_path = path.child("metadata").child("labels")
        errs.extend(c.template_labels_match(spec.get("selector"), template, labels_path))
    errs.extend(validate_pod_template_spec(template, path, _claim_names(spec)))
    return errs


def _selector_and_template(spec: Obj, kind_word: str, empty_msg: str) -> Errs:
    errs = _validate_selector(spec, kind_word, empty_msg)
    errs.extend(_validate_template(spec, selector_ok=not errs))
    return errs


def _counts(spec: Obj, *keys: str) -> Errs:
    errs: Errs = []
    for key in keys:
        errs.extend(c.nonnegative(spec.get(key), _SPEC.child(key)))
    return errs


def validate_selector_immutable(new: Obj, old: Obj) -> Errs:
    """``spec.selector: Invalid value: ...: field is immutable`` (apps/v1 and batch)."""
    new_sel, old_sel = c.sub(new, "spec").get("selector"), c.sub(old, "spec").get("selector")
    if new_sel != old_sel:
        return [immutable(str(_SPEC.child("selector")), new_sel)]
    return []


# -- Deployment ------------------------------------------------------------------------------


def _validate_rolling_update(rolling: Obj, path: Path) -> Errs:
    surge, unavailable = rolling.get("maxSurge"), rolling.get("maxUnavailable")
    errs = c.positive_int_or_percent(unavailable, path.child("maxUnavailable"))
    errs.extend(c.positive_int_or_percent(surge, path.child("maxSurge")))
    if c.int_or_percent_value(unavailable) == 0 and c.int_or_percent_value(surge) == 0:
        msg = "may not be 0 when `maxSurge` is 0"
        errs.append(invalid(str(path.child("maxUnavailable")), unavailable, msg))
    errs.extend(c.not_more_than_100_percent(unavailable, path.child("maxUnavailable")))
    return errs


def _validate_deployment_strategy(strategy: Obj, path: Path) -> Errs:
    kind = strategy.get("type")
    rolling = strategy.get("rollingUpdate")
    if kind == "Recreate":
        if rolling is not None:
            msg = "may not be specified when strategy `type` is 'Recreate'"
            return [forbidden(str(path.child("rollingUpdate")), msg)]
        return []
    if kind == "RollingUpdate":
        if not isinstance(rolling, dict):
            msg = "this should be defaulted and never be nil"
            return [required(str(path.child("rollingUpdate")), msg)]
        return _validate_rolling_update(rolling, path.child("rollingUpdate"))
    return [not_supported(str(path), kind, ["Recreate", "RollingUpdate"])]


def _validate_progress_deadline(spec: Obj) -> Errs:
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is None:
        return []
    path = _SPEC.child("progressDeadlineSeconds")
    errs = c.nonnegative(deadline, path)
    min_ready = spec.get("minReadySeconds") or 0
    if c.is_int(deadline) and c.is_int(min_ready) and deadline <= min_ready:
        errs.append(invalid(str(path), deadline, "must be greater than minReadySeconds"))
    return errs


def validate_deployment(obj: Obj) -> Errs:
    spec = c.sub(obj, "spec")
    errs = _counts(spec, "replicas", "minReadySeconds", "revisionHistoryLimit")
    errs.extend(_selector_and_template(spec, "deployment", "empty selector is invalid for {}"))
    errs.extend(
        controller_template_rules(c.sub(spec, "template"), _SPEC.child("template"), "ReplicaSet")
    )
    errs.extend(_validate_deployment_strategy(c.sub(spec, "strategy"), _SPEC.child("strategy")))
    errs.extend(_validate_progress_deadline(spec))
    return errs


# -- ReplicaSet ------------------------------------------------------------------------------


def validate_replica_set(obj: Obj) -> Errs:
    """Upstream even says "for deployment" here; kept for fidelity."""
    spec = c.sub(obj, "spec")
    errs = _counts(spec, "replicas", "minReadySeconds")
    errs.extend(_selector_and_template(spec, "deployment", "empty selector is invalid for {}"))
    errs.extend(
        controller_template_rules(c.sub(spec, "template"), _SPEC.child("template"), "ReplicaSet")
    )
    return errs


# -- StatefulSet -----------------------------------------------------------------------------


def _validate_sts_strategy(strategy: Obj, path: Path) -> Errs:
    kind = strategy.get("type")
    rolling = strategy.get("rollingUpdate")
    if kind in (None, ""):
        return [required(str(path))]
    if kind == "OnDelete":
        if rolling is not None:
            msg = "only allowed for updateStrategy 'RollingUpdate'"
            return [invalid(str(path.child("rollingUpdate")), rolling, msg)]
        return []
    if kind == "RollingUpdate":
        rolling_path = path.child("rollingUpdate")
        if not isinstance(rolling, dict):
            return []
        errs = c.nonnegative(rolling.get("partition"), rolling_path.child("partition"))
        unavailable = rolling.get("maxUnavailable")
        errs.extend(c.positive_int_or_percent(unavailable, rolling_path.child("maxUnavailable")))
        return errs
    return [invalid(str(path), strategy, "must be 'RollingUpdate' or 'OnDelete'")]


def _validate_retention(spec: Obj) -> Errs:
    policy = spec.get("persistentVolumeClaimRetentionPolicy")
    if not isinstance(policy, dict):
        return []
    path = _SPEC.child("persistentVolumeClaimRetentionPolicy")
    errs: Errs = []
    for key in ("whenDeleted", "whenScaled"):
        errs.extend(c.one_of(policy.get(key), path.child(key), ["Retain", "Delete"]))
    return errs


def _validate_pod_management(spec: Obj) -> Errs:
    policy = spec.get("podManagementPolicy")
    path = _SPEC.child("podManagementPolicy")
    if policy in (None, ""):
        return [required(str(path))]
    if policy not in ("OrderedReady", "Parallel"):
        return [invalid(str(path), policy, "must be 'OrderedReady' or 'Parallel'")]
    return []


def validate_stateful_set(obj: Obj) -> Errs:
    spec = c.sub(obj, "spec")
    errs = _validate_pod_management(spec)
    errs.extend(
        _validate_sts_strategy(c.sub(spec, "updateStrategy"), _SPEC.child("updateStrategy"))
    )
    errs.extend(_validate_retention(spec))
    errs.extend(_counts(spec, "replicas", "minReadySeconds", "revisionHistoryLimit"))
    ordinals = c.sub(spec, "ordinals")
    errs.extend(c.nonnegative(ordinals.get("start"), _SPEC.child("ordinals").child("start")))
    errs.extend(_selector_and_template(spec, "statefulset", "empty selector is invalid for {}"))
    errs.extend(
        controller_template_rules(c.sub(spec, "template"), _SPEC.child("template"), "StatefulSet")
    )
    return errs


_STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)
STS_UPDATE_MSG = (
    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
    "'minReadySeconds' are forbidden"
)


def validate_stateful_set_update(new: Obj, old: Obj) -> Errs:
    """Identity fields (serviceName, selector, volumeClaimTemplates, ...) are fixed."""

    def frozen(obj: Obj) -> Obj:
        spec = c.sub(obj, "spec")
        return {k: v for k, v in spec.items() if k not in _STS_MUTABLE and v is not None}

    if frozen(new) != frozen(old):
        return [forbidden("spec", STS_UPDATE_MSG)]
    return []


# -- DaemonSet -------------------------------------------------------------------------------


def _validate_ds_rolling_update(rolling: Obj, path: Path) -> Errs:
    surge, unavailable = rolling.get("maxSurge"), rolling.get("maxUnavailable")
    errs = c.positive_int_or_percent(unavailable, path.child("maxUnavailable"))
    errs.extend(c.positive_int_or_percent(surge, path.child("maxSurge")))
    errs.extend(c.not_more_than_100_percent(unavailable, path.child("maxUnavailable")))
    errs.extend(c.not_more_than_100_percent(surge, path.child("maxSurge")))
    has_unavailable = c.int_or_percent_value(unavailable) != 0
    has_surge = c.int_or_percent_value(surge) != 0
    if has_unavailable and has_surge:
        msg = "may not be set when maxUnavailable is non-zero"
        errs.append(invalid(str(path.child("maxSurge")), surge, msg))
    elif not has_unavailable and not has_surge:
        errs.append(required(str(path.child("maxUnavailable")), "cannot be 0 when maxSurge is 0"))
    return errs


def _validate_ds_strategy(strategy: Obj, path: Path) -> Errs:
    kind = strategy.get("type")
    if kind == "OnDelete":
        return []
    if kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            return [required(str(path.child("rollingUpdate")))]
        return _validate_ds_rolling_update(rolling, path.child("rollingUpdate"))
    return [not_supported(str(path), strategy, ["RollingUpdate", "OnDelete"])]


def validate_daemon_set(obj: Obj) -> Errs:
    spec = c.sub(obj, "spec")
    errs = _selector_and_template(spec, "daemonset", "empty selector is invalid for {}")
    template_spec = c.sub(spec, "template", "spec")
    restart = template_spec.get("restartPolicy")
    template_path = _SPEC.child("template").child("spec")
    if restart and restart != "Always":
        errs.append(not_supported(str(template_path.child("restartPolicy")), restart, ["Always"]))
    deadline = template_spec.get("activeDeadlineSeconds")
    if deadline is not None:
        msg = "activeDeadlineSeconds in DaemonSet is not Supported"
        errs.append(invalid(str(template_path.child("activeDeadlineSeconds")), deadline, msg))
    errs.extend(_counts(spec, "minReadySeconds", "templateGeneration", "revisionHistoryLimit"))
    errs.extend(_validate_ds_strategy(c.sub(spec, "updateStrategy"), _SPEC.child("updateStrategy")))
    return errs
