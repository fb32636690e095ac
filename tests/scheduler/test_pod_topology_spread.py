"""PodTopologySpread: maxSkew filtering, minDomains, node inclusion, soft scoring."""

from __future__ import annotations

from typing import Any

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, make_node, make_pod, scores

ZONE = "topology.kubernetes.io/zone"
NODES = [
    make_node("a1", labels={ZONE: "a"}),
    make_node("a2", labels={ZONE: "a"}),
    make_node("b1", labels={ZONE: "b"}),
    make_node("c1", labels={ZONE: "c"}),
]


def constraint(max_skew: int = 1, when: str = "DoNotSchedule", **extra: Any) -> dict[str, Any]:
    return {"maxSkew": max_skew, "topologyKey": ZONE, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "web"}}, **extra}


def web(name: str, node: str | None = None, **kw: Any) -> dict[str, Any]:
    return make_pod(name, node_name=node, labels={"app": "web"}, **kw)


def fitting(pod: dict[str, Any], pods: list[dict[str, Any]], nodes: Any = NODES) -> set[str]:
    statuses = filter_statuses("PodTopologySpread", pod, nodes, pods)
    return {n for n, s in statuses.items() if s.is_success}


def test_skew_filters_crowded_domains() -> None:
    existing = [web("w1", "a1"), web("w2", "a2"), web("w3", "b1")]
    statuses = filter_statuses("PodTopologySpread", web("new", spread=[constraint()]),
                               NODES, existing)
    assert {n for n, s in statuses.items() if s.is_success} == {"c1"}
    assert statuses["a1"].reasons == ("node(s) didn't match pod topology spread constraints",)
    assert statuses["a1"].code is Code.UNSCHEDULABLE


def test_larger_max_skew_allows_more() -> None:
    existing = [web("w1", "a1"), web("w3", "b1")]
    assert fitting(web("new", spread=[constraint(2)]), existing) == {"a1", "a2", "b1", "c1"}


def test_pods_not_selected_or_in_other_namespaces_do_not_count() -> None:
    existing = [make_pod("x", node_name="a1", labels={"app": "other"}),
                web("y", "b1", namespace="elsewhere")]
    assert fitting(web("new", spread=[constraint()]), existing) == {"a1", "a2", "b1", "c1"}


def test_node_without_topology_label_is_unresolvable() -> None:
    nodes = [*NODES, make_node("bare")]
    statuses = filter_statuses("PodTopologySpread", web("new", spread=[constraint()]), nodes)
    assert statuses["bare"].reasons == (
        "node(s) didn't match pod topology spread constraints (missing required label)",)
    assert statuses["bare"].code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_min_domains_treats_global_minimum_as_zero() -> None:
    existing = [web("w1", "a1"), web("w2", "b1"), web("w3", "c1")]
    assert fitting(web("new", spread=[constraint()]), existing) == {"a1", "a2", "b1", "c1"}
    # four domains wanted, three exist: the minimum counts as 0, so every zone has skew 2.
    assert fitting(web("new", spread=[constraint(minDomains=4)]), existing) == set()


def test_node_affinity_limits_the_domains() -> None:
    existing = [web("w1", "a1")]
    pod = web("new", spread=[constraint()], node_selector={ZONE: "a"})
    # Only zone a is eligible, so it is the minimum itself: skew 1+1-1 = 1 is fine.
    assert fitting(pod, existing) == {"a1", "a2", "b1", "c1"}
    ignore = web("new", spread=[constraint(nodeAffinityPolicy="Ignore")],
                 node_selector={ZONE: "a"})
    assert fitting(ignore, existing) == {"b1", "c1"}


def test_schedule_anyway_only_scores() -> None:
    existing = [web("w1", "a1"), web("w2", "a2"), web("w3", "b1")]
    pod = web("new", spread=[constraint(when="ScheduleAnyway")])
    assert fitting(pod, existing) == {"a1", "a2", "b1", "c1"}
    got = scores("PodTopologySpread", pod, NODES, existing)
    assert got["c1"] == 100
    assert got["c1"] > got["b1"] > got["a1"] == got["a2"]
