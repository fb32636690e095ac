"""Label selectors with the semantics (and error wording) of apimachinery's ``labels`` package.

Two entry points build a :class:`Selector`:

* :func:`parse` reads the string form clients send as ``?labelSelector=`` (``a=b,c in (x,y),!d``);
* :func:`from_label_selector` converts the API's ``LabelSelector`` object (``matchLabels`` /
  ``matchExpressions``) the way ``metav1.LabelSelectorAsSelector`` does, including its odd but
  load-bearing rule that a *missing* selector matches nothing while an *empty* one matches all.

Errors are :class:`SelectorError`; their text mirrors upstream so that clients (kubectl, client
libraries, conformance-style tests) see the messages they expect inside a 400 ``BadRequest``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any

from kubling.api.field import FieldError, Path, invalid

__all__ = [
    "Operator",
    "Requirement",
    "Selector",
    "SelectorError",
    "everything",
    "from_label_selector",
    "label_key_errors",
    "label_value_errors",
    "nothing",
    "parse",
    "selector_from_set",
    "validate_label_key",
    "validate_labels",
]


class SelectorError(ValueError):
    """A selector could not be parsed or is invalid; the API server answers 400 BadRequest."""


class Operator(enum.StrEnum):
    """Requirement operators, spelled as upstream's ``selection.Operator`` values."""

    IN = "in"
    NOT_IN = "notin"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


# --------------------------------------------------------------------------- validation
# Wording copied in spirit from apimachinery's util/validation so error messages line up.

_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_RE = re.compile(_QNAME_FMT)
_QNAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_QNAME_MAX = 63
_LABEL_VALUE_FMT = f"({_QNAME_FMT})?"
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_MAX = 253


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Upstream's ``RegexError`` (including its double space before each "or")."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    text = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{fmt}')"


def _byte_len(text: str) -> int:
    """Go measures ``len(string)`` in bytes, so non-ASCII counts more than once."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _dns1123_subdomain_errors(value: str) -> list[str]:
    errs: list[str] = []
    if _byte_len(value) > _DNS1123_SUBDOMAIN_MAX:
        errs.append(f"must be no more than {_DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def label_key_errors(key: str) -> list[str]:
    """Problems with ``key`` as a label key (upstream ``IsQualifiedName``); empty if valid."""
    parts = key.split("/")
    if len(parts) > 2:
        return [
            "a qualified name "
            + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    errs: list[str] = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in _dns1123_subdomain_errors(prefix))
    if not name:
        errs.append("name part must be non-empty")
    elif _byte_len(name) > _QNAME_MAX:
        errs.append(f"name part must be no more than {_QNAME_MAX} characters")
    if not _QNAME_RE.fullmatch(name):
        errs.append(
            "name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def label_value_errors(value: str) -> list[str]:
    """Problems with ``value`` as a label value (upstream ``IsValidLabelValue``)."""
    errs: list[str] = []
    if _byte_len(value) > _QNAME_MAX:
        errs.append(f"must be no more than {_QNAME_MAX} characters")
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


def validate_label_key(key: str, path: str | Path) -> list[FieldError]:
    """Field errors for one label key (upstream ``ValidateLabelName``): one error per problem."""
    return [invalid(str(path), key, msg) for msg in label_key_errors(key)]


def validate_labels(labels: Mapping[str, Any] | None, path: str | Path) -> list[FieldError]:
    """Field errors for ``metadata.labels`` (upstream ``ValidateLabels``).

    Upstream reports every error against the map's own path (not ``labels[key]``), so we do too.
    Non-string values cannot come out of a typed decode; we still report them rather than crash.
    """
    errors: list[FieldError] = []
    if not labels:
        return errors
    path = str(path)
    for key, value in labels.items():
        if not isinstance(key, str):
            errors.append(invalid(path, key, "label keys must be strings"))
            continue
        errors.extend(validate_label_key(key, path))
        if not isinstance(value, str):
            errors.append(invalid(path, value, "label values must be strings"))
            continue
        errors.extend(invalid(path, value, msg) for msg in label_value_errors(value))
    return errors


# --------------------------------------------------------------------------- requirements


def _go_string_slice(values: Iterable[str]) -> str:
    """Render like Go's ``%#v`` of a ``[]string``, which upstream puts in these messages."""
    inner = ", ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "[]string{" + inner + "}"


def _field_error_text(path: str, value: str, detail: str) -> str:
    return f"{path}: Invalid value: {value}: {detail}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_int64(text: str) -> int | None:
    """``strconv.ParseInt(s, 10, 64)``: optional sign, ASCII digits, 64-bit range."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    number = int(text)
    return number if -(2**63) <= number < 2**63 else None


def _requirement_errors(key: str, op: Operator, values: tuple[str, ...]) -> list[str]:
    """Upstream ``NewRequirement`` checks, as already-formatted ``field.Error`` strings."""
    errs: list[str] = []
    key_msgs = label_key_errors(key)
    if key_msgs:
        errs.append(_field_error_text("key", _quote(key), "; ".join(key_msgs)))
    shown = _go_string_slice(values)
    if op in (Operator.IN, Operator.NOT_IN):
        if not values:
            detail = "for 'in', 'notin' operators, values set can't be empty"
            errs.append(_field_error_text("values", shown, detail))
    elif op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS):
        if len(values) != 1:
            detail = "exact-match compatibility requires one single value"
            errs.append(_field_error_text("values", shown, detail))
    elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        if values:
            detail = "values set must be empty for exists and does not exist"
            errs.append(_field_error_text("values", shown, detail))
    else:
        if len(values) != 1:
            detail = "for 'Gt', 'Lt' operators, exactly one value is required"
            errs.append(_field_error_text("values", shown, detail))
        for i, value in enumerate(values):
            if _parse_int64(value) is None:
                detail = "for 'Gt', 'Lt' operators, the value must be an integer"
                errs.append(_field_error_text(f"values[{i}]", _quote(value), detail))
    for i, value in enumerate(values):
        value_msgs = label_value_errors(value)
        if value_msgs:
            path = f"values[{i}][{key}]"
            errs.append(_field_error_text(path, _quote(value), "; ".join(value_msgs)))
    return errs


def _aggregate(messages: list[str]) -> str:
    """Upstream ``utilerrors.NewAggregate(...).Error()``: bare for one, bracketed for many."""
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"


@dataclasses.dataclass(frozen=True, slots=True)
class Requirement:
    """One ``key <op> values`` term; a selector is the AND of its requirements."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    @classmethod
    def new(cls, key: str, operator: Operator, values: Iterable[str] = ()) -> Requirement:
        """Validated constructor (upstream ``NewRequirement``); raises :class:`SelectorError`."""
        vals = tuple(values)
        errs = _requirement_errors(key, operator, vals)
        if errs:
            raise SelectorError(_aggregate(errs))
        return cls(key, operator, vals)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Upstream ``Requirement.Matches``: absent keys satisfy only the negative operators."""
        op = self.operator
        present = self.key in labels
        if op in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if op in (Operator.NOT_IN, Operator.NOT_EQUALS):
            return not present or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return present
        if op is Operator.DOES_NOT_EXIST:
            return not present
        return present and self._compare(labels[self.key])

    def _compare(self, label_value: str) -> bool:
        """``gt``/``lt``: both sides must be 64-bit integers, otherwise the term is false."""
        have = _parse_int64(label_value)
        if have is None or len(self.values) != 1:
            return False
        want = _parse_int64(self.values[0])
        if want is None:
            return False
        return have > want if self.operator is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        values = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({values})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{values}"


@dataclasses.dataclass(frozen=True, slots=True)
class Selector:
    """An AND of requirements, or the special "nothing" selector (``_nothing``)."""

    requirements: tuple[Requirement, ...] = ()
    _nothing: bool = False

    @property
    def empty(self) -> bool:
        """True when the selector selects everything (upstream ``Empty()``)."""
        return not self.requirements and not self._nothing

    @property
    def is_nothing(self) -> bool:
        """True for the selector of a nil ``LabelSelector``: it matches no object."""
        return self._nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self._nothing:
            return False
        have: Mapping[str, str] = labels or {}
        return all(r.matches(have) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The value ``key`` must equal (``=``/``==``/single-value ``in``), e.g. to use an index."""
        for r in self.requirements:
            exact = r.operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN)
            if r.key == key and exact and len(r.values) == 1:
                return r.values[0]
        return None

    def add(self, *requirements: Requirement) -> Selector:
        """A new selector with extra requirements, kept sorted by key like upstream."""
        merged = sorted((*self.requirements, *requirements), key=lambda r: r.key)
        return Selector(tuple(merged), self._nothing)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def everything() -> Selector:
    """The selector matching every object (an empty ``LabelSelector``, or ``""``)."""
    return Selector()


def nothing() -> Selector:
    """The selector matching no object (a nil ``LabelSelector``)."""
    return Selector((), _nothing=True)


def selector_from_set(labels: Mapping[str, str] | None) -> Selector:
    """Equality requirements for each pair (upstream ``SelectorFromValidatedSet`` + checks)."""
    if not labels:
        return everything()
    return everything().add(*(Requirement.new(k, Operator.EQUALS, (v,)) for k, v in labels.items()))


# --------------------------------------------------------------------------- lexer


class _Tok(enum.Enum):
    END = enum.auto()
    CLOSE_PAREN = enum.auto()
    COMMA = enum.auto()
    BANG = enum.auto()
    DOUBLE_EQUALS = enum.auto()
    EQUALS = enum.auto()
    GREATER = enum.auto()
    IDENT = enum.auto()
    IN = enum.auto()
    LESS = enum.auto()
    NOT_EQUALS = enum.auto()
    NOT_IN = enum.auto()
    OPEN_PAREN = enum.auto()


_SYMBOLS: dict[str, _Tok] = {
    ")": _Tok.CLOSE_PAREN,
    ",": _Tok.COMMA,
    "!": _Tok.BANG,
    "==": _Tok.DOUBLE_EQUALS,
    "=": _Tok.EQUALS,
    ">": _Tok.GREATER,
    "<": _Tok.LESS,
    "!=": _Tok.NOT_EQUALS,
    "(": _Tok.OPEN_PAREN,
}
_KEYWORDS = {"in": _Tok.IN, "notin": _Tok.NOT_IN}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")


def _lex(text: str) -> list[tuple[_Tok, str]]:
    """Tokenise like upstream's lexer: longest special-symbol match, identifiers, keywords."""
    tokens: list[tuple[_Tok, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append((_Tok.END, ""))
            return tokens
        start = i
        if text[i] in _SPECIAL:
            # Every single special char is a token, so the longest match is one or two chars.
            i += 2 if text[i : i + 2] in _SYMBOLS else 1
            tokens.append((_SYMBOLS[text[start:i]], text[start:i]))
            continue
        while i < n and text[i] not in _WHITESPACE and text[i] not in _SPECIAL:
            i += 1
        word = text[start:i]
        tokens.append((_KEYWORDS.get(word, _Tok.IDENT), word))


# --------------------------------------------------------------------------- parser

_BINARY_OPERATORS = "in, notin, =, ==, !=, gt, lt"
_TOKEN_OPERATORS = {
    _Tok.IN: Operator.IN,
    _Tok.NOT_IN: Operator.NOT_IN,
    _Tok.EQUALS: Operator.EQUALS,
    _Tok.DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
    _Tok.NOT_EQUALS: Operator.NOT_EQUALS,
    _Tok.GREATER: Operator.GREATER_THAN,
    _Tok.LESS: Operator.LESS_THAN,
}


class _Parser:
    """Recursive-descent parser mirroring upstream's, so errors arise at the same places."""

    def __init__(self, text: str) -> None:
        self._items = _lex(text)
        self._pos = 0

    def _peek(self, values: bool = True) -> tuple[_Tok, str]:
        """Look at the next token; in value position the keywords ``in``/``notin`` are idents."""
        tok, lit = self._items[self._pos]
        if values and tok in (_Tok.IN, _Tok.NOT_IN):
            tok = _Tok.IDENT
        return tok, lit

    def _next(self, values: bool = True) -> tuple[_Tok, str]:
        item = self._peek(values)
        if self._pos < len(self._items) - 1:
            self._pos += 1
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self._peek()
            if tok is _Tok.END:
                return requirements
            if tok not in (_Tok.IDENT, _Tok.BANG):
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self._requirement())
            except SelectorError as exc:
                raise SelectorError(f"unable to parse requirement: {exc}") from None
            tok, lit = self._next()
            if tok is _Tok.END:
                return requirements
            if tok is not _Tok.COMMA:
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            tok, lit = self._peek()
            if tok not in (_Tok.IDENT, _Tok.BANG):
                raise SelectorError(f"found '{lit}', expected: identifier after ','")

    def _requirement(self) -> Requirement:
        key, op = self._key_and_unary_operator()
        if op is not None:
            return Requirement.new(key, op)
        op = self._operator()
        if op in (Operator.IN, Operator.NOT_IN):
            values = self._value_set()
        else:
            values = self._exact_value()
        return Requirement.new(key, op, sorted(values))

    def _key_and_unary_operator(self) -> tuple[str, Operator | None]:
        tok, lit = self._next()
        negated = tok is _Tok.BANG
        if negated:
            tok, lit = self._next()
        if tok is not _Tok.IDENT:
            raise SelectorError(f"found '{lit}', expected: identifier")
        msgs = label_key_errors(lit)
        if msgs:
            # Upstream validates against a nil field path, which Go prints as "<nil>".
            raise SelectorError(_field_error_text("<nil>", _quote(lit), "; ".join(msgs)))
        following, _ = self._peek()
        if following in (_Tok.END, _Tok.COMMA):
            return lit, Operator.DOES_NOT_EXIST if negated else Operator.EXISTS
        if negated:
            raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
        return lit, None

    def _operator(self) -> Operator:
        tok, lit = self._next(values=False)
        op = _TOKEN_OPERATORS.get(tok)
        if op is None:
            raise SelectorError(f"found '{lit}', expected: {_BINARY_OPERATORS}")
        return op

    def _value_set(self) -> set[str]:
        tok, lit = self._next()
        if tok is not _Tok.OPEN_PAREN:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self._peek()
        if tok is _Tok.CLOSE_PAREN:
            self._next()
            return {""}
        if tok not in (_Tok.IDENT, _Tok.COMMA):
            raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values = self._identifier_list()
        self._next()  # the ")" that _identifier_list stopped at
        return values

    def _identifier_list(self) -> set[str]:
        """Values inside ``( )``; stray commas contribute the empty value, as upstream."""
        values: set[str] = set()
        while True:
            tok, lit = self._next()
            if tok is _Tok.IDENT:
                values.add(lit)
                tok2, lit2 = self._peek()
                if tok2 is _Tok.CLOSE_PAREN:
                    return values
                if tok2 is not _Tok.COMMA:
                    raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            elif tok is _Tok.COMMA:
                if not values:
                    values.add("")
                tok2, _ = self._peek()
                if tok2 is _Tok.CLOSE_PAREN:
                    values.add("")
                    return values
                if tok2 is _Tok.COMMA:
                    self._next()
                    values.add("")
            else:
                raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def _exact_value(self) -> set[str]:
        tok, _ = self._peek()
        if tok in (_Tok.END, _Tok.COMMA):
            return {""}
        tok, lit = self._next()
        if tok is _Tok.IDENT:
            return {lit}
        raise SelectorError(f"found '{lit}', expected: identifier")


def parse(text: str) -> Selector:
    """Parse the ``?labelSelector=`` string form; ``""`` selects everything.

    Requirements are sorted by key (stable) so ``str()`` gives upstream's canonical form.
    """
    if not isinstance(text, str):
        raise SelectorError(f"label selector must be a string, not {type(text).__name__}")
    return everything().add(*_Parser(text).parse())


# --------------------------------------------------------------------------- LabelSelector

_EXPRESSION_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def _expect_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise SelectorError(f"{what} must be a string, not {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _match_labels(obj: Mapping[str, Any]) -> list[Requirement]:
    raw = obj.get("matchLabels") or {}
    if not isinstance(raw, Mapping):
        raise SelectorError(f"matchLabels must be an object, not {_json_kind(raw)}")
    return [
        Requirement.new(
            _expect_str(k, "matchLabels key"),
            Operator.EQUALS,
            (_expect_str(v, f"matchLabels[{k}]"),),
        )
        for k, v in raw.items()
    ]


def _match_expression(expr: Any) -> Requirement:
    if not isinstance(expr, Mapping):
        raise SelectorError(f"matchExpressions entries must be objects, not {_json_kind(expr)}")
    op_name = expr.get("operator")
    op = _EXPRESSION_OPERATORS.get(op_name) if isinstance(op_name, str) else None
    if op is None:
        shown = _quote(op_name) if isinstance(op_name, str) else _quote(str(op_name or ""))
        raise SelectorError(f"{shown} is not a valid label selector operator")
    raw_values = expr.get("values") or []
    if not isinstance(raw_values, list | tuple):
        raise SelectorError(
            f"matchExpressions values must be an array, not {_json_kind(raw_values)}"
        )
    values = [_expect_str(v, "matchExpressions value") for v in raw_values]
    key = _expect_str(expr.get("key", ""), "matchExpressions key")
    return Requirement.new(key, op, values)


def from_label_selector(obj: Mapping[str, Any] | None) -> Selector:
    """Upstream ``LabelSelectorAsSelector``: ``None`` → nothing, ``{}`` → everything.

    The asymmetry matters: e.g. a PodDisruptionBudget with no selector must select no pods,
    while one with ``selector: {}`` selects every pod in its namespace.
    """
    if obj is None:
        return nothing()
    if not isinstance(obj, Mapping):
        raise SelectorError(f"label selector must be an object, not {_json_kind(obj)}")
    expressions = obj.get("matchExpressions") or []
    if not isinstance(expressions, list | tuple):
        raise SelectorError(f"matchExpressions must be an array, not {_json_kind(expressions)}")
    requirements = _match_labels(obj) + [_match_expression(e) for e in expressions]
    return everything().add(*requirements)
