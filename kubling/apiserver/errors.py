"""The one place that turns a failure into a Kubernetes ``Status``.

Every error a client can see is an ``APIError`` carrying the HTTP code, the ``reason``
and a message worded as kube-apiserver words it; the HTTP layer serializes it. Helpers
here name the upstream constructors (``NewNotFound``, ``NewConflict``...) so call sites
read like the Kubernetes code their behaviour mirrors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubling.api import field


class APIError(Exception):
    """A failure to answer with a ``Status`` (never a traceback)."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(group: str, resource: str, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return details


def _qualified(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> APIError:
    return APIError(
        404,
        "NotFound",
        f'{_qualified(group, resource)} "{name}" not found',
        details=_details(group, resource, name),
    )


def already_exists(group: str, resource: str, name: str) -> APIError:
    return APIError(
        409,
        "AlreadyExists",
        f'{_qualified(group, resource)} "{name}" already exists',
        details=_details(group, resource, name),
    )


def conflict(group: str, resource: str, name: str, why: str) -> APIError:
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(group, resource)} "{name}": {why}',
        details=_details(group, resource, name),
    )


#: Upstream's wording for a stale ``resourceVersion`` on update.
OBJECT_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(group: str, kind: str, name: str, errors: Sequence[field.FieldError]) -> APIError:
    qualified = f"{kind}.{group}" if group else kind
    if len(errors) == 1:
        summary = str(errors[0])
    else:
        summary = "[" + ", ".join(str(e) for e in errors) + "]"
    causes = [{"reason": e.type.reason, "message": e.message, "field": e.field} for e in errors]
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = causes
    return APIError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details=details)


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def forbidden(group: str, resource: str, name: str, why: str) -> APIError:
    target = _qualified(group, resource) + (f' "{name}"' if name else "")
    return APIError(
        403, "Forbidden", f"{target} is forbidden: {why}", details=_details(group, resource, name)
    )


def unauthorized() -> APIError:
    return APIError(401, "Unauthorized", "Unauthorized")


def method_not_supported(group: str, resource: str, verb: str) -> APIError:
    return APIError(
        405,
        "MethodNotAllowed",
        f"{verb} is not supported on resources of kind {_qualified(group, resource)!r}",
        details=_details(group, resource, ""),
    )


def path_not_found() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource")


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def too_old_resource_version(requested: int, oldest: int) -> APIError:
    return gone(f"too old resource version: {requested} ({oldest})")


def too_large_resource_version(requested: int, current: int) -> APIError:
    return APIError(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        details={
            "causes": [
                {
                    "reason": "ResourceVersionTooLarge",
                    "message": "Too large resource version",
                }
            ],
            "retryAfterSeconds": 1,
        },
    )


MEDIA_TYPES = "application/json, application/yaml, application/vnd.kubernetes.protobuf"


def unsupported_media_type() -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + MEDIA_TYPES,
    )


def not_acceptable() -> APIError:
    return APIError(
        406, "NotAcceptable", f"only the following media types are accepted: {MEDIA_TYPES}"
    )


def request_entity_too_large(limit: int) -> APIError:
    return APIError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def internal(message: str) -> APIError:
    return APIError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        details={"causes": [{"message": message}]},
    )


def service_unavailable(message: str) -> APIError:
    return APIError(503, "ServiceUnavailable", message)
