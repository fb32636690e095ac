"""Server-side apply and managedFields, checked against upstream's observable behaviour.

Expected ``fieldsV1`` values are what ``kubectl get -o json --show-managed-fields`` prints
against a real kube-apiserver for the same writes.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

import pytest

from kubling.api import fieldmanager as fm
from kubling.api.fieldmanager import ConflictError, FieldManagerError, FieldSet

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T11:00:00Z"
T2 = "2024-05-01T12:00:00Z"
T3 = "2024-05-01T13:00:00Z"

STATUS = fm.paths("status")


def deployment_as_created() -> dict[str, Any]:
    """``kubectl create deployment nginx --image=nginx`` after the server's defaulting."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "nginx",
            "namespace": "default",
            "labels": {"app": "nginx"},
            "uid": "0d5c1a6e-0000-4000-8000-000000000001",
            "resourceVersion": "100",
            "generation": 1,
            "creationTimestamp": T0,
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx",
                            "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                            "imagePullPolicy": "Always",
                        }
                    ],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "securityContext": {},
                    "schedulerName": "default-scheduler",
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {},
    }


KUBECTL_CREATE_DEPLOYMENT_FIELDS = {
    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
    "f:spec": {
        "f:progressDeadlineSeconds": {},
        "f:replicas": {},
        "f:revisionHistoryLimit": {},
        "f:selector": {},
        "f:strategy": {
            "f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}},
            "f:type": {},
        },
        "f:template": {
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:containers": {
                    'k:{"name":"nginx"}': {
                        ".": {},
                        "f:image": {},
                        "f:imagePullPolicy": {},
                        "f:name": {},
                        "f:resources": {},
                        "f:terminationMessagePath": {},
                        "f:terminationMessagePolicy": {},
                    }
                },
                "f:dnsPolicy": {},
                "f:restartPolicy": {},
                "f:schedulerName": {},
                "f:securityContext": {},
                "f:terminationGracePeriodSeconds": {},
            },
        },
    },
}


def deployment_config(**spec: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx", "labels": {"app": "nginx"}},
        "spec": {
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
            },
        },
    }
    config["spec"].update(spec)
    return config


def configmap(data: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "default", **meta},
        "data": data,
    }


def stored(obj: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    """What the server persists after a create: identity fields filled in."""
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("uid", uid)
    out["metadata"].setdefault("creationTimestamp", T0)
    out["metadata"].setdefault("namespace", "default")
    return out


def entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["metadata"].get("managedFields", [])
    return result


def entry(obj: dict[str, Any], manager: str, operation: str | None = None) -> dict[str, Any]:
    found = [
        e
        for e in entries(obj)
        if e["manager"] == manager and (operation is None or e["operation"] == operation)
    ]
    assert len(found) == 1, entries(obj)
    return found[0]


def owned(obj: dict[str, Any], manager: str) -> list[str]:
    return fm.managed_field_sets(obj)[manager].strings()


def created(obj: dict[str, Any], manager: str, now: str = T0, **kw: Any) -> dict[str, Any]:
    new = stored(obj)
    fm.update_managed_fields(None, new, manager=manager, now=now, **kw)
    return new


# --------------------------------------------------------------------------- FieldsV1


def test_fieldsv1_of_kubectl_create_deployment() -> None:
    new = deployment_as_created()
    fm.update_managed_fields(None, new, manager="kubectl-create", now=T0, ignored=STATUS)
    assert entries(new) == [
        {
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": KUBECTL_CREATE_DEPLOYMENT_FIELDS,
        }
    ]
    # key order of the serialized JSON is upstream's too: "." first, then sorted elements
    text = json.dumps(entries(new)[0]["fieldsV1"], separators=(",", ":"))
    assert text.startswith('{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":')
    assert '"f:strategy":{"f:rollingUpdate":{".":{},"f:maxSurge":{}' in text


def test_fieldsv1_of_server_side_applied_deployment() -> None:
    config = deployment_config()
    result = fm.apply(None, config, manager="kubectl", now=T0)
    assert entries(result) == [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"nginx"}': {".": {}, "f:image": {}, "f:name": {}}
                            }
                        },
                    },
                },
            },
        }
    ]
    assert json.dumps(entries(result)[0]["fieldsV1"], separators=(",", ":")) == (
        '{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:selector":{},"f:template":'
        '{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":'
        '{"k:{\\"name\\":\\"nginx\\"}":{".":{},"f:image":{},"f:name":{}}}}}}}'
    )


def test_fieldsv1_of_configmaps() -> None:
    created_cm = created(configmap({"key": "value"}), "kubectl-create")
    assert entry(created_cm, "kubectl-create")["fieldsV1"] == {"f:data": {".": {}, "f:key": {}}}

    # client-side apply: create with the last-applied annotation
    last = '{"apiVersion":"v1","data":{"key":"value"},"kind":"ConfigMap","metadata":{"annotations":{},"name":"cm","namespace":"default"}}\n'
    csa = created(
        configmap({"key": "value"}, annotations={fm.LAST_APPLIED_ANNOTATION: last}),
        "kubectl-client-side-apply",
    )
    assert entry(csa, "kubectl-client-side-apply")["fieldsV1"] == {
        "f:data": {".": {}, "f:key": {}},
        "f:metadata": {
            "f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}
        },
    }

    applied = fm.apply(None, configmap({"key": "value"}), manager="kubectl", now=T0)
    assert entry(applied, "kubectl")["fieldsV1"] == {"f:data": {"f:key": {}}}


def test_field_set_codec_and_algebra() -> None:
    fields = {
        "f:metadata": {"f:finalizers": {".": {}, 'v:"b"': {}, 'v:"a"': {}}},
        "f:spec": {
            "f:ports": {
                'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:port": {}},
                'k:{"port":9,"protocol":"TCP"}': {".": {}, "f:port": {}},
            },
            "f:replicas": {},
        },
    }
    s = FieldSet.from_fieldsv1(fields)
    encoded = s.to_fieldsv1()
    # values and keys are ordered by value (9 < 80 numerically), not by their JSON text
    assert list(encoded["f:metadata"]["f:finalizers"]) == [".", 'v:"a"', 'v:"b"']
    assert list(encoded["f:spec"]["f:ports"]) == [
        'k:{"port":9,"protocol":"TCP"}',
        'k:{"port":80,"protocol":"TCP"}',
    ]
    assert s.strings() == [
        ".metadata.finalizers",
        '.metadata.finalizers[="a"]',
        '.metadata.finalizers[="b"]',
        ".spec.replicas",
        '.spec.ports[port=9,protocol="TCP"]',
        '.spec.ports[port=80,protocol="TCP"]',
        '.spec.ports[port=9,protocol="TCP"].port',
        '.spec.ports[port=80,protocol="TCP"].port',
    ]  # upstream Set.Iterate: a level's members, then each child's subtree
    other = FieldSet.from_paths([("f:spec", "f:replicas"), ("f:spec", "f:paused")])
    assert s.intersection(other).strings() == [".spec.replicas"]
    assert ".spec.replicas" not in s.difference(other).strings()
    assert s.union(other).strings().count(".spec.paused") == 1
    assert len(s.union(other)) == len(s) + 1
    assert s.recursive_difference(fm.paths("spec")).strings() == [
        ".metadata.finalizers",
        '.metadata.finalizers[="a"]',
        '.metadata.finalizers[="b"]',
    ]
    leaves = s.leaves().strings()
    assert ".metadata.finalizers" not in leaves and '.metadata.finalizers[="a"]' in leaves
    assert ("f:spec", "f:replicas") in s and ("f:spec",) not in s
    assert FieldSet.from_fieldsv1(encoded) == s
    with pytest.raises(fm.FieldsV1Error):
        FieldSet.from_fieldsv1({"x:foo": {}})


def test_field_set_of_an_object() -> None:
    s = fm.field_set(deployment_config(replicas=2))
    assert '.spec.template.spec.containers[name="nginx"].image' in s.strings()
    assert ".spec.replicas" in s.strings()
    assert ".spec" not in s.strings()  # struct fields with children are not members


# --------------------------------------------------------------------------- apply basics


def test_apply_creates_and_reapply_is_a_noop() -> None:
    config = deployment_config(replicas=2)
    first = fm.apply(None, config, manager="kubectl", now=T0)
    assert first["spec"]["replicas"] == 2
    assert first["spec"]["template"]["spec"]["containers"] == [{"name": "nginx", "image": "nginx"}]
    live = stored(first)
    again = fm.apply(live, config, manager="kubectl", now=T1)
    assert again == live  # same object, same managed fields, time unchanged
    assert entry(again, "kubectl")["time"] == T0
    assert again is not live
    again["spec"]["replicas"] = 7
    assert live["spec"]["replicas"] == 2  # the result shares nothing with the input


def test_apply_does_not_mutate_inputs() -> None:
    live = stored(fm.apply(None, deployment_config(), manager="a", now=T0))
    config = deployment_config(replicas=4)
    snapshot = (copy.deepcopy(live), copy.deepcopy(config))
    fm.apply(live, config, manager="b", now=T1)
    assert (live, config) == snapshot


def test_apply_removing_fields_removes_them() -> None:
    config = deployment_config(replicas=2, paused=False)
    config["metadata"]["labels"]["tier"] = "web"
    config["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    live = stored(fm.apply(None, config, manager="kubectl", now=T0))
    live["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] = "Always"  # defaulted

    result = fm.apply(live, deployment_config(), manager="kubectl", now=T1)
    assert "replicas" not in result["spec"] and "paused" not in result["spec"]
    assert result["metadata"]["labels"] == {"app": "nginx"}
    assert [c["name"] for c in result["spec"]["template"]["spec"]["containers"]] == ["nginx"]
    assert entry(result, "kubectl")["time"] == T1
    assert ".spec.replicas" not in owned(result, "kubectl")


def test_apply_keeps_dropped_fields_owned_by_others() -> None:
    live = stored(fm.apply(None, deployment_config(replicas=2), manager="a", now=T0))
    live = fm.apply(live, deployment_config(replicas=2), manager="b", now=T1)
    assert ".spec.replicas" in owned(live, "a") and ".spec.replicas" in owned(live, "b")

    # a stops setting replicas: b still owns it, so the value stays
    live = fm.apply(live, deployment_config(), manager="a", now=T2)
    assert live["spec"]["replicas"] == 2
    assert ".spec.replicas" not in owned(live, "a")
    assert ".spec.replicas" in owned(live, "b")

    # b drops it too: nobody owns it any more, so it goes
    live = fm.apply(live, deployment_config(), manager="b", now=T3)
    assert "replicas" not in live["spec"]


def test_apply_does_not_remove_fields_of_updaters() -> None:
    live = stored(fm.apply(None, configmap({"a": "1", "b": "2"}), manager="applier", now=T0))
    new = copy.deepcopy(live)
    new["data"]["b"] = "changed"
    fm.update_managed_fields(live, new, manager="editor", now=T1)
    assert owned(new, "editor") == [".data.b"]
    result = fm.apply(new, configmap({"a": "1"}), manager="applier", now=T2)
    assert result["data"] == {"a": "1", "b": "changed"}


def test_two_appliers_share_a_field_with_the_same_value() -> None:
    live = stored(fm.apply(None, configmap({"key": "v"}), manager="one", now=T0))
    result = fm.apply(live, configmap({"key": "v"}), manager="two", now=T1)
    assert owned(result, "one") == [".data.key"]
    assert owned(result, "two") == [".data.key"]
    # the object did not change: the new applier's entry gets no timestamp, like upstream
    assert "time" not in entry(result, "two")
    assert fm.strip_for_compare(result) == fm.strip_for_compare(live)


# --------------------------------------------------------------------------- conflicts


def test_conflict_with_an_updater_wording() -> None:
    live = created(configmap({"key": "value"}), "kubectl-client-side-apply")
    with pytest.raises(ConflictError) as info:
        fm.apply(live, configmap({"key": "other"}), manager="mgr", now=T1)
    error = info.value
    assert error.code == 409
    assert str(error) == (
        'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: '
        ".data.key"
    )
    assert error.causes == [
        {
            "type": "FieldManagerConflict",
            "message": 'conflict with "kubectl-client-side-apply" using v1',
            "field": ".data.key",
        }
    ]


def test_several_conflicts_wording_groups_by_manager() -> None:
    live = stored(fm.apply(None, deployment_config(replicas=1), manager="alpha", now=T0))
    changed = deployment_config(replicas=1)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    live = fm.apply(live, changed, manager="alpha", now=T1)
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 3
    fm.update_managed_fields(live, new, manager="mgr", now=T2)

    config = deployment_config(replicas=5)
    config["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:3"
    with pytest.raises(ConflictError) as info:
        fm.apply(new, config, manager="beta", now=T3)
    assert str(info.value) == (
        "Apply failed with 2 conflicts: "
        'conflicts with "alpha":\n'
        '- .spec.template.spec.containers[name="nginx"].image\n'
        'conflicts with "mgr" using apps/v1:\n'
        "- .spec.replicas"
    )


def test_several_conflicts_with_one_manager() -> None:
    new = deployment_as_created()
    fm.update_managed_fields(None, new, manager="mgr", now=T0, ignored=STATUS)
    config = deployment_config(replicas=3)
    config["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.27"
    with pytest.raises(ConflictError) as info:
        fm.apply(new, config, manager="ci", now=T1)
    assert str(info.value) == (
        'Apply failed with 2 conflicts: conflicts with "mgr" using apps/v1:\n'
        "- .spec.replicas\n"
        '- .spec.template.spec.containers[name="nginx"].image'
    )


def test_force_transfers_ownership() -> None:
    live = stored(fm.apply(None, configmap({"key": "v", "other": "x"}), manager="a", now=T0))
    with pytest.raises(ConflictError):
        fm.apply(live, configmap({"key": "w"}), manager="b", now=T1)
    result = fm.apply(live, configmap({"key": "w"}), manager="b", force=True, now=T1)
    assert result["data"] == {"key": "w", "other": "x"}
    assert owned(result, "a") == [".data.other"]
    assert owned(result, "b") == [".data.key"]
    # "a" applying its old config now conflicts with "b"
    with pytest.raises(ConflictError, match=re.escape('conflict with "b": .data.key')):
        fm.apply(result, configmap({"key": "v", "other": "x"}), manager="a", now=T2)


def test_subresource_appears_in_entries_and_conflicts() -> None:
    live = stored(fm.apply(None, configmap({"key": "v"}), manager="a", now=T0))
    new = copy.deepcopy(live)
    new["data"]["key"] = "s"
    fm.update_managed_fields(live, new, manager="ctl", now=T1, subresource="status")
    assert entry(new, "ctl")["subresource"] == "status"
    with pytest.raises(ConflictError) as info:
        fm.apply(new, configmap({"key": "t"}), manager="a", now=T2)
    assert 'conflict with "ctl" with subresource "status" using v1: .data.key' in str(info.value)


# --------------------------------------------------------------------------- updates


def test_update_after_apply_moves_changed_fields() -> None:
    live = stored(fm.apply(None, deployment_config(replicas=2), manager="kubectl", now=T0))
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 5
    fm.update_managed_fields(live, new, manager="kubectl-scale", now=T1)
    assert owned(new, "kubectl-scale") == [".spec.replicas"]
    assert ".spec.replicas" not in owned(new, "kubectl")
    assert ".spec.selector" in owned(new, "kubectl")
    assert entry(new, "kubectl")["time"] == T0
    assert entry(new, "kubectl-scale") == {
        "manager": "kubectl-scale",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": T1,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }
    # Apply entries sort before Update entries
    assert [e["operation"] for e in entries(new)] == ["Apply", "Update"]

    # an unchanged write takes nothing and touches no timestamp
    newer = copy.deepcopy(new)
    fm.update_managed_fields(new, newer, manager="kubectl-scale", now=T2)
    assert entries(newer) == entries(new)

    # removing a field takes it away from its owner
    newest = copy.deepcopy(new)
    del newest["spec"]["replicas"]
    fm.update_managed_fields(new, newest, manager="editor", now=T2)
    assert "kubectl-scale" not in fm.managed_field_sets(newest)
    assert "editor" not in fm.managed_field_sets(newest)


def test_updates_by_the_same_manager_accumulate() -> None:
    live = created(configmap({"a": "1"}), "m")
    new = copy.deepcopy(live)
    new["data"]["b"] = "2"
    fm.update_managed_fields(live, new, manager="m", now=T1)
    assert owned(new, "m") == [".data", ".data.a", ".data.b"]
    assert entry(new, "m")["time"] == T1


def test_client_managed_fields_replace_or_clear() -> None:
    live = stored(fm.apply(None, configmap({"a": "1"}), manager="a", now=T0))
    # a client echoing managedFields back (kubectl edit/replace) keeps them
    echo = copy.deepcopy(live)
    fm.update_managed_fields(live, echo, manager="kubectl-edit", now=T1)
    assert entries(echo) == entries(live)

    # sending valid, different managedFields replaces them
    replaced = copy.deepcopy(live)
    replaced["metadata"]["managedFields"] = [
        {
            "manager": "someone",
            "operation": "Update",
            "apiVersion": "v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}},
        }
    ]
    fm.update_managed_fields(live, replaced, manager="kubectl-patch", now=T1)
    assert list(fm.managed_field_sets(replaced)) == ["someone"]

    # invalid ones are ignored: the stored ones stay
    invalid = copy.deepcopy(live)
    invalid["metadata"]["managedFields"] = [{"manager": "x", "operation": "Bogus"}]
    fm.update_managed_fields(live, invalid, manager="p", now=T1)
    assert entries(invalid) == entries(live)

    # [] clears them, and later updates are not tracked ...
    cleared = copy.deepcopy(live)
    cleared["metadata"]["managedFields"] = []
    fm.update_managed_fields(live, cleared, manager="p", now=T1)
    assert "managedFields" not in cleared["metadata"]
    later = copy.deepcopy(cleared)
    later["data"]["a"] = "2"
    fm.update_managed_fields(cleared, later, manager="p", now=T2)
    assert "managedFields" not in later["metadata"]

    # ... until the next apply, which gives existing fields to "before-first-apply"
    applied = fm.apply(later, configmap({"b": "3"}), manager="ssa", now=T3)
    assert owned(applied, "before-first-apply") == [".data", ".data.a"]
    assert owned(applied, "ssa") == [".data.b"]
    assert applied["data"] == {"a": "2", "b": "3"}


def test_update_managers_are_capped() -> None:
    obj = created(configmap({"k0": "v"}), "m0", now="2024-05-01T00:00:00Z")
    for i in range(1, 13):
        new = copy.deepcopy(obj)
        new["data"][f"k{i}"] = "v"
        fm.update_managed_fields(obj, new, manager=f"m{i}", now=f"2024-05-01T{i:02d}:00:00Z")
        obj = new
    managers = [e["manager"] for e in entries(obj)]
    assert len(managers) == 10
    assert managers[0] == "ancient-changes"
    # the cap runs after every write: the bucket absorbed m1, then m2, then m3
    assert owned(obj, "ancient-changes") == [
        ".data",
        ".data.k0",
        ".data.k1",
        ".data.k2",
        ".data.k3",
    ]
    assert entry(obj, "ancient-changes")["time"] == "2024-05-01T03:00:00Z"


def test_default_manager_and_validation() -> None:
    assert fm.default_manager("kubectl/v1.32.0 (linux/amd64) kubernetes/70d3cc9") == "kubectl"
    assert fm.default_manager("kube-controller-manager/v1.32.0 (linux/amd64)") == (
        "kube-controller-manager"
    )
    assert fm.default_manager("") == "unknown"
    assert fm.default_manager("a\x00b/1") == "ab"
    assert fm.default_manager("x" * 300) == "x" * 128
    assert fm.validate_field_manager("kubectl") is None
    assert fm.validate_field_manager("", apply=True) == (
        "fieldManager: Required value: is required for apply patch"
    )
    assert fm.validate_field_manager("x" * 129) == (
        "fieldManager: Too long: may not be more than 128 bytes"
    )


# --------------------------------------------------------------------------- lists and maps


def pod_config(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": containers, **spec},
    }


def test_containers_env_and_ports_merge_by_key() -> None:
    web = {
        "name": "web",
        "image": "nginx",
        "env": [{"name": "A", "value": "1"}],
        "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
    }
    live = stored(fm.apply(None, pod_config([web]), manager="one", now=T0))
    extra = {
        "name": "web",
        "env": [{"name": "B", "value": "2"}],
        "ports": [{"containerPort": 53, "protocol": "TCP"}],
    }
    sidecar = {"name": "log", "image": "busybox"}
    result = fm.apply(live, pod_config([extra, sidecar]), manager="two", now=T1)
    containers = result["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "log"]
    assert containers[0]["image"] == "nginx"
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert containers[0]["ports"] == [
        {"containerPort": 80},
        {"containerPort": 53, "protocol": "UDP"},
        {"containerPort": 53, "protocol": "TCP"},
    ]
    assert owned(result, "two") == [
        '.spec.containers[name="log"]',
        '.spec.containers[name="web"]',
        '.spec.containers[name="log"].image',
        '.spec.containers[name="log"].name',
        '.spec.containers[name="web"].name',
        '.spec.containers[name="web"].env[name="B"]',
        '.spec.containers[name="web"].env[name="B"].name',
        '.spec.containers[name="web"].env[name="B"].value',
        '.spec.containers[name="web"].ports[containerPort=53,protocol="TCP"]',
        '.spec.containers[name="web"].ports[containerPort=53,protocol="TCP"].containerPort',
        '.spec.containers[name="web"].ports[containerPort=53,protocol="TCP"].protocol',
    ]
    fields = entry(result, "one")["fieldsV1"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert list(fields["f:ports"]) == [
        'k:{"containerPort":53,"protocol":"UDP"}',
        'k:{"containerPort":80,"protocol":"TCP"}',
    ]


def test_list_order_follows_the_configuration_for_shared_items() -> None:
    items = [{"name": n, "image": "i"} for n in ("a", "b", "c")]
    live = stored(fm.apply(None, pod_config(items), manager="m", now=T0))
    config = pod_config([{"name": "d", "image": "i"}, {"name": "a", "image": "i"}])
    result = fm.apply(live, config, manager="other", now=T1)
    assert [c["name"] for c in result["spec"]["containers"]] == ["d", "a", "b", "c"]


def test_atomic_lists_and_maps_are_replaced() -> None:
    first = pod_config(
        [{"name": "c", "image": "i", "args": ["a", "b"]}],
        nodeSelector={"disk": "ssd", "zone": "a"},
        tolerations=[{"key": "k", "operator": "Exists"}],
    )
    live = stored(fm.apply(None, first, manager="m", now=T0))
    fs = entry(live, "m")["fieldsV1"]["f:spec"]
    assert fs["f:nodeSelector"] == {} and fs["f:tolerations"] == {}
    assert fs["f:containers"]['k:{"name":"c"}']["f:args"] == {}
    second = pod_config(
        [{"name": "c", "image": "i", "args": ["z"]}],
        nodeSelector={"zone": "b"},
        tolerations=[{"key": "other", "operator": "Exists"}],
    )
    result = fm.apply(live, second, manager="m", now=T1)
    assert result["spec"]["containers"][0]["args"] == ["z"]
    assert result["spec"]["nodeSelector"] == {"zone": "b"}
    assert result["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]
    # the selector of a Deployment is an atomic struct
    assert (
        entry(fm.apply(None, deployment_config(), manager="k", now=T0), "k")["fieldsV1"]["f:spec"][
            "f:selector"
        ]
        == {}
    )


def test_finalizers_are_a_set() -> None:
    cm = configmap({"a": "1"}, finalizers=["example.com/one"])
    live = stored(fm.apply(None, cm, manager="one", now=T0))
    assert entry(live, "one")["fieldsV1"]["f:metadata"] == {
        "f:finalizers": {'v:"example.com/one"': {}}
    }
    two = configmap({}, finalizers=["example.com/two"])
    del two["data"]
    result = fm.apply(live, two, manager="two", now=T1)
    assert result["metadata"]["finalizers"] == ["example.com/one", "example.com/two"]
    # dropping its finalizer removes only that one
    three = configmap({})
    del three["data"]
    after = fm.apply(result, three, manager="two", now=T2)
    assert after["metadata"]["finalizers"] == ["example.com/one"]
    assert "two" not in fm.managed_field_sets(after)


def test_owner_references_are_keyed_by_uid_and_atomic() -> None:
    ref = {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u-1"}
    cm = configmap({}, ownerReferences=[ref])
    got = entry(fm.apply(None, cm, manager="m", now=T0), "m")["fieldsV1"]
    assert got["f:metadata"] == {"f:ownerReferences": {'k:{"uid":"u-1"}': {}}}


# --------------------------------------------------------------------------- typed errors


def test_missing_and_duplicate_keys_are_rejected() -> None:
    with pytest.raises(FieldManagerError) as info:
        fm.apply(None, pod_config([{"image": "i"}]), manager="m", now=T0)
    assert info.value.code == 500
    assert str(info.value) == (
        "failed to create typed patch object (/v1, Kind=Pod): .spec.containers: element 0: "
        'associative list with keys has an element that omits key field "name" '
        "(and doesn't have default value)"
    )
    with pytest.raises(FieldManagerError, match=r'duplicate entries for key \[name="a"\]'):
        fm.apply(None, pod_config([{"name": "a"}, {"name": "a"}]), manager="m", now=T0)
    with pytest.raises(FieldManagerError, match=r"\.spec\.bogus: field not declared in schema"):
        fm.apply(None, pod_config([], bogus=1), manager="m", now=T0)
    bad = configmap({"a": "1"})
    bad["metadata"]["managedFields"] = []
    with pytest.raises(
        FieldManagerError, match=re.escape("metadata.managedFields must be nil")
    ) as info2:
        fm.apply(None, bad, manager="m", now=T0)
    assert info2.value.code == 400


# --------------------------------------------------------------------------- custom resources


def widget(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}},
        "spec": spec,
    }


def test_custom_resource_without_schema_is_deduced() -> None:
    result = fm.apply(
        None, widget({"size": 1, "tags": ["x"], "nested": {"k": "v"}}), manager="m", now=T0
    )
    assert entry(result, "m")["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:a": {}}},
        "f:spec": {".": {}, "f:nested": {".": {}, "f:k": {}}, "f:size": {}, "f:tags": {}},
    }
    live = stored(result)
    with pytest.raises(ConflictError, match=re.escape('conflict with "m": .spec.tags')):
        fm.apply(live, widget({"tags": ["y"], "nested": {"j": "w"}}), manager="n", now=T1)
    merged = fm.apply(
        live, widget({"tags": ["y"], "nested": {"j": "w"}}), manager="n", force=True, now=T1
    )
    assert merged["spec"] == {"size": 1, "tags": ["y"], "nested": {"k": "v", "j": "w"}}


def test_custom_resource_with_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "size": {"type": "integer"},
                    "items": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["id"],
                        "items": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "v": {"type": "integer"}},
                        },
                    },
                    "tags": {
                        "type": "array",
                        "x-kubernetes-list-type": "set",
                        "items": {"type": "string"},
                    },
                },
            }
        },
    }
    compiled = fm.custom_schema(schema)
    config = widget({"size": 1, "items": [{"id": "a", "v": 1}], "tags": ["x"]})
    result = fm.apply(None, config, manager="m", definition=compiled, now=T0)
    assert entry(result, "m")["fieldsV1"]["f:spec"] == {
        "f:items": {'k:{"id":"a"}': {".": {}, "f:id": {}, "f:v": {}}},
        "f:size": {},
        "f:tags": {'v:"x"': {}},
    }
    live = stored(result)
    more = widget({"items": [{"id": "b", "v": 2}], "tags": ["y"]})
    merged = fm.apply(live, more, manager="n", definition=schema, now=T1)
    assert merged["spec"]["items"] == [{"id": "a", "v": 1}, {"id": "b", "v": 2}]
    assert merged["spec"]["tags"] == ["x", "y"]


# --------------------------------------------------------------------------- CSA → SSA


def test_client_side_apply_upgrade_to_server_side() -> None:
    last = json.dumps(configmap({"key": "value"}), separators=(",", ":"), sort_keys=True) + "\n"
    live = created(
        configmap({"key": "value"}, annotations={fm.LAST_APPLIED_ANNOTATION: last}),
        "kubectl-client-side-apply",
    )
    config = configmap({"key": "new"}, annotations={fm.LAST_APPLIED_ANNOTATION: "ignored"})
    del config["metadata"]["annotations"]
    # kubectl's manager may take over what the annotation still describes truthfully
    result = fm.apply(live, config, manager="kubectl", now=T1)
    assert result["data"] == {"key": "new"}
    assert owned(result, "kubectl") == [".data.key"]
    # ... and keeps the annotation in step with what it applied (Go JSON + newline)
    annotation = result["metadata"]["annotations"][fm.LAST_APPLIED_ANNOTATION]
    assert annotation == (
        '{"apiVersion":"v1","data":{"key":"new"},"kind":"ConfigMap",'
        '"metadata":{"name":"cm","namespace":"default"}}\n'
    )
    # other managers get the ordinary conflict
    with pytest.raises(ConflictError):
        fm.apply(live, config, manager="ci", now=T1)

    # a value changed since the last client-side apply is a real conflict
    drifted = copy.deepcopy(live)
    drifted["data"]["key"] = "edited"
    fm.update_managed_fields(live, drifted, manager="kubectl-edit", now=T1)
    stolen = copy.deepcopy(drifted)
    stolen["metadata"]["managedFields"] = [
        {**e, "manager": "kubectl-client-side-apply"}
        for e in drifted["metadata"]["managedFields"]
        if e["manager"] == "kubectl-edit"
    ] + [e for e in drifted["metadata"]["managedFields"] if e["manager"] != "kubectl-edit"]
    with pytest.raises(ConflictError, match="kubectl-client-side-apply"):
        fm.apply(stolen, config, manager="kubectl", now=T2)


# --------------------------------------------------------------------------- performance


def test_deployment_apply_is_fast() -> None:
    live = deployment_as_created()
    fm.update_managed_fields(None, live, manager="kubectl-create", now=T0, ignored=STATUS)
    config = deployment_config(replicas=3)
    config["spec"]["template"]["spec"]["containers"][0].update(
        image="nginx:1.27",
        env=[{"name": f"E{i}", "value": str(i)} for i in range(5)],
        ports=[{"containerPort": 80}, {"containerPort": 443}],
    )
    applied = fm.apply(live, config, manager="kubectl", force=True, now=T1)
    for _ in range(200):  # warm-up
        fm.apply(live, config, manager="kubectl", force=True, now=T1)
        fm.apply(applied, config, manager="kubectl", now=T2)
    rounds = 500
    start = time.perf_counter()
    for _ in range(rounds):
        fm.apply(live, config, manager="kubectl", force=True, now=T1)
    forced = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for _ in range(rounds):
        fm.apply(applied, config, manager="kubectl", now=T2)
    reapply = (time.perf_counter() - start) / rounds
    print(
        f"deployment apply: {forced * 1e3:.3f} ms (force, takeover), {reapply * 1e3:.3f} ms (re-apply)"
    )
    assert forced < 0.002 and reapply < 0.002


def test_null_in_configuration_owns_and_unsets() -> None:
    live = stored(fm.apply(None, deployment_config(replicas=2), manager="a", now=T0))
    config = deployment_config(replicas=None)
    result = fm.apply(live, config, manager="a", now=T1)
    assert "replicas" not in result["spec"]
    assert ".spec.replicas" in owned(result, "a")


def test_kubectl_csa_upgrade_patch_replaces_managed_fields() -> None:
    """kubectl >= 1.26 follows ``apply --server-side`` with a JSON patch that rewrites
    ``/metadata/managedFields``, folding ``kubectl-client-side-apply`` into ``kubectl``; the
    server only has to honour valid managed fields sent by the client."""
    live = created(configmap({"a": "1", "b": "2"}), "kubectl-client-side-apply")
    live = fm.apply(live, configmap({"a": "1"}), manager="kubectl", now=T1)
    union = FieldSet()
    for fields in fm.managed_field_sets(live).values():
        union = union.union(fields)
    patched = copy.deepcopy(live)
    patched["metadata"]["managedFields"] = [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": union.to_fieldsv1(),
        }
    ]
    fm.update_managed_fields(live, patched, manager="kubectl", now=T2)
    assert list(fm.managed_field_sets(patched)) == ["kubectl"]
    # the next server-side apply now prunes what the client-side apply had set
    result = fm.apply(patched, configmap({"a": "1"}), manager="kubectl", now=T3)
    assert result["data"] == {"a": "1"}
