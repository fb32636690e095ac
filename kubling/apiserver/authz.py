"""Authorization: may this user do this verb on this resource? The seam RBAC fills.

Until the RBAC authorizer exists, every authenticated user may do everything — the same
answer ``AlwaysAllow`` gives upstream — and anonymous callers only the public paths.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from kubling.apiserver.authn import UserInfo
from kubling.apiserver.requestinfo import RequestInfo


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


Rules = list[dict[str, list[str]]]


class Authorizer(Protocol):
    async def authorize(self, user: UserInfo, info: RequestInfo) -> Decision: ...

    async def rules(self, user: UserInfo, namespace: str) -> tuple[Rules, Rules, bool]:
        """What ``user`` may do in ``namespace``: resource rules, non-resource rules, and
        whether the list is incomplete (SelfSubjectRulesReview, ``kubectl auth can-i --list``)."""
        ...


class AllowAuthenticated:
    """Everyone with valid credentials may do anything; anonymous callers nothing."""

    async def authorize(self, user: UserInfo, info: RequestInfo) -> Decision:
        if "system:authenticated" in user.groups:
            return Decision(True)
        return Decision(False, "anonymous access is not allowed")

    async def rules(self, user: UserInfo, namespace: str) -> tuple[Rules, Rules, bool]:
        if "system:authenticated" not in user.groups:
            return [], [], False
        return ([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                [{"verbs": ["*"], "nonResourceURLs": ["*"]}], False)


def forbidden_message(user: UserInfo, info: RequestInfo) -> str:
    """Upstream's wording: ``User "x" cannot list resource "pods" in API group "" ...``."""
    if not info.is_resource_request:
        return f'User "{user.name}" cannot {info.verb} path "{info.path}"'
    resource = info.resource + (f"/{info.subresource}" if info.subresource else "")
    text = f'User "{user.name}" cannot {info.verb} resource "{resource}" in API group "{info.group}"'
    if info.namespace:
        text += f' in the namespace "{info.namespace}"'
    else:
        text += " at the cluster scope"
    return text
