"""Name rules and ObjectMeta validation, checked against upstream's exact wording."""

from __future__ import annotations

from typing import Any

import pytest

from kubling.api import names
from kubling.api.names import (
    NAME_RULES,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_label_value,
    is_valid_path_segment_name,
    name_rule_for,
    validate_object_meta,
    validate_object_meta_update,
)

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    r"used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
QUALIFIED_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def strs(errs: list[Any]) -> list[str]:
    return [str(e) for e in errs]


def obj(**meta: Any) -> dict[str, Any]:
    return {"metadata": meta}


# -- string rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "example.com", "a-b.c-d", "0abc", "a" * 253])
def test_subdomain_accepts(value: str) -> None:
    assert is_dns1123_subdomain(value) == []


def test_subdomain_rejects_with_upstream_message() -> None:
    assert is_dns1123_subdomain("Foo_bar") == [SUBDOMAIN_MSG]
    assert is_dns1123_subdomain("a.") == [SUBDOMAIN_MSG]
    assert is_dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]


def test_subdomain_does_not_accept_trailing_newline() -> None:
    assert is_dns1123_subdomain("abc\n") == [SUBDOMAIN_MSG]


def test_dns1123_label() -> None:
    assert is_dns1123_label("my-name") == []
    assert is_dns1123_label("my.name") == [LABEL_MSG]
    assert is_dns1123_label("a" * 64) == ["must be no more than 63 characters"]


def test_dns1035_label_requires_leading_letter() -> None:
    assert is_dns1035_label("abc-123") == []
    assert is_dns1035_label("1abc") == [DNS1035_MSG]


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        ("ok:name", []),
        (".", ["may not be '.'"]),
        ("..", ["may not be '..'"]),
        ("a/b", ["may not contain '/'"]),
        ("a%b", ["may not contain '%'"]),
        ("a/%", ["may not contain '/'", "may not contain '%'"]),
    ],
)
def test_path_segment_names(value: str, errors: list[str]) -> None:
    assert is_valid_path_segment_name(value) == errors


def test_qualified_name() -> None:
    assert is_qualified_name("example.com/My_Name") == []
    assert is_qualified_name("bad key") == [QUALIFIED_MSG]
    assert is_qualified_name("/x") == ["prefix part must be non-empty"]
    assert is_qualified_name("x/") == ["name part must be non-empty", QUALIFIED_MSG]
    assert is_qualified_name("a" * 64) == ["name part must be no more than 63 characters"]
    assert is_qualified_name("a/b/c")[0].startswith("a qualified name must consist of")


def test_label_value() -> None:
    assert is_valid_label_value("") == []
    assert is_valid_label_value("-x")[0].startswith("a valid label must be an empty string")


# -- which rule each kind uses ----------------------------------------------------------------


def test_name_rules_follow_upstream() -> None:
    assert NAME_RULES[("", "Namespace")] is names.name_is_dns_label
    assert NAME_RULES[("", "Service")] is names.name_is_dns1035_label
    assert NAME_RULES[("rbac.authorization.k8s.io", "ClusterRole")] is names.name_is_path_segment
    assert NAME_RULES[("", "PersistentVolume")] is names.name_is_path_segment
    assert name_rule_for("", "Pod") is names.name_is_dns_subdomain
    assert name_rule_for("example.com", "Widget") is names.name_is_dns_subdomain


def test_rbac_names_allow_colons_but_pods_do_not() -> None:
    assert name_rule_for("rbac.authorization.k8s.io", "ClusterRole")("system:admin", False) == []
    assert name_rule_for("", "Pod")("system:admin", False) == [SUBDOMAIN_MSG]


def test_prefix_rule_allows_trailing_dash() -> None:
    assert names.name_is_dns_subdomain("web-", True) == []
    assert names.name_is_dns_subdomain("web-", False) == [SUBDOMAIN_MSG]


# -- validate_object_meta ---------------------------------------------------------------------


def test_name_required() -> None:
    errs = validate_object_meta(obj(namespace="default"), namespaced=True)
    assert strs(errs) == ["metadata.name: Required value: name or generateName is required"]


def test_name_checked_with_kind_rule() -> None:
    errs = validate_object_meta(
        obj(name="my.svc"), namespaced=False, name_rule=names.name_is_dns1035_label
    )
    assert strs(errs) == [
        f'metadata.name: Invalid value: "my.svc": {names.is_dns1035_label("my.svc")[0]}'
    ]


def test_generate_name_checked_as_prefix() -> None:
    ok = obj(name="web-abcde", generateName="web-", namespace="d")
    assert validate_object_meta(ok, namespaced=True) == []
    bad = obj(name="web-abcde", generateName="Web-", namespace="d")
    assert strs(validate_object_meta(bad, namespaced=True))[0].startswith(
        'metadata.generateName: Invalid value: "Web-": a lowercase RFC 1123 subdomain'
    )


def test_namespace_required_for_namespaced() -> None:
    errs = validate_object_meta(obj(name="a"), namespaced=True)
    assert strs(errs) == ["metadata.namespace: Required value"]


def test_namespace_forbidden_for_cluster_scoped() -> None:
    errs = validate_object_meta(obj(name="a", namespace="x"), namespaced=False)
    assert strs(errs) == ["metadata.namespace: Forbidden: not allowed on this type"]


def test_namespace_must_be_label() -> None:
    errs = validate_object_meta(obj(name="a", namespace="a.b"), namespaced=True)
    assert strs(errs) == [f'metadata.namespace: Invalid value: "a.b": {LABEL_MSG}']


def test_labels_keys_and_values() -> None:
    errs = validate_object_meta(
        obj(name="a", labels={"bad key": "ok", "k": "-bad"}), namespaced=False
    )
    out = strs(errs)
    assert out[0] == f'metadata.labels: Invalid value: "bad key": {QUALIFIED_MSG}'
    assert out[1].startswith('metadata.labels: Invalid value: "-bad": a valid label must be')


def test_annotation_keys_are_case_insensitive_qualified_names() -> None:
    assert (
        validate_object_meta(obj(name="a", annotations={"Example.COM/X": "1"}), namespaced=False)
        == []
    )
    errs = validate_object_meta(obj(name="a", annotations={"a b": "1"}), namespaced=False)
    assert strs(errs)[0].startswith('metadata.annotations: Invalid value: "a b": name part')


def test_annotation_total_size() -> None:
    big = {"k": "x" * (256 * 1024)}
    errs = validate_object_meta(obj(name="a", annotations=big), namespaced=False)
    assert strs(errs) == ["metadata.annotations: Too long: may not be more than 262144 bytes"]
    fits = {"k": "x" * (256 * 1024 - 1)}
    assert validate_object_meta(obj(name="a", annotations=fits), namespaced=False) == []


def test_finalizers() -> None:
    assert (
        validate_object_meta(obj(name="a", finalizers=["kubernetes", "x.io/y"]), namespaced=False)
        == []
    )
    errs = validate_object_meta(obj(name="a", finalizers=["custom"]), namespaced=False)
    assert strs(errs) == [
        'metadata.finalizers: Invalid value: "custom": '
        "name is neither a standard finalizer name nor is it fully qualified"
    ]
    both = validate_object_meta(
        obj(name="a", finalizers=["orphan", "foregroundDeletion"]), namespaced=False
    )
    assert "cannot be both set" in str(both[0])


def test_owner_references() -> None:
    ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "rs",
        "uid": "u",
        "controller": True,
    }
    assert validate_object_meta(obj(name="a", ownerReferences=[ref]), namespaced=False) == []
    errs = validate_object_meta(
        obj(name="a", ownerReferences=[{"apiVersion": "v1", "kind": "X"}]), namespaced=False
    )
    assert strs(errs) == [
        'metadata.ownerReferences.name: Invalid value: "": name must not be empty',
        'metadata.ownerReferences.uid: Invalid value: "": uid must not be empty',
    ]
    two = validate_object_meta(
        obj(name="a", ownerReferences=[ref, {**ref, "name": "rs2"}]), namespaced=False
    )
    assert "Only one reference can have Controller set to true" in str(two[0])
    assert "ReplicaSet/rs and ReplicaSet/rs2" in str(two[0])


def test_negative_generation() -> None:
    errs = validate_object_meta(obj(name="a", generation=-1), namespaced=False)
    assert strs(errs) == [
        "metadata.generation: Invalid value: -1: must be greater than or equal to 0"
    ]


# -- validate_object_meta_update ---------------------------------------------------------------


def test_meta_update_identity_is_immutable() -> None:
    old = obj(name="a", namespace="d", uid="1")
    assert validate_object_meta_update(obj(name="a", namespace="d"), old) == []
    errs = validate_object_meta_update(obj(name="b", namespace="d", uid="2"), old)
    assert strs(errs) == [
        'metadata.name: Invalid value: "b": field is immutable',
        'metadata.uid: Invalid value: "2": field is immutable',
    ]


def test_no_new_finalizers_while_deleting() -> None:
    old = obj(name="a", deletionTimestamp="2024-01-01T00:00:00Z", finalizers=["a.io/x"])
    errs = validate_object_meta_update(obj(name="a", finalizers=["a.io/x", "b.io/y"]), old)
    assert strs(errs) == [
        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being "
        'deleted, found new finalizers []string{"b.io/y"}'
    ]
