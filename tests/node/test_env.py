"""Container environments as the kubelet makes them: envFrom then env, prefixes, invalid
keys skipped with upstream's event text, $(VAR) expansion order, every fieldRef path,
resourceFieldRef defaults, optional sources, and upstream's error messages."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from kubling.node import envvars
from tests.node.test_volumes import ALLOCATABLE, POD, FakeObjects

OBJECTS = FakeObjects({
    ("configmap", "cfg"): {"data": {"MODE": "prod", "1badkey": "x", "LEVEL": "debug"}},
    ("secret", "creds"): {"data": {"PASSWORD": base64.b64encode(b"s3cret").decode()}},
})
FACTS = envvars.PodFacts(pod_ips=["10.42.0.7", "fd00::7"], host_ip="192.0.2.1",
                         node_name="n1", allocatable=ALLOCATABLE)


def resolve(container: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    warnings: list[str] = []
    env = asyncio.run(envvars.resolve(POD, {"name": "main", **container}, cache=OBJECTS,
                                      facts=FACTS, warn=warnings.append))
    return env, warnings


def test_env_from_with_prefix_skips_invalid_names_with_the_upstream_event() -> None:
    env, warnings = resolve({"envFrom": [{"configMapRef": {"name": "cfg"}},
                                         {"secretRef": {"name": "creds"}, "prefix": "DB_"}]})
    assert env == {"MODE": "prod", "LEVEL": "debug", "DB_PASSWORD": "s3cret"}
    assert warnings == ["Keys [1badkey] from the EnvFrom configMap shop/cfg were skipped since "
                        "they are considered invalid environment variable names."]
    env, warnings = resolve({"envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}]})
    assert env["P_1badkey"] == "x" and not warnings


def test_env_overrides_env_from_and_expands_in_order() -> None:
    env, _ = resolve({
        "envFrom": [{"configMapRef": {"name": "cfg"}}],
        "env": [{"name": "MODE", "value": "test"},
                {"name": "URL", "value": "$(MODE)://$(HOST):$(PORT)/$$(MODE)"},
                {"name": "PORT", "value": "80"},
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                  "key": "PASSWORD"}}},
                {"name": "RAW", "valueFrom": {"configMapKeyRef": {"name": "cfg",
                                                                  "key": "LEVEL"}}}]})
    assert env["MODE"] == "test"
    assert env["URL"] == "test://$(HOST):$(PORT)/$(MODE)"  # PORT comes later: not expanded
    assert env["SECRET"] == "s3cret" and env["RAW"] == "debug"
    assert list(env)[:3] == ["MODE", "LEVEL", "URL"]


@pytest.mark.parametrize(("path", "expected"), [
    ("metadata.name", "web"), ("metadata.namespace", "shop"), ("metadata.uid", "u-1"),
    ("metadata.labels['app']", "web"), ("metadata.annotations['note']", 'say "hi"\n'),
    ("spec.nodeName", "n1"), ("spec.serviceAccountName", "builder"),
    ("status.hostIP", "192.0.2.1"), ("status.hostIPs", "192.0.2.1"),
    ("status.podIP", "10.42.0.7"), ("status.podIPs", "10.42.0.7,fd00::7"),
])
def test_every_field_ref(path: str, expected: str) -> None:
    env, _ = resolve({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]})
    assert env["V"] == expected


def test_resource_field_ref_defaults_to_this_container_and_node_allocatable() -> None:
    env, _ = resolve({"env": [
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
        {"name": "SIDE_CPU", "valueFrom": {"resourceFieldRef": {
            "containerName": "side", "resource": "limits.cpu", "divisor": "1m"}}}]})
    assert env == {"MEM": "64", "SIDE_CPU": "2000"}


def test_optional_sources_and_keys_leave_the_variable_out() -> None:
    env, _ = resolve({
        "envFrom": [{"configMapRef": {"name": "absent", "optional": True}}],
        "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {
                    "name": "absent", "key": "k", "optional": True}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {
                    "name": "creds", "key": "nope", "optional": True}}}]})
    assert env == {}


@pytest.mark.parametrize(("container", "message"), [
    ({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "k"}}}]},
     'configmap "x" not found'),
    ({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "y"}}}]},
     "couldn't find key y in ConfigMap shop/cfg"),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "x", "key": "k"}}}]},
     'secret "x" not found'),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "y"}}}]},
     "couldn't find key y in Secret shop/creds"),
    ({"envFrom": [{"secretRef": {"name": "gone"}}]}, 'secret "gone" not found'),
])
def test_missing_sources_are_create_container_config_errors(container: dict[str, Any],
                                                             message: str) -> None:
    with pytest.raises(envvars.EnvError) as err:
        resolve(container)
    assert str(err.value) == message


def test_expand_rules() -> None:
    values = {"A": "1", "B.c": "2"}
    assert envvars.expand("$(A)-$(B.c)-$(C)-$$(A)-$$-$(", values) == "1-2-$(C)-$(A)-$-$("
