"""The work queue and its rate limiters, on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from kubling.client import rest, workqueue
from kubling.client.workqueue import FakeClock, QueueShutDown, WorkQueue
from tests.client.helpers import run, settle


async def _get_now(queue: WorkQueue[str]) -> str | None:
    """The next ready item, or None when ``get`` would block."""
    try:
        async with asyncio.timeout(0.01):
            return await queue.get()
    except TimeoutError:
        return None


def test_a_key_added_twice_is_processed_once() -> None:
    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
        for key in ("a", "b", "a", "a"):
            queue.add(key)
        assert len(queue) == 2
        assert await queue.get() == "a"
        assert await queue.get() == "b"
        queue.done("a")
        queue.done("b")
        assert await _get_now(queue) is None

    run(main())


def test_a_key_is_never_processed_concurrently() -> None:
    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
        queue.add("a")
        assert await queue.get() == "a"
        queue.add("a")  # while a worker holds it
        queue.add("a")
        assert len(queue) == 0
        assert await _get_now(queue) is None
        queue.done("a")  # now it is handed out again, once
        assert await queue.get() == "a"
        queue.done("a")
        assert await _get_now(queue) is None

    run(main())


def test_waiting_getters_are_woken_in_order() -> None:
    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
        first = asyncio.create_task(queue.get())
        second = asyncio.create_task(queue.get())
        await settle()
        queue.add("x")
        queue.add("y")
        assert await first == "x"
        assert await second == "y"

    run(main())


def test_cancelled_getter_passes_its_wakeup_on() -> None:
    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
        doomed = asyncio.create_task(queue.get())
        await settle()
        queue.add("x")
        doomed.cancel()  # cancelled after being woken, before running
        other = asyncio.create_task(queue.get())
        assert await other == "x"

    run(main())


def test_item_exponential_backoff_grows_and_caps() -> None:
    limiter: workqueue.ItemExponentialFailureRateLimiter[str] = (
        workqueue.ItemExponentialFailureRateLimiter(0.005, 1000.0)
    )
    delays = [limiter.when("a") for _ in range(25)]
    assert delays[:4] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    assert all(b == min(2 * a, 1000.0) for a, b in itertools.pairwise(delays))
    assert delays[-1] == 1000.0
    assert limiter.num_requeues("a") == 25
    assert limiter.when("b") == pytest.approx(0.005)  # per item
    for _ in range(100):
        limiter.when("a")
    assert limiter.when("a") == 1000.0  # no overflow
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)


def test_token_bucket_allows_a_burst_then_qps() -> None:
    clock = FakeClock()
    bucket: workqueue.BucketRateLimiter[str] = workqueue.BucketRateLimiter(10.0, 100, clock=clock)
    assert all(bucket.when(str(i)) == 0.0 for i in range(100))
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("y") == pytest.approx(0.2)
    clock.advance(0.2)  # the debt is paid off
    assert bucket.when("z") == pytest.approx(0.1)
    clock.advance(1000)  # refills to the burst, not beyond
    assert sum(1 for i in range(150) if bucket.when(str(i)) == 0.0) == 100


def test_default_limiter_is_the_max_of_both() -> None:
    clock = FakeClock()
    limiter: workqueue.MaxOfRateLimiter[str] = workqueue.default_controller_rate_limiter(clock)
    assert limiter.when("a") == pytest.approx(0.005)
    for i in range(99):
        limiter.when(str(i))
    # the bucket is empty: 10 qps dominates the 5 ms per-item delay
    assert limiter.when("fresh") == pytest.approx(0.1)
    assert limiter.num_requeues("a") == 1


def test_add_after_orders_by_due_time() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue: WorkQueue[str] = WorkQueue(clock=clock)
        queue.add_after("a", 3.0)
        queue.add_after("b", 1.0)
        queue.add_after("c", 2.0)
        queue.add_after("now", 0)
        assert await queue.get() == "now"
        got = []
        for _ in range(3):
            await settle()
            assert await _get_now(queue) is None
            clock.advance(1.0)
            await settle()
            item = await _get_now(queue)
            assert item is not None
            got.append(item)
        assert got == ["b", "c", "a"]
        queue.shut_down()

    run(main())


def test_add_after_keeps_the_earliest_of_two_delays() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue: WorkQueue[str] = WorkQueue(clock=clock)
        queue.add_after("x", 5.0)
        queue.add_after("x", 1.0)
        queue.add_after("y", 1.0)
        queue.add_after("y", 5.0)
        clock.advance(1.0)
        await settle()
        assert sorted([await queue.get(), await queue.get()]) == ["x", "y"]
        queue.done("x")
        queue.done("y")
        clock.advance(10.0)
        await settle()
        assert await _get_now(queue) is None  # the later delays were dropped
        queue.shut_down()

    run(main())


def test_add_rate_limited_backs_off_until_forget() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue: WorkQueue[str] = WorkQueue(clock=clock)
        queue.add_rate_limited("k")  # 5 ms
        queue.add_rate_limited("k")  # 10 ms, but the earlier due time wins
        assert queue.num_requeues("k") == 2
        clock.advance(0.004)
        await settle()
        assert await _get_now(queue) is None
        clock.advance(0.001)
        await settle()
        assert await queue.get() == "k"
        queue.done("k")
        queue.add_rate_limited("k")  # third failure: 20 ms
        clock.advance(0.019)
        await settle()
        assert await _get_now(queue) is None
        clock.advance(0.001)
        await settle()
        assert await queue.get() == "k"
        queue.done("k")
        queue.forget("k")
        assert queue.num_requeues("k") == 0
        queue.shut_down()

    run(main())


def test_shutdown_drains_then_raises() -> None:
    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
        blocked = asyncio.create_task(queue.get())
        await settle()
        queue.shut_down()
        with pytest.raises(QueueShutDown):
            await blocked

        queue = WorkQueue(clock=FakeClock())
        queue.add("a")
        queue.add("b")
        queue.add_after("later", 1.0)
        queue.shut_down()
        queue.add("c")  # refused
        assert queue.shutting_down
        assert await queue.get() == "a"
        assert await queue.get() == "b"
        with pytest.raises(QueueShutDown):
            await queue.get()

    run(main())


def test_run_workers_retries_with_backoff_and_forgets_on_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        clock = FakeClock()
        queue: WorkQueue[str] = WorkQueue(name="test", clock=clock)
        calls: list[str] = []
        running: set[str] = set()
        overlap = False

        async def reconcile(key: str) -> float | None:
            nonlocal overlap
            overlap = overlap or key in running
            running.add(key)
            try:
                calls.append(key)
                await asyncio.sleep(0)
                if key == "bad" and calls.count("bad") <= 2:
                    raise rest.ApiError(rest.Status(409, "Conflict", "stale"))
                if key == "boom" and calls.count("boom") == 1:
                    raise RuntimeError("unexpected")
                return None
            finally:
                running.discard(key)

        workers = asyncio.create_task(workqueue.run_workers(queue, reconcile, workers=4))
        for key in ("bad", "boom", "good"):
            queue.add(key)
            queue.add(key)
        await settle(30)
        assert sorted(calls) == ["bad", "boom", "good"]
        assert queue.num_requeues("bad") == 1
        assert queue.num_requeues("good") == 0
        clock.advance(0.005)  # first retries due
        await settle(30)
        assert calls.count("bad") == 2 and calls.count("boom") == 2
        assert queue.num_requeues("boom") == 0  # forgotten after its success
        assert queue.num_requeues("bad") == 2
        clock.advance(0.01)  # second retry of "bad" (10 ms)
        await settle(30)
        assert calls.count("bad") == 3
        assert queue.num_requeues("bad") == 0
        assert not overlap
        queue.shut_down()
        await workers

    with caplog.at_level(logging.WARNING, logger="kubling.client.workqueue"):
        run(main())
    api_lines = [r for r in caplog.records if "bad" in r.getMessage()]
    assert len(api_lines) == 2 and all(r.exc_info is None for r in api_lines)
    assert "409 Conflict: stale" in api_lines[0].getMessage()
    boom = [r for r in caplog.records if "boom" in r.getMessage()]
    assert len(boom) == 1 and boom[0].exc_info is not None


def test_run_workers_never_runs_one_key_twice_at_once() -> None:
    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
        active: dict[str, int] = {}
        peak = 0
        processed = 0

        async def reconcile(key: str) -> None:
            nonlocal peak, processed
            active[key] = active.get(key, 0) + 1
            peak = max(peak, active[key])
            await asyncio.sleep(0.001)
            if processed < 20:
                queue.add(key)  # re-added while being processed
            processed += 1
            active[key] -= 1

        workers = asyncio.create_task(workqueue.run_workers(queue, reconcile, workers=8))
        for _ in range(5):
            queue.add("only")
        while processed < 21:
            await asyncio.sleep(0.001)
        queue.shut_down()
        await workers
        assert peak == 1

    run(main())


def test_run_workers_requeues_after_the_returned_delay() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue: WorkQueue[str] = WorkQueue(clock=clock)
        calls = 0

        async def reconcile(key: str) -> float | None:
            nonlocal calls
            calls += 1
            return 30.0 if calls == 1 else None

        workers = asyncio.create_task(workqueue.run_workers(queue, reconcile))
        queue.add("periodic")
        await settle()
        assert calls == 1
        clock.advance(29)
        await settle()
        assert calls == 1
        clock.advance(1)
        await settle()
        assert calls == 2
        workers.cancel()
        with pytest.raises(asyncio.CancelledError):
            await workers

    run(main())


def test_cancelled_workers_shut_their_queue_down() -> None:
    async def main() -> None:
        queue: WorkQueue[str] = WorkQueue(name="q", clock=FakeClock())
        seen: list[str] = []

        async def reconcile(key: str) -> None:
            seen.append(key)

        task = asyncio.create_task(workqueue.run_workers(queue, reconcile, workers=2))
        queue.add("a")
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        queue.add("b")  # after shutdown: refused, nobody would process it
        assert seen == ["a"] and len(queue) == 0
        with pytest.raises(QueueShutDown):
            await queue.get()

    run(main())
