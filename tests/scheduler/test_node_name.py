"""NodeName: spec.nodeName pins a pod to one node."""

from __future__ import annotations

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, make_node, make_pod

NODES = [make_node("a"), make_node("b")]


def test_pod_without_node_name_fits_everywhere() -> None:
    assert all(s.is_success for s in filter_statuses("NodeName", make_pod("p"), NODES).values())


def test_node_name_matches_only_that_node() -> None:
    pod = make_pod("p")
    pod["spec"]["nodeName"] = "b"
    statuses = filter_statuses("NodeName", pod, NODES)
    assert statuses["b"].is_success
    assert statuses["a"].reasons == ("node(s) didn't match the requested node name",)
    assert statuses["a"].code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
