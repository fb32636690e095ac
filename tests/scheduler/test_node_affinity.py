"""NodeAffinity: nodeSelector, required terms (all operators, matchFields), preferred terms."""

from __future__ import annotations

from typing import Any

import pytest

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, make_node, make_pod, scores

REASON = "node(s) didn't match Pod's node affinity/selector"
NODES = [
    make_node("a", labels={"zone": "z1", "cores": "8", "disk": "ssd"}),
    make_node("b", labels={"zone": "z2", "cores": "2"}),
    make_node("c", labels={"zone": "z3"}),
]


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(terms)}}}


def fitting(pod: dict[str, Any]) -> set[str]:
    return {n for n, s in filter_statuses("NodeAffinity", pod, NODES).items() if s.is_success}


def test_node_selector_must_match_every_label() -> None:
    pod = make_pod("p", node_selector={"zone": "z1", "disk": "ssd"})
    statuses = filter_statuses("NodeAffinity", pod, NODES)
    assert statuses["a"].is_success
    assert statuses["b"].reasons == (REASON,)
    assert statuses["b"].code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


@pytest.mark.parametrize(("expression", "expected"), [
    ({"key": "zone", "operator": "In", "values": ["z1", "z2"]}, {"a", "b"}),
    ({"key": "zone", "operator": "NotIn", "values": ["z1"]}, {"b", "c"}),
    ({"key": "disk", "operator": "Exists"}, {"a"}),
    ({"key": "disk", "operator": "DoesNotExist"}, {"b", "c"}),
    ({"key": "cores", "operator": "Gt", "values": ["4"]}, {"a"}),
    ({"key": "cores", "operator": "Lt", "values": ["4"]}, {"b"}),
    ({"key": "cores", "operator": "Gt", "values": ["x"]}, set()),  # invalid: matches nothing
])
def test_match_expression_operators(expression: dict[str, Any], expected: set[str]) -> None:
    pod = make_pod("p", affinity=required({"matchExpressions": [expression]}))
    assert fitting(pod) == expected


def test_terms_are_ored_and_expressions_anded() -> None:
    pod = make_pod("p", affinity=required(
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]},
                              {"key": "disk", "operator": "DoesNotExist"}]},
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z3"]}]},
    ))
    assert fitting(pod) == {"c"}


def test_empty_term_matches_nothing() -> None:
    assert fitting(make_pod("p", affinity=required({}))) == set()


def test_match_fields_on_metadata_name_narrow_prefilter() -> None:
    pod = make_pod("p", affinity=required(
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}))
    statuses = filter_statuses("NodeAffinity", pod, NODES)
    assert statuses["b"].is_success
    assert not statuses["a"].is_success and not statuses["c"].is_success
    not_in = make_pod("q", affinity=required(
        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["b"]}]}))
    assert fitting(not_in) == {"a", "c"}


def test_node_selector_and_affinity_both_apply() -> None:
    pod = make_pod("p", node_selector={"zone": "z1"}, affinity=required(
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}))
    assert fitting(pod) == set()


def test_preferred_terms_add_weights_then_normalize() -> None:
    pod = make_pod("p", affinity={"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 30, "preference": {"matchExpressions": [
                {"key": "disk", "operator": "Exists"}]}},
            {"weight": 10, "preference": {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["z2", "z1"]}]}},
        ]}})
    assert scores("NodeAffinity", pod, NODES) == {"a": 100, "b": 25, "c": 0}
