"""TaintToleration: NoSchedule/NoExecute filter, PreferNoSchedule scores."""

from __future__ import annotations

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, make_node, make_pod, scores

CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def test_untolerated_taint_is_named_in_the_reason() -> None:
    nodes = [make_node("cp", taints=[CONTROL_PLANE]),
             make_node("gpu", taints=[{"key": "gpu", "value": "true", "effect": "NoExecute"}]),
             make_node("w")]
    statuses = filter_statuses("TaintToleration", make_pod("p"), nodes)
    assert statuses["cp"].reasons == (
        "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",)
    assert statuses["cp"].code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert statuses["gpu"].reasons == ("node(s) had untolerated taint {gpu: true}",)
    assert statuses["w"].is_success


def test_tolerations_equal_and_exists() -> None:
    nodes = [make_node("gpu", taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}])]
    equal = make_pod("p", tolerations=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}])
    wrong_value = make_pod("q", tolerations=[{"key": "gpu", "value": "no"}])
    exists_any = make_pod("r", tolerations=[{"operator": "Exists"}])
    wrong_effect = make_pod("s", tolerations=[
        {"key": "gpu", "operator": "Exists", "effect": "NoExecute"}])
    assert filter_statuses("TaintToleration", equal, nodes)["gpu"].is_success
    assert not filter_statuses("TaintToleration", wrong_value, nodes)["gpu"].is_success
    assert filter_statuses("TaintToleration", exists_any, nodes)["gpu"].is_success
    assert not filter_statuses("TaintToleration", wrong_effect, nodes)["gpu"].is_success


def test_prefer_no_schedule_does_not_filter_but_scores_lower() -> None:
    soft = {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}
    nodes = [make_node("plain"), make_node("one", taints=[soft]),
             make_node("two", taints=[soft, {"key": "x", "effect": "PreferNoSchedule"}])]
    assert all(s.is_success for s in filter_statuses(
        "TaintToleration", make_pod("p"), nodes).values())
    assert scores("TaintToleration", make_pod("p"), nodes) == {"plain": 100, "one": 50, "two": 0}
    tolerant = make_pod("t", tolerations=[{"key": "spot", "operator": "Exists"}])
    assert scores("TaintToleration", tolerant, nodes) == {"plain": 100, "one": 100, "two": 0}
