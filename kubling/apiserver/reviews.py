"""The review APIs: who am I, may I, what may I (``kubectl auth whoami|can-i``).

These resources are never stored: a create answers the question at once (upstream's
REST storage for them is create-only too). Access reviews ask the same ``Authorizer``
that guards every request, so ``kubectl auth can-i`` tells the truth once RBAC fills it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubling.api.meta import Object
from kubling.apiserver import authz, errors
from kubling.apiserver.authn import UserInfo
from kubling.apiserver.requestinfo import RequestInfo

Review = Callable[[Object, UserInfo, authz.Authorizer, str], Awaitable[Object]]


def _user_info(user: UserInfo) -> Object:
    info: Object = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    if user.extra:
        info["extra"] = {k: list(v) for k, v in user.extra.items()}
    return info


async def self_subject_review(obj: Object, user: UserInfo, _authorizer: authz.Authorizer,
                              _namespace: str) -> Object:
    obj["status"] = {"userInfo": _user_info(user)}
    return obj


def _attributes(spec: Mapping[str, Any], namespace: str) -> RequestInfo:
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if isinstance(resource, dict):
        return RequestInfo(
            True, "", str(resource.get("verb", "")), api_prefix="apis",
            group=str(resource.get("group", "")), version=str(resource.get("version", "")),
            namespace=namespace or str(resource.get("namespace", "")),
            resource=str(resource.get("resource", "")),
            subresource=str(resource.get("subresource", "")),
            name=str(resource.get("name", "")))
    if isinstance(non_resource, dict):
        return RequestInfo(False, str(non_resource.get("path", "")),
                           str(non_resource.get("verb", "")))
    raise errors.invalid("authorization.k8s.io", "SelfSubjectAccessReview", "", [
        _field_required("spec.resourceAttributes")])


def _field_required(path: str) -> Any:
    from kubling.api import field

    return field.FieldError(field.ErrorType.INVALID, path, "exactly one of "
                            "nonResourceAttributes or resourceAttributes must be specified",
                            "null")


async def _decide(obj: Object, subject: UserInfo, authorizer: authz.Authorizer,
                  namespace: str) -> Object:
    spec = obj.get("spec") or {}
    decision = await authorizer.authorize(subject, _attributes(spec, namespace))
    status: Object = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    obj["status"] = status
    return obj


async def self_subject_access_review(obj: Object, user: UserInfo,
                                     authorizer: authz.Authorizer, namespace: str) -> Object:
    return await _decide(obj, user, authorizer, namespace)


async def subject_access_review(obj: Object, _user: UserInfo, authorizer: authz.Authorizer,
                                namespace: str) -> Object:
    """Someone else's access: the subject comes from the spec (user, groups, uid)."""
    spec = obj.get("spec") or {}
    if not spec.get("user") and not spec.get("groups"):
        from kubling.api import field

        raise errors.invalid("authorization.k8s.io", "SubjectAccessReview", "", [
            field.FieldError(field.ErrorType.INVALID, "spec.user", "at least one of user "
                             "or group must be specified", "")])
    subject = UserInfo(str(spec.get("user", "")), tuple(spec.get("groups") or ()),
                       str(spec.get("uid", "")),
                       {k: tuple(v) for k, v in (spec.get("extra") or {}).items()})
    return await _decide(obj, subject, authorizer, namespace)


async def self_subject_rules_review(obj: Object, user: UserInfo,
                                    authorizer: authz.Authorizer, namespace: str) -> Object:
    spec = obj.get("spec") or {}
    resource_rules, non_resource_rules, incomplete = await authorizer.rules(
        user, namespace or str(spec.get("namespace", "")))
    obj["status"] = {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                     "incomplete": incomplete}
    return obj


#: (group, plural) → how a create of that review is answered.
REVIEWS: dict[tuple[str, str], Review] = {
    ("authentication.k8s.io", "selfsubjectreviews"): self_subject_review,
    ("authorization.k8s.io", "selfsubjectaccessreviews"): self_subject_access_review,
    ("authorization.k8s.io", "subjectaccessreviews"): subject_access_review,
    ("authorization.k8s.io", "localsubjectaccessreviews"): subject_access_review,
    ("authorization.k8s.io", "selfsubjectrulesreviews"): self_subject_rules_review,
}
