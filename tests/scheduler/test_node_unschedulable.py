"""NodeUnschedulable: cordoned nodes, and the toleration that overrides a cordon."""

from __future__ import annotations

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, make_node, make_pod


def test_cordoned_node_rejects_with_upstream_reason() -> None:
    statuses = filter_statuses("NodeUnschedulable", make_pod("p"),
                               [make_node("a"), make_node("b", unschedulable=True)])
    assert statuses["a"].is_success
    assert statuses["b"].reasons == ("node(s) were unschedulable",)
    assert statuses["b"].code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_unschedulable_toleration_overrides_the_cordon() -> None:
    pod = make_pod("p", tolerations=[
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
         "effect": "NoSchedule"}])
    statuses = filter_statuses("NodeUnschedulable", pod, [make_node("b", unschedulable=True)])
    assert statuses["b"].is_success
