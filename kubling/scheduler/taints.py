"""Taints and tolerations, parsed once per node and per pod (upstream ``v1helper``).

Shared by TaintToleration, NodeUnschedulable and PodTopologySpread's ``nodeTaintsPolicy``,
which is why it is not inside one plugin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "NO_EXECUTE",
    "NO_SCHEDULE",
    "PREFER_NO_SCHEDULE",
    "Taint",
    "Toleration",
    "find_untolerated",
    "parse_taints",
    "parse_tolerations",
    "tolerates",
]

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"


@dataclasses.dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclasses.dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str
    value: str
    effect: str

    def tolerates(self, taint: Taint) -> bool:
        """Upstream ``Toleration.ToleratesTaint``: empty key/effect are wildcards."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator in ("", "Equal"):
            return self.value == taint.value
        return self.operator == "Exists"


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def parse_taints(node: Mapping[str, Any]) -> tuple[Taint, ...]:
    spec = node.get("spec") or {}
    return tuple(
        Taint(_str(t, "key"), _str(t, "value"), _str(t, "effect"))
        for t in spec.get("taints") or ()
        if isinstance(t, Mapping)
    )


def parse_tolerations(pod: Mapping[str, Any]) -> tuple[Toleration, ...]:
    spec = pod.get("spec") or {}
    return tuple(
        Toleration(_str(t, "key"), _str(t, "operator"), _str(t, "value"), _str(t, "effect"))
        for t in spec.get("tolerations") or ()
        if isinstance(t, Mapping)
    )


def tolerates(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


def find_untolerated(
    taints: Iterable[Taint], tolerations: tuple[Toleration, ...]
) -> Taint | None:
    """The first taint none of ``tolerations`` tolerates (callers pre-filter by effect)."""
    for taint in taints:
        if not tolerates(tolerations, taint):
            return taint
    return None
