"""The SQLite tool store's round trips: what parallel calls ask for at once is one statement."""

from __future__ import annotations

import asyncio

from agent_ng.engine.sqlite_store import PARAMETERS_PER_STATEMENT, SqliteToolStore
from agent_ng.engine.store import RESULTS_KEPT_S


async def test_results_asked_for_at_once_are_read_by_one_select_per_chunk(tmp_path):
    calls = PARAMETERS_PER_STATEMENT + 10
    async with SqliteToolStore.open(f"sqlite:///{tmp_path / 'tools.db'}", max_entries=100) as store:
        await asyncio.gather(*(store.record_result(f"call{i}", f"result {i}", now=1.0) for i in range(0, calls, 2)))
        statements: list[str] = []
        await store.db.set_trace_callback(statements.append)
        answers = await asyncio.gather(*(store.recorded_result(f"call{i}", now=1.0) for i in range(calls)))
        await store.db.set_trace_callback(None)

    assert answers == [f"result {i}" if i % 2 == 0 else None for i in range(calls)]
    assert len([s for s in statements if s.startswith("SELECT")]) == 2


async def test_a_result_asked_for_with_others_expires_by_its_own_callers_time(tmp_path):
    async with SqliteToolStore.open(f"sqlite:///{tmp_path / 'tools.db'}", max_entries=100) as store:
        await store.record_result("call", "result", now=100.0)
        expiry = 100.0 + RESULTS_KEPT_S
        answers = await asyncio.gather(
            *(store.recorded_result("call", now=now) for now in (100.0, expiry - 1, expiry))
        )
    assert answers == ["result", "result", None]
