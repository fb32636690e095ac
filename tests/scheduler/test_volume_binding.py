"""VolumeBinding: bound claims pass where their volume is reachable, unbound Immediate
claims wait, WaitForFirstConsumer claims pick a volume (or a provisioner) with the node."""

from __future__ import annotations

from typing import Any

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, framework, make_node, make_pod

NODES = [make_node("a")]


def claim(name: str, *, volume: str | None = None, sc: str = "standard", size: str = "1Gi",
          modes: tuple[str, ...] = ("ReadWriteOnce",), **spec_extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"storageClassName": sc, "accessModes": list(modes),
                            "resources": {"requests": {"storage": size}}, **spec_extra}
    if volume:
        spec["volumeName"] = volume
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                         "resourceVersion": "7"}, "spec": spec}


def pod_with_claim(name: str = "data") -> dict[str, Any]:
    return make_pod("p", volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": name}}])


def test_pod_without_claims_passes() -> None:
    assert filter_statuses("VolumeBinding", make_pod("p"), NODES)["a"].is_success


def test_bound_claim_passes() -> None:
    statuses = filter_statuses("VolumeBinding", pod_with_claim(), NODES,
                               pvcs=[claim("data", volume="pv-1")],
                               pvs=[{"metadata": {"name": "pv-1"}, "spec": {}}])
    assert statuses["a"].is_success


def test_unbound_immediate_claim_is_unresolvable() -> None:
    status = filter_statuses("VolumeBinding", pod_with_claim(), NODES, pvcs=[claim("data")])["a"]
    assert status.reasons == ("pod has unbound immediate PersistentVolumeClaims",)
    assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_wait_for_first_consumer_claim_with_a_provisioner_passes() -> None:
    sc = {"metadata": {"name": "local"}, "provisioner": "example.com/disk",
          "volumeBindingMode": "WaitForFirstConsumer"}
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


LOCAL = {"metadata": {"name": "local"}, "provisioner": "kubernetes.io/no-provisioner",
         "volumeBindingMode": "WaitForFirstConsumer"}
THREE = [make_node("a"), make_node("b"), make_node("c")]


def local_pv(name: str, node: str | None, *, size: str = "1Gi", sc: str = "local",
             modes: tuple[str, ...] = ("ReadWriteOnce",), **spec: Any) -> dict[str, Any]:
    """A local volume pinned to ``node`` by nodeAffinity (anywhere when ``node`` is None)."""
    body: dict[str, Any] = {"capacity": {"storage": size}, "accessModes": list(modes),
                            "storageClassName": sc, "local": {"path": "/mnt/x"}, **spec}
    if node is not None:
        body["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return {"metadata": {"name": name}, "spec": body, "status": {"phase": "Available"}}


def delayed(*pvs: dict[str, Any], claims: tuple[dict[str, Any], ...] | None = None,
            pod: dict[str, Any] | None = None,
            classes: tuple[dict[str, Any], ...] = (LOCAL,)) -> dict[str, tuple[str, ...]]:
    statuses = filter_statuses(
        "VolumeBinding", pod or pod_with_claim(), THREE,
        pvcs=list(claims or (claim("data", sc="local"),)), pvs=list(pvs),
        storage_classes=list(classes))
    return {name: status.reasons for name, status in statuses.items()}


CONFLICT = ("node(s) didn't find available persistent volumes to bind",)


def test_delayed_claim_goes_where_its_volume_is() -> None:
    assert delayed(local_pv("pv-b", "b")) == {"a": CONFLICT, "b": (), "c": CONFLICT}
    assert delayed(local_pv("anywhere", None)) == {"a": (), "b": (), "c": ()}


def test_delayed_claim_needs_a_fitting_volume() -> None:
    for pv in (local_pv("small", "b", size="512Mi"),
               local_pv("rox", "b", modes=("ReadOnlyMany",)),
               local_pv("other-class", "b", sc="slow"),
               local_pv("block", "b", volumeMode="Block"),
               local_pv("taken", "b", claimRef={"namespace": "default", "name": "else"}),
               {**local_pv("released", "b"), "status": {"phase": "Released"}}):
        assert delayed(pv)["b"] == CONFLICT, pv["metadata"]["name"]
    # A volume pre-bound to this very claim is its.
    mine = local_pv("mine", "c", claimRef={"namespace": "default", "name": "data"})
    assert delayed(mine) == {"a": CONFLICT, "b": CONFLICT, "c": ()}


def test_each_volume_serves_one_claim_of_the_pod() -> None:
    pod = make_pod("p", volumes=[
        {"name": "v1", "persistentVolumeClaim": {"claimName": "one"}},
        {"name": "v2", "persistentVolumeClaim": {"claimName": "two"}}])
    claims = (claim("one", sc="local"), claim("two", sc="local"))
    assert delayed(local_pv("pv-1", "a"), local_pv("pv-2", "b"), claims=claims,
                   pod=pod) == {"a": CONFLICT, "b": CONFLICT, "c": CONFLICT}
    assert delayed(local_pv("pv-1", "a"), local_pv("pv-2", "a"), claims=claims,
                   pod=pod)["a"] == ()


def test_provisioner_and_allowed_topologies() -> None:
    zoned = {"metadata": {"name": "local"}, "provisioner": "example.com/disk",
             "volumeBindingMode": "WaitForFirstConsumer",
             "allowedTopologies": [{"matchLabelExpressions": [
                 {"key": "kubernetes.io/hostname", "values": ["a", "c"]}]}]}
    assert delayed(classes=(zoned,)) == {"a": (), "b": CONFLICT, "c": ()}
    assert delayed(classes=(LOCAL,)) == {"a": CONFLICT, "b": CONFLICT, "c": CONFLICT}


def test_bound_volume_node_affinity_conflict() -> None:
    statuses = filter_statuses(
        "VolumeBinding", pod_with_claim(), THREE, pvcs=[claim("data", volume="pv-b")],
        pvs=[local_pv("pv-b", "b", claimRef={"namespace": "default", "name": "data"})])
    assert {n: s.reasons for n, s in statuses.items()} == {
        "a": ("node(s) had volume node affinity conflict",), "b": (),
        "c": ("node(s) had volume node affinity conflict",)}
    assert statuses["a"].code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    missing = filter_statuses("VolumeBinding", pod_with_claim(), THREE,
                              pvcs=[claim("data", volume="gone")])
    assert missing["a"].reasons == (
        "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)",)


def test_fit_error_messages_match_upstream() -> None:
    from kubling.scheduler.snapshot import Snapshot

    snapshot = Snapshot(THREE, pvcs=[claim("data", sc="local")], storage_classes=[LOCAL])
    assert str(framework().schedule(pod_with_claim(), snapshot)) == (
        "0/3 nodes are available: 3 node(s) didn't find available persistent volumes to "
        "bind. preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
        "scheduling.")
    snapshot = Snapshot(THREE, pvcs=[claim("data", volume="pv-b")],
                        pvs=[local_pv("pv-b", "b")],
                        storage_classes=[LOCAL])
    pod = pod_with_claim()
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "a"}
    assert str(framework().schedule(pod, snapshot)) == (
        "0/3 nodes are available: 1 node(s) had volume node affinity conflict, 2 node(s) "
        "didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: "
        "3 Preemption is not helpful for scheduling.")


def test_the_scheduler_picks_the_node_and_assumes_the_volume() -> None:
    from kubling.scheduler.nodeinfo import PodInfo
    from kubling.scheduler.plugins import volume_binding
    from kubling.scheduler.snapshot import Snapshot

    snapshot = Snapshot(THREE, pvcs=[claim("data", sc="local"), claim("more", sc="local")],
                        pvs=[local_pv("pv-c", "c", size="5Gi"), local_pv("pv-c2", "c")],
                        storage_classes=[LOCAL])
    fw = framework()
    pod = PodInfo(pod_with_claim())
    result = fw.schedule(pod, snapshot)
    assert getattr(result, "suggested_host", None) == "c"
    volumes = volume_binding.assume_pod_volumes(pod, "c", snapshot)
    [(bound_claim, pv)] = volumes.static_bindings
    assert bound_claim["metadata"]["name"] == "data"
    assert pv["metadata"]["name"] == "pv-c2"  # the smallest that fits
    assert pv["spec"]["claimRef"] == {
        "kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": "default",
        "name": "data", "uid": "uid-data", "resourceVersion": "7"}
    assert pv["metadata"]["annotations"] == {"pv.kubernetes.io/bound-by-controller": "yes"}
    assert snapshot.pvs["pv-c2"] is pv
    # The next pod cannot have the assumed volume; the bigger one is left for it.
    other = PodInfo(make_pod("q", volumes=[
        {"name": "v", "persistentVolumeClaim": {"claimName": "more"}}]))
    [(_, second)] = volume_binding.assume_pod_volumes(other, "c", snapshot).static_bindings
    assert second["metadata"]["name"] == "pv-c"
    # A failed binding gives the volume back.
    volume_binding.forget_pod_volumes(volumes, snapshot)
    assert "claimRef" not in snapshot.pvs["pv-c2"]["spec"]


def test_provisioned_claims_get_the_selected_node() -> None:
    from kubling.scheduler.nodeinfo import PodInfo
    from kubling.scheduler.plugins import volume_binding
    from kubling.scheduler.snapshot import Snapshot

    sc = {"metadata": {"name": "local"}, "provisioner": "example.com/disk",
          "volumeBindingMode": "WaitForFirstConsumer"}
    snapshot = Snapshot(THREE, pvcs=[claim("data", sc="local")], storage_classes=[sc])
    volumes = volume_binding.assume_pod_volumes(PodInfo(pod_with_claim()), "b", snapshot)
    [provisioned] = volumes.dynamic_provisions
    assert provisioned["metadata"]["annotations"] == {
        "volume.kubernetes.io/selected-node": "b"}
    assert snapshot.pvcs[("default", "data")] is provisioned
    volume_binding.forget_pod_volumes(volumes, snapshot)
    assert snapshot.pvcs[("default", "data")]["metadata"]["annotations"] == {}
