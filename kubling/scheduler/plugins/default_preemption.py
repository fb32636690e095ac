"""DefaultPreemption: the PostFilter that runs :func:`kubling.scheduler.preemption.preempt`.

Its message is prefixed ``preemption:`` as upstream's, which is how the FailedScheduling
event tells filtering's verdict from preemption's.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from kubling.scheduler import preemption
from kubling.scheduler.interface import CycleState, Handle, PostFilterResult, Status
from kubling.scheduler.nodeinfo import PodInfo
from kubling.scheduler.snapshot import Snapshot

NAME = "DefaultPreemption"


class DefaultPreemption:
    name = NAME

    def __init__(self, handle: Handle, rng: random.Random | None = None) -> None:
        self._handle = handle
        self._rng = rng or random.Random()

    def post_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, statuses: Mapping[str, Status]
    ) -> tuple[PostFilterResult | None, Status]:
        result = preemption.preempt(self._handle, state, pod, snapshot, statuses, rng=self._rng)
        if not result.status.is_success:
            return None, Status(result.status.code, ("preemption: " + result.status.message,))
        victims = tuple(v.pod for v in result.victims)
        return PostFilterResult(result.nominated_node, victims), result.status


def new(args: Mapping[str, Any], handle: Handle) -> DefaultPreemption:
    rng = getattr(handle, "rng", None)
    return DefaultPreemption(handle, rng if isinstance(rng, random.Random) else None)
