"""The namespace controller: a deleted namespace is emptied, then goes away.

End-to-end tests drive the session server (which runs the controller) with the real
kubectl; the condition bookkeeping is checked as pure functions.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubling.api.resources import ResourceType
from kubling.client import discovery
from kubling.controllers import namespace
from tests.server_fixture import KublingServer

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: gadgets.{group}}}
spec:
  group: {group}
  names: {{kind: Gadget, plural: gadgets}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
"""


def _eventually(check: Callable[[], Any], *, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.1)


def _namespace(server: KublingServer) -> str:
    name = "ns-" + uuid.uuid4().hex[:8]
    server.kubectl("create", "namespace", name)
    return name


def _exists(server: KublingServer, *args: str) -> bool:
    return server.kubectl("get", *args, check=False).returncode == 0


def _conditions(server: KublingServer, ns: str) -> dict[str, dict[str, Any]]:
    got = server.kubectl_yaml("get", "namespace", ns)
    return {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}


def test_deleting_a_namespace_removes_its_content_and_the_namespace(
        kubling: KublingServer) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    kubling.kubectl("apply", "-f", "-", input=CRD.format(group=group))
    ns = _namespace(kubling)
    kubling.kubectl("create", "configmap", "one", "-n", ns, "--from-literal=a=1")
    kubling.kubectl("create", "configmap", "two", "-n", ns, "--from-literal=b=2")
    kubling.kubectl("create", "deployment", "web", "-n", ns, "--image=nginx")
    gadget = json.dumps({"apiVersion": f"{group}/v1", "kind": "Gadget",
                         "metadata": {"name": "g1"}})
    _eventually(lambda: kubling.kubectl("apply", "-n", ns, "-f", "-", check=False,
                                        input=gadget).returncode == 0)
    assert _exists(kubling, f"gadgets.{group}", "g1", "-n", ns)

    started = time.monotonic()
    out = kubling.kubectl("delete", "namespace", ns, timeout=30).stdout  # waits, as upstream
    assert f'namespace "{ns}" deleted' in out
    assert time.monotonic() - started < 15
    assert not _exists(kubling, "namespace", ns)
    # Recreated, it is empty: the content went with it (nothing was merely hidden). Only
    # the root-CA publisher's ConfigMap, made anew for the new namespace, may be there.
    kubling.kubectl("create", "namespace", ns)
    for resource in ("configmaps", "deployments", f"gadgets.{group}"):
        names = kubling.kubectl("get", resource, "-n", ns, "-o", "name").stdout.split()
        assert [n for n in names if n != "configmap/kube-root-ca.crt"] == [], resource
    kubling.kubectl("delete", "namespace", ns, "--wait=false")


def test_content_with_finalizers_keeps_the_namespace_terminating(
        kubling: KublingServer) -> None:
    ns = _namespace(kubling)
    held = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    kubling.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(held))
    kubling.kubectl("create", "configmap", "free", "-n", ns)
    kubling.kubectl("delete", "namespace", ns, "--wait=false")

    def finalizers_reported() -> dict[str, dict[str, Any]] | None:
        conditions = _conditions(kubling, ns)
        remaining = conditions.get("NamespaceFinalizersRemaining")
        return conditions if remaining and remaining["status"] == "True" else None

    conditions = _eventually(finalizers_reported)
    assert conditions["NamespaceFinalizersRemaining"]["reason"] == "SomeFinalizersRemain"
    assert conditions["NamespaceFinalizersRemaining"]["message"] == (
        "Some content in the namespace has finalizers remaining: "
        "example.com/hold in 1 resource instances")
    assert conditions["NamespaceContentRemaining"]["message"] == (
        "Some resources are remaining: configmaps. has 1 resource instances")
    assert conditions["NamespaceDeletionDiscoveryFailure"]["status"] == "False"
    assert conditions["NamespaceDeletionDiscoveryFailure"]["reason"] == "ResourcesDiscovered"
    assert conditions["NamespaceDeletionContentFailure"]["status"] == "False"
    got = kubling.kubectl_yaml("get", "namespace", ns)
    assert got["status"]["phase"] == "Terminating"
    assert got["spec"]["finalizers"] == ["kubernetes"]
    assert not _exists(kubling, "configmap", "free", "-n", ns)
    held_now = kubling.kubectl_yaml("get", "configmap", "held", "-n", ns)
    assert held_now["metadata"]["deletionTimestamp"]
    refused = kubling.kubectl("create", "configmap", "late", "-n", ns, check=False)
    assert refused.returncode == 1 and "because it is being terminated" in refused.stderr

    kubling.kubectl("patch", "configmap", "held", "-n", ns, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}')
    _eventually(lambda: not _exists(kubling, "namespace", ns))


# -- the conditions, as pure functions ------------------------------------------------------


def _discovery(**kwargs: Any) -> discovery.Discovery:
    return discovery.Discovery((), **kwargs)


def test_conditions_carry_upstream_reasons_and_messages() -> None:
    found = namespace.conditions_for(
        _discovery(failed={"metrics.k8s.io/v1beta1": "503 ServiceUnavailable: down"}),
        {"configmaps.": 2, "widgets.example.com": 1}, {"a/b": 3},
        ["secrets: 500 InternalError: boom"])
    by_type = {c["type"]: c for c in found}
    assert by_type["NamespaceDeletionDiscoveryFailure"]["message"] == (
        "Discovery failed for some groups, 1 failing: unable to retrieve the complete list "
        "of server APIs: metrics.k8s.io/v1beta1: 503 ServiceUnavailable: down")
    assert by_type["NamespaceContentRemaining"]["message"] == (
        "Some resources are remaining: configmaps. has 2 resource instances, "
        "widgets.example.com has 1 resource instances")
    assert by_type["NamespaceFinalizersRemaining"]["message"] == (
        "Some content in the namespace has finalizers remaining: a/b in 3 resource instances")
    assert by_type["NamespaceDeletionContentFailure"] == {
        "type": "NamespaceDeletionContentFailure", "status": "True",
        "reason": "ContentDeletionFailed",
        "message": "Failed to delete all resource types, 1 remaining: "
                   "secrets: 500 InternalError: boom"}
    assert all(c["status"] == "True" for c in found)


def test_merge_conditions_writes_ok_variants_and_keeps_unchanged_ones() -> None:
    first = namespace.merge_conditions([], [], now="T1")
    assert first is not None and len(first) == 5
    assert {c["type"]: c["reason"] for c in first}["NamespaceContentRemaining"] == "ContentRemoved"
    assert all(c["status"] == "False" and c["lastTransitionTime"] == "T1" for c in first)
    assert namespace.merge_conditions(first, [], now="T2") is None  # no change, no write
    failing = namespace.conditions_for(_discovery(), {"pods.": 1}, {}, [])
    second = namespace.merge_conditions(first, failing, now="T3")
    assert second is not None
    remaining = {c["type"]: c for c in second}["NamespaceContentRemaining"]
    assert remaining["status"] == "True" and remaining["lastTransitionTime"] == "T3"
    untouched = {c["type"]: c for c in second}["NamespaceFinalizersRemaining"]
    assert untouched["lastTransitionTime"] == "T1"


def test_discovery_maps_kinds_to_resources() -> None:
    widgets = ResourceType("example.com", "v2", "Widget", "widgets", "widget", True)
    found = discovery.Discovery((widgets,))
    assert found.by_kind("example.com/v1", "Widget") is widgets  # another version: same objects
    assert found.by_kind("example.com/v2", "Widget") is widgets
    built_in = found.by_kind("apps/v1", "Deployment")  # falls back to the catalogue
    assert built_in is not None and built_in.plural == "deployments"
    assert found.by_kind("nothing.example.com/v1", "Thing") is None
