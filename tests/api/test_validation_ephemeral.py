"""Ephemeral containers' validation: what a debugging container may carry, where the list
may appear at all, and that existing entries never change."""

from __future__ import annotations

import copy
from typing import Any

from kubling.api.defaults import apply_defaults
from kubling.api.validation import pods, validate, validate_update

Obj = dict[str, Any]


def _pod(*ephemeral: Obj) -> Obj:
    pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "volumes": [{"name": "data", "emptyDir": {}}],
        "initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [{"name": "main", "image": "busybox"}],
    }}
    if ephemeral:
        pod["spec"]["ephemeralContainers"] = list(ephemeral)
    apply_defaults("", "v1", "Pod", pod)
    return pod


def _errors(pod: Obj) -> list[str]:
    return [str(e) for e in validate("", "Pod", pod)]


def test_the_allowed_fields_pass() -> None:
    dbg = {"name": "dbg", "image": "busybox", "command": ["sh"], "args": ["-c", "true"],
           "workingDir": "/", "env": [{"name": "A", "value": "1"}], "stdin": True,
           "tty": True, "targetContainerName": "init",
           "volumeMounts": [{"name": "data", "mountPath": "/data"}],
           "securityContext": {"privileged": True}}
    assert _errors(_pod(dbg)) == []


def test_each_forbidden_field_is_named() -> None:
    dbg = {"name": "dbg", "image": "busybox", "ports": [{"containerPort": 80}],
           "resources": {"requests": {"cpu": "1"}}, "restartPolicy": "Always",
           "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
           "livenessProbe": {"exec": {"command": ["true"]}},
           "startupProbe": {"exec": {"command": ["true"]}},
           "lifecycle": {"postStart": {"exec": {"command": ["true"]}}},
           "volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "x"}]}
    msg = "Forbidden: cannot be set for an Ephemeral Container"
    path = "spec.ephemeralContainers[0]"
    assert _errors(_pod(dbg)) == [
        f"{path}.{key}: {msg}" for key in (
            "ports", "resources", "resizePolicy", "restartPolicy", "livenessProbe",
            "startupProbe", "lifecycle", "volumeMounts[0].subPath")]


def test_common_container_rules_apply() -> None:
    errs = _errors(_pod({"name": "Bad_Name", "image": " busybox",
                         "imagePullPolicy": "Sometimes",
                         "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}))
    path = "spec.ephemeralContainers[0]"
    assert f'{path}.name: Invalid value: "Bad_Name"' in errs[0]
    assert f'{path}.image: Invalid value: " busybox": must not have leading or trailing ' \
           "whitespace" in errs
    assert any(e.startswith(f'{path}.imagePullPolicy: Unsupported value: "Sometimes"')
               for e in errs)
    assert f'{path}.volumeMounts[0].name: Not found: "nope"' in errs


def test_names_are_unique_across_all_three_lists_and_targets_exist() -> None:
    errs = _errors(_pod({"name": "init", "image": "busybox"},
                        {"name": "dbg", "image": "busybox", "targetContainerName": "dbg"}))
    assert errs == ['spec.ephemeralContainers[0].name: Duplicate value: "init"',
                    'spec.ephemeralContainers[1].targetContainerName: Not found: "dbg"']


def test_only_the_subresource_adds_them() -> None:
    pod = _pod({"name": "dbg", "image": "busybox"})
    assert [str(e) for e in pods.validate_pod_create(pod)] == [
        "spec.ephemeralContainers: Forbidden: cannot be set on create"]
    assert pods.validate_pod_create(_pod()) == []
    old = _pod()
    errs = [str(e) for e in validate_update("", "Pod", pod, old)]
    assert len(errs) == 1 and errs[0].startswith(
        "spec: Forbidden: pod updates may not change fields other than")
    assert "ephemeralContainers" in errs[0]


def test_not_in_pod_templates() -> None:
    template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}],
                                      "ephemeralContainers": [{"name": "d", "image": "b"}]}}}
    apply_defaults("", "v1", "PodTemplate", template)
    assert "template.spec.ephemeralContainers: Forbidden: ephemeral containers not allowed " \
           "in pod template" in [str(e) for e in validate("", "PodTemplate", template)]


def test_existing_ones_may_be_kept_in_any_order_but_not_changed_or_removed() -> None:
    old = _pod({"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"})
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"].reverse()
    new["spec"]["ephemeralContainers"].append({"name": "c", "image": "busybox"})
    assert pods.validate_ephemeral_containers_update(new, old) == []
    changed = copy.deepcopy(old)
    changed["spec"]["ephemeralContainers"][0]["image"] = "alpine"
    del changed["spec"]["ephemeralContainers"][1]
    errs = [str(e) for e in pods.validate_ephemeral_containers_update(changed, old)]
    assert errs[0].startswith('spec.ephemeralContainers: Forbidden: existing ephemeral '
                              'containers "a" may not be changed\n')
    assert '"alpine"' in errs[0]
    assert errs[1:] == ['spec.ephemeralContainers: Forbidden: existing ephemeral containers '
                        '"b" may not be removed\n']


def test_static_pods_take_none() -> None:
    old = _pod()
    old["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": "busybox"}]
    assert [e.detail for e in pods.validate_ephemeral_containers_update(new, old)] == [
        "static pods do not support ephemeral containers"]
