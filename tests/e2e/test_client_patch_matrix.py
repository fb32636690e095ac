"""The three Python clients patch built-in and custom resources every way there is.

Issue 3 asks that the official ``kubernetes`` client, ``kubernetes_asyncio`` and
``lightkube`` create, patch (JSON, merge, strategic merge — custom resources refuse
strategic, as upstream), server-side apply, list and watch both kinds without errors or
warnings. Each client gets its own namespace; a CRD of Widgets serves the custom kind.
Server ``Warning`` headers are collected from every response (none expected).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server_fixture import KublingServer, wait_for

GROUP = "matrix.kubling.dev"
CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{GROUP}}}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{kind: Widget, plural: widgets, singular: widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {{type: integer}}
              color: {{type: string}}
              tags: {{type: array, items: {{type: string}}}}
"""


@pytest.fixture(scope="module")
def cluster(kubling: KublingServer) -> Iterator[KublingServer]:
    kubling.kubectl("apply", "-f", "-", input=CRD)
    kubling.kubectl("wait", "--for=condition=Established", f"crd/widgets.{GROUP}",
                    "--timeout=30s")
    yield kubling


def _namespace(server: KublingServer, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    wait_for(lambda: server.kubectl("get", "configmap", "kube-root-ca.crt", "-n", name,
                                    check=False).returncode == 0, 10, "the namespace")
    return name


WIDGET = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "w"},
          "spec": {"size": 1, "color": "red", "tags": ["a"]}}


def test_official_client(cluster: KublingServer) -> None:
    from kubernetes import client

    ns = _namespace(cluster, "official")
    api_client = cluster.api_client()
    warnings: list[str] = []
    original = api_client.rest_client.request

    def request(*args: Any, **kwargs: Any) -> Any:
        response = original(*args, **kwargs)
        warnings.extend(v for k, v in response.getheaders().items() if k.lower() == "warning")
        return response

    api_client.rest_client.request = request
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("cm", ns, [{"op": "add", "path": "/data/b",
                                                 "value": "2"}])  # a list: JSON patch
    core.patch_namespaced_config_map("cm", ns, {"data": {"c": "3"}})  # strategic merge
    core.patch_namespaced_config_map("cm", ns, {"data": {"a": None}},
                                     _content_type="application/merge-patch+json")
    applied = core.patch_namespaced_config_map(
        "cm", ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
                   "data": {"d": "4"}},
        field_manager="matrix", _content_type="application/apply-patch+yaml")
    assert applied.data == {"b": "2", "c": "3", "d": "4"}
    assert "matrix" in {m.manager for m in applied.metadata.managed_fields}

    kw = {"group": GROUP, "version": "v1", "namespace": ns, "plural": "widgets"}
    custom.create_namespaced_custom_object(body=WIDGET, **kw)
    custom.patch_namespaced_custom_object(name="w", body={"spec": {"size": 2}},
                                          **kw)  # merge patch for custom resources
    custom.patch_namespaced_custom_object(
        name="w", body=[{"op": "replace", "path": "/spec/color", "value": "blue"}],
        _content_type="application/json-patch+json", **kw)
    # The tags were set at create by this client's manager: taking them over needs force.
    got = custom.patch_namespaced_custom_object(
        name="w", body={**WIDGET, "spec": {"tags": ["a", "b"]}}, field_manager="matrix",
        force=True, _content_type="application/apply-patch+yaml", **kw)
    assert got["spec"] == {"size": 2, "color": "blue", "tags": ["a", "b"]}
    with pytest.raises(client.ApiException) as err:
        custom.patch_namespaced_custom_object(
            name="w", body={"spec": {"size": 3}},
            _content_type="application/strategic-merge-patch+json", **kw)
    assert err.value.status == 415
    listed = custom.list_namespaced_custom_object(**kw)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w"]

    from kubernetes import watch
    events: list[str] = []
    stream = watch.Watch().stream(custom.list_namespaced_custom_object,
                                  resource_version=listed["metadata"]["resourceVersion"],
                                  timeout_seconds=10, **kw)
    custom.delete_namespaced_custom_object(name="w", **kw)
    for event in stream:
        events.append(event["type"])
        if event["type"] == "DELETED":
            break
    assert events == ["DELETED"]
    assert warnings == []
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_kubernetes_asyncio(cluster: KublingServer) -> None:
    from kubernetes_asyncio import client, config, watch

    ns = _namespace(cluster, "kasync")

    async def scenario() -> None:
        await config.load_kube_config(config_file=str(cluster.kubeconfig))
        async with client.ApiClient() as api_client:
            core = client.CoreV1Api(api_client)
            custom = client.CustomObjectsApi(api_client)
            await core.create_namespaced_config_map(
                ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
            await core.patch_namespaced_config_map(
                "cm", ns, [{"op": "add", "path": "/data/b", "value": "2"}])
            await core.patch_namespaced_config_map(
                "cm", ns, {"data": {"a": None}}, _content_type="application/merge-patch+json")
            applied = await core.patch_namespaced_config_map(
                "cm", ns, {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "cm"}, "data": {"d": "4"}},
                field_manager="matrix", _content_type="application/apply-patch+yaml")
            assert applied.data == {"b": "2", "d": "4"}
            kw = {"group": GROUP, "version": "v1", "namespace": ns, "plural": "widgets"}
            await custom.create_namespaced_custom_object(body=WIDGET, **kw)
            await custom.patch_namespaced_custom_object(  # this client needs the type said
                name="w", body={"spec": {"size": 5}},
                _content_type="application/merge-patch+json", **kw)
            got = await custom.patch_namespaced_custom_object(
                name="w", body={**WIDGET, "spec": {"color": "green"}},
                field_manager="matrix", force=True,
                _content_type="application/apply-patch+yaml", **kw)
            assert got["spec"] == {"size": 5, "color": "green", "tags": ["a"]}
            listed = await custom.list_namespaced_custom_object(**kw)
            seen: list[str] = []
            w = watch.Watch()
            async with w.stream(custom.list_namespaced_custom_object,
                                resource_version=listed["metadata"]["resourceVersion"],
                                timeout_seconds=10, **kw) as stream:
                await custom.delete_namespaced_custom_object(name="w", **kw)
                async for event in stream:
                    seen.append(event["type"])
                    if event["type"] == "DELETED":
                        w.stop()
            assert seen == ["DELETED"]

    asyncio.run(scenario())
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_lightkube(cluster: KublingServer) -> None:
    from lightkube import Client, KubeConfig
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap
    from lightkube.types import PatchType

    ns = _namespace(cluster, "lightkube")
    client = Client(config=KubeConfig.from_file(str(cluster.kubeconfig)), field_manager="lk")
    client.create(ConfigMap(metadata=ObjectMeta(name="cm", namespace=ns), data={"a": "1"}))
    client.patch(ConfigMap, "cm", [{"op": "add", "path": "/data/b", "value": "2"}],
                 namespace=ns, patch_type=PatchType.JSON)
    client.patch(ConfigMap, "cm", {"data": {"c": "3"}}, namespace=ns,
                 patch_type=PatchType.STRATEGIC)
    client.patch(ConfigMap, "cm", {"data": {"a": None}}, namespace=ns,
                 patch_type=PatchType.MERGE)
    assert client.get(ConfigMap, "cm", namespace=ns).data == {"b": "2", "c": "3"}

    Widget = create_namespaced_resource(GROUP, "v1", "Widget", "widgets")
    client.create(Widget(metadata=ObjectMeta(name="w", namespace=ns),
                         spec={"size": 1, "color": "red"}))
    client.patch(Widget, "w", {"spec": {"size": 7}}, namespace=ns,
                 patch_type=PatchType.MERGE)
    client.patch(Widget, "w", [{"op": "add", "path": "/spec/tags", "value": ["x"]}],
                 namespace=ns, patch_type=PatchType.JSON)
    applied = client.apply(Widget(metadata=ObjectMeta(name="w", namespace=ns),
                                  spec={"color": "blue"}), namespace=ns, force=True)
    assert applied.spec == {"size": 7, "color": "blue", "tags": ["x"]}
    assert [w.metadata.name for w in client.list(Widget, namespace=ns)] == ["w"]
    events: list[str] = []
    done = threading.Event()
    version = client.get(Widget, "w", namespace=ns).metadata.resourceVersion

    def follow() -> None:
        for op, _obj in client.watch(Widget, namespace=ns, resource_version=version):
            events.append(op)
            if op == "DELETED":
                done.set()
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    client.delete(Widget, "w", namespace=ns)
    assert done.wait(10), events
    assert events == ["DELETED"]
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
