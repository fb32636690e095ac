"""Conversion between the served versions of a kind that share one storage.

Upstream stores each resource in one version and converts on the way in and out. kubling
does the same for its two multi-version kinds: ``events.k8s.io/v1`` Events are core
``v1`` Events in storage, and ``autoscaling/v1`` HorizontalPodAutoscalers are stored as
``autoscaling/v2``. What a version cannot express travels in the annotations upstream
uses (``autoscaling.alpha.kubernetes.io/*``), so a round trip loses nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson

from kubling.api.meta import Object

Converter = Callable[[Object], Object]

# -- Events -------------------------------------------------------------------------------

#: events.k8s.io/v1 field ↔ core/v1 field, for the fields whose names differ.
_EVENT_RENAMES = (
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
)


def _rename(obj: Object, pairs: tuple[tuple[str, str], ...], api_version: str) -> Object:
    out = copy.deepcopy(obj)
    for src, dst in pairs:
        out.pop(dst, None)
        if src in obj:
            out[dst] = out.pop(src)
    out["apiVersion"] = api_version
    return out


def event_to_core(obj: Object) -> Object:
    return _rename(obj, _EVENT_RENAMES, "v1")


def event_from_core(obj: Object) -> Object:
    reverse = tuple((b, a) for a, b in _EVENT_RENAMES)
    out = _rename(obj, reverse, "events.k8s.io/v1")
    out.setdefault("eventTime", None)
    return out


# -- HorizontalPodAutoscaler --------------------------------------------------------------

_METRICS = "autoscaling.alpha.kubernetes.io/metrics"
_BEHAVIOR = "autoscaling.alpha.kubernetes.io/behavior"
_CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"
_CURRENT = "autoscaling.alpha.kubernetes.io/current-metrics"


def _is_cpu_utilization(metric: Any) -> bool:
    if not isinstance(metric, dict) or metric.get("type") != "Resource":
        return False
    resource = metric.get("resource") or {}
    target = resource.get("target") or {}
    return resource.get("name") == "cpu" and target.get("type") == "Utilization"


def _annotations(obj: Object) -> dict[str, str]:
    md = obj.setdefault("metadata", {})
    annotations = md.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
        md["annotations"] = annotations
    return annotations


def _drop_empty_annotations(obj: Object) -> None:
    md = obj.get("metadata") or {}
    if md.get("annotations") == {}:
        del md["annotations"]


def hpa_v2_to_v1(obj: Object) -> Object:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v1"
    spec = out.get("spec") or {}
    metrics = spec.pop("metrics", None) or []
    behavior = spec.pop("behavior", None)
    annotations = _annotations(out)
    others = []
    for metric in metrics:
        if _is_cpu_utilization(metric):
            spec["targetCPUUtilizationPercentage"] = metric["resource"]["target"].get(
                "averageUtilization")
        else:
            others.append(metric)
    if others:
        annotations[_METRICS] = orjson.dumps(others).decode()
    if behavior:
        annotations[_BEHAVIOR] = orjson.dumps(behavior).decode()
    status = out.get("status")
    if isinstance(status, dict):
        current = status.pop("currentMetrics", None) or []
        conditions = status.pop("conditions", None)
        rest = []
        for metric in current:
            resource = (metric or {}).get("resource") or {}
            value = (resource.get("current") or {}).get("averageUtilization")
            if resource.get("name") == "cpu" and value is not None:
                status["currentCPUUtilizationPercentage"] = value
            else:
                rest.append(metric)
        if rest:
            annotations[_CURRENT] = orjson.dumps(rest).decode()
        if conditions:
            annotations[_CONDITIONS] = orjson.dumps(conditions).decode()
    _drop_empty_annotations(out)
    return out


def _load_annotation(annotations: dict[str, str], key: str) -> Any:
    raw = annotations.pop(key, None)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def hpa_v1_to_v2(obj: Object) -> Object:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v2"
    spec = out.setdefault("spec", {})
    annotations = _annotations(out)
    metrics: list[Any] = []
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if target is not None:
        metrics.append({"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}})
    extra = _load_annotation(annotations, _METRICS)
    if isinstance(extra, list):
        metrics.extend(extra)
    if metrics:
        spec["metrics"] = metrics
    behavior = _load_annotation(annotations, _BEHAVIOR)
    if isinstance(behavior, dict):
        spec["behavior"] = behavior
    status = out.get("status")
    current_extra = _load_annotation(annotations, _CURRENT)
    conditions = _load_annotation(annotations, _CONDITIONS)
    if isinstance(status, dict):
        current: list[Any] = []
        cpu = status.pop("currentCPUUtilizationPercentage", None)
        if cpu is not None:
            current.append({"type": "Resource", "resource": {
                "name": "cpu", "current": {"averageUtilization": cpu}}})
        if isinstance(current_extra, list):
            current.extend(current_extra)
        if current:
            status["currentMetrics"] = current
        if isinstance(conditions, list):
            status["conditions"] = conditions
    _drop_empty_annotations(out)
    return out


#: (kind, from apiVersion, to apiVersion) → converter.
CONVERTERS: dict[tuple[str, str, str], Converter] = {
    ("Event", "events.k8s.io/v1", "v1"): event_to_core,
    ("Event", "v1", "events.k8s.io/v1"): event_from_core,
    ("HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2"): hpa_v1_to_v2,
    ("HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1"): hpa_v2_to_v1,
}


def convert(obj: Object, kind: str, to_api_version: str) -> Object:
    """``obj`` in ``to_api_version`` (a copy); the same object when already there."""
    current = obj.get("apiVersion", "")
    if current == to_api_version:
        return obj
    converter = CONVERTERS.get((kind, current, to_api_version))
    if converter is None:
        raise ValueError(f"no conversion for {kind} from {current} to {to_api_version}")
    return converter(obj)
