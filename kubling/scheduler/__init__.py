"""kubling.scheduler: decides which node each pending pod runs on, as kube-scheduler does.

The core is pure and synchronous, so it is fast to test and to benchmark:

* :class:`~kubling.scheduler.snapshot.Snapshot` — the nodes and the pods placed on them;
* :class:`~kubling.scheduler.framework.Framework` — one profile's plugins; ``schedule(pod,
  snapshot)`` returns a :class:`ScheduleResult` or a :class:`FitError` (which may carry a
  preemption decision: ``nominated_node`` and ``victims``);
* :class:`~kubling.scheduler.queue.SchedulingQueue` — activeQ, backoffQ, unschedulable pods;
* ``plugins/`` — one module per plugin, registered by name in ``plugins.REGISTRY``.

The wiring (informers, binding, events) feeds the snapshot and the queue and acts on the
results; only it talks to the API.
"""

from kubling.scheduler.framework import (
    FitError,
    Framework,
    PluginSpec,
    Profile,
    ScheduleResult,
    SchedulingError,
)
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.queue import ClusterEvent, QueuedPodInfo, SchedulingQueue
from kubling.scheduler.snapshot import Snapshot

__all__ = [
    "ClusterEvent",
    "FitError",
    "Framework",
    "NodeInfo",
    "PluginSpec",
    "PodInfo",
    "Profile",
    "QueuedPodInfo",
    "ScheduleResult",
    "SchedulingError",
    "SchedulingQueue",
    "Snapshot",
]
