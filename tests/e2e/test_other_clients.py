"""Client libraries other than kubectl and the official client drive kubling as any
cluster: ``kubernetes_asyncio`` (the official client's asyncio twin) and ``lightkube``
(typed models, its own HTTP stack, server-side apply)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.server_fixture import KublingServer


def test_kubernetes_asyncio_crud_and_watch(kubling: KublingServer) -> None:
    from kubernetes_asyncio import client, config, watch

    async def scenario() -> None:
        await config.load_kube_config(config_file=str(kubling.kubeconfig))
        async with client.ApiClient() as api_client:
            core = client.CoreV1Api(api_client)
            await core.create_namespace(client.V1Namespace(
                metadata=client.V1ObjectMeta(name="kasyncio")))
            created = await core.create_namespaced_config_map(
                "kasyncio", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"),
                                               data={"a": "1"}))
            rv = created.metadata.resource_version
            patched = await core.patch_namespaced_config_map("cm", "kasyncio",
                                                             {"data": {"a": "2"}})
            assert patched.data == {"a": "2"}
            w = watch.Watch()
            seen: list[tuple[str, str]] = []
            # (only "cm": the namespace's kube-root-ca.crt may arrive meanwhile)
            async with w.stream(core.list_namespaced_config_map, "kasyncio",
                                field_selector="metadata.name=cm",
                                resource_version=rv, timeout_seconds=5) as stream:
                async for event in stream:
                    seen.append((event["type"], event["object"].data["a"]))
                    if len(seen) == 1:
                        await core.delete_namespaced_config_map("cm", "kasyncio")
                    if len(seen) == 2:
                        w.stop()
            assert seen == [("MODIFIED", "2"), ("DELETED", "2")]
            listed = await core.list_namespaced_config_map("kasyncio")
            assert "cm" not in [i.metadata.name for i in listed.items]
            await core.delete_namespace("kasyncio")

    asyncio.run(scenario())


def test_lightkube_typed_crud_and_server_side_apply(kubling: KublingServer) -> None:
    from lightkube import ApiError, Client, KubeConfig
    from lightkube.models.apps_v1 import DeploymentSpec
    from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
    from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.core_v1 import ConfigMap, Namespace

    client = Client(config=KubeConfig.from_file(str(kubling.kubeconfig)), field_manager="lk")
    client.create(Namespace(metadata=ObjectMeta(name="lightkube")))
    client.create(ConfigMap(metadata=ObjectMeta(name="cm", namespace="lightkube"),
                            data={"k": "v"}))
    assert client.get(ConfigMap, "cm", namespace="lightkube").data == {"k": "v"}
    deployment = Deployment(
        metadata=ObjectMeta(name="web", namespace="lightkube"),
        spec=DeploymentSpec(
            replicas=2, selector=LabelSelector(matchLabels={"app": "web"}),
            template=PodTemplateSpec(metadata=ObjectMeta(labels={"app": "web"}),
                                     spec=PodSpec(containers=[Container(name="c",
                                                                        image="nginx")]))))
    applied = client.apply(deployment)  # server-side apply, fieldManager "lk"
    assert applied.spec.replicas == 2
    managers = {m.manager for m in applied.metadata.managedFields}
    assert "lk" in managers
    names = [cm.metadata.name for cm in client.list(ConfigMap, namespace="lightkube")]
    assert "cm" in names
    with pytest.raises(ApiError) as err:
        client.get(ConfigMap, "missing", namespace="lightkube")
    assert err.value.status.code == 404
    events: list[Any] = []
    done = threading.Event()

    def follow() -> None:
        for op, obj in client.watch(ConfigMap, namespace="lightkube",
                                    resource_version=client.get(
                                        ConfigMap, "cm", namespace="lightkube"
                                    ).metadata.resourceVersion):
            events.append((op, obj.metadata.name))
            if op == "DELETED":
                done.set()
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    client.delete(ConfigMap, "cm", namespace="lightkube")
    assert done.wait(10), events
    assert ("DELETED", "cm") in events
    client.delete(Namespace, "lightkube")
