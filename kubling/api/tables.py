"""Server-side printing: turning objects into ``meta.k8s.io/v1`` Tables for kubectl.

kubectl asks for Tables so that the server decides the columns. Kinds without columns of
their own get upstream's default: NAME and CREATED AT. Per-kind columns (pods' READY,
STATUS, ...) plug in through ``COLUMNS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kubling.api.meta import Object

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_CREATED_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)

Column = dict[str, Any]
RowFunc = Callable[[Object], list[Any]]

DEFAULT_COLUMNS: list[Column] = [
    {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": _NAME_DESCRIPTION,
        "priority": 0,
    },
    {
        "name": "Created At",
        "type": "date",
        "format": "",
        "description": _CREATED_DESCRIPTION,
        "priority": 0,
    },
]


def _default_cells(obj: Object) -> list[Any]:
    md = obj.get("metadata") or {}
    return [md.get("name", ""), md.get("creationTimestamp")]


#: Per-kind (group, kind) → (columns, cells). Empty until kinds register their printers.
COLUMNS: dict[tuple[str, str], tuple[list[Column], RowFunc]] = {}


def columns_for(group: str, kind: str) -> tuple[list[Column], RowFunc]:
    return COLUMNS.get((group, kind), (DEFAULT_COLUMNS, _default_cells))


def partial_metadata(obj: Object) -> Object:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def row(obj: Object, cells: RowFunc, include_object: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"cells": cells(obj)}
    if include_object == "Object":
        entry["object"] = obj
    elif include_object != "None":
        entry["object"] = partial_metadata(obj)
    return entry


def table(
    group: str,
    kind: str,
    objects: Iterable[Object],
    *,
    include_object: str = "Metadata",
    list_meta: dict[str, Any] | None = None,
    headers: bool = True,
    printer: tuple[list[Column], RowFunc] | None = None,
) -> Object:
    """A Table of ``objects``; ``printer`` overrides the kind's registered columns (custom
    resources bring theirs from the CRD)."""
    columns, cells = printer or columns_for(group, kind)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta or {},
        "columnDefinitions": columns if headers else [],
        "rows": [row(o, cells, include_object) for o in objects],
    }


from kubling.api import printers as _printers  # noqa: E402, F401  (registers per-kind columns)
