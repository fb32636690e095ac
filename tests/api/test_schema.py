"""The structural (decoder-faithful) schema check and the schema accessors."""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import pytest

from kubling.api import schema
from kubling.api.schema import SchemaError


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "annotations": {"note": "x"},
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {".": {}}}}
            ],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.25",
                            "args": ["--port", "80"],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [
                                {"name": "A", "value": "1"},
                                {
                                    "name": "B",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": 1, "memory": 2.5e8},
                            },
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
    }


def check_deployment(obj: Any) -> list[SchemaError]:
    return schema.check(obj, "apps", "v1", "Deployment")


def only_error(obj: Any) -> SchemaError:
    errors = check_deployment(obj)
    assert len(errors) == 1, errors
    return errors[0]


# --------------------------------------------------------------------------- lookups


def test_definition_for() -> None:
    assert schema.definition_for("apps", "v1", "Deployment") == "io.k8s.api.apps.v1.Deployment"
    assert schema.definition_for("", "v1", "Pod") == "io.k8s.api.core.v1.Pod"
    assert schema.definition_for("events.k8s.io", "v1", "Event") == "io.k8s.api.events.v1.Event"
    assert schema.definition_for("example.com", "v1", "Widget") is None
    assert schema.definition_for("apps", "v1beta9", "Deployment") is None


def test_definitions_and_resolve() -> None:
    defs = schema.definitions()
    assert "io.k8s.api.core.v1.PodSpec" in defs
    assert len(defs) > 500
    with pytest.raises(TypeError):
        defs["x"] = {}  # type: ignore[index]
    spec = schema.resolve("io.k8s.api.apps.v1.DeploymentSpec")
    assert "replicas" in spec["properties"]
    assert schema.resolve("#/$defs/io.k8s.api.apps.v1.DeploymentSpec") is spec
    with pytest.raises(KeyError):
        schema.resolve("io.k8s.api.nope.v1.Nothing")
    seconds = schema.load_seconds()
    assert seconds is not None and seconds < 5


def test_patch_metadata_accessors() -> None:
    pod_spec = "io.k8s.api.core.v1.PodSpec"
    assert schema.patch_meta(pod_spec, "containers") == ("merge", "name")
    assert schema.patch_meta(pod_spec, "volumes") == ("merge,retainKeys", "name")
    assert schema.patch_meta(pod_spec, "nodeName") == (None, None)
    assert schema.patch_meta(pod_spec, "noSuchField") == (None, None)
    assert schema.list_meta(pod_spec, "containers") == ("map", ("name",))
    assert schema.list_meta(pod_spec, "topologySpreadConstraints") == (
        "map",
        ("topologyKey", "whenUnsatisfiable"),
    )
    assert schema.list_meta(pod_spec, "nodeName") == (None, ())
    assert schema.property_definition(pod_spec, "containers") == "io.k8s.api.core.v1.Container"
    assert schema.property_definition(pod_spec, "affinity") == "io.k8s.api.core.v1.Affinity"
    assert (
        schema.property_definition("io.k8s.api.core.v1.ResourceRequirements", "limits")
        == "io.k8s.apimachinery.pkg.api.resource.Quantity"
    )
    assert schema.property_definition(pod_spec, "nodeName") is None
    assert schema.property_schema(pod_spec, "nope") is None
    assert schema.patch_meta("io.k8s.api.apps.v1.DeploymentSpec", "strategy")[0] == "retainKeys"


# --------------------------------------------------------------------------- valid input


def test_valid_deployment_has_no_errors() -> None:
    assert check_deployment(deployment()) == []


def test_null_is_accepted_everywhere() -> None:
    obj = deployment()
    obj["spec"]["replicas"] = None
    obj["spec"]["template"]["spec"]["containers"][0]["name"] = None  # required, still decodes
    obj["spec"]["template"]["spec"]["containers"][0]["args"] = [None]
    obj["spec"]["template"]["spec"]["volumes"] = None
    obj["metadata"]["labels"] = {"a": None}
    obj["metadata"]["creationTimestamp"] = None
    obj["status"] = None
    assert check_deployment(obj) == []
    assert check_deployment({"spec": None}) == []


def test_integral_floats_accepted_for_integers() -> None:
    obj = deployment()
    obj["spec"]["replicas"] = 3.0
    obj["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 2.0
    assert check_deployment(obj) == []


def test_int64_accepts_large_values() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["activeDeadlineSeconds"] = 2**40
    obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = -(2**63)
    assert check_deployment(obj) == []


@pytest.mark.parametrize("value", ["100m", "1Gi", "1.5", ".5", "1e3", "1E", "+2k", " 3 ", 1, 0.25])
def test_valid_quantities(value: object) -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = value
    assert check_deployment(obj) == []


# --------------------------------------------------------------------------- type errors


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("3", "string"),
        (True, "bool"),
        (3.5, "number 3.5"),
        (2**31, "number 2147483648"),
        (-(2**31) - 1, "number -2147483649"),
        (3e9, "number 3000000000"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_int32_type_errors(value: object, what: str) -> None:
    obj = deployment()
    obj["spec"]["replicas"] = value
    error = only_error(obj)
    assert error.kind == "type" and error.path == "spec.replicas" and not error.fatal
    assert error.message == (
        f"json: cannot unmarshal {what} into Go struct field DeploymentSpec.spec.replicas "
        "of type int32"
    )


def test_nested_error_names_innermost_struct_without_indices() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = 5
    error = only_error(obj)
    assert error.path == "spec.template.spec.containers[0].image"
    assert error.message == (
        "json: cannot unmarshal number into Go struct field "
        "Container.spec.template.spec.containers.image of type string"
    )


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (
            lambda o: o["spec"].__setitem__("template", "x"),
            "spec.template",
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.template "
            "of type v1.PodTemplateSpec",
        ),
        (
            lambda o: o["spec"]["template"]["spec"].__setitem__("containers", {"name": "x"}),
            "spec.template.spec.containers",
            "json: cannot unmarshal object into Go struct field "
            "PodSpec.spec.template.spec.containers of type []v1.Container",
        ),
        (
            lambda o: o["spec"]["template"]["spec"].__setitem__("containers", ["x"]),
            "spec.template.spec.containers[0]",
            "json: cannot unmarshal string into Go struct field "
            "PodSpec.spec.template.spec.containers of type v1.Container",
        ),
        (
            lambda o: o["metadata"].__setitem__("labels", ["a"]),
            "metadata.labels",
            "json: cannot unmarshal array into Go struct field ObjectMeta.metadata.labels "
            "of type map[string]string",
        ),
        (
            lambda o: o["metadata"]["labels"].__setitem__("a", 1),
            "metadata.labels.a",
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels "
            "of type string",
        ),
        (
            lambda o: o["spec"].__setitem__("paused", "true"),
            "spec.paused",
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.paused "
            "of type bool",
        ),
        (
            lambda o: o["spec"]["template"]["spec"]["containers"][0].__setitem__("args", "a b"),
            "spec.template.spec.containers[0].args",
            "json: cannot unmarshal string into Go struct field "
            "Container.spec.template.spec.containers.args of type []string",
        ),
    ],
)
def test_structural_type_errors(mutate: Any, path: str, message: str) -> None:
    obj = deployment()
    mutate(obj)
    error = only_error(obj)
    assert (error.kind, error.path, error.message) == ("type", path, message)


def test_top_level_must_be_an_object() -> None:
    [error] = schema.check([1], "", "v1", "Pod")
    assert error.path == ""
    assert error.message == "json: cannot unmarshal array into Go value of type v1.Pod"


def test_number_fields_accept_ints_and_floats_only() -> None:
    name = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps"
    assert schema.check_definition({"minimum": 1, "maximum": 2.5, "multipleOf": None}, name) == []
    [error] = schema.check_definition({"minimum": True}, name)
    assert error.message == (
        "json: cannot unmarshal bool into Go struct field JSONSchemaProps.minimum of type float64"
    )


# --------------------------------------------------------------------------- custom decoders


@pytest.mark.parametrize(
    ("value", "what"),
    [(True, "bool"), (1.5, "number 1.5"), ({}, "object"), (2**31, "number 2147483648")],
)
def test_int_or_string_errors_are_fatal_int32(value: object, what: str) -> None:
    obj = deployment()
    obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = value
    error = only_error(obj)
    assert error.fatal
    assert error.message == (
        f"json: cannot unmarshal {what} into Go struct field "
        "RollingUpdateDeployment.spec.strategy.rollingUpdate.maxSurge of type int32"
    )


QTY_FORMAT = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", QTY_FORMAT),
        ("abc", QTY_FORMAT),
        ("1GB", QTY_FORMAT),
        ("1.2.3", QTY_FORMAT),
        (True, QTY_FORMAT),
        ({}, QTY_FORMAT),
        ("1kk", "unable to parse quantity's suffix"),
        ("1e", "unable to parse quantity's suffix"),
        ("5Ki3", "unable to parse quantity's suffix"),
    ],
)
def test_quantity_errors(value: object, message: str) -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = value
    error = only_error(obj)
    assert error.fatal
    assert error.path == "spec.template.spec.containers[0].resources.requests.cpu"
    assert error.message == message


@pytest.mark.parametrize(
    "value",
    ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.5+02:00", "2024-02-29T23:59:59-07:30"],
)
def test_valid_times(value: str) -> None:
    assert schema.time_error(value) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "2024/05/01",
            'parsing time "2024/05/01" as "2006-01-02T15:04:05Z07:00": cannot parse "/05/01" '
            'as "-"',
        ),
        (
            "yesterday",
            'parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse '
            '"yesterday" as "2006"',
        ),
        (
            "2024-05-01T10:00:00",
            'parsing time "2024-05-01T10:00:00" as "2006-01-02T15:04:05Z07:00": cannot parse '
            '"" as "Z07:00"',
        ),
        ("2024-05-01T10:00:00Zjunk", 'parsing time "2024-05-01T10:00:00Zjunk": extra text: "junk"'),
        ("2024-13-01T10:00:00Z", 'parsing time "2024-13-01T10:00:00Z": month out of range'),
        ("2023-02-29T10:00:00Z", 'parsing time "2023-02-29T10:00:00Z": day out of range'),
        ("2024-01-01T24:00:00Z", 'parsing time "2024-01-01T24:00:00Z": hour out of range'),
    ],
)
def test_time_errors(value: str, message: str) -> None:
    obj = deployment()
    obj["metadata"]["creationTimestamp"] = value
    error = only_error(obj)
    assert error.fatal and error.path == "metadata.creationTimestamp"
    assert error.message == message


def test_time_non_string_is_fatal_string_error() -> None:
    obj = deployment()
    obj["metadata"]["creationTimestamp"] = 12
    error = only_error(obj)
    assert error.fatal
    assert error.message == (
        "json: cannot unmarshal number into Go struct field "
        "ObjectMeta.metadata.creationTimestamp of type string"
    )


def test_micro_time_needs_six_fraction_digits() -> None:
    event = {"eventTime": "2024-05-01T10:00:00.123456Z", "reportingController": "x"}
    assert schema.check(event, "events.k8s.io", "v1", "Event") == []
    event["eventTime"] = "2024-05-01T10:00:00Z"
    [error] = schema.check(event, "events.k8s.io", "v1", "Event")
    assert error.message == (
        'parsing time "2024-05-01T10:00:00Z" as "2006-01-02T15:04:05.000000Z07:00": cannot '
        'parse "Z" as ".000000"'
    )


def test_secret_data_base64() -> None:
    ok = {"data": {"a": "aGVsbG8=", "b": "", "c": "aGVs\nbG8="}, "stringData": {"x": "raw"}}
    assert schema.check(ok, "", "v1", "Secret") == []
    [error] = schema.check({"data": {"a": "aGV*bG8="}}, "", "v1", "Secret")
    assert (error.path, error.message, error.fatal) == (
        "data.a",
        "illegal base64 data at input byte 3",
        False,
    )
    [error] = schema.check({"data": {"a": "aGVsbG8"}}, "", "v1", "Secret")
    assert error.message.startswith("illegal base64 data at input byte ")
    [error] = schema.check({"data": {"a": 5}}, "", "v1", "Secret")
    assert error.message == (
        "json: cannot unmarshal number into Go struct field Secret.data of type []uint8"
    )


# --------------------------------------------------------------------------- unknown fields


def test_unknown_fields_have_full_paths() -> None:
    obj = deployment()
    obj["spec"]["foo"] = 1
    obj["metadata"]["bogus"] = {}
    obj["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["gpu"] = "1"
    obj["Spec"] = {}  # matching is case-sensitive, as upstream's decoder is
    errors = check_deployment(obj)
    assert all(e.kind == "unknown" for e in errors)
    assert [e.path for e in errors] == [
        "metadata.bogus",
        "spec.template.spec.containers[0].imagee",
        "spec.foo",
        "Spec",
    ]
    assert errors[0].message == 'unknown field "metadata.bogus"'


def test_unknown_field_values_are_not_checked() -> None:
    obj = deployment()
    obj["spec"]["foo"] = {"replicas": "x"}
    assert [e.kind for e in check_deployment(obj)] == ["unknown"]


def test_free_form_fields_are_not_checked() -> None:
    revision = {"data": {"anything": [1, {"goes": True}]}, "revision": 1}
    assert schema.check(revision, "apps", "v1", "ControllerRevision") == []
    obj = deployment()
    obj["metadata"]["managedFields"][0]["fieldsV1"] = {"f:whatever": {"k:{}": {}}}
    assert check_deployment(obj) == []


def test_empty_struct_definitions_reject_fields() -> None:
    name = "io.k8s.api.apiserverinternal.v1alpha1.StorageVersionSpec"
    assert schema.check_definition({}, name) == []
    [error] = schema.check_definition({"x": 1}, name)
    assert error.kind == "unknown"


def test_recursive_definitions() -> None:
    crd = {
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                            },
                        }
                    },
                }
            ],
        }
    }
    kind = ("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
    assert schema.check(crd, *kind) == []
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]  # type: ignore[index]
    props["spec"]["properties"]["size"]["minimum"] = "one"
    props["spec"]["bogus"] = 1
    errors = schema.check(crd, *kind)
    assert [(e.kind, e.path) for e in errors] == [
        ("type", "spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.size.minimum"),
        ("unknown", "spec.versions[0].schema.openAPIV3Schema.properties.spec.bogus"),
    ]
    # map keys ("spec", "size") are not part of Go's struct-field context
    assert errors[0].message == (
        "json: cannot unmarshal string into Go struct field JSONSchemaProps.spec.versions.schema"
        ".openAPIV3Schema.properties.properties.minimum of type float64"
    )


def test_inline_schema_features() -> None:
    compiler = schema._Compiler()
    preserve = compiler.inline(
        {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"n": {"type": "integer"}},
        }
    )
    errors: list[SchemaError] = []
    preserve.check({"n": 1, "other": {"x": 1}}, None, errors)
    assert errors == []
    preserve.check({"n": "x"}, None, errors)
    assert len(errors) == 1
    int_or_string = compiler.inline({"x-kubernetes-int-or-string": True})
    errors = []
    int_or_string.check("a", None, errors)
    int_or_string.check(3, None, errors)
    assert errors == []
    free_map = compiler.inline({"type": "object"})
    free_map.check({"a": [1]}, None, errors)
    assert errors == []
    free_map.check("x", None, errors)
    assert len(errors) == 1


def test_unknown_kinds_are_not_checked() -> None:
    assert schema.check({"spec": {"anything": 1}}, "example.com", "v1", "Widget") == []


# --------------------------------------------------------------------------- messages


def test_decode_error_message_first_type_error() -> None:
    obj = deployment()
    obj["spec"]["foo"] = 1
    obj["spec"]["replicas"] = "3"
    obj["spec"]["paused"] = "no"
    errors = check_deployment(obj)
    assert schema.decode_error_message("Deployment", "v1", errors) == (
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal '
        "string into Go struct field DeploymentSpec.spec.replicas of type int32"
    )


def test_decode_error_message_fatal_wins() -> None:
    obj = deployment()
    obj["spec"]["replicas"] = "3"
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    message = schema.decode_error_message("Deployment", "v1", check_deployment(obj))
    assert message is not None and message.endswith(QTY_FORMAT)


def test_decode_error_message_strict_and_lenient() -> None:
    obj = deployment()
    obj["spec"]["foo"] = 1
    obj["spec"]["bar"] = 2
    errors = check_deployment(obj)
    assert schema.decode_error_message("Deployment", "v1", errors) is None
    assert schema.decode_error_message("Deployment", "v1", errors, strict=True) == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.foo", unknown field "spec.bar"'
    )
    assert schema.unknown_field_warnings(errors) == [
        'unknown field "spec.foo"',
        'unknown field "spec.bar"',
    ]
    assert schema.decode_error_message("Deployment", "v1", []) is None
    assert schema.first_decode_error(errors) is None


def test_decode_error_message_target_kind() -> None:
    errors = [SchemaError("type", "x", "json: boom")]
    assert schema.decode_error_message("Scale", "v1", errors, target_kind="Deployment") == (
        'Scale in version "v1" cannot be handled as a Deployment: json: boom'
    )


def test_strict_messages_are_deduplicated_and_capped() -> None:
    errors = [
        SchemaError("unknown", f"f{i % 150}", f'unknown field "f{i % 150}"') for i in range(400)
    ]
    warnings = schema.unknown_field_warnings(errors)
    assert len(warnings) == 100 and len(set(warnings)) == 100
    message = schema.strict_decoding_message(errors)
    assert message is not None and message.count("unknown field") == 100
    assert schema.strict_decoding_message([]) is None


# --------------------------------------------------------------------------- robustness, speed


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(8 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 2**31, 2**63, 1.5, 2.0])
    if choice in (3, 4, 5):
        return rng.choice(["", "x", "1Gi", "2024-01-01T00:00:00Z", "aGk=", "%%"])
    if choice == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["name", "spec", "x", "port"]): _random_json(rng, depth + 1)}


def _mutate(node: Any, rng: random.Random) -> None:
    """Replace one random nested value with random JSON."""
    while True:
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
        elif isinstance(node, list) and node:
            key = rng.randrange(len(node))
        else:
            return
        child = node[key]
        if rng.random() < 0.3 or not isinstance(child, dict | list) or not child:
            node[key] = _random_json(rng)
            return
        node = child


def test_random_mutations_never_raise() -> None:
    rng = random.Random(7)
    base = deployment()
    for _ in range(3000):
        obj = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            _mutate(obj, rng)
        errors = check_deployment(obj)
        for error in errors:
            assert isinstance(error, SchemaError)
        schema.decode_error_message("Deployment", "v1", errors, strict=True)


def test_check_is_fast_after_warm_up() -> None:
    obj = deployment()
    check_deployment(obj)
    rounds = 500
    start = time.perf_counter()
    for _ in range(rounds):
        check_deployment(obj)
    per_check = (time.perf_counter() - start) / rounds
    assert per_check < 0.001, f"{per_check * 1e6:.1f} us per Deployment check"
