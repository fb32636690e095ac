"""PodTopologySpread: maxSkew filtering, minDomains, node inclusion, soft scoring."""

from __future__ import annotations

from typing import Any

from kubling.scheduler.interface import Code
from kubling.scheduler.nodeinfo import PodInfo
from kubling.scheduler.owners import OwnerSelectors
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


# -- the cluster's default constraints ------------------------------------------------------


def _owned(name: str, node: str | None = None, *, owner: str = "web-abc",
           kind: str = "ReplicaSet") -> dict[str, Any]:
    pod = make_pod(name, node_name=node, labels={"app": "web", "pod-template-hash": "abc"})
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1" if kind != "ReplicationController"
                                           else "v1", "kind": kind, "name": owner, "uid": "u",
                                           "controller": True}]
    return pod


def _owners(services: tuple[dict[str, Any], ...] = (),
            controllers: dict[str, dict[str, Any]] | None = None) -> OwnerSelectors:
    """Owner lookups over fixed objects; ``controllers`` by ``namespace/name``."""
    found = dict(controllers or {})
    return OwnerSelectors(services=lambda ns: list(services), replication_controllers=found.get,
                          replica_sets=found.get, stateful_sets=found.get)


REPLICA_SET = {"spec": {"selector": {"matchLabels": {"app": "web",
                                                     "pod-template-hash": "abc"}}}}


def test_replicas_without_constraints_spread_over_nodes_by_default() -> None:
    nodes = [make_node("n1"), make_node("n2"), make_node("n3")]
    existing = [_owned("w1", "n1"), _owned("w2", "n1"), _owned("w3", "n2"),
                make_pod("other", node_name="n3", labels={"app": "db"})]
    owners = _owners(controllers={"default/web-abc": REPLICA_SET})
    got = scores("PodTopologySpread", _owned("new"), nodes, existing, owner_selectors=owners)
    # No zone labels: the hostname default alone scores, fewer replicas is better.
    assert got["n3"] == 100
    assert got["n3"] > got["n2"] > got["n1"]
    # Without a cache of owners (or an owner it knows), the defaults stay out of the way.
    assert scores("PodTopologySpread", _owned("new"), nodes, existing) == {
        "n1": 0, "n2": 0, "n3": 0}
    assert scores("PodTopologySpread", _owned("new", owner="gone"), nodes, existing,
                  owner_selectors=owners) == {"n1": 0, "n2": 0, "n3": 0}


def test_default_selector_joins_services_and_the_controller() -> None:
    service = {"spec": {"selector": {"app": "web"}}}
    unrelated = {"spec": {"selector": {"app": "db"}}}
    owners = _owners((service, unrelated, {"spec": {}}),
                     controllers={"default/web-abc": REPLICA_SET})
    selector = owners.default_selector(PodInfo(_owned("new")))
    assert str(selector) == "app=web,app=web,pod-template-hash=abc"
    assert selector.matches({"app": "web", "pod-template-hash": "abc"})
    assert not selector.matches({"app": "web", "pod-template-hash": "def"})
    alone = _owners((service,)).default_selector(PodInfo(make_pod("p", labels={"app": "web"})))
    assert str(alone) == "app=web"
    rc = _owned("r", kind="ReplicationController", owner="legacy")
    rc_owners = _owners(controllers={"default/legacy": {"spec": {"selector": {"tier": "front"}}}})
    assert str(rc_owners.default_selector(PodInfo(rc))) == "tier=front"


def test_own_constraints_replace_the_defaults() -> None:
    nodes = [make_node("n1"), make_node("n2")]
    existing = [_owned("w1", "n1")]
    pod = _owned("new")
    pod["spec"]["topologySpreadConstraints"] = [{
        "maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "web"}}}]
    # Its own constraint needs the zone label, which no node has: every node is ignored.
    got = scores("PodTopologySpread", pod, nodes, existing,
                 owner_selectors=_owners(controllers={"default/web-abc": REPLICA_SET}))
    assert got == {"n1": 0, "n2": 0}
