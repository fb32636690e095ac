"""cel-python behind ``celrules``: compiling and running rules, Kubernetes' extension
libraries, and cel-go's wording for what goes wrong. Imported only when a schema has rules.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError


class RuleError(Exception):
    """A rule failed to run; the text is cel-go's (``no such key: x``...)."""


def _s(value: Any) -> celtypes.StringType:
    return celtypes.StringType(value)


def _index_of(target: Any, item: Any, start: Any = 0) -> celtypes.IntType:
    if isinstance(target, str):
        return celtypes.IntType(str(target).find(str(item), int(start)))
    values = list(target)
    return celtypes.IntType(values.index(item) if item in values else -1)


def _last_index_of(target: Any, item: Any) -> celtypes.IntType:
    if isinstance(target, str):
        return celtypes.IntType(str(target).rfind(str(item)))
    values = list(target)
    return celtypes.IntType(len(values) - 1 - values[::-1].index(item) if item in values
                            else -1)


def _split(text: Any, sep: Any, limit: Any = -1) -> celtypes.ListType:
    parts = list(str(text)) if sep == "" else str(text).split(str(sep))
    if int(limit) > 0 and len(parts) > int(limit):
        parts = [*parts[: int(limit) - 1], str(sep).join(parts[int(limit) - 1:])]
    return celtypes.ListType([_s(p) for p in parts])


def _replace(text: Any, old: Any, new: Any, count: Any = -1) -> celtypes.StringType:
    return _s(str(text).replace(str(old), str(new), int(count)))


def _substring(text: Any, start: Any, end: Any = None) -> celtypes.StringType:
    return _s(str(text)[int(start): None if end is None else int(end)])


def _join(values: Any, sep: Any = "") -> celtypes.StringType:
    return _s(str(sep).join(str(v) for v in values))


def _find(text: Any, pattern: Any) -> celtypes.StringType:
    match = re.search(str(pattern), str(text))
    return _s(match.group(0) if match else "")


def _find_all(text: Any, pattern: Any, limit: Any = -1) -> celtypes.ListType:
    found = [_s(m.group(0)) for m in re.finditer(str(pattern), str(text))]
    return celtypes.ListType(found if int(limit) < 0 else found[: int(limit)])


def _is_sorted(values: Any) -> celtypes.BoolType:
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(list(values))))


#: Kubernetes' CEL libraries that cel-python does not ship.
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "charAt": lambda text, i: _s(str(text)[int(i): int(i) + 1]),
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda text: _s(str(text).lower()),
    "upperAscii": lambda text: _s(str(text).upper()),
    "trim": lambda text: _s(str(text).strip()),
    "replace": _replace,
    "split": _split,
    "substring": _substring,
    "join": _join,
    "find": _find,
    "findAll": _find_all,
    "isSorted": _is_sorted,
    "sum": lambda values: sum(values, celtypes.IntType(0)) if not values or isinstance(
        next(iter(values)), celtypes.IntType) else sum(values, celtypes.DoubleType(0)),
    "min": lambda values: min(values),
    "max": lambda values: max(values),
}


@functools.cache
def _env() -> celpy.Environment:
    """Built on first use: the CEL parser takes a while to build, and most servers never
    see a rule."""
    return celpy.Environment()


@functools.lru_cache(maxsize=4096)
def compile_rule(expression: str) -> Any:
    """A runnable rule (cached); ValueError worded like cel-go's when it does not parse."""
    try:
        tree = _env().compile(expression)
    except CELParseError as err:
        raise ValueError(f"compilation failed: ERROR: {_parse_error(err, expression)}") from None
    return _env().program(tree, functions=_FUNCTIONS)


def _parse_error(err: CELParseError, expression: str) -> str:
    """``<input>:line:column: Syntax error: mismatched input 'x'`` from lark's report."""
    cause = err.__cause__ or err.__context__
    token = getattr(cause, "token", None)
    line = int(getattr(cause, "line", None) or getattr(err, "line", None) or 1)
    column = int(getattr(cause, "column", None) or getattr(err, "column", None) or 1)
    if token is not None and getattr(token, "type", "") == "$END":
        lines = expression.splitlines() or [""]
        line, column, shown = len(lines), len(lines[-1]) + 1, "<EOF>"
    else:
        shown = str(token) if token is not None else ""
    return f"<input>:{line}:{column}: Syntax error: mismatched input '{shown}'"


def uses_old_self(expression: str) -> bool:
    return re.search(r"\boldSelf\b", expression) is not None


def _eval_error(err: CELEvalError) -> str:
    """cel-python's runtime errors in cel-go's words."""
    message = str(err.args[0]) if err.args else str(err)
    cause = err.args[1] if len(err.args) > 1 else None
    if cause is KeyError and "no such member" in message:
        return "no such key: " + message.split("'")[1] if "'" in message else message
    if "divide by zero" in message:
        return "division by zero"
    if cause is IndexError:
        return "index out of bounds"
    if message.startswith("undeclared reference to"):
        return message.split(" (in activation", 1)[0]
    if "no matching overload" in message or cause is TypeError:
        return "no such overload"
    return message




def activation(value: Any, old: Any) -> dict[str, Any]:
    """``self`` (and ``oldSelf`` when there is an old value) as CEL values."""
    variables = {"self": json_to_cel(value)}
    if old is not None:
        variables["oldSelf"] = json_to_cel(old)
    return variables


def run(program: Any, variables: dict[str, Any]) -> bool:
    try:
        result = program.evaluate(variables)
    except CELEvalError as err:
        raise RuleError(_eval_error(err)) from None
    return isinstance(result, celtypes.BoolType) and bool(result)


def message(expression: str, variables: dict[str, Any]) -> str | None:
    """A ``messageExpression``'s string, or None when it fails or is not a string."""
    try:
        text = compile_rule(expression).evaluate(variables)
    except (ValueError, CELEvalError):
        return None
    return str(text) if isinstance(text, str) else None
