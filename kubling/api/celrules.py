"""CRD validation rules: ``x-kubernetes-validations``, evaluated with CEL.

A rule sits on any node of a CRD's schema and sees that node's value as ``self`` (at the
root, the object with ``apiVersion``, ``kind`` and ``metadata.name``/``generateName``).
A rule that mentions ``oldSelf`` is a transition rule: it runs only on updates, and only
where the old value can be matched (object fields, map keys, ``listType: map`` items by
their keys). What a failure says follows apiextensions-apiserver:

- false: ``messageExpression``'s result, else ``message``, else ``failed rule: <rule>``,
  at the node's path (plus the rule's ``fieldPath``), as the rule's ``reason`` error
  (Invalid by default; the value is omitted for objects and arrays);
- a runtime error: ``<error> evaluating rule: <rule or message>``;
- a rule that does not compile is refused with the CRD (``compilation failed: ...``).

CEL is ``cel-python`` (the issue's choice; pure Python on ``lark``), with Kubernetes'
extension libraries it lacks added here: strings (``lowerAscii``, ``split``, ``join``,
``replace``, ``trim``, ``indexOf``...), lists (``isSorted``, ``sum``, ``min``, ``max``,
``indexOf``) and regex (``find``, ``findAll``). ``optionalOldSelf`` rules are not evaluated
on create (upstream evaluates them with an empty optional); cost budgets are not enforced,
and names other than ``self``/``oldSelf`` are reported when a rule runs, not when the CRD
is created (cel-python does not type-check).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from kubling.api import field

Schema = dict[str, Any]
_MAX_MESSAGE_EXPRESSION = 5 * 1024


def _runtime() -> Any:
    """cel-python, imported on first use: it costs ~50 ms at start, and most servers never
    see a rule."""
    from kubling.api import celruntime

    return celruntime


def compile_rule(expression: str) -> Any:
    return _runtime().compile_rule(expression)


# -- the CRD: do its rules compile? -----------------------------------------------------


def compile_errors(schema: Schema | None, path: str) -> list[field.FieldError]:
    """Rules of a CRD version's schema that do not compile, at their CRD field paths."""
    errors: list[field.FieldError] = []
    for node, node_path in _schema_nodes(schema, path):
        for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
            rule_path = f"{node_path}.x-kubernetes-validations[{i}]"
            if not isinstance(rule, dict) or not isinstance(rule.get("rule"), str) \
                    or not rule["rule"].strip():
                errors.append(field.required(f"{rule_path}.rule"))
                continue
            for key in ("rule", "messageExpression"):
                text = rule.get(key)
                if isinstance(text, str) and text.strip():
                    try:
                        compile_rule(text)
                    except ValueError as err:
                        errors.append(field.invalid(f"{rule_path}.{key}", text, str(err)))
    return errors


def _schema_nodes(schema: Any, path: str) -> Iterator[tuple[Schema, str]]:
    if not isinstance(schema, dict):
        return
    yield schema, path
    for name, child in (schema.get("properties") or {}).items():
        yield from _schema_nodes(child, f"{path}.properties[{name}]")
    yield from _schema_nodes(schema.get("items"), f"{path}.items")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _schema_nodes(extra, f"{path}.additionalProperties")


def has_rules(schema: Any) -> bool:
    return any(node.get("x-kubernetes-validations") for node, _ in _schema_nodes(schema, ""))


# -- an object: do its rules hold? -------------------------------------------------------


def validate(obj: Any, old: Any, schema: Schema | None) -> list[field.FieldError]:
    """Every rule of ``schema`` against ``obj`` (``old`` for transition rules, or None)."""
    if not isinstance(schema, dict) or not has_rules(schema):
        return []
    errors: list[field.FieldError] = []
    _walk(_root_view(obj), _root_view(old) if old is not None else None, schema, "", errors)
    return errors


def _root_view(obj: Any) -> Any:
    """The root as rules see it: metadata reduced to name and generateName."""
    if not isinstance(obj, dict):
        return obj
    view = dict(obj)
    md = obj.get("metadata") or {}
    view["metadata"] = {k: md[k] for k in ("name", "generateName") if k in md}
    return view


def _walk(value: Any, old: Any, schema: Schema, path: str,
          errors: list[field.FieldError]) -> None:
    if value is None:
        return  # null values are checked by rules on the enclosing schema
    rules = schema.get("x-kubernetes-validations")
    if rules:
        _check(value, old, schema, path, rules, errors)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        old_map = old if isinstance(old, dict) else {}
        for key, child in value.items():
            if isinstance(props.get(key), dict):
                _walk(child, old_map.get(key), props[key], f"{path}.{key}" if path else key,
                      errors)
            elif isinstance(extra, dict):
                _walk(child, old_map.get(key), extra, f"{path}[{key}]", errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        olds = _correlated_items(schema, old)
        for i, item in enumerate(value):
            _walk(item, olds(item), schema["items"], f"{path}[{i}]", errors)


def _correlated_items(schema: Schema, old: Any) -> Callable[[Any], Any]:
    """Old items by their map keys (``listType: map``); other lists do not correlate."""
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list) or not keys:
        return lambda item: None
    by_key = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
    return lambda item: by_key.get(tuple(item.get(k) for k in keys)) \
        if isinstance(item, dict) else None


def _cel_value(value: Any, schema: Schema) -> Any:
    """JSON data as CEL sees it through the schema: ``number`` fields are doubles."""
    kind = schema.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return {k: _cel_value(v, props[k] if isinstance(props.get(k), dict) else
                              extra if isinstance(extra, dict) else {})
                for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        return [_cel_value(v, items if isinstance(items, dict) else {}) for v in value]
    return value


def _type_name(schema: Schema) -> str:
    return str(schema.get("type") or "")


def _check(value: Any, old: Any, schema: Schema, path: str, rules: list[Any],
           errors: list[field.FieldError]) -> None:
    cel = _runtime()
    activation = cel.activation(_cel_value(value, schema),
                                None if old is None else _cel_value(old, schema))
    for rule in rules:
        if not isinstance(rule, dict) or not isinstance(rule.get("rule"), str):
            continue
        expression = rule["rule"]
        try:
            program = compile_rule(expression)
        except ValueError as err:
            errors.append(field.invalid(path, _type_name(schema), f"rule compile error: {err}"))
            continue
        if cel.uses_old_self(expression) and old is None:
            continue  # a transition rule: nothing to compare with
        shown = str(rule.get("message") or "").strip() or expression.strip()
        try:
            result = cel.run(program, activation)
        except cel.RuleError as err:
            reason = str(err)
            if reason == "no such overload":
                errors.append(field.invalid(
                    path, _type_name(schema),
                    f"'no such overload': call arguments did not match a supported operator, "
                    f"function or macro signature for rule: {shown}"))
            else:
                errors.append(field.invalid(path, _type_name(schema),
                                            f"{reason} evaluating rule: {shown}"))
            continue
        if result:
            continue
        detail = _message(rule, activation)
        where = _join_field_path(path, rule.get("fieldPath"))
        errors.append(_for_reason(rule.get("reason"), where, value, schema, detail))


def _message(rule: dict[str, Any], activation: dict[str, Any]) -> str:
    expression = rule.get("messageExpression")
    if isinstance(expression, str) and expression.strip():
        text = _runtime().message(expression, activation)
        if isinstance(text, str) and text.strip() and "\n" not in text.strip() \
                and len(text.strip()) <= _MAX_MESSAGE_EXPRESSION:
            return text.strip()
    message = str(rule.get("message") or "").strip()
    return message or f"failed rule: {str(rule['rule']).strip()}"


def _join_field_path(path: str, relative: Any) -> str:
    """The rule's ``fieldPath`` (``.spec.x``, ``['key']``) below the node's path."""
    if not isinstance(relative, str) or not relative:
        return path
    out = path
    for name, key in re.findall(r"\.([^.\[\]]+)|\['((?:[^'\\]|\\.)*)'\]", relative):
        out = f"{out}.{name}" if name and out else (name or f"{out}[{key}]")
    return out


def _for_reason(reason: Any, path: str, value: Any, schema: Schema,
                detail: str) -> field.FieldError:
    if reason == "FieldValueForbidden":
        return field.forbidden(path, detail)
    if reason == "FieldValueRequired":
        return field.required(path, detail)
    if reason == "FieldValueDuplicate":
        return field.duplicate(path, value)
    if _type_name(schema) in ("object", "array"):
        return field.FieldError(field.ErrorType.INVALID, path, detail)  # value omitted
    return field.invalid(path, value, detail)
