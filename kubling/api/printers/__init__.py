"""Server-side printers: the per-kind columns of ``kubectl get``, as kube-apiserver has them.

Importing the package registers every built-in kind's printer in ``tables.COLUMNS``;
``kubling.api.tables`` imports it, so any Table built has them. Kinds upstream prints with
the default (roles, cluster roles, limit ranges, CRDs, ...) are deliberately absent. One
module per API group (pods and events have their own), each exporting ``PRINTERS``.
"""

from __future__ import annotations

from kubling.api import tables
from kubling.api.printers import (
    apps,
    batch,
    core,
    events,
    networking,
    other,
    pods,
    rbac,
    storage,
)
from kubling.api.printers.custom import custom_columns, printer

__all__ = ["custom_columns", "printer", "register"]


def register() -> None:
    """Put every module's printers into ``tables.COLUMNS`` (idempotent)."""
    for module in (pods, core, events, apps, batch, networking, rbac, storage, other):
        tables.COLUMNS.update(module.PRINTERS)


register()
