"""The tool store's contract, run against each backend: memory, SQLite and the real Redis."""

from __future__ import annotations

import asyncio
import random

import pytest

from agent_ng.engine.store import CachedResult, ToolCounts
from tests.helpers.tool_stores import KINDS, open_test_store

pytestmark = pytest.mark.parametrize("kind", KINDS)


async def test_a_cached_result_is_served_until_it_expires(kind, tmp_path):
    async with open_test_store(kind, tmp_path) as store:
        blocks = [{"type": "text", "text": "x"}]
        await store.cache("text", "391", now=100.0, ttl_s=10.0)
        await store.cache("blocks", blocks, now=100.0, ttl_s=10.0)

        assert await store.cached("text", now=109.9) == CachedResult("391", 110.0)
        assert (await store.cached("blocks", now=105.0)).content == blocks
        assert await store.cached("text", now=110.0) is None
        assert await store.cached("never stored", now=100.0) is None


async def test_the_cache_keeps_the_newest_entries_within_its_bound(kind, tmp_path):
    async with open_test_store(kind, tmp_path, max_entries=3) as store:
        for i in range(5):
            await store.cache(f"k{i}", f"v{i}", now=float(i), ttl_s=100.0)
        present = [k for k in ("k0", "k1", "k2", "k3", "k4") if await store.cached(k, now=5.0)]
        assert present == ["k2", "k3", "k4"]

        await store.cache("k2", "v2 again", now=6.0, ttl_s=100.0)
        await store.cache("k5", "v5", now=7.0, ttl_s=100.0)
        present = [k for k in ("k2", "k3", "k4", "k5") if await store.cached(k, now=8.0)]
        assert present == ["k2", "k4", "k5"]
        assert (await store.cached("k2", now=8.0)).content == "v2 again"


async def test_counts_cover_every_outcome_and_durations_only_successful_runs(kind, tmp_path):
    async with open_test_store(kind, tmp_path) as store:
        await store.record("add", "ok", 0.5)
        await store.record("add", "ok", 1.5)
        await store.record("add", "error", 0.1)
        await store.record("add", "timeout", 9.0)
        await store.record("add", "cached", None)
        await store.record("fetch", "ok", None)

        assert await store.counts() == [
            ToolCounts("add", calls=5, errors=1, timeouts=1, cache_hits=1, durations=(1.5, 0.5)),
            ToolCounts("fetch", calls=1),
        ]
        assert await store.durations("add", 1) == [1.5]
        assert await store.durations("unknown", 5) == []


async def test_only_the_most_recent_durations_are_kept(kind, tmp_path):
    async with open_test_store(kind, tmp_path, durations_kept=3) as store:
        for seconds in range(1, 6):
            await store.record("add", "ok", float(seconds))
        assert await store.durations("add", 10) == [5.0, 4.0, 3.0]
        [counts] = await store.counts()
        assert counts.calls == 5 and counts.durations == (5.0, 4.0, 3.0)


async def test_concurrent_records_are_all_counted(kind, tmp_path):
    async with open_test_store(kind, tmp_path) as store:
        await asyncio.gather(*(store.record("add", "ok", 0.01 * i) for i in range(50)))
        [counts] = await store.counts()
        assert counts.calls == 50 and len(counts.durations) == 50


async def test_hundreds_of_parallel_calls_lose_no_write(kind, tmp_path):
    """What each call of a busy engine does at once (ETA read, result recorded, outcome counted),
    300 calls at a time arriving in a random order: every write succeeds and every call counts."""
    rounds, parallel = 10, 300
    arrival = random.Random(17)

    async def call(i: int) -> None:
        for _ in range(arrival.randrange(20)):
            await asyncio.sleep(0)
        await store.durations(f"tool{i % 3}", 100)
        await store.record_result(f"call{i}", "result", now=float(i))
        await store.record(f"tool{i % 3}", arrival.choice(["ok", "ok", "error", "cached"]), 0.01)

    async with open_test_store(kind, tmp_path) as store:
        for _ in range(rounds):
            await asyncio.gather(*(call(i) for i in range(parallel)))
        assert sum(c.calls for c in await store.counts()) == rounds * parallel


async def test_results_recorded_together_are_each_kept_once_their_call_returns(kind, tmp_path):
    """Parallel calls finish together; each result is readable as soon as its own
    ``record_result`` returns (the SQLite store writes them as one batch)."""
    async with open_test_store(kind, tmp_path) as store:

        async def record(i: int) -> str | None:
            await store.record_result(f"call{i}", f"result {i}", now=100.0)
            return await store.recorded_result(f"call{i}", now=100.0)

        assert await asyncio.gather(*(record(i) for i in range(400))) == [f"result {i}" for i in range(400)]


async def test_results_asked_for_together_each_get_their_own(kind, tmp_path):
    """Calls starting together ask at once (the SQLite store reads them in one statement); each
    gets its own result, and none for a key never recorded."""
    async with open_test_store(kind, tmp_path) as store:
        await asyncio.gather(*(store.record_result(f"call{i}", f"result {i}", now=100.0) for i in range(3)))
        answers = await asyncio.gather(
            *(store.recorded_result(key, now=100.0) for key in ("call2", "call0", "never", "call1"))
        )
        assert answers == ["result 2", "result 0", None, "result 1"]


async def test_a_call_cancelled_at_any_point_raises_its_cancellation(kind, tmp_path):
    """A stopped run's tool must not start: redis-py can swallow a cancel that comes while it
    takes or gives back a connection, and the store raises it again."""
    gone_on: list[tuple[str, int]] = []
    async with open_test_store(kind, tmp_path) as store:
        calls = {
            "recorded_result": lambda: store.recorded_result("k", 0.0),
            "cached": lambda: store.cached("k", 0.0),
            "durations": lambda: store.durations("t", 5),
            "record": lambda: store.record("t", "ok", 0.1),
        }
        for name, call in calls.items():
            for ticks in range(1, 30):
                cancelled = asyncio.Event()

                async def run(call=call, cancelled=cancelled, at=(name, ticks)):
                    await call()
                    if cancelled.is_set():
                        gone_on.append(at)

                task = asyncio.ensure_future(run())
                for _ in range(ticks):
                    await asyncio.sleep(0)
                if not task.done():
                    cancelled.set()
                    task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    assert gone_on == [], "the call went on after its task was cancelled"
