"""The official ``kubernetes`` Python client against a real kubling server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.server_fixture import KublingServer, running_server


@pytest.fixture
def core(kubling: KublingServer) -> client.CoreV1Api:
    return client.CoreV1Api(kubling.api_client())


#: The ConfigMap the root-CA publisher keeps in every namespace, as upstream.
ROOT_CA = "kube-root-ca.crt"


@pytest.fixture
def namespace(core: client.CoreV1Api) -> str:
    """A new namespace, once the root-CA publisher has put its ``kube-root-ca.crt`` there
    (so that its creation does not interleave with a test's own events)."""
    name = "py-" + uuid.uuid4().hex[:8]
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 10
    while not core.list_namespaced_config_map(name, field_selector=f"metadata.name={ROOT_CA}"
                                              ).items:
        assert time.monotonic() < deadline, f"no {ROOT_CA} in {name}"
        time.sleep(0.05)
    return name


def test_configmap_crud(core: client.CoreV1Api, namespace: str) -> None:
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c1", labels={"a": "1"}),
                              data={"k": "v"})
    created = core.create_namespaced_config_map(namespace, body)
    assert created.metadata.uid and created.metadata.resource_version
    got = core.read_namespaced_config_map("c1", namespace)
    assert got.data == {"k": "v"}
    got.data["k"] = "v2"
    replaced = core.replace_namespaced_config_map("c1", namespace, got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    patched = core.patch_namespaced_config_map("c1", namespace, {"data": {"extra": "x"}})
    assert patched.data == {"k": "v2", "extra": "x"}
    listed = core.list_namespaced_config_map(namespace, label_selector="a=1")
    assert [i.metadata.name for i in listed.items] == ["c1"]
    core.delete_namespaced_config_map("c1", namespace)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("c1", namespace)
    assert err.value.status == 404


def test_stale_update_is_409(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="c"), data={"n": "0"}))
    first = core.read_namespaced_config_map("c", namespace)
    second = core.read_namespaced_config_map("c", namespace)
    first.data["n"] = "1"
    core.replace_namespaced_config_map("c", namespace, first)
    second.data["n"] = "2"
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", namespace, second)
    assert err.value.status == 409
    assert "the object has been modified" in err.value.body


def test_pagination_with_continue(core: client.CoreV1Api, namespace: str) -> None:
    for i in range(7):
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"page-{i}")))
    names: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_namespaced_config_map(namespace, limit=3, _continue=token)
        pages += 1
        names += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count is not None
    assert pages == 3
    assert names == [ROOT_CA] + [f"page-{i}" for i in range(7)]


def test_watch_stream(core: client.CoreV1Api, namespace: str) -> None:
    listed = core.list_namespaced_config_map(namespace)
    events: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(core.list_namespaced_config_map, namespace,
                              resource_version=listed.metadata.resource_version,
                              timeout_seconds=10):
            events.append((event["type"], event["object"].metadata.name))
            if len(events) == 3:
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="w")))
    core.patch_namespaced_config_map("w", namespace, {"data": {"a": "b"}})
    core.delete_namespaced_config_map("w", namespace)
    thread.join(15)
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_watch_label_selector_enter_and_leave(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="sel")))
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.patch_namespaced_config_map("sel", namespace, {"metadata": {"labels": {"x": "y"}}})
    core.patch_namespaced_config_map("sel", namespace, {"metadata": {"labels": {"x": "z"}}})
    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_namespaced_config_map, namespace, label_selector="x=y",
                          resource_version=rv, timeout_seconds=3):
        seen.append(event["type"])
        if len(seen) == 2:
            w.stop()
    assert seen == ["ADDED", "DELETED"]


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    """A server without controllers or scheduler, for tests that write the fields those
    own (a Deployment's status) and would otherwise race them, as on a real cluster."""
    data = tmp_path_factory.mktemp("quiet") / "data"
    with running_server(data, extra_args=["--controllers", "", "--disable-scheduler"]) as s:
        yield s


def test_deployment_via_apps_api(quiet: KublingServer) -> None:
    namespace = "default"
    apps = client.AppsV1Api(quiet.api_client())
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="d"),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels={"app": "d"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "d"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c",
                                                                     image="busybox")]))))
    created = apps.create_namespaced_deployment(namespace, dep)
    assert created.spec.replicas == 1
    assert created.spec.template.spec.containers[0].image_pull_policy == "Always"
    scale = apps.read_namespaced_deployment_scale("d", namespace)
    assert scale.spec.replicas == 1 and scale.status.selector == "app=d"
    apps.patch_namespaced_deployment_scale("d", namespace, {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("d", namespace).spec.replicas == 4
    status = apps.read_namespaced_deployment_status("d", namespace)
    status.status = client.V1DeploymentStatus(replicas=4, observed_generation=2)
    apps.replace_namespaced_deployment_status("d", namespace, status)
    got = apps.read_namespaced_deployment("d", namespace)
    assert got.status.replicas == 4 and got.spec.replicas == 4
    # the main endpoint ignores status
    got.status.replicas = 99
    apps.replace_namespaced_deployment("d", namespace, got)
    assert apps.read_namespaced_deployment("d", namespace).status.replicas == 4
    apps.delete_namespaced_deployment("d", namespace)


def test_finalizers_hold_deletion_until_removed(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="f", finalizers=["example.com/hold"])))
    core.delete_namespaced_config_map("f", namespace)
    held = core.read_namespaced_config_map("f", namespace)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("f", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("f", namespace)
    assert err.value.status == 404


def test_generate_name_and_dry_run(core: client.CoreV1Api, namespace: str) -> None:
    made = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(generate_name="gen-")))
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == 9
    dry = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="dry")), dry_run="All")
    assert dry.metadata.name == "dry"
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("dry", namespace)


def test_immutable_configmap(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="frozen"), data={"a": "1"}, immutable=True))
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("frozen", namespace, {"data": {"a": "2"}})
    assert err.value.status == 422
    assert "field is immutable when `immutable` is set" in err.value.body


def test_delete_preconditions(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="pre")))
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_config_map("pre", namespace, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid="not-the-uid")))
    assert err.value.status == 409
    assert "Precondition failed: UID in precondition: not-the-uid" in err.value.body
