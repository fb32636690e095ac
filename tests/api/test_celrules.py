"""CRD validation rules (``x-kubernetes-validations``) with CEL, as apiextensions words them."""

from __future__ import annotations

from typing import Any

import pytest

from kubling.api import celrules


def schema(**spec_extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"spec": {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer"},
            "maxReplicas": {"type": "integer"},
            "ratio": {"type": "number"},
            "name": {"type": "string",
                     "x-kubernetes-validations": [{"rule": "self.lowerAscii() == self",
                                                   "message": "must be lower case"}]},
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "properties": {
                          "name": {"type": "string"}, "port": {"type": "integer"}},
                          "x-kubernetes-validations": [
                              {"rule": "self.port == oldSelf.port",
                               "message": "port is immutable"}]}},
            "labels": {"type": "object", "additionalProperties": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "size(self) <= 5"}]}},
        },
        **spec_extra}}}


def errors(obj: dict[str, Any], sch: dict[str, Any], old: Any = None) -> list[str]:
    return [str(e) for e in celrules.validate(obj, old, sch)]


def cr(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "x.dev/v1", "kind": "X", "metadata": {"name": "a", "uid": "u"},
            "spec": spec}


def test_false_rules_use_message_then_default() -> None:
    sch = schema(**{"x-kubernetes-validations": [
        {"rule": "self.replicas <= self.maxReplicas",
         "message": "replicas should be smaller than or equal to maxReplicas."},
        {"rule": "self.replicas >= 0"}]})
    assert errors(cr(replicas=3, maxReplicas=5), sch) == []
    assert errors(cr(replicas=7, maxReplicas=5), sch) == [
        "spec: Invalid value: replicas should be smaller than or equal to maxReplicas."]
    assert errors(cr(replicas=-1, maxReplicas=5), sch) == [
        "spec: Invalid value: failed rule: self.replicas >= 0"]


def test_scalar_rules_show_the_value_and_maps_are_walked() -> None:
    assert errors(cr(name="Web"), schema()) == [
        'spec.name: Invalid value: "Web": must be lower case']
    assert errors(cr(labels={"a": "short", "b": "much-too-long"}), schema()) == [
        'spec.labels[b]: Invalid value: "much-too-long": failed rule: size(self) <= 5']


def test_message_expression_reason_and_field_path() -> None:
    sch = schema(**{"x-kubernetes-validations": [
        {"rule": "self.replicas <= self.maxReplicas",
         "messageExpression": "'replicas ' + string(self.replicas) + ' is too many'",
         "reason": "FieldValueForbidden", "fieldPath": ".replicas"}]})
    assert errors(cr(replicas=9, maxReplicas=5), sch) == [
        "spec.replicas: Forbidden: replicas 9 is too many"]


def test_runtime_errors_name_the_rule() -> None:
    sch = schema(**{"x-kubernetes-validations": [{"rule": "self.maxReplicas > 1"}]})
    assert errors(cr(replicas=1), sch) == [
        'spec: Invalid value: "object": no such key: maxReplicas evaluating rule: '
        "self.maxReplicas > 1"]
    guarded = schema(**{"x-kubernetes-validations": [
        {"rule": "!has(self.maxReplicas) || self.maxReplicas > 1"}]})
    assert errors(cr(replicas=1), guarded) == []


def test_unknown_names_fail_when_the_rule_runs() -> None:
    sch = schema(**{"x-kubernetes-validations": [{"rule": "other.x > 1"}]})
    assert errors(cr(replicas=1), sch) == [
        'spec: Invalid value: "object": undeclared reference to \'other\' evaluating rule: '
        "other.x > 1"]


def test_number_fields_are_doubles() -> None:
    sch = schema(**{"x-kubernetes-validations": [{"rule": "self.ratio < 0.5"}]})
    assert errors(cr(ratio=0), sch) == []  # 0 arrives as an int in JSON


def test_transition_rules_run_only_against_a_matching_old_value() -> None:
    old = cr(ports=[{"name": "http", "port": 80}])
    assert errors(cr(ports=[{"name": "http", "port": 80}]), schema()) == []  # create
    assert errors(cr(ports=[{"name": "http", "port": 81}]), schema(), old) == [
        "spec.ports[0]: Invalid value: port is immutable"]
    # A new key has no old item to compare with.
    assert errors(cr(ports=[{"name": "https", "port": 443}]), schema(), old) == []
    whole = schema(**{"x-kubernetes-validations": [
        {"rule": "self.replicas >= oldSelf.replicas", "message": "cannot scale down"}]})
    assert errors(cr(replicas=1), whole, cr(replicas=2)) == [
        "spec: Invalid value: cannot scale down"]


def test_root_rules_see_name_but_not_the_rest_of_metadata() -> None:
    root = {"type": "object", "x-kubernetes-validations": [
        {"rule": "self.metadata.name.startsWith('a')", "message": "name must start with a"},
        {"rule": "!has(self.metadata.uid)", "message": "uid is hidden"}]}
    assert errors(cr(), root) == []
    other = cr()
    other["metadata"]["name"] = "b"
    assert errors(other, root) == ["Invalid value: name must start with a"]


def test_kubernetes_extensions() -> None:
    sch = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "integer"}},
        "text": {"type": "string"}},
        "x-kubernetes-validations": [
            {"rule": "self.items.isSorted()", "message": "unsorted"},
            {"rule": "self.text.find('[0-9]+') == '42'", "message": "no 42"},
            {"rule": "self.text.split('-').size() == 2", "message": "one dash"}]}}}
    assert errors(cr(items=[1, 2, 3], text="a42-b"), sch) == []
    assert errors(cr(items=[2, 1], text="x-y-z"), sch) == [
        "spec: Invalid value: unsorted", "spec: Invalid value: no 42",
        "spec: Invalid value: one dash"]


@pytest.mark.parametrize(("rule", "message"), [
    ("self.x +", "compilation failed: ERROR: <input>:1:9: Syntax error: mismatched input "
                 "'<EOF>'"),
    ("self.x > > 1", "compilation failed: ERROR: <input>:1:10: Syntax error: mismatched "
                     "input '>'"),
])
def test_rules_that_do_not_compile_are_refused_with_the_crd(rule: str, message: str) -> None:
    sch = {"type": "object", "properties": {"spec": {
        "type": "object", "x-kubernetes-validations": [{"rule": "self.ok"}, {"rule": rule}]}}}
    errs = [str(e) for e in celrules.compile_errors(sch, "spec.versions[0].schema.openAPIV3Schema")]
    assert len(errs) == 1
    prefix = ("spec.versions[0].schema.openAPIV3Schema.properties[spec]."
              "x-kubernetes-validations[1].rule: Invalid value: ")
    assert errs[0].startswith(prefix) and message in errs[0], errs
