"""The scheduling queue with a fake clock: ordering, backoff, unschedulable pool, events."""

from __future__ import annotations

from typing import Any

from kubling.scheduler import queue as q
from kubling.scheduler.queue import SchedulingQueue
from tests.scheduler.util import make_pod


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[SchedulingQueue, FakeClock]:
    clock = FakeClock()
    return SchedulingQueue(clock=clock), clock


def pod(name: str, priority: int = 0, **kw: Any) -> dict[str, Any]:
    return make_pod(name, priority=priority, **kw)


def names(queue: SchedulingQueue) -> list[str]:
    out = []
    while (item := queue.pop()) is not None:
        out.append(item.pod_info.name)
    return out


def test_active_queue_orders_by_priority_then_arrival() -> None:
    queue, clock = setup()
    for name, priority in (("low", 0), ("high", 100), ("low2", 0), ("mid", 50)):
        queue.add(pod(name, priority))
        clock.now += 1
    assert names(queue) == ["high", "mid", "low", "low2"]


def test_backoff_doubles_per_attempt_up_to_ten_seconds() -> None:
    queue, _ = setup()
    queue.add(pod("p"))
    item = queue.pop()
    assert item is not None
    durations = []
    for attempts in range(1, 7):
        item.attempts = attempts
        durations.append(queue.backoff_duration(item))
    assert durations == [1, 2, 4, 8, 10, 10]


def test_failed_pod_waits_in_unschedulable_until_a_relevant_event() -> None:
    queue, clock = setup()
    queue.add(pod("p"))
    item = queue.pop()
    assert item is not None
    queue.add_unschedulable(item, queue.scheduling_cycle, ["NodeResourcesFit"])
    assert queue.pending()["unschedulable"] == ["default/p"]
    assert queue.move_all_to_active_or_backoff(q.PVC_ADD) == 0  # irrelevant to the plugin
    clock.now += 0.5
    assert queue.move_all_to_active_or_backoff(q.ASSIGNED_POD_DELETE) == 1
    assert queue.pending()["backoff"] == ["default/p"]  # still within its 1s backoff
    assert queue.pop() is None
    clock.now += 0.6
    popped = queue.pop()
    assert popped is not None and popped.attempts == 2


def test_event_after_backoff_goes_straight_to_active() -> None:
    queue, clock = setup()
    queue.add(pod("p"))
    item = queue.pop()
    assert item is not None
    queue.add_unschedulable(item, queue.scheduling_cycle, ["TaintToleration"])
    clock.now += 5
    queue.move_all_to_active_or_backoff(q.NODE_ADD)
    assert queue.pending()["active"] == ["default/p"]


def test_event_during_the_cycle_sends_the_pod_to_backoff() -> None:
    queue, clock = setup()
    queue.add(pod("p"))
    item = queue.pop()
    assert item is not None
    cycle = queue.scheduling_cycle
    queue.move_all_to_active_or_backoff(q.NODE_ADD)  # e.g. a node joined mid-cycle
    queue.add_unschedulable(item, cycle, ["NodeResourcesFit"])
    assert queue.pending()["backoff"] == ["default/p"]
    clock.now += 1
    assert names(queue) == ["p"]


def test_errors_without_plugins_go_to_backoff() -> None:
    queue, _ = setup()
    queue.add(pod("p"))
    item = queue.pop()
    assert item is not None
    queue.add_unschedulable(item, queue.scheduling_cycle)
    assert queue.pending()["backoff"] == ["default/p"]


def test_unschedulable_pods_are_flushed_after_five_minutes() -> None:
    queue, clock = setup()
    queue.add(pod("p"))
    item = queue.pop()
    assert item is not None
    queue.add_unschedulable(item, queue.scheduling_cycle, ["NodeAffinity"])
    clock.now += 299
    queue.flush()
    assert queue.pending()["unschedulable"] == ["default/p"]
    clock.now += 1
    queue.flush()
    assert queue.pending()["active"] == ["default/p"]


def test_update_of_unschedulable_pod_spec_requeues_it() -> None:
    queue, clock = setup()
    original = pod("p")
    queue.add(original)
    item = queue.pop()
    assert item is not None
    queue.add_unschedulable(item, queue.scheduling_cycle, ["NodeAffinity"])
    status_only = pod("p")
    status_only["status"]["conditions"] = [{"type": "PodScheduled", "status": "False"}]
    queue.update(status_only)
    assert queue.pending()["unschedulable"] == ["default/p"]
    changed = pod("p", node_selector={"disk": "ssd"})
    clock.now += 2
    queue.update(changed)
    assert queue.pending()["active"] == ["default/p"]
    popped = queue.pop()
    assert popped is not None and popped.pod["spec"]["nodeSelector"] == {"disk": "ssd"}


def test_update_in_active_queue_reorders_by_new_priority() -> None:
    queue, clock = setup()
    queue.add(pod("a", 10))
    clock.now += 1
    queue.add(pod("b", 0))
    queue.update(pod("b", 100))
    assert names(queue) == ["b", "a"]


def test_update_during_the_cycle_is_kept() -> None:
    queue, _ = setup()
    queue.add(pod("p"))
    item = queue.pop()
    assert item is not None
    queue.update(pod("p", labels={"v": "2"}))
    assert len(queue) == 0  # not queued twice while in flight
    queue.add_unschedulable(item, queue.scheduling_cycle, ["InterPodAffinity"])
    assert queue.pending()["backoff"] == ["default/p"]
    assert item.pod_info.labels == {"v": "2"}


def test_delete_removes_from_every_queue() -> None:
    queue, _ = setup()
    queue.add(pod("a"))
    queue.add(pod("b"))
    item = queue.pop()
    assert item is not None
    queue.add_unschedulable(item, queue.scheduling_cycle, ["NodeAffinity"])
    queue.delete(pod("a"))
    queue.delete(pod("b"))
    assert len(queue) == 0
    assert queue.pop() is None


def test_next_backoff_expiry_for_the_wiring_timer() -> None:
    queue, clock = setup()
    assert queue.next_backoff_expiry() is None
    queue.add(pod("p"))
    item = queue.pop()
    assert item is not None
    queue.add_unschedulable(item, queue.scheduling_cycle)
    assert queue.next_backoff_expiry() == clock.now + 1
