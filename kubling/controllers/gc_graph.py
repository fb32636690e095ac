"""The garbage collector's dependency graph: who owns whom, by uid, and nothing else.

The graph is the garbage collector's memory of the cluster: one ``Node`` per object seen
(its identity, its ``ownerReferences`` and the uids of its dependents, a few flags) and no
object bodies, so it costs the same for a 10-byte ConfigMap as for a 1 MB one. Owners that
are referenced but not (yet) seen get a *virtual* node, which the collector verifies with a
live GET: absent, its dependents are orphans of a dangling reference and are collected.

``Graph.observe`` and ``Graph.forget`` apply what an informer saw and return ``Work``: the
uids to hand to the collector's *attempt to delete* and *attempt to orphan* queues, as
upstream's ``GraphBuilder.processGraphChanges`` does. The graph does no I/O and is owned
by one task at a time (the collector's graph worker, plus the delete worker's removal of
verified-absent nodes, all on one event loop with no ``await`` inside a mutation).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kubling.api import meta

ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object's identity: what a live GET or a DELETE needs."""

    uid: str
    api_version: str
    kind: str
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}.{self.api_version} {where}{self.name} (uid {self.uid})"


@dataclasses.dataclass(frozen=True, slots=True)
class OwnerRef:
    """One ``ownerReferences`` entry, as the collector reads it."""

    uid: str
    api_version: str
    kind: str
    name: str
    controller: bool = False
    block_owner_deletion: bool = False

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> OwnerRef:
        return cls(
            uid=str(entry.get("uid") or ""), api_version=str(entry.get("apiVersion") or ""),
            kind=str(entry.get("kind") or ""), name=str(entry.get("name") or ""),
            controller=bool(entry.get("controller")),
            block_owner_deletion=bool(entry.get("blockOwnerDeletion")),
        )


def owner_refs(obj: Mapping[str, Any]) -> tuple[OwnerRef, ...]:
    md = obj.get("metadata")
    entries = md.get("ownerReferences") if isinstance(md, dict) else None
    return tuple(OwnerRef.parse(e) for e in entries or () if isinstance(e, dict) and e.get("uid"))


def finalizers_of(obj: Mapping[str, Any]) -> tuple[str, ...]:
    md = obj.get("metadata")
    return tuple(md.get("finalizers") or ()) if isinstance(md, dict) else ()


def being_deleted(obj: Mapping[str, Any]) -> bool:
    md = obj.get("metadata")
    return bool(md.get("deletionTimestamp")) if isinstance(md, dict) else False


def deleting_dependents(obj: Mapping[str, Any]) -> bool:
    """Upstream's "deleting dependents": marked for deletion with ``foregroundDeletion``."""
    return being_deleted(obj) and FOREGROUND_FINALIZER in finalizers_of(obj)


def orphaning(obj: Mapping[str, Any]) -> bool:
    return being_deleted(obj) and ORPHAN_FINALIZER in finalizers_of(obj)


@dataclasses.dataclass(eq=False, slots=True)
class Node:
    """One object (or, ``virtual``, an owner only known from a reference to it)."""

    ref: ObjectRef
    owners: tuple[OwnerRef, ...] = ()
    dependents: set[str] = dataclasses.field(default_factory=set)
    virtual: bool = False
    being_deleted: bool = False
    deleting_dependents: bool = False


@dataclasses.dataclass
class Work:
    """What a graph change asks the collector to look at (uids, in order, no repeats)."""

    attempt_to_delete: dict[str, None] = dataclasses.field(default_factory=dict)
    attempt_to_orphan: dict[str, None] = dataclasses.field(default_factory=dict)

    def delete(self, uids: Iterable[str]) -> None:
        for uid in uids:
            self.attempt_to_delete[uid] = None

    def orphan(self, uid: str) -> None:
        self.attempt_to_orphan[uid] = None


class Graph:
    """uid → ``Node``; dependents are kept on the owner's node as uids."""

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, uid: object) -> bool:
        return uid in self._nodes

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes.values()))

    def get(self, uid: str) -> Node | None:
        return self._nodes.get(uid)

    def dependents(self, uid: str) -> list[Node]:
        node = self._nodes.get(uid)
        if node is None:
            return []
        return [dep for d in sorted(node.dependents) if (dep := self._nodes.get(d)) is not None]

    def blocking_dependents(self, uid: str) -> list[Node]:
        """Dependents whose reference to ``uid`` has ``blockOwnerDeletion``: a foreground
        deletion of ``uid`` waits for them."""
        return [dep for dep in self.dependents(uid)
                if any(o.uid == uid and o.block_owner_deletion for o in dep.owners)]

    # -- changes ------------------------------------------------------------------------
    def observe(self, ref: ObjectRef, obj: Mapping[str, Any]) -> Work:
        """An informer has ``obj`` (added or changed), whose identity is ``ref``."""
        work = Work()
        owners = owner_refs(obj)
        node = self._nodes.get(ref.uid)
        if node is None:
            node = self._nodes[ref.uid] = Node(ref=ref)
            self._link(node, owners, work)
        else:
            if node.virtual:
                # Seen at last. A reference may have named it wrongly; dependents are
                # re-checked so that a wrong identity is verified by a live GET.
                node.virtual = False
                work.delete(node.dependents)
            node.ref = ref
            old = {o.uid: o for o in node.owners}
            new = {o.uid: o for o in owners}
            for gone in old.keys() - new.keys():
                self._unlink(node.ref.uid, gone, work)
            added = [o for o in owners if o.uid not in old]
            changed = [o.uid for o in owners if o.uid in old and old[o.uid] != o]
            node.owners = owners
            self._link(node, added, work, assign=False)
            # An owner waiting for dependents may be unblocked by a changed reference.
            work.delete(u for u in changed if self._waiting(u))
        was_deleting_dependents = node.deleting_dependents
        node.being_deleted = being_deleted(obj)
        node.deleting_dependents = deleting_dependents(obj)
        if orphaning(obj):
            work.orphan(node.ref.uid)
        if node.deleting_dependents:
            if not was_deleting_dependents:
                work.delete(node.dependents)
            work.delete([node.ref.uid])
        return work

    def forget(self, uid: str) -> Work:
        """The object ``uid`` is gone: drop it; its dependents lost an owner."""
        work = Work()
        node = self._nodes.pop(uid, None)
        if node is None:
            return work
        for owner in node.owners:
            self._unlink(uid, owner.uid, work)
        # Dependents now reference an absent owner: each is checked (and, with no owner
        # left alive, collected). The uids stay in their owner references until then.
        work.delete(node.dependents)
        return work

    def _link(self, node: Node, owners: Iterable[OwnerRef], work: Work, *,
              assign: bool = True) -> None:
        owners = tuple(owners)
        if assign:
            node.owners = owners
        for owner in owners:
            owner_node = self._nodes.get(owner.uid)
            if owner_node is None:
                # A virtual owner: verified by the delete worker; absent, it is dangling.
                owner_node = self._nodes[owner.uid] = Node(
                    ref=ObjectRef(owner.uid, owner.api_version, owner.kind, owner.name,
                                  node.ref.namespace),
                    virtual=True,
                )
                work.delete([owner.uid])
            owner_node.dependents.add(node.ref.uid)
            if owner_node.deleting_dependents:
                work.delete([owner.uid])

    def _unlink(self, dependent: str, owner_uid: str, work: Work) -> None:
        owner = self._nodes.get(owner_uid)
        if owner is None:
            return
        owner.dependents.discard(dependent)
        if owner.virtual and not owner.dependents:
            del self._nodes[owner_uid]  # nothing refers to it any more
        elif owner.deleting_dependents:
            work.delete([owner_uid])  # one fewer dependent to wait for

    def _waiting(self, uid: str) -> bool:
        node = self._nodes.get(uid)
        return node is not None and node.deleting_dependents


def ref_of(obj: Mapping[str, Any], api_version: str, kind: str) -> ObjectRef:
    """The identity of an object an informer of ``api_version``/``kind`` delivered."""
    md = obj.get("metadata")
    uid = str(md.get("uid") or "") if isinstance(md, dict) else ""
    return ObjectRef(uid, api_version, kind, meta.name_of(dict(obj)),
                     meta.namespace_of(dict(obj)))


class AbsentOwners:
    """A bounded LRU of owners a live GET found missing, as upstream's ``absentOwnerCache``:
    when a thousand pods lose their ReplicaSet, one GET tells, not a thousand."""

    def __init__(self, size: int = 500) -> None:
        self.size = size
        self._keys: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()

    def add(self, uid: str, namespace: str) -> None:
        self._keys[(uid, namespace)] = None
        self._keys.move_to_end((uid, namespace))
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys
