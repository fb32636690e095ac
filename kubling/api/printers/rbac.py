"""Columns of role bindings; roles and cluster roles keep the default NAME / CREATED AT,
as upstream registers no printer for them."""

from __future__ import annotations

from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

_GROUP = "rbac.authorization.k8s.io"


def _binding_columns(what: str) -> list[common.Column]:
    return [
        common.NAME,
        common.column("Role", "RoleRef can reference a Role in the current namespace or a "
                      "ClusterRole in the global namespace."),
        common.AGE,
        common.wide("Users", f"Users in the {what}"),
        common.wide("Groups", f"Groups in the {what}"),
        common.wide("ServiceAccounts", f"ServiceAccounts in the {what}"),
    ]


def subjects(obj: Object) -> tuple[str, str, str]:
    """USERS, GROUPS and SERVICEACCOUNTS (``namespace/name``), each joined by ``, ``."""
    users: list[str] = []
    groups: list[str] = []
    accounts: list[str] = []
    for subject in common.dicts(obj.get("subjects")):
        kind, subject_name = subject.get("kind"), common.text(subject.get("name"))
        if kind == "ServiceAccount":
            accounts.append(f"{common.text(subject.get('namespace'))}/{subject_name}")
        elif kind == "User":
            users.append(subject_name)
        elif kind == "Group":
            groups.append(subject_name)
    return ", ".join(users), ", ".join(groups), ", ".join(accounts)


def binding_cells(obj: Object) -> list[Any]:
    ref = common.mapping(obj.get("roleRef"))
    role = f"{common.text(ref.get('kind'))}/{common.text(ref.get('name'))}"
    return [common.name(obj), role, common.age(obj), *subjects(obj)]


PRINTERS: dict[tuple[str, str], common.Printer] = {
    (_GROUP, "RoleBinding"): (_binding_columns("roleBinding"), binding_cells),
    (_GROUP, "ClusterRoleBinding"): (_binding_columns("clusterRoleBinding"), binding_cells),
}
