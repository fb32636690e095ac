"""Field selector parsing, escaping, per-kind field sets and upstream error wording."""

from __future__ import annotations

import random

import pytest

from kubling.api import fields
from kubling.api.fields import FieldRequirement, SelectorError


@pytest.mark.parametrize(
    ("text", "requirements", "canonical"),
    [
        ("", (), ""),
        ("a=b", (("a", "=", "b"),), "a=b"),
        ("a==b", (("a", "=", "b"),), "a=b"),
        ("a!=b", (("a", "!=", "b"),), "a!=b"),
        ("a=", (("a", "=", ""),), "a="),
        ("b=1,a=2", (("a", "=", "2"), ("b", "=", "1")), "a=2,b=1"),
        ("a=b,", (("a", "=", "b"),), "a=b"),
        (",,a=b", (("a", "=", "b"),), "a=b"),
        (r"a=x\,y", (("a", "=", "x,y"),), r"a=x\,y"),
        (r"a=x\=y", (("a", "=", "x=y"),), r"a=x\=y"),
        (r"a=x\\y", (("a", "=", "x\\y"),), r"a=x\\y"),
        ("a=!b", (("a", "=", "!b"),), "a=!b"),
        ("=b", (("", "=", "b"),), "=b"),
        # no whitespace trimming upstream: spaces belong to the field and value
        ("a = b", (("a ", "=", " b"),), "a = b"),
    ],
)
def test_parse(text: str, requirements: tuple[tuple[str, str, str], ...], canonical: str) -> None:
    sel = fields.parse(text)
    assert sel.requirements == tuple(FieldRequirement(*r) for r in requirements)
    assert str(sel) == canonical
    assert fields.parse(str(sel)) == sel


def test_requirements_unpack_as_triples() -> None:
    [(field, op, value)] = fields.parse("spec.nodeName=n1").requirements
    assert (field, op, value) == ("spec.nodeName", "=", "n1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a", "invalid selector: 'a'; can't understand 'a'"),
        ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
        ("a=b=c", "invalid field selector: unescaped character in value: ="),
        (r"a=b\c", r"invalid field selector: invalid escape sequence: \c"),
        ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
        ("a!b", "invalid selector: 'a!b'; can't understand 'a!b'"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        fields.parse(text)
    assert str(info.value) == message


def test_parse_rejects_non_string() -> None:
    with pytest.raises(SelectorError):
        fields.parse(b"a=b")  # type: ignore[arg-type]


def test_parse_never_raises_other_exceptions() -> None:
    alphabet = "ab=!,\\. x"
    rng = random.Random(99)
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        try:
            sel = fields.parse(text)
        except SelectorError:
            continue
        # terms are ordered by their raw text, so compare as a set
        again = fields.parse(str(sel)).requirements
        assert sorted(again) == sorted(sel.requirements), text


@pytest.mark.parametrize("value", ["", "plain", "a,b", "a=b", "a\\b", "\\,=\\=", "é,ü"])
def test_escape_round_trip(value: str) -> None:
    assert fields.unescape_value(fields.escape_value(value)) == value
    sel = fields.selector_from_set({"f": value})
    assert fields.parse(str(sel)).requirements == (FieldRequirement("f", "=", value),)


def test_matches_missing_field_reads_as_empty() -> None:
    have = {"metadata.name": "x", "spec.nodeName": ""}
    assert fields.parse("spec.nodeName=").matches(have)
    assert fields.parse("status.phase=").matches(have)
    assert not fields.parse("status.phase!=").matches(have)
    assert fields.parse("metadata.name=x,spec.nodeName!=n1").matches(have)
    assert not fields.parse("metadata.name=x,spec.nodeName=n1").matches(have)
    assert fields.parse("").matches({})
    assert fields.parse("").empty
    assert not fields.parse("a=b").empty


def test_requires_exact_match() -> None:
    sel = fields.parse("spec.nodeName=n1,metadata.name!=x")
    assert sel.requires_exact_match("spec.nodeName") == "n1"
    assert sel.requires_exact_match("metadata.name") is None


POD = {
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {
        "nodeName": "n1",
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "sa",
        "hostNetwork": True,
    },
    "status": {
        "phase": "Running",
        "podIP": "10.0.0.9",
        "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
        "nominatedNodeName": "n2",
    },
}


def test_pod_field_set() -> None:
    assert fields.field_set("", "Pod", POD) == {
        "metadata.name": "p",
        "metadata.namespace": "ns",
        "spec.nodeName": "n1",
        "spec.restartPolicy": "Always",
        "spec.schedulerName": "default-scheduler",
        "spec.serviceAccountName": "sa",
        "spec.hostNetwork": "true",
        "status.phase": "Running",
        "status.podIP": "10.0.0.1",
        "status.nominatedNodeName": "n2",
    }


def test_pod_field_set_defaults() -> None:
    got = fields.field_set("", "Pod", {"metadata": {"name": "p"}})
    assert got["spec.hostNetwork"] == "false"
    assert got["spec.nodeName"] == ""
    assert got["metadata.namespace"] == ""
    assert fields.field_set("", "Pod", {"status": {"podIP": "1.2.3.4"}})["status.podIP"] == (
        "1.2.3.4"
    )


def test_field_set_tolerates_garbage() -> None:
    got = fields.field_set("", "Pod", {"metadata": "x", "spec": [], "status": {"podIPs": "x"}})
    assert got["metadata.name"] == "" and got["spec.nodeName"] == ""


CORE_EVENT = {
    "metadata": {"name": "e", "namespace": "ns"},
    "involvedObject": {
        "kind": "Pod",
        "namespace": "ns",
        "name": "p",
        "uid": "u1",
        "apiVersion": "v1",
        "resourceVersion": "7",
        "fieldPath": "spec.containers{c}",
    },
    "reason": "Started",
    "source": {"component": "kubelet"},
    "reportingComponent": "kubelet-x",
    "type": "Normal",
}


def test_event_field_sets() -> None:
    core = fields.field_set("", "Event", CORE_EVENT)
    assert core["involvedObject.name"] == "p"
    assert core["involvedObject.fieldPath"] == "spec.containers{c}"
    assert core["source"] == "kubelet"
    assert core["reportingComponent"] == "kubelet-x"
    new_style = {
        "metadata": {"name": "e", "namespace": "ns"},
        "regarding": {"kind": "Pod", "name": "p", "uid": "u1"},
        "reportingController": "ctrl",
        "reason": "R",
        "type": "Warning",
    }
    got = fields.field_set("events.k8s.io", "Event", new_style)
    assert got["involvedObject.kind"] == "Pod"
    assert got["reportingComponent"] == "ctrl"
    assert got["source"] == "ctrl"  # no source.component: falls back to reporting controller


def test_events_k8s_io_selector_converts_to_core_names() -> None:
    sel = fields.convert_for(
        "events.k8s.io", "Event", fields.parse("regarding.name=p,reportingController=ctrl")
    )
    assert [r.field for r in sel.requirements] == ["involvedObject.name", "reportingComponent"]
    got = fields.field_set(
        "events.k8s.io", "Event", {"regarding": {"name": "p"}, "reportingController": "ctrl"}
    )
    assert sel.matches(got)
    with pytest.raises(SelectorError, match=r"field label not supported: involvedObject\.name"):
        fields.validate_for("events.k8s.io", "Event", fields.parse("involvedObject.name=p"))


@pytest.mark.parametrize(
    ("group", "kind", "obj", "field", "value"),
    [
        ("", "Secret", {"type": "kubernetes.io/tls"}, "type", "kubernetes.io/tls"),
        ("", "Namespace", {"status": {"phase": "Active"}}, "status.phase", "Active"),
        ("", "Node", {"spec": {"unschedulable": True}}, "spec.unschedulable", "true"),
        ("", "Node", {}, "spec.unschedulable", "false"),
        ("", "ReplicationController", {"status": {"replicas": 2}}, "status.replicas", "2"),
        ("apps", "ReplicaSet", {}, "status.replicas", "0"),
        ("batch", "Job", {"status": {"succeeded": 3}}, "status.successful", "3"),
        (
            "certificates.k8s.io",
            "CertificateSigningRequest",
            {"spec": {"signerName": "kubernetes.io/kubelet-serving"}},
            "spec.signerName",
            "kubernetes.io/kubelet-serving",
        ),
        ("resource.k8s.io", "ResourceSlice", {"spec": {"driver": "d"}}, "spec.driver", "d"),
    ],
)
def test_kind_specific_fields(
    group: str, kind: str, obj: dict[str, object], field: str, value: str
) -> None:
    assert fields.field_set(group, kind, obj)[field] == value
    fields.validate_for(group, kind, fields.parse(f"{field}={value}"))


def test_unknown_kind_has_only_metadata() -> None:
    got = fields.field_set("example.com", "Widget", {"metadata": {"name": "w", "namespace": "n"}})
    assert got == {"metadata.name": "w", "metadata.namespace": "n"}
    assert fields.selectable_fields("example.com", "Widget") == {
        "metadata.name",
        "metadata.namespace",
    }


def test_validate_for_wording() -> None:
    fields.validate_for("", "Pod", fields.parse("metadata.name=a,spec.nodeName=b"))
    fields.validate_for("", "ConfigMap", fields.parse("metadata.namespace=a"))
    with pytest.raises(SelectorError) as info:
        fields.validate_for("", "Pod", fields.parse("spec.foo=x"))
    assert str(info.value) == "field label not supported: spec.foo"
    with pytest.raises(SelectorError) as info:
        fields.validate_for("", "ConfigMap", fields.parse("data.x=1"))
    assert str(info.value) == (
        '"data.x" is not a known field selector: only "metadata.name", "metadata.namespace"'
    )


def test_pod_legacy_spec_host_alias() -> None:
    sel = fields.convert_for("", "Pod", fields.parse("spec.host=n1"))
    assert str(sel) == "spec.nodeName=n1"
    assert sel.matches(fields.field_set("", "Pod", POD))
    assert "spec.host" in fields.selectable_fields("", "Pod")


def test_every_table_field_is_produced_by_field_set() -> None:
    for (group, kind), entry in fields._KINDS.items():
        produced = fields.field_set(group, kind, {})
        for canonical in entry.labels.values():
            assert canonical in produced, (group, kind, canonical)
