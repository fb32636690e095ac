"""Object-metadata helpers shared by every layer: timestamps, uids, accessors.

Objects are plain JSON dicts as they travel on the wire; these helpers keep the few
conventions (RFC 3339 seconds, UUID4 uids, ``metadata`` always a dict) in one place.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

Object = dict[str, Any]


def now() -> str:
    """The current time as Kubernetes writes ``metav1.Time``: RFC 3339, seconds, ``Z``."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """``metav1.MicroTime``: RFC 3339 with microseconds (leases, events.k8s.io)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 ``metav1.Time`` / ``MicroTime`` (UTC when no zone); ``None`` for an
    absent, empty or malformed value."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed


def new_uid() -> str:
    return str(uuid.uuid4())


def metadata(obj: Object) -> dict[str, Any]:
    """The object's ``metadata``, created empty when missing or not a dict."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def name_of(obj: Object) -> str:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        name = meta.get("name")
        if isinstance(name, str):
            return name
    return ""


def namespace_of(obj: Object) -> str:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        ns = meta.get("namespace")
        if isinstance(ns, str):
            return ns
    return ""


def labels_of(obj: Object) -> dict[str, str]:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        labels = meta.get("labels")
        if isinstance(labels, dict):
            return labels
    return {}


def annotations_of(obj: Object) -> dict[str, str]:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            return annotations
    return {}


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` → (``apps``, ``v1``); ``v1`` → (``""``, ``v1``)."""
    group, _, version = api_version.rpartition("/")
    return group, version
