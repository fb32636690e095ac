"""Tables for custom resources: a CRD version's ``additionalPrinterColumns``.

kube-apiserver evaluates each column's ``jsonPath`` against the object and turns the first
value into a cell of the column's ``type``, leaving the cell ``null`` when the path finds
nothing. This module does the same for the subset of JSONPath that CRDs use in practice:
``.a.b``, ``.a[0].b``, ``.a[*].b``, ``['key.with.dots']``, escaped ``a\\.b`` keys and
filters like ``[?(@.type=="Ready")]``, with or without the ``{...}`` wrapping.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

#: The column a CRD gets when it declares none: AGE, which kubectl renders from the date.
DEFAULT_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": common.CREATED_DESCRIPTION,
    }
]


class JSONPathError(ValueError):
    """A ``jsonPath`` outside the supported subset."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str  # "*" selects every value of an object


@dataclasses.dataclass(frozen=True, slots=True)
class _Index:
    index: int | None  # None selects every element of a list


@dataclasses.dataclass(frozen=True, slots=True)
class _Filter:
    path: tuple[_Step, ...]
    op: str  # "" tests existence
    literal: Any = None


_Step = _Field | _Index | _Filter
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")


class _Parser:
    """Recursive descent over one path; positions index into ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def expect(self, token: str) -> None:
        if not self.peek(token):
            raise JSONPathError(f"expected {token!r} at {self.pos} in {self.text!r}")
        self.pos += len(token)

    def steps(self, stop: str = "") -> tuple[_Step, ...]:
        found: list[_Step] = []
        while self.pos < len(self.text) and not (stop and self.text[self.pos] in stop):
            if self.peek(".."):
                raise JSONPathError("recursive descent is not supported")
            if self.peek("."):
                self.pos += 1
                if self.peek("["):
                    continue
                found.append(_Field(self.name()))
            elif self.peek("["):
                found.append(self.bracket())
            else:
                raise JSONPathError(f"unexpected {self.text[self.pos]!r} in {self.text!r}")
        return tuple(found)

    def name(self) -> str:
        chars: list[str] = []
        while self.pos < len(self.text) and self.text[self.pos] not in ".[]()=!<> ":
            if self.peek("\\") and self.pos + 1 < len(self.text):
                self.pos += 1
            chars.append(self.text[self.pos])
            self.pos += 1
        if not chars:
            raise JSONPathError(f"empty field name at {self.pos} in {self.text!r}")
        return "".join(chars)

    def bracket(self) -> _Step:
        self.expect("[")
        if self.peek("?("):
            self.pos += 2
            step: _Step = self.filter()
            self.expect(")")
        elif self.peek("*"):
            self.pos += 1
            step = _Index(None)
        elif self.peek("'") or self.peek('"'):
            step = _Field(self.quoted())
        else:
            step = _Index(self.integer())
        self.expect("]")
        return step

    def filter(self) -> _Filter:
        self.expect("@")
        path = self.steps(stop=")=!<> ")
        self.skip_spaces()
        op = next((o for o in _OPERATORS if self.peek(o)), "")
        if not op:
            return _Filter(path, "")
        self.pos += len(op)
        self.skip_spaces()
        literal = self.literal()
        self.skip_spaces()
        return _Filter(path, op, literal)

    def literal(self) -> Any:
        if self.peek("'") or self.peek('"'):
            return self.quoted()
        end = self.pos
        while end < len(self.text) and self.text[end] not in ") ":
            end += 1
        raw, self.pos = self.text[self.pos : end], end
        if raw in ("true", "false"):
            return raw == "true"
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise JSONPathError(f"bad literal {raw!r} in {self.text!r}") from exc

    def quoted(self) -> str:
        quote = self.text[self.pos]
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise JSONPathError(f"unterminated string in {self.text!r}")
        value, self.pos = self.text[self.pos + 1 : end], end + 1
        return value

    def integer(self) -> int:
        end = self.pos + (1 if self.peek("-") else 0)
        while end < len(self.text) and self.text[end].isdigit():
            end += 1
        raw, self.pos = self.text[self.pos : end], end
        try:
            return int(raw)
        except ValueError as exc:
            raise JSONPathError(f"unsupported subscript in {self.text!r}") from exc

    def skip_spaces(self) -> None:
        while self.peek(" "):
            self.pos += 1


def parse_json_path(path: str) -> tuple[_Step, ...]:
    """The steps of ``path``; raises :class:`JSONPathError` outside the supported subset."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    parser = _Parser(text)
    return parser.steps()


def _step(values: list[Any], step: _Step) -> list[Any]:
    found: list[Any] = []
    for value in values:
        if isinstance(step, _Field):
            if isinstance(value, Mapping):
                if step.name == "*":
                    found.extend(value[k] for k in sorted(value))
                elif step.name in value:
                    found.append(value[step.name])
        elif isinstance(step, _Index):
            if isinstance(value, Mapping) and step.index is None:
                found.extend(value[k] for k in sorted(value))
            elif isinstance(value, list):
                if step.index is None:
                    found.extend(value)
                elif -len(value) <= step.index < len(value):
                    found.append(value[step.index])
        elif isinstance(value, list):
            found.extend(v for v in value if _matches(v, step))
    return found


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    numbers = (int, float)
    if not (isinstance(left, numbers) and isinstance(right, numbers)):
        return False
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]


def _matches(item: Any, step: _Filter) -> bool:
    results = evaluate(item, step.path)
    if not step.op:
        return bool(results)
    return any(_compare(r, step.op, step.literal) for r in results)


def evaluate(obj: Any, steps: Sequence[_Step]) -> list[Any]:
    """Every value ``steps`` reach from ``obj``; missing keys simply yield nothing."""
    values = [obj]
    for step in steps:
        values = _step(values, step)
    return values


# -- cells ---------------------------------------------------------------------------------


def _go_number(value: float) -> str:
    """A JSON number as Go's ``fmt`` prints a float64 (``3``, ``1.5``, ``1e+21``)."""
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def _as_text(value: Any) -> str | None:
    """How upstream's JSONPath printer shows a value: objects and lists as compact JSON."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_number(value)
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _as_date(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    parsed = common.parse_time(value)
    if parsed is None:
        return "<invalid>"
    # Upstream renders date columns as a human age ("5m"), as kubectl shows AGE.
    return common.human_duration((common.now() - parsed).total_seconds())


def cell(column_type: str, value: Any) -> Any:
    """Upstream ``cellForJSONValue``: a value of the declared type, else ``None``."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if column_type == "string":
        return _as_text(value)
    if column_type == "integer" and numeric:
        return int(value)
    if column_type == "number" and numeric:
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date":
        return _as_date(value)
    return None


# -- columns -------------------------------------------------------------------------------


def _column(spec: Mapping[str, Any]) -> common.Column:
    path = common.text(spec.get("jsonPath"))
    description = common.text(spec.get("description")) or (
        f"Custom resource definition column (in JSONPath format): {path}"
    )
    return common.column(
        common.text(spec.get("name")),
        description,
        col_type=common.text(spec.get("type"), "string"),
        priority=common.integer(spec.get("priority")),
        fmt=common.text(spec.get("format")),
    )


def _compile(spec: Mapping[str, Any]) -> tuple[_Step, ...] | None:
    try:
        return parse_json_path(common.text(spec.get("jsonPath")))
    except JSONPathError:
        return None


def printer(printer_columns: Sequence[Mapping[str, Any]] | None) -> common.Printer:
    """NAME plus the CRD's columns (AGE when it declares none), paths parsed once."""
    specs = list(printer_columns or DEFAULT_PRINTER_COLUMNS)
    columns = [common.NAME, *(_column(s) for s in specs)]
    compiled = [(common.text(s.get("type"), "string"), _compile(s)) for s in specs]

    def cells(obj: Object) -> list[Any]:
        row: list[Any] = [common.name(obj)]
        for column_type, steps in compiled:
            found = evaluate(obj, steps) if steps is not None else []
            row.append(cell(column_type, found[0]) if found else None)
        return row

    return columns, cells


def custom_columns(
    crd_printer_columns: Sequence[Mapping[str, Any]] | None, obj: Object
) -> tuple[list[common.Column], list[Any]]:
    """The column definitions and the cells of one custom resource."""
    columns, cells = printer(crd_printer_columns)
    return columns, cells(obj)
