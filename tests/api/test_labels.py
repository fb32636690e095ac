"""Label selector parsing, matching and validation against upstream behaviour."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kubling.api import labels
from kubling.api.field import ErrorType, Path
from kubling.api.labels import Operator, Requirement, SelectorError

QNAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("   ", ""),
        ("a=b", "a=b"),
        ("a==b", "a==b"),
        ("a!=b", "a!=b"),
        ("a", "a"),
        ("!a", "!a"),
        ("! a", "!a"),
        ("a in (x,y)", "a in (x,y)"),
        ("a in (y, x, x)", "a in (x,y)"),
        ("a notin (x)", "a notin (x)"),
        ("a in ()", "a in ()"),
        ("a in (,)", "a in ()"),
        ("a in (x,)", "a in (,x)"),
        ("a in (,,x)", "a in (,x)"),
        ("a=", "a="),
        ("a=,b", "a=,b"),
        ("b=1,a=2", "a=2,b=1"),
        (" a = b , c ", "a=b,c"),
        ("\ta\n=\rb", "a=b"),
        ("x>1", "x>1"),
        ("x<5", "x<5"),
        ("x<-5", None),  # "-5" is not a valid label value, so upstream rejects it too
        ("example.com/app-name=v_1.2", "example.com/app-name=v_1.2"),
        ("in=notin", "in=notin"),
        ("in in (in, notin)", "in in (in,notin)"),
        ("a=b,a!=c", "a=b,a!=c"),
        ("a=(", None),
    ],
)
def test_parse_canonical(text: str, canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(SelectorError):
            labels.parse(text)
        return
    assert str(labels.parse(text)) == canonical


def test_parse_requirements_structure() -> None:
    sel = labels.parse("tier notin (db),app=web,!legacy,zone in (b,a)")
    assert sel.requirements == (
        Requirement("app", Operator.EQUALS, ("web",)),
        Requirement("legacy", Operator.DOES_NOT_EXIST),
        Requirement("tier", Operator.NOT_IN, ("db",)),
        Requirement("zone", Operator.IN, ("a", "b")),
    )
    assert not sel.empty
    assert labels.parse("").empty


def test_canonical_form_round_trips() -> None:
    for text in ["a in (x,y),b!=c,!d,e", "k8s.io/x==1,y>3,z<2"]:
        sel = labels.parse(text)
        assert labels.parse(str(sel)) == sel


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        ("=b", "found '=', expected: !, identifier, or 'end of string'"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("a in x", "unable to parse requirement: found 'x' expected: '('"),
        ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'"),
        ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a in (x,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
        ("a==(", "unable to parse requirement: found '(', expected: identifier"),
        ("!a=b", "unable to parse requirement: found 'a', expected: ',' or 'end of string'"),
        ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
        ("!!a", "unable to parse requirement: found '!', expected: identifier"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("a!", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"),
        ("a (b)", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"),
        ("a notin", "unable to parse requirement: found '' expected: '('"),
        (
            "-a=b",
            'unable to parse requirement: <nil>: Invalid value: "-a": ' + QNAME_MSG,
        ),
        (
            "a=-b",
            'unable to parse requirement: values[0][a]: Invalid value: "-b": ' + VALUE_MSG,
        ),
        (
            "x>a",
            "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' "
            "operators, the value must be an integer",
        ),
        (
            "/a",
            'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be '
            "non-empty",
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        labels.parse(text)
    assert str(info.value) == message


def test_parse_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        labels.parse("a in (")


def test_parse_rejects_non_string() -> None:
    with pytest.raises(SelectorError):
        labels.parse(None)  # type: ignore[arg-type]


def test_parse_long_value_reports_length_and_regex() -> None:
    with pytest.raises(SelectorError) as info:
        labels.parse("a=" + "x" * 64)
    assert "must be no more than 63 characters" in str(info.value)


def test_parse_never_raises_other_exceptions() -> None:
    alphabet = "ab=!(),<> \tin0-._/x\\"
    rng = random.Random(1234)
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        try:
            sel = labels.parse(text)
        except SelectorError:
            continue
        # whatever parses must also print to something that parses to the same selector
        assert labels.parse(str(sel)) == sel, text


@pytest.mark.parametrize(
    ("text", "matching", "not_matching"),
    [
        ("", [{}, {"a": "b"}], []),
        ("a=b", [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}]),
        ("a!=b", [{}, {"a": "c"}], [{"a": "b"}]),
        ("a", [{"a": ""}, {"a": "x"}], [{}, {"b": "a"}]),
        ("!a", [{}, {"b": "x"}], [{"a": ""}]),
        ("a in (x,y)", [{"a": "x"}, {"a": "y"}], [{}, {"a": "z"}]),
        ("a notin (x,y)", [{}, {"a": "z"}], [{"a": "x"}]),
        ("a in ()", [{"a": ""}], [{}, {"a": "x"}]),
        ("a=", [{"a": ""}], [{}, {"a": "x"}]),
        ("a>5", [{"a": "6"}, {"a": "+10"}], [{}, {"a": "5"}, {"a": "x"}, {"a": "6.0"}]),
        ("a<5", [{"a": "-1"}], [{"a": "5"}, {"a": "99999999999999999999"}]),
        ("a=b,c", [{"a": "b", "c": ""}], [{"a": "b"}, {"c": "x"}]),
    ],
)
def test_matches(
    text: str, matching: list[dict[str, str]], not_matching: list[dict[str, str]]
) -> None:
    sel = labels.parse(text)
    for have in matching:
        assert sel.matches(have), (text, have)
    for have in not_matching:
        assert not sel.matches(have), (text, have)


def test_matches_none_labels() -> None:
    assert labels.parse("!a").matches(None)
    assert not labels.parse("a").matches(None)


def test_requires_exact_match() -> None:
    sel = labels.parse("a=1,b==2,c in (3),d in (4,5),e!=6")
    assert sel.requires_exact_match("a") == "1"
    assert sel.requires_exact_match("b") == "2"
    assert sel.requires_exact_match("c") == "3"
    assert sel.requires_exact_match("d") is None
    assert sel.requires_exact_match("e") is None
    assert sel.requires_exact_match("z") is None


def test_requirement_new_validation() -> None:
    with pytest.raises(SelectorError) as info:
        Requirement.new("a", Operator.IN, [])
    assert str(info.value) == (
        "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
    )
    with pytest.raises(SelectorError) as info:
        Requirement.new("a", Operator.EXISTS, ["x"])
    assert "values set must be empty for exists and does not exist" in str(info.value)
    with pytest.raises(SelectorError) as info:
        Requirement.new("a", Operator.EQUALS, ["x", "y"])
    assert 'values: Invalid value: []string{"x", "y"}: exact-match' in str(info.value)
    with pytest.raises(SelectorError) as info:
        Requirement.new("a", Operator.GREATER_THAN, ["1", "2"])
    assert "for 'Gt', 'Lt' operators, exactly one value is required" in str(info.value)
    assert not Requirement("a", Operator.LESS_THAN, ("x",)).matches({"a": "1"})
    with pytest.raises(SelectorError) as info:
        Requirement.new("-", Operator.IN, [])
    # two problems aggregate into a bracketed list, as upstream's Aggregate prints them
    assert str(info.value).startswith('[key: Invalid value: "-": ')


# --------------------------------------------------------------------------- LabelSelector


def test_from_label_selector_nil_and_empty() -> None:
    nothing = labels.from_label_selector(None)
    assert nothing.is_nothing and not nothing.empty
    assert not nothing.matches({})
    assert not nothing.matches({"a": "b"})
    empties: list[dict[str, Any]] = [
        {},
        {"matchLabels": {}, "matchExpressions": []},
        {"matchLabels": None},
    ]
    for empty in empties:
        sel = labels.from_label_selector(empty)
        assert sel.empty
        assert sel.matches({}) and sel.matches({"x": "y"})


def test_from_label_selector_combines_and_sorts() -> None:
    sel = labels.from_label_selector(
        {
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "canary"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["z1"]},
                {"key": "gpu", "operator": "Exists", "values": []},
            ],
        }
    )
    assert str(sel) == "app=shop,env in (canary,prod),gpu,!legacy,tier=web,zone notin (z1)"
    assert sel.matches({"app": "shop", "tier": "web", "env": "prod", "gpu": "1"})
    assert not sel.matches({"app": "shop", "tier": "web", "env": "dev", "gpu": "1"})
    assert sel.requires_exact_match("app") == "shop"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
            '"Gt" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "in", "values": ["1"]}]},
            '"in" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't "
            "be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            'values: Invalid value: []string{"x"}: values set must be empty for exists and does '
            "not exist",
        ),
        ({"matchLabels": {"a": "-x"}}, 'values[0][a]: Invalid value: "-x": ' + VALUE_MSG),
        ({"matchLabels": {"-a": "x"}}, 'key: Invalid value: "-a": ' + QNAME_MSG),
    ],
)
def test_from_label_selector_errors(obj: dict[str, object], message: str) -> None:
    with pytest.raises(SelectorError) as info:
        labels.from_label_selector(obj)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "a=b",
        {"matchLabels": ["a"]},
        {"matchLabels": {"a": 1}},
        {"matchExpressions": {"key": "a"}},
        {"matchExpressions": ["a"]},
        {"matchExpressions": [{"key": 1, "operator": "Exists"}]},
        {"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]},
        {"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]},
        {"matchExpressions": [{"key": "a"}]},
        {"matchExpressions": [{"operator": "Exists"}]},
    ],
)
def test_from_label_selector_bad_shapes_raise_selector_error(obj: object) -> None:
    with pytest.raises(SelectorError):
        labels.from_label_selector(obj)  # type: ignore[arg-type]


def test_selector_from_set() -> None:
    sel = labels.selector_from_set({"b": "2", "a": "1"})
    assert str(sel) == "a=1,b=2"
    assert labels.selector_from_set({}).empty
    with pytest.raises(SelectorError):
        labels.selector_from_set({"a": "not valid"})


# --------------------------------------------------------------------------- metadata.labels


def test_label_key_errors_wording() -> None:
    assert labels.label_key_errors("app") == []
    assert labels.label_key_errors("example.com/app") == []
    assert labels.label_key_errors("a_b.c-d") == []
    assert labels.label_key_errors("-bad") == [QNAME_MSG]
    assert labels.label_key_errors("") == ["name part must be non-empty", QNAME_MSG]
    assert labels.label_key_errors("x" * 64) == ["name part must be no more than 63 characters"]
    assert labels.label_key_errors("Example.com/a") == [
        "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
        "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
        "'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ]
    long_prefix = ".".join(["a" * 63] * 4) + "/x"
    assert labels.label_key_errors(long_prefix) == [
        "prefix part must be no more than 253 characters"
    ]
    assert labels.label_key_errors("a/b/c")[0].startswith("a qualified name must consist")
    assert labels.label_key_errors("a\n") == [QNAME_MSG]


def test_label_value_errors_wording() -> None:
    assert labels.label_value_errors("") == []
    assert labels.label_value_errors("v1.2_x-y") == []
    assert labels.label_value_errors("a b") == [VALUE_MSG]
    assert labels.label_value_errors("x" * 64) == ["must be no more than 63 characters"]
    # Go counts bytes: 32 two-byte characters exceed 63
    assert "must be no more than 63 characters" in labels.label_value_errors("é" * 32)


def test_validate_labels() -> None:
    errors = labels.validate_labels(
        {"ok": "fine", "-bad": "x", "k": "bad value"}, "metadata.labels"
    )
    assert [str(e) for e in errors] == [
        'metadata.labels: Invalid value: "-bad": ' + QNAME_MSG,
        'metadata.labels: Invalid value: "bad value": ' + VALUE_MSG,
    ]
    assert all(e.type is ErrorType.INVALID for e in errors)
    assert labels.validate_labels(None, "metadata.labels") == []
    assert labels.validate_labels({}, "metadata.labels") == []


def test_validate_labels_non_strings_do_not_crash() -> None:
    errors = labels.validate_labels({"a": 1, 2: "x"}, "metadata.labels")  # type: ignore[dict-item]
    assert len(errors) == 2


def test_validate_label_key() -> None:
    assert labels.validate_label_key("ok", "spec.key") == []
    (error,) = labels.validate_label_key("bad key", "spec.key")
    assert error.field == "spec.key"
    (error,) = labels.validate_label_key("bad key", Path("spec").child("key"))
    assert error.field == "spec.key"
    (error,) = labels.validate_labels({"a": "b c"}, Path("metadata").child("labels"))
    assert error.field == "metadata.labels"
