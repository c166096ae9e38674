"""Run records in PostgreSQL (persistence/run_table.py), against the real database.

Each test works in a schema of its own, so ``claim()`` without a run id sees only its runs.

- Concurrent claimers never get the same run, nor two runs of one thread at once; each thread's
  runs are claimed in the order they were added.
- A lapsed lease is taken over (attempt 2, ``previous_holder``); renewing keeps it; the old
  holder's ``finish`` is refused; ``release`` hands runs over at once.
- A cancel ends a pending run at once and reaches a running one's holder through ``renew``.
- ``FENCE_SQL`` keeps a takeover off a run while a fenced write is in flight, and refuses the
  write after it.
- ``evict`` ends a replica's sessions and with them its advisory locks.
- An unreachable database costs ``timeout_s`` and raises ``CheckpointUnavailableError``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agent_ng.persistence.fencing import FENCE_SQL
from agent_ng.persistence.run_table import (
    PostgresRunTable,
    RunRow,
    application_name_of,
)
from agent_ng.persistence.unavailable import CheckpointUnavailableError
from tests.helpers.system import POSTGRES_URL

pytestmark = pytest.mark.needs("postgres")
GUARD_S = 30
LONG_LEASE_S = 60.0
SHORT_LEASE_S = 0.3
TIMEOUT_S = 5.0
T = TypeVar("T")


def connection_kwargs(application_name: str) -> dict:
    """As persistence/checkpoint.py opens the saver's pool."""
    return {
        "autocommit": True,
        "prepare_threshold": None,
        "row_factory": dict_row,
        "connect_timeout": 2,
        "application_name": application_name,
    }


@asynccontextmanager
async def opened_pool(url: str, application_name: str, size: int = 12) -> AsyncIterator[AsyncConnectionPool]:
    async with AsyncConnectionPool(
        url, min_size=1, max_size=size, kwargs=connection_kwargs(application_name), open=False, timeout=TIMEOUT_S
    ) as pool:
        yield pool


@pytest.fixture
async def admin() -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
async def schema_url(admin) -> AsyncIterator[str]:
    schema = f"runs_{uuid.uuid4().hex[:10]}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pool_name() -> str:
    return f"run-table-test {uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pool(schema_url, pool_name) -> AsyncIterator[AsyncConnectionPool]:
    async with opened_pool(schema_url, pool_name) as opened:
        yield opened


@pytest.fixture
async def runs(pool) -> PostgresRunTable:
    table = PostgresRunTable(pool, lease_s=LONG_LEASE_S, timeout_s=TIMEOUT_S)
    await table.setup()
    return table


@pytest.fixture
def short(pool, runs) -> PostgresRunTable:
    """The same table, its leases lapsing after ``SHORT_LEASE_S``."""
    return PostgresRunTable(pool, lease_s=SHORT_LEASE_S, timeout_s=TIMEOUT_S)


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]


async def eventually(check: Callable[[], Awaitable[T | None]], within_s: float = 10) -> T:
    """Poll ``check`` until it returns something (the lease clock is the database's)."""
    deadline = time.monotonic() + within_s
    while (result := await check()) is None or result is False:
        assert time.monotonic() < deadline, "still nothing"
        await asyncio.sleep(0.02)
    return result


async def lapsed(pool: AsyncConnectionPool, run_id: str) -> bool:
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT lease_until < now() AS lapsed FROM agent_ng_runs WHERE run_id = %s", (run_id,)
        )).fetchone()
    return row["lapsed"]


async def test_concurrent_claimers_never_double_claim_nor_run_two_runs_of_a_thread(runs):
    threads = ids("thread", 10)
    added: dict[str, list[str]] = {thread: [] for thread in threads}
    for i in range(50):
        thread = threads[i % len(threads)]
        run = await runs.add(f"run-{i}-{uuid.uuid4().hex[:8]}", thread, "native", f"payload {i}".encode())
        added[thread].append(run.run_id)
    claimed: list[RunRow] = []
    running: set[str] = set()
    most_at_once = 0

    async def claimer(holder: str) -> None:
        nonlocal most_at_once
        while len(claimed) < 50:
            run = await runs.claim(holder)
            if run is None:
                await asyncio.sleep(0.001)
                continue
            assert run.thread_id not in running, f"two runs of {run.thread_id} at once"
            running.add(run.thread_id)
            claimed.append(run)
            most_at_once = max(most_at_once, len(running))
            await asyncio.sleep(random.uniform(0, 0.005))
            running.discard(run.thread_id)
            assert await runs.finish(run.run_id, holder, run.attempt, "done")

    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(*(claimer(f"replica-{n}") for n in range(8)))

    assert sorted(run.run_id for run in claimed) == sorted(r for rs in added.values() for r in rs)
    assert {run.attempt for run in claimed} == {1}
    assert {run.previous_holder for run in claimed} == {None}
    for thread in threads:
        assert [run.run_id for run in claimed if run.thread_id == thread] == added[thread]
    assert len({run.holder for run in claimed}) > 1
    assert most_at_once > 1
    assert await runs.queued() == 0


async def test_each_thread_runs_its_runs_one_at_a_time_in_order(runs):
    t, u = ids("t", 2)
    a1, a2, a3, b1 = [await runs.add(run_id, thread, "native", b"") for run_id, thread in zip(ids("r", 4), [t, t, t, u], strict=True)]
    assert (a1.status, a1.attempt, a1.holder) == ("pending", 0, None)
    assert await runs.queued() == 4

    assert (await runs.claim("x")).run_id == a1.run_id
    assert (await runs.claim("x")).run_id == b1.run_id
    assert await runs.claim("x") is None
    assert await runs.claim("x", run_id=a3.run_id) is None
    assert await runs.busy(t)
    assert await runs.busy(t, besides=a1.run_id)

    assert await runs.finish(a1.run_id, "x", 1, "done")
    assert await runs.claim("x", run_id=a3.run_id) is None
    second = await runs.claim("y")
    assert (second.run_id, second.status, second.holder, second.attempt) == (a2.run_id, "running", "y", 1)
    assert await runs.finish(a2.run_id, "y", 1, "error", "boom")
    assert (await runs.get(a2.run_id)).error == "boom"
    assert (await runs.claim("y", run_id=a3.run_id)).run_id == a3.run_id
    assert not await runs.busy(t, besides=a3.run_id)
    assert await runs.queued() == 0
    with pytest.raises(ValueError, match="running"):
        await runs.finish(a3.run_id, "y", 1, "running")


async def test_a_lapsed_lease_is_taken_over_and_the_old_holder_is_fenced_out(short, runs, pool):
    run_id, thread = ids("run", 1)[0], ids("thread", 1)[0]
    await short.add(run_id, thread, "langgraph", b"\x00\x01")
    first = await short.claim("a")
    assert (first.attempt, first.holder, first.previous_holder) == (1, "a", None)
    assert await runs.claim("b") is None

    async with asyncio.timeout(GUARD_S):
        taken = await eventually(lambda: runs.claim("b"))
    assert (taken.run_id, taken.attempt, taken.holder, taken.previous_holder) == (run_id, 2, "b", "a")
    assert taken.payload == b"\x00\x01" and taken.kind == "langgraph"
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT %s::timestamptz + make_interval(secs => %s) AS lapsed_at", (first.updated_at, SHORT_LEASE_S)
        )).fetchone()
    assert taken.updated_at >= row["lapsed_at"]

    assert not await runs.finish(run_id, "a", 1, "done")
    assert not await runs.finish(run_id, "b", 1, "done")
    assert await short.renew("a") == {}
    assert await runs.finish(run_id, "b", 2, "done")
    ended = await runs.get(run_id)
    assert (ended.status, ended.holder, ended.attempt) == ("done", None, 2)
    assert not await runs.finish(run_id, "b", 2, "error")


async def test_renewing_keeps_a_lease_and_stops_at_a_takeover(short, runs, pool):
    run_id, thread = ids("run", 1)[0], ids("thread", 1)[0]
    await short.add(run_id, thread, "native", b"")
    await short.claim("a")
    async with asyncio.timeout(GUARD_S):
        renewed_until = time.monotonic() + 4 * SHORT_LEASE_S
        while time.monotonic() < renewed_until:
            assert await short.renew("a") == {run_id: False}
            assert await runs.claim("b") is None
            await asyncio.sleep(SHORT_LEASE_S / 4)
        taken = await eventually(lambda: runs.claim("b"))
    assert (taken.attempt, taken.previous_holder) == (2, "a")
    assert await short.renew("a") == {}
    assert await runs.renew("b") == {run_id: False}


async def test_release_hands_runs_over_at_once(runs):
    (r1, r2, r3), (t1, t2, t3) = ids("run", 3), ids("thread", 3)
    for run_id, thread in [(r1, t1), (r2, t2), (r3, t3)]:
        await runs.add(run_id, thread, "native", b"")
        await runs.claim("a", run_id=run_id)

    assert await runs.release("a", run_ids=[]) == []
    assert await runs.release("a", run_ids=[r3, "no such run"]) == [r3]
    assert await runs.renew("a") == {r1: False, r2: False}
    assert sorted(await runs.release("a")) == sorted([r1, r2])
    assert await runs.renew("a") == {}
    assert not await runs.finish(r1, "a", 1, "done")
    again = [await runs.claim("b") for _ in range(3)]
    assert {(run.run_id, run.attempt, run.previous_holder) for run in again} == {(r, 2, None) for r in (r1, r2, r3)}
    assert await runs.release("a") == []


async def test_a_cancel_ends_a_pending_run_and_reaches_a_running_one(runs):
    (pending, running), thread = ids("run", 2), ids("thread", 1)[0]
    other = ids("thread", 1)[0]
    await runs.add(running, thread, "native", b"")
    await runs.add(pending, other, "native", b"")
    await runs.claim("a", run_id=running)

    cancelled = await runs.request_cancel(pending)
    assert (cancelled.status, cancelled.cancel_requested, cancelled.holder) == ("cancelled", True, None)
    assert await runs.claim("a", run_id=pending) is None
    assert await runs.queued() == 0

    flagged = await runs.request_cancel(running)
    assert (flagged.status, flagged.cancel_requested, flagged.holder) == ("running", True, "a")
    assert await runs.renew("a") == {running: True}
    assert await runs.finish(running, "a", 1, "cancelled")
    assert (await runs.request_cancel(running)).status == "cancelled"
    assert await runs.request_cancel("no such run") is None
    assert await runs.get("no such run") is None


async def test_a_fenced_write_keeps_a_takeover_off_the_run_until_it_commits(short, runs, schema_url):
    run_id, thread = ids("run", 1)[0], ids("thread", 1)[0]
    await short.add(run_id, thread, "native", b"")
    await short.claim("a")
    async with asyncio.timeout(GUARD_S):
        async with await psycopg.AsyncConnection.connect(schema_url, autocommit=True) as writer:
            async with writer.transaction():
                assert await (await writer.execute(FENCE_SQL, (run_id, "a", 1))).fetchone() == (1,)
                await eventually(lambda: lapsed(runs.pool, run_id))  # the write is still in flight
                assert await runs.claim("b") is None
                assert await runs.claim("b", run_id=run_id) is None
                committed_before = (await (await writer.execute("SELECT clock_timestamp()")).fetchone())[0]
            taken = await runs.claim("b", run_id=run_id)
            assert (taken.attempt, taken.previous_holder) == (2, "a")
            assert taken.updated_at > committed_before
            async with writer.transaction():
                assert await (await writer.execute(FENCE_SQL, (run_id, "a", 1))).fetchone() is None
                assert await (await writer.execute(FENCE_SQL, (run_id, "b", 2))).fetchone() == (1,)


async def test_a_late_claim_of_a_threads_run_loses_to_the_one_claimed_meanwhile(runs, admin, schema_url, pool_name):
    """The snapshot of a claim may miss a run of the thread that another replica claims at that
    moment; the unique index on a thread's running run makes the claim wait for it and start again."""
    (older, newer), thread = ids("run", 2), ids("thread", 1)[0]
    await runs.add(older, thread, "native", b"")
    await runs.add(newer, thread, "native", b"")
    async with await psycopg.AsyncConnection.connect(schema_url, autocommit=True) as other:
        async with asyncio.timeout(GUARD_S):
            async with other.transaction():
                await other.execute(
                    "UPDATE agent_ng_runs SET status = 'running', holder = 'other', attempt = 1,"
                    " lease_until = now() + interval '1 minute' WHERE run_id = %s",
                    (newer,),
                )
                claiming = asyncio.ensure_future(runs.claim("b", run_id=older))

                async def waiting() -> bool:
                    row = await (await admin.execute(
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s"
                        " AND wait_event_type = 'Lock'",
                        (pool_name,),
                    )).fetchone()
                    return row["n"] == 1

                await eventually(waiting)
                assert not claiming.done()
            assert await claiming is None
    assert (await runs.get(older)).status == "pending"
    assert (await runs.get(newer)).holder == "other"
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with runs.pool.connection() as conn:
            await conn.execute("UPDATE agent_ng_runs SET status = 'running' WHERE run_id = %s", (older,))


async def test_replicas_set_up_the_table_together(schema_url):
    async with opened_pool(schema_url, "run-table-setup") as pool:
        tables = [PostgresRunTable(pool, lease_s=1, timeout_s=TIMEOUT_S) for _ in range(3)]
        async with asyncio.timeout(GUARD_S):
            await asyncio.gather(*(table.setup() for table in tables))
        assert await tables[0].queued() == 0


@pytest.mark.parametrize("holder", ["replica-7", "ä-replica-" + "x" * 80])
async def test_evict_ends_a_replicas_sessions_and_frees_its_locks(runs, admin, holder):
    holder = f"{holder}-{uuid.uuid4().hex[:8]}"
    name = application_name_of(holder)
    assert len(name.encode()) <= 63 and name.isascii()
    key = f"test lock {uuid.uuid4().hex}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True, application_name=name) as frozen:
        assert (await (await frozen.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))).fetchone())[0]
        probe = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS got"
        assert not (await (await admin.execute(probe, (key,))).fetchone())["got"]

        async with asyncio.timeout(GUARD_S):
            assert await runs.evict(holder) == 1
        assert (await (await admin.execute(probe, (key,))).fetchone())["got"]
        with pytest.raises(psycopg.OperationalError):
            await frozen.execute("SELECT 1")
    assert await runs.evict(holder) == 0


def test_application_names_of_long_holders_differ():
    shared = "replica-" + "y" * 70
    assert application_name_of("a") == "agent-ng a"
    assert application_name_of(shared + "1") != application_name_of(shared + "2")
    assert all(len(application_name_of(shared + s).encode()) == 63 for s in "12")


async def test_a_lost_connection_is_retried_where_repeating_is_harmless(runs, admin, pool_name):
    run_id, thread = ids("run", 1)[0], ids("thread", 1)[0]
    await runs.add(run_id, thread, "native", b"")
    end_sessions = "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s"

    await admin.execute(end_sessions, (pool_name,))
    assert (await runs.get(run_id)).status == "pending"

    await admin.execute(end_sessions, (pool_name,))
    with pytest.raises(CheckpointUnavailableError, match="PostgreSQL at 127.0.0.1"):
        await runs.claim("a")
    assert (await runs.claim("a")).run_id == run_id


async def test_an_unreachable_database_fails_within_the_timeout():
    timeout_s = 1.0
    async with opened_pool("postgresql://postgres@127.0.0.1:1/test", "run-table-unreachable") as pool:
        table = PostgresRunTable(pool, lease_s=1, timeout_s=timeout_s)
        for operation in (lambda: table.claim("a"), lambda: table.renew("a"), table.setup):
            started = time.monotonic()
            with pytest.raises(CheckpointUnavailableError, match="127.0.0.1:1"):
                await operation()
            assert time.monotonic() - started < timeout_s + 1


async def test_queues_keep_their_runs_apart_and_prune_drops_only_ended_runs(runs, pool):
    other = PostgresRunTable(pool, lease_s=LONG_LEASE_S, timeout_s=TIMEOUT_S, queue="another deployment")
    (mine, theirs, ended, going), threads = ids("run", 4), ids("thread", 4)
    await runs.add(mine, threads[0], "native", b"")
    await other.add(theirs, threads[1], "native", b"")
    assert (await runs.queued(), await other.queued()) == (1, 1)
    assert (await runs.claim("a")).run_id == mine
    assert await runs.claim("a") is None  # the other queue's run is not this one's to take
    await runs.add(ended, threads[2], "native", b"")
    await runs.add(going, threads[3], "native", b"")
    finished = await runs.claim("a", run_id=ended)
    assert await runs.finish(ended, "a", finished.attempt, "done")
    assert await runs.prune(older_than_s=3600) == 0
    assert await runs.prune(older_than_s=0) == 1
    assert await runs.get(ended) is None
    assert all([await runs.get(mine), await runs.get(going), await other.get(theirs)])
