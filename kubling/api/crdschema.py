"""Custom resources: their types from a CustomResourceDefinition, and their schemas.

A CRD's ``spec.versions[*].schema.openAPIV3Schema`` is a structural schema. As upstream's
apiextensions-apiserver does, objects are defaulted (``default``), pruned (fields the
schema does not know are dropped unless ``x-kubernetes-preserve-unknown-fields``) and then
validated (types, required, enum, bounds, lengths, patterns, list types), with
upstream's error wording (``spec.size in body must be of type integer: "string"``).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from kubling.api import field
from kubling.api.meta import Object
from kubling.api.resources import ALL_VERBS, SUBRESOURCE_RW, ResourceType, Subresource

Schema = dict[str, Any]

_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


# -- CRD → served resource types ------------------------------------------------------------

def storage_version(crd: Object) -> str:
    for version in (crd.get("spec") or {}).get("versions") or []:
        if isinstance(version, dict) and version.get("storage"):
            return str(version.get("name", ""))
    return ""


def version_of(crd: Object, name: str) -> dict[str, Any] | None:
    for version in (crd.get("spec") or {}).get("versions") or []:
        if isinstance(version, dict) and version.get("name") == name:
            return version
    return None


def resource_types(crd: Object) -> list[ResourceType]:
    """One ResourceType per served version of an established CRD."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    stored = storage_version(crd)
    kind = names.get("kind", "")
    types = []
    for version in spec.get("versions") or []:
        if not isinstance(version, dict) or not version.get("served"):
            continue
        subs = version.get("subresources") or {}
        subresources: list[Subresource] = []
        if "status" in subs:
            subresources.append(Subresource("status", kind, SUBRESOURCE_RW))
        if "scale" in subs:
            subresources.append(Subresource("scale", "Scale", SUBRESOURCE_RW,
                                            group="autoscaling", version="v1"))
        name = version.get("name", "")
        types.append(ResourceType(
            group=group,
            version=name,
            kind=kind,
            plural=names.get("plural", ""),
            singular=names.get("singular") or kind.lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            verbs=ALL_VERBS,
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=tuple(subresources),
            storage_version=f"{group}/{stored}" if stored and stored != name else "",
        ))
    return types


def openapi_schema(crd: Object, version: str) -> Schema | None:
    v = version_of(crd, version)
    if v is None:
        return None
    schema = (v.get("schema") or {}).get("openAPIV3Schema")
    return schema if isinstance(schema, dict) else None


# -- defaulting ---------------------------------------------------------------------------

def apply_defaults(obj: Any, schema: Schema | None) -> None:
    """Fill ``default`` values of absent fields, recursively, in place."""
    if schema is None or not isinstance(obj, dict | list):
        return
    if isinstance(obj, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                if not isinstance(sub, dict):
                    continue
                if name not in obj and "default" in sub:
                    obj[name] = copy.deepcopy(sub["default"])
                if name in obj:
                    apply_defaults(obj[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                if not isinstance(props, dict) or key not in props:
                    apply_defaults(value, extra)
    else:
        items = schema.get("items")
        if isinstance(items, dict):
            for value in obj:
                apply_defaults(value, items)


# -- pruning ------------------------------------------------------------------------------

def prune(obj: Any, schema: Schema | None, path: str = "", *, root: bool = True) -> list[str]:
    """Drop fields the schema does not specify; return their paths (for unknown-field
    warnings and ``fieldValidation=Strict``)."""
    if schema is None or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    unknown: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if schema.get("x-kubernetes-embedded-resource"):
            root = True
        for key in list(obj):
            child = f"{path}.{key}" if path else key
            if root and key in _ROOT_FIELDS:
                continue
            if isinstance(props, dict) and key in props:
                unknown += prune(obj[key], props[key], child, root=False)
            elif isinstance(extra, dict):
                unknown += prune(obj[key], extra, child, root=False)
            elif extra is True:
                continue
            else:
                unknown.append(child)
                del obj[key]
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, value in enumerate(obj):
                unknown += prune(value, items, f"{path}[{i}]", root=False)
    return unknown


# -- validation ---------------------------------------------------------------------------

_JSON_TYPES = {
    "string": (str,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _matches_type(value: Any, wanted: str) -> bool:
    if wanted == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if wanted == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    types = _JSON_TYPES.get(wanted)
    return types is None or isinstance(value, types)


def validate(obj: Object, schema: Schema | None) -> list[field.FieldError]:
    """Validate a custom resource (after defaulting and pruning) against its schema."""
    if schema is None:
        return []
    errors: list[field.FieldError] = []
    _validate(obj, schema, "", errors, root=True)
    return errors


def _validate(value: Any, schema: Schema, path: str, errors: list[field.FieldError], *,
              root: bool = False) -> None:
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            errors.append(field.invalid(path, "null",
                                        f"{path} in body must be of type {schema['type']}: "
                                        '"null"'))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            errors.append(field.invalid(path, _type_name(value),
                                        f"{path} in body must be of type integer,string: "
                                        f'"{_type_name(value)}"'))
            return
    elif schema.get("type") and not _matches_type(value, schema["type"]):
        errors.append(field.invalid(path, _type_name(value),
                                    f"{path} in body must be of type {schema['type']}: "
                                    f'"{_type_name(value)}"'))
        return
    _check_scalar(value, schema, path, errors)
    if isinstance(value, dict):
        _check_object(value, schema, path, errors, root=root)
    elif isinstance(value, list):
        _check_array(value, schema, path, errors)


def _check_scalar(value: Any, schema: Schema, path: str, errors: list[field.FieldError]) -> None:
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        errors.append(field.not_supported(path, value, [str(e) for e in enum]))
    if isinstance(value, int | float) and not isinstance(value, bool):
        maximum, minimum = schema.get("maximum"), schema.get("minimum")
        if maximum is not None:
            if schema.get("exclusiveMaximum") and value >= maximum:
                errors.append(field.invalid(path, value,
                                            f"{path} in body should be less than {maximum}"))
            elif value > maximum:
                errors.append(field.invalid(
                    path, value, f"{path} in body should be less than or equal to {maximum}"))
        if minimum is not None:
            if schema.get("exclusiveMinimum") and value <= minimum:
                errors.append(field.invalid(path, value,
                                            f"{path} in body should be greater than {minimum}"))
            elif value < minimum:
                errors.append(field.invalid(
                    path, value, f"{path} in body should be greater than or equal to {minimum}"))
    if isinstance(value, str):
        max_length, min_length = schema.get("maxLength"), schema.get("minLength")
        if isinstance(max_length, int) and len(value) > max_length:
            errors.append(field.FieldError(field.ErrorType.TOO_LONG, path,
                                           f"may not be more than {max_length} bytes"))
        if isinstance(min_length, int) and len(value) < min_length:
            errors.append(field.invalid(
                path, value, f"{path} in body should be at least {min_length} chars long"))
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                ok = re.search(pattern, value) is not None
            except re.error:
                ok = True
            if not ok:
                errors.append(field.invalid(path, value,
                                            f"{path} in body should match '{pattern}'"))


def _check_object(value: dict[str, Any], schema: Schema, path: str,
                  errors: list[field.FieldError], *, root: bool) -> None:
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(field.required(f"{path}.{name}" if path else name))
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, child in value.items():
        if root and key in _ROOT_FIELDS:
            continue
        sub_path = f"{path}.{key}" if path else key
        if isinstance(props, dict) and key in props and isinstance(props[key], dict):
            _validate(child, props[key], sub_path, errors)
        elif isinstance(extra, dict):
            _validate(child, extra, f"{path}[{key}]" if path else key, errors)
    max_props, min_props = schema.get("maxProperties"), schema.get("minProperties")
    if isinstance(max_props, int) and len(value) > max_props:
        errors.append(field.too_many(path, len(value), max_props))
    if isinstance(min_props, int) and len(value) < min_props:
        errors.append(field.invalid(path, len(value),
                                    f"{path} in body should have at least {min_props} properties"))


def _check_array(value: list[Any], schema: Schema, path: str,
                 errors: list[field.FieldError]) -> None:
    max_items, min_items = schema.get("maxItems"), schema.get("minItems")
    if isinstance(max_items, int) and len(value) > max_items:
        errors.append(field.too_many(path, len(value), max_items))
    if isinstance(min_items, int) and len(value) < min_items:
        errors.append(field.invalid(path, len(value),
                                    f"{path} in body should have at least {min_items} items"))
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" or schema.get("uniqueItems"):
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                errors.append(field.duplicate(f"{path}[{i}]", item))
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[tuple[Any, ...]] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                ident = tuple(item.get(k) for k in keys)
                if ident in seen_keys:
                    errors.append(field.duplicate(f"{path}[{i}]", dict(zip(keys, ident,
                                                                           strict=True))))
                seen_keys.append(ident)
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", errors)


# -- is the schema structural? ---------------------------------------------------------


def structural_errors(schema: Any, path: str) -> list[field.FieldError]:
    """Why a CRD version's schema is not structural, as apiextensions words it; a v1 CRD
    with any of these is refused (types everywhere, an object at the root, properties or
    additionalProperties but not both, no ``$ref``, no ``uniqueItems``)."""
    errors: list[field.FieldError] = []
    _structural(schema, path, "root", errors)
    return errors


_EMPTY_TYPE = {"root": "must not be empty at the root",
               "item": "must not be empty for specified array items",
               "field": "must not be empty for specified object fields"}


def _structural(schema: Any, path: str, level: str, errors: list[field.FieldError]) -> None:
    if not isinstance(schema, dict):
        return
    kind = schema.get("type") or ""
    if schema.get("x-kubernetes-embedded-resource") and kind != "object":
        message = "must be object if x-kubernetes-embedded-resource is true"
        errors.append(field.invalid(f"{path}.type", kind, message) if kind
                      else field.required(f"{path}.type", message))
    elif not kind and not schema.get("x-kubernetes-int-or-string") and \
            not schema.get("x-kubernetes-preserve-unknown-fields"):
        errors.append(field.required(f"{path}.type", _EMPTY_TYPE[level]))
    if level == "root" and kind and kind != "object":
        errors.append(field.invalid(f"{path}.type", kind, "must be object at the root"))
    if "$ref" in schema:
        errors.append(field.forbidden(f"{path}.$ref", "$ref is not supported"))
    if schema.get("uniqueItems") is True:
        errors.append(field.forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to "
                                      "true since the runtime complexity becomes quadratic"))
    props, extra = schema.get("properties"), schema.get("additionalProperties")
    if props and extra is not None and extra is not True:
        errors.append(field.forbidden(f"{path}.additionalProperties",
                                      "additionalProperties and properties are mutual "
                                      "exclusive"))
    for name, child in (props or {}).items():
        _structural(child, f"{path}.properties[{name}]", "field", errors)
    if isinstance(extra, dict):
        _structural(extra, f"{path}.additionalProperties", "field", errors)
    if "items" in schema:
        _structural(schema["items"], f"{path}.items", "item", errors)
