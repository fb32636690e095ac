"""The endpoints and EndpointSlice controllers, end to end on the session server.

There is no kubelet here: a test plays its part by patching a pod's status (IP, Ready).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kubling.controllers import endpointslice
from tests.server_fixture import KublingServer


def _eventually(check: Callable[[], Any], *, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.1)


def _apply(server: KublingServer, manifest: dict[str, Any]) -> None:
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _pod(namespace: str, name: str, app: str, port_name: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "ports": [{"name": port_name, "containerPort": port}]}]}}


def _service(namespace: str, name: str, app: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {"tier": "front"}},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                               {"name": "metrics", "port": 9100, "targetPort": 9100}],
                     **extra}}


def _set_status(server: KublingServer, namespace: str, name: str, ip: str,
                ready: bool) -> None:
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    server.kubectl("-n", namespace, "patch", "pod", name, "--subresource=status",
                   "--type=merge", "-p", json.dumps({"status": status}))


def _endpoints(server: KublingServer, namespace: str, name: str) -> dict[str, Any]:
    result = server.kubectl("-n", namespace, "get", "endpoints", name, "-o", "json",
                            check=False)
    assert result.returncode == 0, result.stderr
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def _slices(server: KublingServer, namespace: str, service: str) -> list[dict[str, Any]]:
    out = server.kubectl("-n", namespace, "get", "endpointslices", "-l",
                         f"kubernetes.io/service-name={service}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _by_ip(subsets: list[dict[str, Any]], field: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for subset in subsets:
        for address in subset.get(field) or []:
            found[address["ip"]] = sorted(p["port"] for p in subset.get("ports") or [])
    return found


def _slice_endpoints(slices: list[dict[str, Any]]) -> dict[str, tuple[dict[str, bool], list[int]]]:
    found = {}
    for slice_ in slices:
        ports = sorted(p["port"] for p in slice_.get("ports") or [])
        for endpoint in slice_.get("endpoints") or []:
            found[endpoint["targetRef"]["name"]] = (endpoint["conditions"], ports)
    return found


def test_endpoints_follow_pod_readiness_with_named_ports(kubling: KublingServer) -> None:
    ns = "ep-readiness"
    kubling.kubectl("create", "namespace", ns)
    _apply(kubling, _pod(ns, "web-1", "web", "http", 8080))
    _apply(kubling, _pod(ns, "web-2", "web", "http", 9090))
    _apply(kubling, _pod(ns, "other", "db", "http", 5432))
    _apply(kubling, _service(ns, "web", "web"))

    # Pods without an IP are not endpoints yet: the Endpoints exist, empty, and a
    # placeholder slice says "processed, nothing there".
    _eventually(lambda: _endpoints(kubling, ns, "web") and
                not _endpoints(kubling, ns, "web").get("subsets"))
    placeholder = _eventually(lambda: _slices(kubling, ns, "web"))
    assert len(placeholder) == 1 and not placeholder[0].get("endpoints")

    _set_status(kubling, ns, "web-1", "10.42.0.11", ready=True)
    _set_status(kubling, ns, "web-2", "10.42.0.12", ready=False)
    _set_status(kubling, ns, "other", "10.42.0.13", ready=True)

    def two_pods() -> bool:
        subsets = _endpoints(kubling, ns, "web").get("subsets") or []
        return (_by_ip(subsets, "addresses") == {"10.42.0.11": [8080, 9100]}
                and _by_ip(subsets, "notReadyAddresses") == {"10.42.0.12": [9090, 9100]})

    _eventually(two_pods)
    endpoints = _endpoints(kubling, ns, "web")
    assert endpoints["metadata"]["labels"] == {"tier": "front"}
    ready = next(s for s in endpoints["subsets"] if s.get("addresses"))
    address = ready["addresses"][0]
    assert address["targetRef"]["kind"] == "Pod" and address["targetRef"]["name"] == "web-1"
    assert {p["name"]: p["port"] for p in ready["ports"]} == {"http": 8080, "metrics": 9100}

    # The slices: two (the pods resolve "http" differently), with the pods' conditions.
    def slices_ready() -> bool:
        found = _slice_endpoints(_slices(kubling, ns, "web"))
        return found == {
            "web-1": ({"ready": True, "serving": True, "terminating": False}, [8080, 9100]),
            "web-2": ({"ready": False, "serving": False, "terminating": False}, [9090, 9100]),
        }

    _eventually(slices_ready)
    slices = _slices(kubling, ns, "web")
    assert len(slices) == 2
    for slice_ in slices:
        md = slice_["metadata"]
        assert md["name"].startswith("web-") and len(md["name"]) == len("web-") + 5
        assert md["labels"]["endpointslice.kubernetes.io/managed-by"] == \
            "endpointslice-controller.k8s.io"
        assert md["labels"]["tier"] == "front"
        owner = md["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("Service", "web", True)
        assert slice_["addressType"] == "IPv4"

    # Readiness flips both ways.
    _set_status(kubling, ns, "web-2", "10.42.0.12", ready=True)
    _set_status(kubling, ns, "web-1", "10.42.0.11", ready=False)
    _eventually(lambda: _by_ip(_endpoints(kubling, ns, "web").get("subsets") or [],
                               "addresses") == {"10.42.0.12": [9090, 9100]})
    _eventually(lambda: _slice_endpoints(_slices(kubling, ns, "web"))["web-1"][0]["ready"]
                is False)

    # A deleted pod leaves at once (no kubelet: force it).
    kubling.kubectl("-n", ns, "delete", "pod", "web-2", "--grace-period=0", "--force")
    _eventually(lambda: not _by_ip(_endpoints(kubling, ns, "web").get("subsets") or [],
                                   "addresses"))
    _eventually(lambda: set(_slice_endpoints(_slices(kubling, ns, "web"))) == {"web-1"})
    _eventually(lambda: len(_slices(kubling, ns, "web")) == 1)

    # And a deleted Service takes its Endpoints and slices with it.
    kubling.kubectl("-n", ns, "delete", "service", "web")
    _eventually(lambda: kubling.kubectl("-n", ns, "get", "endpoints", "web",
                                        check=False).returncode != 0)
    _eventually(lambda: not _slices(kubling, ns, "web"))


def test_publish_not_ready_addresses(kubling: KublingServer) -> None:
    ns = "ep-publish"
    kubling.kubectl("create", "namespace", ns)
    _apply(kubling, _pod(ns, "db-0", "db", "http", 5432))
    _apply(kubling, _service(ns, "db", "db", clusterIP="None", publishNotReadyAddresses=True))
    _set_status(kubling, ns, "db-0", "10.42.1.5", ready=False)
    _eventually(lambda: _by_ip(_endpoints(kubling, ns, "db").get("subsets") or [],
                               "addresses") == {"10.42.1.5": [5432, 9100]})
    assert _endpoints(kubling, ns, "db")["metadata"]["labels"] == {
        "tier": "front", "service.kubernetes.io/headless": ""}
    _eventually(lambda: _slice_endpoints(_slices(kubling, ns, "db")).get("db-0") == (
        {"ready": True, "serving": True, "terminating": False}, [5432, 9100]))


def test_selectorless_services_are_left_alone(kubling: KublingServer) -> None:
    ns = "ep-manual"
    kubling.kubectl("create", "namespace", ns)
    _apply(kubling, {"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "external", "namespace": ns},
                     "spec": {"ports": [{"port": 443}]}})
    _apply(kubling, {"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": "external", "namespace": ns},
                     "subsets": [{"addresses": [{"ip": "192.0.2.7"}],
                                  "ports": [{"port": 443}]}]})
    # Give the controllers a moment to (wrongly) act, then check nothing changed.
    time.sleep(1.0)
    subsets = _endpoints(kubling, ns, "external")["subsets"]
    assert subsets[0]["addresses"] == [{"ip": "192.0.2.7"}]
    assert not _slices(kubling, ns, "external")
    # The API server's own Service keeps the Endpoints it bootstrapped.
    kubernetes = _endpoints(kubling, "default", "kubernetes")
    assert kubernetes["subsets"][0]["addresses"]


# -- the EndpointSlice reconciler's plan, as a pure function ------------------------------

def _plan_service() -> dict[str, Any]:
    return {"metadata": {"name": "api", "namespace": "ns", "uid": "svc-uid"},
            "spec": {"selector": {"app": "api"}, "clusterIP": "10.43.0.9",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def _plan_pod(i: int, *, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": f"api-{i}", "namespace": "ns", "uid": f"pod-{i}",
                         "labels": {"app": "api"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": f"10.42.0.{i}",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def _as_existing(plan: Any, service: dict[str, Any]) -> list[dict[str, Any]]:
    """The slices a plan's creates would become (named as the server would name them)."""
    slices = []
    for n, (address_type, ports, endpoints) in enumerate(plan.create):
        slices.append({"metadata": {"name": f"api-{n:05d}", "namespace": "ns",
                                    "labels": endpointslice._slice_labels(service),
                                    "ownerReferences": [endpointslice._owner_ref(service)]},
                       "addressType": address_type, "ports": ports, "endpoints": endpoints})
    return slices


def test_slices_split_at_the_maximum_and_change_little() -> None:
    service = _plan_service()
    pods = [_plan_pod(i) for i in range(1, 6)]
    first = endpointslice.plan(service, pods, [], max_per_slice=2)
    assert [len(e) for _, _, e in first.create] == [2, 2, 1]
    assert not first.update and not first.delete
    existing = _as_existing(first, service)
    # Nothing changed: nothing to write.
    again = endpointslice.plan(service, pods, existing, max_per_slice=2)
    assert not again.create and not again.update and not again.delete
    # One pod turns unready: only its slice is rewritten.
    pods[0] = _plan_pod(1, ready=False)
    changed = endpointslice.plan(service, pods, existing, max_per_slice=2)
    assert not changed.create and not changed.delete
    assert [meta_name(s) for s, _, _ in changed.update] == ["api-00000"]
    # A new pod fills the slice with room rather than making a new one.
    pods[0] = _plan_pod(1)
    grown = endpointslice.plan(service, [*pods, _plan_pod(6)], existing, max_per_slice=2)
    assert not grown.create and [meta_name(s) for s, _, _ in grown.update] == ["api-00002"]
    # With no pods left, one empty placeholder stays (reused, not recreated).
    empty = endpointslice.plan(service, [], existing, max_per_slice=2)
    assert not empty.create
    assert len(empty.update) == 1 and empty.update[0][2] == [] and len(empty.delete) == 2


def meta_name(obj: dict[str, Any]) -> str:
    name: str = obj["metadata"]["name"]
    return name
