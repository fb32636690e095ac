"""InterPodAffinity: required and preferred (anti-)affinity across topology keys."""

from __future__ import annotations

from typing import Any

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, make_node, make_pod, scores

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
NODES = [
    make_node("a1", labels={ZONE: "a"}),
    make_node("a2", labels={ZONE: "a"}),
    make_node("b1", labels={ZONE: "b"}),
]


def term(labels: dict[str, str], key: str = ZONE, **extra: Any) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key, **extra}


def affinity(kind: str, *terms: dict[str, Any], preferred: bool = False) -> dict[str, Any]:
    if preferred:
        return {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": t} for t in terms]}}
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}}


def fitting(pod: dict[str, Any], pods: list[dict[str, Any]], **kw: Any) -> set[str]:
    statuses = filter_statuses("InterPodAffinity", pod, NODES, pods, **kw)
    return {n for n, s in statuses.items() if s.is_success}


def test_required_affinity_follows_the_zone_of_matching_pods() -> None:
    db = make_pod("db", node_name="a2", labels={"app": "db"})
    pod = make_pod("web", affinity=affinity("podAffinity", term({"app": "db"})))
    statuses = filter_statuses("InterPodAffinity", pod, NODES, [db])
    assert {n for n, s in statuses.items() if s.is_success} == {"a1", "a2"}
    assert statuses["b1"].reasons == ("node(s) didn't match pod affinity rules",)
    assert statuses["b1"].code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_first_pod_of_a_self_affine_group_may_go_anywhere() -> None:
    pod = make_pod("w", labels={"app": "web"},
                   affinity=affinity("podAffinity", term({"app": "web"})))
    assert fitting(pod, []) == {"a1", "a2", "b1"}
    other = make_pod("x", labels={"app": "other"},
                     affinity=affinity("podAffinity", term({"app": "web"})))
    assert fitting(other, []) == set()


def test_required_anti_affinity_keeps_away() -> None:
    web = make_pod("w1", node_name="a1", labels={"app": "web"})
    pod = make_pod("w2", labels={"app": "web"},
                   affinity=affinity("podAntiAffinity", term({"app": "web"}, HOST)))
    statuses = filter_statuses("InterPodAffinity", pod, NODES, [web])
    assert statuses["a1"].reasons == ("node(s) didn't match pod anti-affinity rules",)
    assert statuses["a1"].code is Code.UNSCHEDULABLE
    assert statuses["a2"].is_success and statuses["b1"].is_success


def test_existing_pods_anti_affinity_is_symmetric() -> None:
    loner = make_pod("l", node_name="a1", labels={"app": "loner"},
                     affinity=affinity("podAntiAffinity", term({"app": "web"})))
    statuses = filter_statuses("InterPodAffinity", make_pod("w", labels={"app": "web"}),
                               NODES, [loner])
    assert statuses["a1"].reasons == ("node(s) didn't satisfy existing pods anti-affinity rules",)
    assert not statuses["a2"].is_success  # same zone
    assert statuses["b1"].is_success


def test_namespaces_scope_the_terms() -> None:
    db = make_pod("db", namespace="data", node_name="b1", labels={"app": "db"})
    same_ns = make_pod("web", affinity=affinity("podAffinity", term({"app": "db"})))
    assert fitting(same_ns, [db]) == set()
    listed = make_pod("web", affinity=affinity(
        "podAffinity", term({"app": "db"}, namespaces=["data"])))
    assert fitting(listed, [db]) == {"b1"}
    by_selector = make_pod("web", affinity=affinity(
        "podAffinity", term({"app": "db"}, namespaceSelector={"matchLabels": {"team": "x"}})))
    namespaces = [{"metadata": {"name": "data", "labels": {"team": "x"}}}]
    assert fitting(by_selector, [db], namespaces=namespaces) == {"b1"}
    everywhere = make_pod("web", affinity=affinity(
        "podAffinity", term({"app": "db"}, namespaceSelector={})))
    assert fitting(everywhere, [db]) == {"b1"}


def test_missing_topology_label_fails_affinity() -> None:
    nodes = [make_node("bare")]
    db = make_pod("db", node_name="bare", labels={"app": "db"})
    pod = make_pod("web", affinity=affinity("podAffinity", term({"app": "db"})))
    assert not filter_statuses("InterPodAffinity", pod, nodes, [db])["bare"].is_success


def test_preferred_affinity_and_anti_affinity_scores() -> None:
    cache = make_pod("c", node_name="a1", labels={"app": "cache"})
    near = make_pod("p", affinity=affinity("podAffinity", term({"app": "cache"}),
                                           preferred=True))
    assert scores("InterPodAffinity", near, NODES, [cache]) == {"a1": 100, "a2": 100, "b1": 0}
    away = make_pod("p", affinity=affinity("podAntiAffinity", term({"app": "cache"}),
                                           preferred=True))
    assert scores("InterPodAffinity", away, NODES, [cache]) == {"a1": 0, "a2": 0, "b1": 100}


def test_existing_pods_required_affinity_attracts_matching_pods() -> None:
    fan = make_pod("f", node_name="b1", labels={"app": "fan"},
                   affinity=affinity("podAffinity", term({"app": "star"})))
    star = make_pod("s", labels={"app": "star"})
    assert scores("InterPodAffinity", star, NODES, [fan]) == {"a1": 0, "a2": 0, "b1": 100}
