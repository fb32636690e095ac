"""The patch engine: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge.

One place applies every patch type, for the API server's PATCH verb and for anything else
that needs it. Strategic merge patch merges lists by their ``x-kubernetes-patch-merge-key``
from the upstream schema and honours the ``$patch``, ``$retainKeys``,
``$setElementOrder`` and ``$deleteFromPrimitiveList`` directives.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from kubling.api import schema as schema


class PatchError(ValueError):
    """The patch cannot be applied; the message is what the client is told."""


def json_patch(obj: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        return jsonpatch.JsonPatch(operations).apply(obj)
    except jsonpatch.JsonPatchConflict as err:
        raise PatchError(str(err)) from None
    except jsonpatch.JsonPatchException as err:
        raise PatchError(str(err)) from None
    except (jsonpatch.JsonPointerException, TypeError, KeyError, IndexError) as err:
        raise PatchError(
            f"the server rejected our request due to an error in our request: {err}"
        ) from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, definition: str | None) -> Any:
    """Apply a strategic merge patch against an object of schema ``definition``."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    return _smp_map(target if isinstance(target, dict) else {}, patch, definition)


def _property_schema(definition: str | None, name: str) -> tuple[dict[str, Any], str | None]:
    """The schema of a property and the definition its items/values refer to."""
    if definition is None:
        return {}, None
    resolved = schema.resolve(definition)
    if not resolved:
        return {}, None
    prop = (resolved.get("properties") or {}).get(name) or {}
    return prop, _ref_of(prop.get("items") or prop.get("additionalProperties") or prop)


def _ref_of(node: Any) -> str | None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return ref.rsplit("/", 1)[-1]
        for sub in node.get("allOf") or []:
            found = _ref_of(sub)
            if found:
                return found
    return None


def _smp_map(target: dict[str, Any], patch: dict[str, Any], definition: str | None) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            current = result.get(name)
            if isinstance(current, list) and isinstance(value, list):
                result[name] = [v for v in current if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        prop, child = _property_schema(definition, key)
        if isinstance(value, dict) and prop.get("type") != "array":
            existing = result.get(key)
            merged = _smp_map(
                existing if isinstance(existing, dict) else {},
                value,
                child if _ref_of(prop) is None else _ref_of(prop),
            )
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, prop, child)
        else:
            result[key] = copy.deepcopy(value)
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            name = key.split("/", 1)[1]
            prop, _ = _property_schema(definition, name)
            if isinstance(result.get(name), list) and isinstance(value, list):
                result[name] = _reorder(
                    result[name], value, prop.get("x-kubernetes-patch-merge-key")
                )
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(
    current: Any, patch: list[Any], prop: dict[str, Any], item_def: str | None
) -> list[Any]:
    strategy = str(prop.get("x-kubernetes-patch-strategy") or "")
    merge_key = prop.get("x-kubernetes-patch-merge-key")
    if "merge" not in strategy.split(","):
        return [
            _strip_directives(copy.deepcopy(v))
            for v in patch
            if not (isinstance(v, dict) and v.get("$patch") == "delete")
        ]
    base = list(current) if isinstance(current, list) else []
    if not merge_key:  # a merged list of primitives: union, in order
        for v in patch:
            if v not in base:
                base.append(copy.deepcopy(v))
        return base
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [
            _strip_directives(copy.deepcopy(v))
            for v in patch
            if not (isinstance(v, dict) and v.get("$patch") == "replace")
        ]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"merging list items by {merge_key}: item is not an object")
        key_value = item.get(merge_key)
        index = next(
            (
                i
                for i, v in enumerate(base)
                if isinstance(v, dict) and v.get(merge_key) == key_value
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del base[index]
            continue
        if index is None:
            base.append(_strip_directives(copy.deepcopy(item)))
        else:
            merged = _smp_map(base[index], item, item_def)
            if merged is None:
                del base[index]
            else:
                base[index] = merged
    return base


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _reorder(items: list[Any], order: list[Any], merge_key: Any) -> list[Any]:
    """Sort ``items`` as ``$setElementOrder`` says; items it does not name keep their place
    after the named ones."""

    def ident(v: Any) -> Any:
        return v.get(merge_key) if merge_key and isinstance(v, dict) else v

    wanted = [ident(v) for v in order]
    ordered = [v for w in wanted for v in items if ident(v) == w]
    rest = [v for v in items if ident(v) not in wanted]
    return ordered + rest
