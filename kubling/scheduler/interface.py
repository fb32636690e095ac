"""The extension points: one tiny protocol each, as upstream's ``framework/interface.go``.

A plugin is any object with a ``name`` and the methods of the points it takes part in; the
framework discovers which by ``isinstance`` against these runtime-checkable protocols once,
when a profile is built, never in the per-node loop.

Contracts every plugin keeps:

* ``filter`` and ``score`` are called once per node per cycle and must be cheap: do per-pod
  work in ``pre_filter``/``pre_score`` (results go in the ``CycleState``) or use what
  ``PodInfo`` precomputed. They must not mutate the pod, the node or the snapshot.
* every rejection is a :class:`Status` carrying upstream's reason text, because those
  strings are what ``kubectl describe pod`` shows and what people search for.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
    from kubling.scheduler.owners import OwnerSelectors
    from kubling.scheduler.snapshot import Snapshot

__all__ = [
    "MAX_NODE_SCORE",
    "SKIP",
    "SUCCESS",
    "Code",
    "CycleState",
    "FilterPlugin",
    "Handle",
    "NormalizeScorePlugin",
    "Plugin",
    "PostFilterPlugin",
    "PostFilterResult",
    "PreFilterExtensions",
    "PreFilterPlugin",
    "PreFilterResult",
    "PreScorePlugin",
    "ScorePlugin",
    "Status",
]

#: Scores are integers in ``[0, MAX_NODE_SCORE]`` before the profile's weights apply.
MAX_NODE_SCORE = 100


class Code(enum.IntEnum):
    """Upstream's status codes, in upstream's order."""

    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    #: Preemption on this node cannot help (a taint, a selector): skip it when preempting.
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    WAIT = 4
    #: From pre_filter/pre_score: this plugin has nothing to say about this pod; skip it.
    SKIP = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """The outcome of one plugin call; a rejection carries its reasons, verbatim upstream text."""

    code: Code = Code.SUCCESS
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @classmethod
    def unschedulable(cls, *reasons: str, unresolvable: bool = False) -> Status:
        code = Code.UNSCHEDULABLE_AND_UNRESOLVABLE if unresolvable else Code.UNSCHEDULABLE
        return cls(code, reasons)

    @classmethod
    def error(cls, message: str) -> Status:
        return cls(Code.ERROR, (message,))

    @property
    def is_success(self) -> bool:
        return self.code is Code.SUCCESS

    @property
    def is_rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def with_plugin(self, plugin: str) -> Status:
        return self if self.plugin == plugin else dataclasses.replace(self, plugin=plugin)


#: Shared instances, so the hot loop compares identities instead of allocating.
SUCCESS = Status()
SKIP = Status(Code.SKIP)


class CycleState:
    """Per-cycle scratch space: plugins write in pre_filter/pre_score and read in the loop.

    Values that preemption may change (pods removed from a node "what if") must implement
    ``clone()``; :meth:`clone` copies those so a what-if never leaks into the real cycle.
    """

    __slots__ = ("data", "skip_filter", "skip_score")

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.skip_filter: set[str] = set()
        self.skip_score: set[str] = set()

    def read(self, key: str) -> Any:
        return self.data[key]

    def write(self, key: str, value: Any) -> None:
        self.data[key] = value

    def clone(self) -> CycleState:
        copy = CycleState()
        for key, value in self.data.items():
            cloner = getattr(value, "clone", None)
            copy.data[key] = cloner() if callable(cloner) else value
        copy.skip_filter = set(self.skip_filter)
        copy.skip_score = set(self.skip_score)
        return copy


@dataclasses.dataclass(frozen=True, slots=True)
class PreFilterResult:
    """A pre_filter may narrow the cycle to named nodes (``None`` means every node)."""

    node_names: frozenset[str] | None = None
    #: The plugins that narrowed the set, named in the reason given to the other nodes.
    plugins: tuple[str, ...] = ()

    def merge(self, other: PreFilterResult | None) -> PreFilterResult:
        if other is None or other.node_names is None:
            return self
        if self.node_names is None:
            return other
        return PreFilterResult(self.node_names & other.node_names, self.plugins + other.plugins)


@dataclasses.dataclass(frozen=True, slots=True)
class PostFilterResult:
    """What a post_filter (preemption) decided: where the pod should go once victims leave."""

    nominated_node: str | None = None
    victims: tuple[Mapping[str, Any], ...] = ()


@runtime_checkable
class Plugin(Protocol):
    name: str


@runtime_checkable
class PreFilterPlugin(Plugin, Protocol):
    def pre_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]: ...


@runtime_checkable
class PreFilterExtensions(Plugin, Protocol):
    """Keep pre_filter state right when preemption or nominated pods change a node's pods."""

    def add_pod(
        self, state: CycleState, pod: PodInfo, pod_to_add: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status: ...

    def remove_pod(
        self, state: CycleState, pod: PodInfo, pod_to_remove: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status: ...


@runtime_checkable
class FilterPlugin(Plugin, Protocol):
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status: ...


@runtime_checkable
class PostFilterPlugin(Plugin, Protocol):
    def post_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
        statuses: Mapping[str, Status],
    ) -> tuple[PostFilterResult | None, Status]: ...


@runtime_checkable
class PreScorePlugin(Plugin, Protocol):
    def pre_score(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: Sequence[NodeInfo]
    ) -> Status: ...


@runtime_checkable
class ScorePlugin(Plugin, Protocol):
    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int: ...


@runtime_checkable
class BatchScorePlugin(Plugin, Protocol):
    """A score plugin that can score a whole list of nodes in one call (kubling's own
    extension, not upstream's): the same scores as ``score`` node by node, without a Python
    call per node in the scheduler's hottest loop."""

    def score_nodes(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]
    ) -> list[int]: ...


@runtime_checkable
class NormalizeScorePlugin(Plugin, Protocol):
    """Scores are rescaled in place, aligned with ``nodes``, to ``[0, MAX_NODE_SCORE]``."""

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int]
    ) -> None: ...


class Handle(Protocol):
    """What a plugin may ask of the framework that built it (preemption re-runs filters,
    default spreading asks what owns a pod: ``None`` until the scheduler's caches exist)."""

    owner_selectors: OwnerSelectors | None

    def run_filter_plugins_with_nominated_pods(
        self, state: CycleState, pod: PodInfo, node: NodeInfo, snapshot: Snapshot
    ) -> Status: ...

    def run_pre_filter_extension_add_pod(
        self, state: CycleState, pod: PodInfo, pod_to_add: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status: ...

    def run_pre_filter_extension_remove_pod(
        self, state: CycleState, pod: PodInfo, pod_to_remove: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status: ...
