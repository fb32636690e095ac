"""The storage contract, checked against every driver (the ``run`` fixture is parametrized)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kubling.storage import (
    Backend,
    CompactedError,
    ConflictError,
    Event,
    EventType,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    SQLiteBackend,
    Watch,
    compact_once,
    run_compactor,
)

Run = Callable[..., None]


async def take(watch: Watch, n: int, timeout: float = 5) -> list[Event]:
    """The next ``n`` events of ``watch`` (fails the test if they do not come)."""

    async def collect() -> list[Event]:
        out: list[Event] = []
        async for event in watch:
            out.append(event)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(collect(), timeout)


async def nothing_more(watch: Watch, wait: float = 0.1) -> None:
    """Assert that ``watch`` yields no further event within ``wait`` seconds."""
    with pytest.raises(TimeoutError):
        await take(watch, 1, timeout=wait)


# -- create / get / list / count -------------------------------------------------------


def test_create_then_get(run: Run) -> None:
    async def body(b: Backend) -> None:
        assert await b.current_revision() == 0
        kv = await b.create("/registry/pods/default/a", b"A")
        assert kv == KeyValue("/registry/pods/default/a", b"A", kv.mod_revision, kv.mod_revision)
        assert kv.mod_revision == await b.current_revision() == 1
        assert await b.get("/registry/pods/default/a") == kv
        assert await b.get("/registry/pods/default/missing") is None

    run(body)


def test_create_on_live_key_fails(run: Run) -> None:
    async def body(b: Backend) -> None:
        await b.create("/k", b"1")
        with pytest.raises(KeyExistsError) as info:
            await b.create("/k", b"2")
        assert info.value.key == "/k"
        assert (await b.get("/k")) is not None
        assert await b.current_revision() == 1  # a failed write consumes no revision

    run(body)


def test_list_prefix_sorted(run: Run) -> None:
    async def body(b: Backend) -> None:
        for key in ["/r/pods/b", "/r/pods/a", "/r/podsx/z", "/r/svc/a", "/r/pods/c"]:
            await b.create(key, key.encode())
        res = await b.list("/r/pods/")
        assert [kv.key for kv in res.items] == ["/r/pods/a", "/r/pods/b", "/r/pods/c"]
        assert res.revision == await b.current_revision() == 5
        assert len((await b.list("")).items) == 5
        assert (await b.list("/nothing/")).items == []

    run(body)


def test_list_and_get_at_old_revision(run: Run) -> None:
    async def body(b: Backend) -> None:
        a = await b.create("/p/a", b"a1")
        b1 = await b.create("/p/b", b"b1")
        await b.update("/p/a", b"a2", expected_revision=a.mod_revision)
        await b.delete("/p/b")
        await b.create("/p/c", b"c1")
        old = await b.list("/p/", revision=b1.mod_revision)
        assert old.revision == b1.mod_revision
        assert [(kv.key, kv.value) for kv in old.items] == [("/p/a", b"a1"), ("/p/b", b"b1")]
        now = await b.list("/p/")
        assert [(kv.key, kv.value) for kv in now.items] == [("/p/a", b"a2"), ("/p/c", b"c1")]
        assert (await b.get("/p/a", revision=a.mod_revision)) == a
        assert await b.get("/p/b", revision=4) is None  # deleted at 4

    run(body)


def test_read_revision_out_of_range(run: Run) -> None:
    async def body(b: Backend) -> None:
        for i in range(5):
            await b.create(f"/k/{i}", b"x")
        with pytest.raises(FutureRevisionError) as fut:
            await b.list("/k/", revision=6)
        assert (fut.value.requested, fut.value.current) == (6, 5)
        with pytest.raises(FutureRevisionError):
            await b.get("/k/0", revision=99)
        await b.compact(3)
        assert await b.compacted_revision() == 3
        with pytest.raises(CompactedError) as comp:
            await b.list("/k/", revision=2)
        assert (comp.value.requested, comp.value.compacted) == (2, 3)
        with pytest.raises(CompactedError):
            await b.get("/k/0", revision=2)
        assert len((await b.list("/k/", revision=3)).items) == 3  # the compacted rev is readable

    run(body)


def test_count(run: Run) -> None:
    async def body(b: Backend) -> None:
        for i in range(4):
            await b.create(f"/c/a/{i}", b"x")
        await b.create("/c/b/0", b"x")
        await b.delete("/c/a/0")
        kv = await b.get("/c/a/1")
        assert kv is not None
        await b.update("/c/a/1", b"y", expected_revision=kv.mod_revision)
        assert await b.count("/c/a/") == 3
        assert await b.count("/c/") == 4
        assert await b.count("/none/") == 0

    run(body)


# -- compare-and-swap ------------------------------------------------------------------


def test_update_cas(run: Run) -> None:
    async def body(b: Backend) -> None:
        v1 = await b.create("/u", b"1")
        v2 = await b.update("/u", b"2", expected_revision=v1.mod_revision)
        assert (v2.value, v2.create_revision) == (b"2", v1.mod_revision)
        assert v2.mod_revision > v1.mod_revision
        with pytest.raises(ConflictError) as info:
            await b.update("/u", b"3", expected_revision=v1.mod_revision)
        assert info.value.key == "/u"
        assert info.value.current == v2
        assert await b.get("/u") == v2

    run(body)


def test_update_missing_or_deleted(run: Run) -> None:
    async def body(b: Backend) -> None:
        with pytest.raises(KeyNotFoundError):
            await b.update("/nope", b"x", expected_revision=1)
        kv = await b.create("/gone", b"x")
        await b.delete("/gone")
        with pytest.raises(KeyNotFoundError):
            await b.update("/gone", b"y", expected_revision=kv.mod_revision)

    run(body)


def test_delete_cas(run: Run) -> None:
    async def body(b: Backend) -> None:
        v1 = await b.create("/d", b"1")
        v2 = await b.update("/d", b"2", expected_revision=v1.mod_revision)
        with pytest.raises(ConflictError) as info:
            await b.delete("/d", expected_revision=v1.mod_revision)
        assert info.value.current == v2
        gone = await b.delete("/d", expected_revision=v2.mod_revision)
        assert (gone.key, gone.value, gone.create_revision) == ("/d", b"2", v1.mod_revision)
        assert gone.mod_revision == await b.current_revision() == v2.mod_revision + 1
        assert await b.get("/d") is None
        with pytest.raises(KeyNotFoundError):
            await b.delete("/d")

    run(body)


def test_delete_then_create_again(run: Run) -> None:
    async def body(b: Backend) -> None:
        first = await b.create("/again", b"1")
        await b.delete("/again")
        second = await b.create("/again", b"2")
        assert second.create_revision == second.mod_revision > first.create_revision
        assert await b.get("/again") == second

    run(body)


def test_revisions_strictly_increase_across_keys(run: Run) -> None:
    async def body(b: Backend) -> None:
        revs = []
        for i in range(10):
            kv = await b.create(f"/s/{i % 3}/{i}", b"x")
            revs.append(kv.mod_revision)
            kv = await b.update(kv.key, b"y", expected_revision=kv.mod_revision)
            revs.append(kv.mod_revision)
            revs.append((await b.delete(kv.key)).mod_revision)
        assert revs == list(range(1, 31))

    run(body)


def test_concurrent_creates_are_batched(run: Run) -> None:
    async def body(b: Backend) -> None:
        before = b.stats.transactions if isinstance(b, SQLiteBackend) else 0
        kvs = await asyncio.gather(*(b.create(f"/cc/{i:03}", b"v") for i in range(200)))
        assert sorted(kv.mod_revision for kv in kvs) == list(range(1, 201))
        assert await b.count("/cc/") == 200
        if isinstance(b, SQLiteBackend):
            # group commit: 200 writes arriving together share a handful of fsyncs
            assert b.stats.transactions - before < 20

    run(body)


def test_concurrent_cas_only_one_wins(run: Run) -> None:
    async def body(b: Backend) -> None:
        kv = await b.create("/race", b"0")
        results = await asyncio.gather(
            *(
                b.update("/race", str(i).encode(), expected_revision=kv.mod_revision)
                for i in range(50)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, KeyValue)]
        losers = [r for r in results if isinstance(r, ConflictError)]
        assert len(winners) == 1 and len(losers) == 49
        assert all(err.current == winners[0] for err in losers)

    run(body)


def test_failed_write_in_a_batch_fails_alone(run: Run) -> None:
    async def body(b: Backend) -> None:
        await b.create("/batch/taken", b"x")
        results = await asyncio.gather(
            *(b.create(f"/batch/{i}", b"v") for i in range(20)),
            b.create("/batch/taken", b"again"),
            *(b.create(f"/batch/{i}", b"v") for i in range(20, 40)),
            return_exceptions=True,
        )
        assert isinstance(results[20], KeyExistsError)
        assert all(isinstance(r, KeyValue) for i, r in enumerate(results) if i != 20)
        assert await b.count("/batch/") == 41

    run(body)


# -- watch -----------------------------------------------------------------------------


def test_watch_from_now(run: Run) -> None:
    async def body(b: Backend) -> None:
        await b.create("/w/old", b"old")
        watch = b.watch("/w/", start_revision=0)
        new = await b.create("/w/new", b"new")
        (event,) = await take(watch, 1)
        assert event.type is EventType.PUT and event.created
        assert event.kv == new and event.prev is None and event.revision == new.mod_revision
        await watch.close()

    run(body)


def test_watch_events_carry_prev_values(run: Run) -> None:
    async def body(b: Backend) -> None:
        watch = b.watch("/e/", start_revision=0)
        v1 = await b.create("/e/x", b"1")
        v2 = await b.update("/e/x", b"2", expected_revision=v1.mod_revision)
        gone = await b.delete("/e/x")
        put1, put2, delete = await take(watch, 3)
        assert put1.created and put1.kv == v1
        assert put2.type is EventType.PUT and not put2.created
        assert (put2.kv, put2.prev) == (v2, v1)
        assert delete.type is EventType.DELETE
        assert delete.kv == gone == KeyValue("/e/x", b"2", v2.mod_revision + 1, v1.mod_revision)
        assert delete.prev == v2
        await watch.close()

    run(body)


def test_watch_from_old_revision_replays_then_goes_live(run: Run) -> None:
    async def body(b: Backend) -> None:
        a = await b.create("/h/a", b"1")
        await b.update("/h/a", b"2", expected_revision=a.mod_revision)
        await b.create("/other", b"x")
        await b.delete("/h/a")
        watch = b.watch("/h/", start_revision=a.mod_revision)
        late = await b.create("/h/b", b"live")
        events = await take(watch, 4)
        assert [e.revision for e in events] == [1, 2, 4, late.mod_revision]
        assert [e.type for e in events] == [EventType.PUT] * 2 + [EventType.DELETE, EventType.PUT]
        assert events[1].prev == a
        await nothing_more(watch)
        await watch.close()

    run(body)


def test_watch_replay_races_writes_without_gap_or_duplicate(run: Run) -> None:
    async def body(b: Backend) -> None:
        for i in range(600):  # more than one history page
            await b.create(f"/race/{i}", b"x") if i % 2 else await b.create(f"/skip/{i}", b"x")
        writer = asyncio.ensure_future(
            asyncio.gather(*(b.create(f"/race/live{i}", b"y") for i in range(300)))
        )
        watch = b.watch("/race/", start_revision=1)
        events = await take(watch, 600)
        await writer
        revisions = [e.revision for e in events]
        assert revisions == sorted(set(revisions))  # ordered, no duplicate
        expected = [kv.mod_revision for kv in (await b.list("/race/")).items]
        assert sorted(expected) == revisions  # no gap
        await watch.close()

    run(body)


def test_watch_prefix_filtering(run: Run) -> None:
    async def body(b: Backend) -> None:
        watch = b.watch("/r/pods/", start_revision=0)
        await b.create("/r/podsx/a", b"no")
        await b.create("/r/svc/a", b"no")
        mine = await b.create("/r/pods/a", b"yes")
        (event,) = await take(watch, 1)
        assert event.kv == mine
        await nothing_more(watch)
        await watch.close()

    run(body)


def test_watch_from_compacted_revision_raises(run: Run) -> None:
    async def body(b: Backend) -> None:
        for i in range(5):
            await b.create(f"/k/{i}", b"x")
        await b.compact(4)
        with pytest.raises(CompactedError) as info:
            await take(b.watch("/k/", start_revision=2), 1)
        assert (info.value.requested, info.value.compacted) == (2, 4)
        events = await take(b.watch("/k/", start_revision=4), 2)
        assert [e.revision for e in events] == [4, 5]

    run(body)


def test_watch_close_ends_iteration(run: Run) -> None:
    async def body(b: Backend) -> None:
        watch = b.watch("/", start_revision=0)

        async def drain() -> list[Event]:
            return [e async for e in watch]

        task = asyncio.ensure_future(drain())
        await asyncio.sleep(0.01)
        await watch.close()
        assert await asyncio.wait_for(task, 2) == []

    run(body)


def test_slow_watcher_is_ended_with_compacted_error(run: Run) -> None:
    async def body(b: Backend) -> None:
        watch = b.watch("/slow/", start_revision=0)
        for i in range(15):
            await b.create(f"/slow/{i}", b"x")
        delivered: list[Event] = []
        with pytest.raises(CompactedError) as info:
            async for event in watch:
                delivered.append(event)
        assert [e.revision for e in delivered] == list(range(1, 11))  # the queued ones
        assert info.value.requested == 11  # the first dropped revision: relist and rewatch

    run(body, watch_queue_limit=10)


# -- compaction --------------------------------------------------------------------------


def test_compaction_keeps_newest_values(run: Run) -> None:
    async def body(b: Backend) -> None:
        kv = await b.create("/c/a", b"1")
        for i in range(2, 6):
            kv = await b.update("/c/a", str(i).encode(), expected_revision=kv.mod_revision)
        await b.create("/c/b", b"b")
        await b.create("/c/dead", b"d")
        await b.delete("/c/dead")
        current = await b.current_revision()
        await b.compact(current)
        assert await b.compacted_revision() == current
        assert [(x.key, x.value) for x in (await b.list("/c/")).items] == [
            ("/c/a", b"5"),
            ("/c/b", b"b"),
        ]
        assert await b.get("/c/a") == kv
        await b.compact(2)  # going backwards is a no-op
        assert await b.compacted_revision() == current
        with pytest.raises(FutureRevisionError):
            await b.compact(current + 1)
        again = await b.create("/c/dead", b"new")  # the tombstone is gone, the key is free
        assert again.create_revision == current + 1

    run(body)


def test_compactor_keeps_last_revisions(run: Run) -> None:
    async def body(b: Backend) -> None:
        kv = await b.create("/x", b"0")
        for i in range(30):
            kv = await b.update("/x", str(i).encode(), expected_revision=kv.mod_revision)
        assert await compact_once(b, retain=10) == 21
        task = asyncio.ensure_future(run_compactor(b, interval=0.01, retain=5))
        for _ in range(200):
            if await b.compacted_revision() == 26:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await b.compacted_revision() == 26
        assert await b.get("/x") == kv

    run(body)
