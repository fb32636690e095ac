"""What the controllers that own pods (and owners of owners) share: upstream's ``controller``
package utilities, written once.

- ``WallClock``: calendar time that follows the context's ``Clock``, so that a test's
  ``FakeClock.advance`` moves ``minReadySeconds`` and progress deadlines too;
- ``Expectations``: creations and deletions a controller has sent but its informer has not
  shown yet. They are recorded *before* the writes go out, so that a reconcile running
  while the cache lags never creates or deletes twice;
- object and pod state: conditions, ``replicas``, terminal, active, ready, available
  (ready for ``minReadySeconds``), taints tolerated;
- controller references and ``RefManager.claim`` (adopt matching orphans, release owned
  objects that stopped matching) with upstream's strategic-merge patches, which carry the
  object's uid as a precondition;
- ``slow_start_batch``: create in batches of 1, 2, 4, ... so a failing create (quota,
  admission) fails once rather than a thousand times;
- ``pods_to_delete``: upstream's ranking of which pods a scale-down removes first;
- ``StatusWrites``: a controller's own status writes, until its informer shows them;
- hashing: the canonical JSON and ``safe_encode`` that template and revision hashes share.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import functools
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import orjson

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.client import clock as clocks
from kubling.client import informer, rest

PODS = rest.lookup("v1", "pods")

#: An expectation the informer never confirms (a lost event) stops blocking after this.
EXPECTATIONS_TIMEOUT = 300.0
#: Upstream's ``controller.pod-deletion-cost`` annotation: lower costs are deleted first.
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"


#: What a write through the API can fail with: an answer (``ApiError``) or no answer.
API_FAILURES = cast(tuple[type[Exception], ...], (rest.ApiError, *rest.TRANSPORT_ERRORS))


# -- time ----------------------------------------------------------------------------------


class WallClock:
    """Seconds since the epoch, advancing with ``clock`` from the moment of construction."""

    def __init__(self, clock: clocks.Clock) -> None:
        self.clock = clock
        self._offset = time.time() - clock.monotonic()

    def now(self) -> float:
        return self.clock.monotonic() + self._offset

    def stamp(self) -> str:
        """``metav1.Time`` for now: RFC 3339, whole seconds, UTC."""
        return format_time(self.now())


def format_time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    """A ``metav1.Time`` string as seconds since the epoch; ``None`` if absent or malformed."""
    parsed = meta.parse_time(value)
    return None if parsed is None else parsed.timestamp()


# -- expectations --------------------------------------------------------------------------


@dataclasses.dataclass
class _Expected:
    adds: int
    deletes: set[str]
    set_at: float


class Expectations:
    """Per controller key: how many creations, and which deletions (pod keys), are in flight.

    The reconcile records them before writing; informer handlers lower them as the events
    arrive, and the reconcile lowers them for writes that failed. Tracking deletions by pod
    key (upstream's ``UIDTrackingControllerExpectations``) means a pod seen first as
    terminating and then as deleted is counted once.
    """

    def __init__(self, clock: clocks.Clock) -> None:
        self.clock = clock
        self._items: dict[str, _Expected] = {}

    def expect_creations(self, key: str, count: int) -> None:
        self._items[key] = _Expected(count, set(), self.clock.monotonic())

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        self._items[key] = _Expected(0, set(pod_keys), self.clock.monotonic())

    def creation_observed(self, key: str) -> None:
        item = self._items.get(key)
        if item is not None:
            item.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        item = self._items.get(key)
        if item is not None:
            item.deletes.discard(pod_key)

    def satisfied(self, key: str) -> bool:
        """True when nothing is in flight, or the record is too old to trust."""
        item = self._items.get(key)
        if item is None or (item.adds <= 0 and not item.deletes):
            return True
        return self.clock.monotonic() - item.set_at > EXPECTATIONS_TIMEOUT

    def pending(self, key: str) -> tuple[int, int]:
        item = self._items.get(key)
        return (0, 0) if item is None else (max(item.adds, 0), len(item.deletes))

    def forget(self, key: str) -> None:
        self._items.pop(key, None)


# -- pods ------------------------------------------------------------------------------------


def find_condition(obj: Object, type_: str) -> Object | None:
    """The first of ``status.conditions`` of type ``type_`` (any object), if any."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == type_:
            return cond
    return None


def replicas_of(owner: Object) -> int:
    """``spec.replicas`` of a workload (or a ``Scale``): 1 when unset, as defaulting does."""
    value = (owner.get("spec") or {}).get("replicas")
    return int(value) if isinstance(value, int) else 1


def phase_of(pod: Object) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_terminating(obj: Object) -> bool:
    """``metadata.deletionTimestamp`` is set (on any object)."""
    return bool(meta.metadata(obj).get("deletionTimestamp"))


def is_pod_terminal(pod: Object) -> bool:
    """``Succeeded`` or ``Failed``: no container of the pod will run again."""
    return phase_of(pod) in ("Succeeded", "Failed")


def is_pod_active(pod: Object) -> bool:
    """Neither finished nor being deleted: a pod that still counts towards ``replicas``."""
    return not is_pod_terminal(pod) and not is_terminating(pod)


def ready_condition(pod: Object) -> Object | None:
    return find_condition(pod, "Ready")


def is_pod_ready(pod: Object) -> bool:
    cond = ready_condition(pod)
    return cond is not None and cond.get("status") == "True"


def ready_since(pod: Object) -> float | None:
    """When a ready pod became ready (its Ready condition's ``lastTransitionTime``)."""
    cond = ready_condition(pod)
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def available_in(pod: Object, min_ready_seconds: int, now: float) -> float | None:
    """Seconds until the pod counts as available: 0 if it is, ``None`` if it cannot be yet
    (not ready, or ready without a transition time while ``minReadySeconds`` is set)."""
    if not is_pod_ready(pod):
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = ready_since(pod)
    if since is None:
        return None
    # Upstream: available once lastTransitionTime + minReadySeconds is *before* now.
    remaining = since + min_ready_seconds - now
    return 0.0 if remaining < 0 else remaining


def is_pod_available(pod: Object, min_ready_seconds: int, now: float) -> bool:
    return available_in(pod, min_ready_seconds, now) == 0.0


def tolerates(toleration: Object, taint: Object) -> bool:
    """Upstream ``Toleration.ToleratesTaint``: an empty key or effect matches any."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    if toleration.get("key") and toleration.get("key") != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


# -- controller references -------------------------------------------------------------------


def controller_ref(owner: Object, *, api_version: str, kind: str) -> Object:
    """An ``ownerReference`` naming ``owner`` as controller (upstream ``NewControllerRef``)."""
    md = meta.metadata(owner)
    return {"apiVersion": api_version, "kind": kind, "name": md.get("name"),
            "uid": md.get("uid"), "controller": True, "blockOwnerDeletion": True}


def controller_of(obj: Object) -> Object | None:
    """The owner reference with ``controller: true``, if any."""
    for ref in meta.metadata(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def uid_of(obj: Object) -> str:
    return str(meta.metadata(obj).get("uid") or "")


def controller_uid_index(obj: Object) -> list[str]:
    """An ``Indexer`` function: objects by the uid of their controller (``[]`` for none)."""
    ref = controller_of(obj)
    return [str(ref.get("uid"))] if ref is not None and ref.get("uid") else []


def resolve_controller_ref(indexer: informer.Indexer, namespace: str, ref: Object | None,
                           kind: str) -> Object | None:
    """The cached owner a controller reference points at, if it is of ``kind`` and the
    uid still matches (a recreated owner of the same name is someone else)."""
    if ref is None or ref.get("kind") != kind:
        return None
    owner = indexer.get(f"{namespace}/{ref.get('name')}" if namespace else str(ref.get("name")))
    if owner is None or uid_of(owner) != ref.get("uid"):
        return None
    return owner


class RefManager:
    """Adopts and releases one owner's dependents (upstream ``ControllerRefManager``).

    ``recheck`` is awaited once, before the first adoption: it must fail if the owner is
    gone or being deleted according to a fresh read, because the cache may lag and a
    deleted owner must not adopt (the garbage collector would then delete the orphan).
    """

    def __init__(self, resource: rest.Resource, owner: Object, *, selector: labels.Selector,
                 owner_ref: Object, recheck: Callable[[], Awaitable[None]]) -> None:
        self.resource = resource
        self.owner = owner
        self.selector = selector
        self.owner_ref = owner_ref
        self._recheck = recheck
        self._rechecked = False

    async def claim(self, candidates: Iterable[Object]) -> list[Object]:
        """The candidates the owner controls once orphans are adopted and strays released.

        Failures (other than the object being gone) are raised after every candidate has
        been looked at, so that one bad object does not starve the others.
        """
        uid = uid_of(self.owner)
        deleting = is_terminating(self.owner)
        claimed: list[Object] = []
        failure: Exception | None = None
        for obj in candidates:
            ref = controller_of(obj)
            matches = self.selector.matches(meta.labels_of(obj))
            try:
                if ref is not None:
                    if ref.get("uid") != uid:
                        continue  # someone else's
                    if matches:
                        claimed.append(obj)
                    elif not deleting:
                        await self._release(obj)
                    continue
                if deleting or is_terminating(obj) or not matches:
                    continue
                if await self._adopt(obj):
                    claimed.append(obj)
            except API_FAILURES as err:
                failure = failure or err
        if failure is not None:
            raise failure
        return claimed

    async def _adopt(self, obj: Object) -> bool:
        if not self._rechecked:
            await self._recheck()
            self._rechecked = True
        body = {"metadata": {"ownerReferences": [self.owner_ref], "uid": uid_of(obj)}}
        try:
            await self.resource.patch(meta.name_of(obj), body, namespace=meta.namespace_of(obj),
                                      type="strategic")
        except rest.ApiError as err:
            if rest.is_not_found(err):
                return False  # gone: nothing to adopt
            raise
        return True

    async def _release(self, obj: Object) -> None:
        body = {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid_of(self.owner)}],
                             "uid": uid_of(obj)}}
        try:
            await self.resource.patch(meta.name_of(obj), body, namespace=meta.namespace_of(obj),
                                      type="strategic")
        except rest.ApiError as err:
            if not (rest.is_not_found(err) or rest.is_invalid(err)):
                raise  # gone, or being deleted: nothing to release


def owner_recheck(resource: rest.Resource, owner: Object) -> Callable[[], Awaitable[None]]:
    """A ``RefManager.recheck`` that re-reads ``owner`` from the API server."""

    async def recheck() -> None:
        fresh = await resource.get(meta.name_of(owner), namespace=meta.namespace_of(owner))
        if uid_of(fresh) != uid_of(owner):
            raise RuntimeError(f"original {meta.namespace_of(owner)}/{meta.name_of(owner)} is "
                               f"gone: got uid {uid_of(fresh)}, wanted {uid_of(owner)}")
        if is_terminating(fresh):
            raise RuntimeError(f"{meta.namespace_of(owner)}/{meta.name_of(owner)} has just "
                               "been deleted")

    return recheck


# -- creating pods ---------------------------------------------------------------------------


def pod_from_template(template: Object, *, namespace: str, generate_name: str,
                      owner_ref: Object) -> Object:
    """A pod as upstream's ``GetPodFromTemplate`` makes it: the template's labels,
    annotations, finalizers and spec, a ``generateName`` and the controller reference."""
    template_md = template.get("metadata") or {}
    md: Object = {
        "namespace": namespace,
        "generateName": generate_name,
        "labels": dict(template_md.get("labels") or {}),
        "ownerReferences": [owner_ref],
    }
    for key in ("annotations", "finalizers"):
        if template_md.get(key):
            md[key] = copy.deepcopy(template_md[key])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": copy.deepcopy(template.get("spec") or {})}


def namespace_terminating(err: BaseException) -> bool:
    """A create refused because the namespace is going away (upstream ignores these)."""
    if not isinstance(err, rest.ApiError):
        return False
    causes = err.status.details.get("causes") or []
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


async def slow_start_batch(count: int, initial: int,
                           fn: Callable[[], Awaitable[None]]) -> tuple[int, Exception | None]:
    """Call ``fn`` ``count`` times, in concurrent batches doubling from ``initial``; stop
    after the first batch with a failure. Returns the successes and the first failure."""
    remaining, successes = count, 0
    batch = min(remaining, initial)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        successes += batch - len(failures)
        if failures:
            first = failures[0]
            assert isinstance(first, Exception)
            return successes, first
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


# -- choosing pods to delete -----------------------------------------------------------------

_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def _deletion_cost(pod: Object) -> int:
    raw = (meta.metadata(pod).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    try:
        return int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        return 0


def _max_restarts(pod: Object) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(s.get("restartCount") or 0) for s in statuses if isinstance(s, dict)),
               default=0)


def _log_rank_diff(t1: float, t2: float, now: float) -> int:
    """Compare two instants by the power-of-two bucket of their age in nanoseconds
    (upstream's LogarithmicScaleDown), so that pods of about the same age tie."""
    def rank(t: float) -> int:
        age = (now - t) * 1e9
        return int(math.log2(age)) if age > 0 else -1
    return rank(t1) - rank(t2)


def _compare_time(t1: float | None, t2: float | None, now: float, uid1: str,
                  uid2: str) -> int | None:
    """-1 when ``t1`` goes first: a missing time first of all, then the younger (by
    log-scale age bucket, then uid); ``None`` when the times are equal."""
    if t1 == t2:
        return None
    if t1 is None or t2 is None:
        return -1 if t1 is None else 1
    diff = _log_rank_diff(t1, t2, now)
    if diff == 0:
        return -1 if uid1 < uid2 else (1 if uid1 > uid2 else 0)
    return -1 if diff < 0 else 1


def pods_to_delete(pods: Sequence[Object], related: Iterable[Object], count: int,
                   now: float) -> list[Object]:
    """The ``count`` pods a scale-down removes: the least useful first, in upstream's order
    (``ActivePodsWithRanks``): unassigned before assigned; Pending, Unknown, Running; not
    ready before ready; lower ``pod-deletion-cost`` first; more colocated with the owner's
    (and its siblings') pods first; ready more recently first; more restarts first; newer
    first."""
    if count >= len(pods):
        return list(pods)
    on_node: dict[str, int] = {}
    for pod in related:
        if is_pod_active(pod):
            node = str((pod.get("spec") or {}).get("nodeName") or "")
            on_node[node] = on_node.get(node, 0) + 1

    def node_of(pod: Object) -> str:
        return str((pod.get("spec") or {}).get("nodeName") or "")

    def compare(a: Object, b: Object) -> int:
        na, nb = node_of(a), node_of(b)
        if na != nb and (not na or not nb):
            return -1 if not na else 1
        pa, pb = _PHASE_ORDER.get(phase_of(a), 0), _PHASE_ORDER.get(phase_of(b), 0)
        if pa != pb:
            return -1 if pa < pb else 1
        ra, rb = is_pod_ready(a), is_pod_ready(b)
        if ra != rb:
            return -1 if not ra else 1
        ca, cb = _deletion_cost(a), _deletion_cost(b)
        if ca != cb:
            return -1 if ca < cb else 1
        da, db = on_node.get(na, 0), on_node.get(nb, 0)
        if da != db:
            return -1 if da > db else 1
        if ra and rb:
            verdict = _compare_time(ready_since(a), ready_since(b), now, uid_of(a), uid_of(b))
            if verdict is not None:
                return verdict
        xa, xb = _max_restarts(a), _max_restarts(b)
        if xa != xb:
            return -1 if xa > xb else 1
        created_a = parse_time(meta.metadata(a).get("creationTimestamp"))
        created_b = parse_time(meta.metadata(b).get("creationTimestamp"))
        verdict = _compare_time(created_a, created_b, now, uid_of(a), uid_of(b))
        return verdict if verdict is not None else 0

    return sorted(pods, key=functools.cmp_to_key(compare))[:count]


def label_subset(required: dict[str, Any], have: dict[str, str]) -> bool:
    """Whether ``have`` carries every label of ``required`` with the same value."""
    return all(have.get(k) == v for k, v in required.items())


# -- our own status writes -------------------------------------------------------------------


def resource_version(obj: Object) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class StatusWrites:
    """What our own status writes returned, until the informer shows them.

    A reconcile that follows a status write before its watch event arrives would read the
    replaced version from the cache and fail with a conflict. ``fresher`` hands it the
    written object instead while the cache still shows a version one of our writes
    replaced; once the cache shows anything else (our write, or someone else's), the
    cache is the truth again. Used by the Job and CronJob controllers.
    """

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[set[str], Object]] = {}

    def fresher(self, key: str, cached: Object) -> Object:
        known = self._by_key.get(key)
        if known is None:
            return cached
        replaced, written = known
        if resource_version(cached) in replaced:
            return written
        del self._by_key[key]
        return cached

    def wrote(self, key: str, sent: Object, returned: Object) -> None:
        replaced = self._by_key[key][0] if key in self._by_key else set()
        replaced.add(resource_version(sent))
        self._by_key[key] = (replaced, returned)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)


# -- hashing ---------------------------------------------------------------------------------

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys: what template and revision hashes are computed over."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def safe_encode(text: str) -> str:
    """Upstream ``rand.SafeEncodeString``: no vowels, so a hash never spells a word."""
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in text)
