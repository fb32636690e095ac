"""Node selector terms and pod affinity terms, parsed once per pod.

NodeAffinity, PodTopologySpread (which spreads only over nodes the pod may land on) and
InterPodAffinity all need these, so they live beside ``PodInfo`` rather than in one plugin.
Parsing follows upstream's ``component-helpers/.../nodeaffinity``: a term that does not
parse matches nothing, and an empty term matches nothing either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kubling.api import labels

__all__ = [
    "AffinityTerm",
    "NodeSelectorTerm",
    "RequiredNodeAffinity",
    "WeightedAffinityTerm",
    "parse_node_selector_term",
    "parse_pod_affinity_terms",
    "preferred_node_terms",
]

_NODE_OPERATORS = {
    "In": labels.Operator.IN,
    "NotIn": labels.Operator.NOT_IN,
    "Exists": labels.Operator.EXISTS,
    "DoesNotExist": labels.Operator.DOES_NOT_EXIST,
    "Gt": labels.Operator.GREATER_THAN,
    "Lt": labels.Operator.LESS_THAN,
}
NAME_FIELD = "metadata.name"


@dataclasses.dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    """One ``nodeSelectorTerms`` entry: label requirements AND ``metadata.name`` fields."""

    requirements: tuple[labels.Requirement, ...] = ()
    #: (node name, wanted): ``In`` wants equality, ``NotIn`` inequality.
    name_fields: tuple[tuple[str, bool], ...] = ()
    #: Pinned node names from ``metadata.name In`` (None when the term has none).
    names_in: frozenset[str] | None = None
    valid: bool = True

    def matches(self, node_labels: Mapping[str, str], node_name: str) -> bool:
        if not self.valid:
            return False
        for name, wanted in self.name_fields:
            if (node_name == name) is not wanted:
                return False
        for req in self.requirements:
            if not req.matches(node_labels):
                return False
        return True


_INVALID = NodeSelectorTerm(valid=False)


def parse_node_selector_term(term: Any) -> NodeSelectorTerm:
    if not isinstance(term, Mapping):
        return _INVALID
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return _INVALID  # an empty term selects no node
    try:
        requirements = []
        for expr in expressions:
            op = _NODE_OPERATORS.get(expr.get("operator"))
            if op is None:
                return _INVALID
            requirements.append(
                labels.Requirement.new(expr.get("key", ""), op, expr.get("values") or ())
            )
        name_fields = []
        names_in: frozenset[str] | None = None
        for expr in fields:
            values = expr.get("values") or []
            operator = expr.get("operator")
            if expr.get("key") != NAME_FIELD or len(values) != 1:
                return _INVALID
            if operator not in ("In", "NotIn"):
                return _INVALID
            name_fields.append((str(values[0]), operator == "In"))
            if operator == "In":
                pinned = frozenset({str(values[0])})
                names_in = pinned if names_in is None else names_in & pinned
    except (labels.SelectorError, AttributeError, TypeError):
        return _INVALID
    return NodeSelectorTerm(tuple(requirements), tuple(name_fields), names_in)


@dataclasses.dataclass(frozen=True, slots=True)
class RequiredNodeAffinity:
    """``spec.nodeSelector`` AND (OR of required node affinity terms), as upstream."""

    node_selector: tuple[tuple[str, str], ...] = ()
    terms: tuple[NodeSelectorTerm, ...] | None = None

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> RequiredNodeAffinity:
        spec = pod.get("spec") or {}
        selector = spec.get("nodeSelector") or {}
        node_affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        terms = None
        if required is not None:
            terms = tuple(
                parse_node_selector_term(t) for t in required.get("nodeSelectorTerms") or ()
            )
        return cls(tuple((str(k), str(v)) for k, v in selector.items()), terms)

    @property
    def empty(self) -> bool:
        return not self.node_selector and self.terms is None

    def matches(self, node_labels: Mapping[str, str], node_name: str) -> bool:
        for key, value in self.node_selector:
            if node_labels.get(key) != value:
                return False
        if self.terms is None:
            return True
        return any(t.matches(node_labels, node_name) for t in self.terms)


def preferred_node_terms(pod: Mapping[str, Any]) -> tuple[tuple[int, NodeSelectorTerm], ...]:
    """Weighted preferred terms; zero weights and empty preferences are dropped, as upstream."""
    spec = pod.get("spec") or {}
    node_affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    out = []
    for pref in node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ():
        weight = pref.get("weight") or 0
        term = parse_node_selector_term(pref.get("preference"))
        if weight and term.valid:
            out.append((int(weight), term))
    return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A pod (anti-)affinity term: which pods it selects and across which topology key.

    With no ``namespaces`` and no ``namespaceSelector`` the term is about the owning pod's
    own namespace; a ``namespaceSelector: {}`` means every namespace.
    """

    selector: labels.Selector
    topology_key: str
    namespaces: frozenset[str]
    namespace_selector: labels.Selector | None

    def matches(
        self, namespace: str, pod_labels: Mapping[str, str],
        namespace_labels: Mapping[str, str] | None,
    ) -> bool:
        if namespace not in self.namespaces and not (
            self.namespace_selector is not None
            and self.namespace_selector.matches(namespace_labels or {})
        ):
            return False
        return self.selector.matches(pod_labels)


@dataclasses.dataclass(frozen=True, slots=True)
class WeightedAffinityTerm:
    weight: int
    term: AffinityTerm


def _affinity_term(term: Mapping[str, Any], own_namespace: str) -> AffinityTerm | None:
    try:
        selector = labels.from_label_selector(term.get("labelSelector"))
        ns_raw = term.get("namespaceSelector")
        ns_selector = labels.from_label_selector(ns_raw) if ns_raw is not None else None
    except labels.SelectorError:
        return None
    namespaces = frozenset(str(n) for n in term.get("namespaces") or ())
    if not namespaces and ns_selector is None:
        namespaces = frozenset({own_namespace})
    return AffinityTerm(selector, str(term.get("topologyKey") or ""), namespaces, ns_selector)


def parse_pod_affinity_terms(
    section: Mapping[str, Any] | None, own_namespace: str
) -> tuple[tuple[AffinityTerm, ...], tuple[WeightedAffinityTerm, ...]]:
    """(required, preferred) terms of a ``podAffinity`` or ``podAntiAffinity`` section."""
    if not section:
        return (), ()
    required = []
    for raw in section.get("requiredDuringSchedulingIgnoredDuringExecution") or ():
        term = _affinity_term(raw, own_namespace)
        if term is not None:
            required.append(term)
    preferred = []
    for raw in section.get("preferredDuringSchedulingIgnoredDuringExecution") or ():
        term = _affinity_term(raw.get("podAffinityTerm") or {}, own_namespace)
        if term is not None and raw.get("weight"):
            preferred.append(WeightedAffinityTerm(int(raw["weight"]), term))
    return tuple(required), tuple(preferred)
