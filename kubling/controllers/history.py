"""ControllerRevisions: the template history of StatefulSets and DaemonSets.

Both controllers record each version of their pod template as an ``apps/v1``
``ControllerRevision`` whose ``data`` is the strategic-merge patch that restores it
(``{"spec": {"template": {..., "$patch": "replace"}}}``) — the form ``kubectl rollout
undo`` sends back as a patch, so the history must keep exactly that shape. A revision
is named ``<owner>-<hash>`` and carries the owner's template labels (so the owner's selector
finds it) plus a hash label; when two different templates hash alike (a *collision*) the
owner's ``status.collisionCount`` goes into the hash, as upstream.

``kubectl rollout history`` lists these (the owner's controller reference and selector
find them) and ``kubectl rollout undo`` patches the owner with a revision's ``data``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.client import rest
from kubling.controllers import podcontrol

CONTROLLER_REVISIONS = rest.lookup("apps/v1", "controllerrevisions")

#: Pods (both controllers) and DaemonSet revisions: which revision a pod was made from.
CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"
#: StatefulSet revisions (upstream's ``history`` package): the hash of the revision's data.
REVISION_HASH_LABEL = "controller.kubernetes.io/hash"

_NAME_PREFIX_MAX = 223  # 253 minus room for "-" and the hash


# -- hashes and names ---------------------------------------------------------------------


def _fnv32(data: bytes) -> int:
    """FNV-1 (multiply, then xor), the variant upstream's ``HashControllerRevision`` uses
    (a template's hash, ``deployment_util.compute_hash``, is FNV-1a)."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h * 0x01000193) & 0xFFFFFFFF) ^ byte
    return h


def hash_revision(data: Object, collision_count: int | None) -> str:
    """The hash of a revision's data (and the collision count, when there is one)."""
    raw = podcontrol.canonical_json(data)
    if collision_count is not None:
        raw += str(collision_count).encode()
    return podcontrol.safe_encode(str(_fnv32(raw)))


def revision_name(owner_name: str, hash_: str) -> str:
    return f"{owner_name[:_NAME_PREFIX_MAX]}-{hash_}"


# -- revisions ----------------------------------------------------------------------------


def template_patch(owner: Object) -> Object:
    """The revision data for ``owner``'s current template (upstream ``getPatch``)."""
    template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def template_of(revision: Object) -> Object:
    """The pod template a revision records."""
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template"))
    if not isinstance(template, dict):
        return {}
    template.pop("$patch", None)
    return template


def apply_revision(owner: Object, revision: Object) -> Object:
    """A copy of ``owner`` whose template is the revision's (upstream ``ApplyRevision``)."""
    clone = copy.deepcopy(owner)
    clone.setdefault("spec", {})["template"] = template_of(revision)
    return clone


def revision_number(revision: Object) -> int:
    return int(revision.get("revision") or 0)


def sort_revisions(revisions: Iterable[Object]) -> list[Object]:
    """Oldest first: by revision number, then creation time, then name (as upstream)."""
    return sorted(revisions, key=lambda r: (
        revision_number(r), str(meta.metadata(r).get("creationTimestamp") or ""),
        meta.name_of(r)))


def new_revision(owner: Object, *, kind: str, data: Object, number: int, hash_label: str,
                 hash_: str) -> Object:
    """A ControllerRevision object for ``owner`` (not yet created)."""
    owner_md = meta.metadata(owner)
    template_md = ((owner.get("spec") or {}).get("template") or {}).get("metadata") or {}
    revision_labels = dict(template_md.get("labels") or {})
    revision_labels[hash_label] = hash_
    md: Object = {
        "name": revision_name(meta.name_of(owner), hash_),
        "namespace": meta.namespace_of(owner),
        "labels": revision_labels,
        "ownerReferences": [podcontrol.controller_ref(owner, api_version="apps/v1", kind=kind)],
    }
    if owner_md.get("annotations"):
        md["annotations"] = dict(owner_md["annotations"])
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": md,
            "data": data, "revision": number}


def same_data(a: Object, b: Object) -> bool:
    return podcontrol.canonical_json(a.get("data")) == podcontrol.canonical_json(b.get("data"))


async def create_revision(
    client: rest.Client, owner: Object, make: Callable[[int | None], Object],
    collision_count: int | None,
) -> tuple[Object, int | None]:
    """Create the revision ``make(collision_count)`` builds, stepping past hash collisions.

    A name that exists with *equal* data is that revision (someone, maybe we, made it
    earlier); with different data it is a collision, and the next count is tried. Returns
    the revision and the collision count that named it, which the owner's status keeps.
    """
    revisions = client.resource(CONTROLLER_REVISIONS)
    namespace = meta.namespace_of(owner)
    while True:
        revision = make(collision_count)
        try:
            return await revisions.create(revision, namespace=namespace), collision_count
        except rest.ApiError as err:
            if not rest.is_already_exists(err):
                raise
        existing = await revisions.get(meta.name_of(revision), namespace=namespace)
        owner_ref = podcontrol.controller_of(existing)
        if (same_data(existing, revision) and owner_ref is not None
                and owner_ref.get("uid") == podcontrol.uid_of(owner)):
            return existing, collision_count
        collision_count = (collision_count or 0) + 1


def selector_of(owner: Object) -> labels.Selector:
    """The owner's ``spec.selector``; an unparsable one selects nothing."""
    try:
        return labels.from_label_selector((owner.get("spec") or {}).get("selector"))
    except labels.SelectorError:
        return labels.nothing()
