"""VolumeBinding (stub): bound claims pass, unbound Immediate claims wait."""

from __future__ import annotations

from typing import Any

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, framework, make_node, make_pod

NODES = [make_node("a")]


def claim(name: str, *, volume: str | None = None, sc: str = "standard") -> dict[str, Any]:
    spec: dict[str, Any] = {"storageClassName": sc}
    if volume:
        spec["volumeName"] = volume
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def pod_with_claim(name: str = "data") -> dict[str, Any]:
    return make_pod("p", volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": name}}])


def test_pod_without_claims_passes() -> None:
    assert filter_statuses("VolumeBinding", make_pod("p"), NODES)["a"].is_success


def test_bound_claim_passes() -> None:
    statuses = filter_statuses("VolumeBinding", pod_with_claim(), NODES,
                               pvcs=[claim("data", volume="pv-1")])
    assert statuses["a"].is_success


def test_unbound_immediate_claim_is_unresolvable() -> None:
    status = filter_statuses("VolumeBinding", pod_with_claim(), NODES, pvcs=[claim("data")])["a"]
    assert status.reasons == ("pod has unbound immediate PersistentVolumeClaims",)
    assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_wait_for_first_consumer_claim_passes() -> None:
    sc = {"metadata": {"name": "local"}, "volumeBindingMode": "WaitForFirstConsumer"}
    statuses = filter_statuses("VolumeBinding", pod_with_claim(), NODES,
                               pvcs=[claim("data", sc="local")], storage_classes=[sc])
    assert statuses["a"].is_success


def test_missing_claim() -> None:
    status = filter_statuses("VolumeBinding", pod_with_claim("nope"), NODES)["a"]
    assert status.reasons == ('persistentvolumeclaim "nope" not found',)


def test_fit_error_message_for_unbound_claim_matches_upstream() -> None:
    from kubling.scheduler.snapshot import Snapshot

    fw = framework()
    snapshot = Snapshot([make_node("a"), make_node("b")], pvcs=[claim("data")])
    result = fw.schedule(pod_with_claim(), snapshot)
    assert str(result) == (
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
