"""Field errors: what validation returns, worded as Kubernetes' ``field.ErrorList``.

The API server turns a list of these into one 422 ``Invalid`` Status whose message reads
``<Kind>.<group> "<name>" is invalid: [<field>: <type>: <detail>, ...]`` and whose
``details.causes`` carry one entry per error, exactly as kube-apiserver does.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import orjson


class ErrorType(enum.Enum):
    """The upstream error types: (Status cause reason, message prefix)."""

    NOT_FOUND = ("FieldValueNotFound", "Not found")
    REQUIRED = ("FieldValueRequired", "Required value")
    DUPLICATE = ("FieldValueDuplicate", "Duplicate value")
    INVALID = ("FieldValueInvalid", "Invalid value")
    NOT_SUPPORTED = ("FieldValueNotSupported", "Unsupported value")
    FORBIDDEN = ("FieldValueForbidden", "Forbidden")
    TOO_LONG = ("FieldValueTooLong", "Too long")
    TOO_MANY = ("FieldValueTooMany", "Too many")
    INTERNAL = ("InternalError", "Internal error")
    TYPE_INVALID = ("FieldValueTypeInvalid", "Invalid value")

    @property
    def reason(self) -> str:
        return self.value[0]

    @property
    def prefix(self) -> str:
        return self.value[1]


_NO_VALUE = object()


class GoStringSlice(tuple[str, ...]):
    """A ``[]string`` value, rendered as Go's ``%#v`` prints it: ``[]string{"a", "b"}``
    (upstream's wording for list values such as ``spec.clusterIPs``)."""

    __slots__ = ()

    def render(self) -> str:
        return "[]string{" + ", ".join(orjson.dumps(s).decode() for s in self) + "}"


def render_value(value: Any) -> str:
    """Render a bad value the way Go's ``%#v``-ish formatting in field errors reads."""
    if isinstance(value, GoStringSlice):
        return value.render()
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclasses.dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field, e.g. ``spec.containers[0].image: Required value``."""

    type: ErrorType
    field: str
    detail: str = ""
    value: Any = _NO_VALUE

    @property
    def message(self) -> str:
        """The text after ``<field>: `` as upstream prints it."""
        text = self.type.prefix
        if self.value is not _NO_VALUE and self.type in (
            ErrorType.INVALID,
            ErrorType.NOT_SUPPORTED,
            ErrorType.DUPLICATE,
            ErrorType.NOT_FOUND,
            ErrorType.TYPE_INVALID,
            ErrorType.TOO_MANY,
        ):
            text += ": " + render_value(self.value)
        if self.detail:
            text += ": " + self.detail
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(ErrorType.REQUIRED, field, detail)


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(ErrorType.INVALID, field, detail, value)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(ErrorType.FORBIDDEN, field, detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError(ErrorType.DUPLICATE, field, "", value)


def not_supported(field: str, value: Any, supported: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(f'"{s}"' for s in supported)
    return FieldError(ErrorType.NOT_SUPPORTED, field, detail, value)


def too_long(field: str, max_length: int) -> FieldError:
    return FieldError(ErrorType.TOO_LONG, field, f"may not be more than {max_length} bytes")


def too_many(field: str, actual: int, max_items: int) -> FieldError:
    """``Too many: 21: must have at most 20 items``, as upstream words it."""
    return FieldError(ErrorType.TOO_MANY, field, f"must have at most {max_items} items", actual)


def immutable(field: str, value: Any = _NO_VALUE) -> FieldError:
    """The upstream wording for an immutable field that changed."""
    return FieldError(ErrorType.INVALID, field, "field is immutable", value)


class Path:
    """Builds field paths the upstream way: ``spec.containers[0].image``, ``data[key]``."""

    __slots__ = ("_text",)

    def __init__(self, text: str = "") -> None:
        self._text = text

    def child(self, name: str) -> Path:
        return Path(f"{self._text}.{name}" if self._text else name)

    def index(self, i: int) -> Path:
        return Path(f"{self._text}[{i}]")

    def key(self, k: str) -> Path:
        return Path(f"{self._text}[{k}]")

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Path({self._text!r})"
