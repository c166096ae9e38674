"""Taking a run over fences its old holder out: its later checkpoint writes and event appends are
refused, against the real PostgreSQL and Redis.

Each PostgreSQL test has a run table of its own (the real ``run_table.SCHEMA``, in a schema of
its own, first on the pool's ``search_path``; not ``PostgresRunTable.setup``, whose lock is
shared by every test's setup); the checkpoints go to the shared tables under fresh thread ids.
"""

from __future__ import annotations

import asyncio
import operator
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import monotonic
from typing import Annotated, TypedDict

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agent_ng.persistence import pg_reconnect
from agent_ng.persistence.checkpoint import postgres_saver
from agent_ng.persistence.fencing import FENCE, Fence, FencedError, fenced
from agent_ng.persistence.pg_reconnect import ReconnectingPostgresSaver
from agent_ng.persistence.replica import REPLICA_ID
from agent_ng.persistence.run_table import SCHEMA, PostgresRunTable, application_name_of
from agent_ng.persistence.thread_lock import FileThreadLocks, PostgresThreadLocks, locks_of
from agent_ng.service.event_log import RedisEventLog
from tests.helpers.paths import REPO
from tests.helpers.pgbouncer import PgBouncer
from tests.helpers.system import POSTGRES_URL, REDIS_URL

GUARD_S = 30
TIMEOUT_S = 10.0
A, B = "replica-a:1:aaaaaa", "replica-b:2:bbbbbb"


class Store:
    """A saver and a run table on one pool whose ``search_path`` puts this test's schema first."""

    def __init__(self, saver: ReconnectingPostgresSaver, runs: PostgresRunTable, name: str) -> None:
        self.saver, self.runs, self.name = saver, runs, name
        self.thread = f"fencing-{uuid.uuid4().hex}"
        self.config = {"configurable": {"thread_id": self.thread, "checkpoint_ns": ""}}

    async def running(self, holder: str = A) -> Fence:
        """A new run of the thread, claimed by ``holder``: its fence."""
        run_id = str(uuid.uuid4())
        await self.runs.add(run_id, self.thread, "native", b"")
        run = await self.runs.claim(holder, run_id=run_id)
        return Fence(run_id, holder, run.attempt)

    async def take_over(self, fence: Fence, holder: str = B) -> Fence:
        """What another replica does once the run's lease has lapsed: claim it (attempt + 1), as
        soon as no write of the run is in flight (the claim skips the run until then)."""
        await self.sql("UPDATE agent_ng_runs SET lease_until = now() - interval '1 second' WHERE run_id = %s",
                       (fence.run_id,))
        while (run := await self.runs.claim(holder, run_id=fence.run_id)) is None:
            await asyncio.sleep(0.01)
        assert run.previous_holder == fence.holder
        return Fence(fence.run_id, holder, run.attempt)

    async def sql(self, query: str, params: tuple = ()) -> list[dict]:
        async with self.saver.conn.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def stored(self) -> tuple[int, int, int]:
        """How many checkpoints, blobs and writes the thread has."""
        counts = []
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            rows = await self.sql(f"SELECT count(*) AS n FROM {table} WHERE thread_id = %s", (self.thread,))
            counts.append(rows[0]["n"])
        return tuple(counts)

    async def checkpoint(self, step: int, after: dict | None = None, run_id: str | None = None) -> dict:
        """One checkpoint with a blob (its ``steps`` channel), on top of ``after``'s, made by ``run_id``."""
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"steps": [f"step {step}"]}
        checkpoint["channel_versions"] = {"steps": str(step)}
        metadata = {"step": step} if run_id is None else {"step": step, "run_id": run_id}
        return await self.saver.aput(after or self.config, checkpoint, metadata, {"steps": str(step)})

    async def put(self, step: int) -> dict:
        """One checkpoint and one pending write on it."""
        config = await self.checkpoint(step)
        await self.saver.aput_writes(config, [("steps", [f"write {step}"])], f"task-{step}")
        return config

    async def waiting_on_a_lock(self, within_s: float = 5.0) -> None:
        """Until one of this store's connections waits on a row lock."""
        deadline = monotonic() + within_s
        while monotonic() < deadline:
            rows = await self.sql(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                (self.name,),
            )
            if rows:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no connection of the store waited on a lock")


@asynccontextmanager
async def store() -> AsyncIterator[Store]:
    schema = f"fencing_{uuid.uuid4().hex[:16]}"
    name = f"fencing-test {uuid.uuid4().hex[:8]}"
    async with await AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
        async with AsyncPostgresSaver.from_conn_string(POSTGRES_URL) as plain:
            await plain.setup()  # the shared checkpoint tables, if no test made them yet
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        await admin.execute(f'SET search_path = "{schema}"')
        for statement in SCHEMA:
            await admin.execute(statement)
        kwargs = {
            "autocommit": True, "prepare_threshold": None, "row_factory": dict_row,
            "options": f"-c search_path={schema},public", "application_name": name,
        }
        try:
            async with AsyncConnectionPool(POSTGRES_URL, min_size=1, max_size=4, kwargs=kwargs, open=False) as pool:
                runs = PostgresRunTable(pool, lease_s=60, timeout_s=TIMEOUT_S)
                s = Store(ReconnectingPostgresSaver(pool, timeout_s=TIMEOUT_S), runs, name)
                try:
                    yield s
                finally:
                    await s.saver.adelete_thread(s.thread)
        finally:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def checks(monkeypatch) -> list[Fence]:
    """Every fence check the saver makes."""
    made: list[Fence] = []
    check = pg_reconnect.passed

    async def counted(cur, fence: Fence) -> None:
        made.append(fence)
        await check(cur, fence)

    monkeypatch.setattr(pg_reconnect, "passed", counted)
    return made


@pytest.mark.needs("postgres")
async def test_fenced_writes_land_while_the_run_is_held_and_are_refused_once_taken_over(checks):
    async with asyncio.timeout(GUARD_S), store() as s:
        old = await s.running(A)
        with fenced(old):
            first = await s.put(0)
        assert await s.stored() == (1, 1, 1) and len(checks) == 2

        new = await s.take_over(old)
        assert new.attempt == old.attempt + 1
        with fenced(old):
            with pytest.raises(FencedError, match=f"run {old.run_id} was taken over .*attempt {old.attempt}.*nothing"):
                await s.put(1)
            with pytest.raises(FencedError):
                await s.saver.aput_writes(first, [("steps", ["late"])], "task-late")
            with pytest.raises(FencedError):
                await s.saver.adelete_thread(s.thread)
            with pytest.raises(FencedError):
                await s.saver.adelete_for_runs([old.run_id])
            assert (await s.saver.aget_tuple(s.config)).checkpoint["channel_values"] == {"steps": ["step 0"]}, \
                "reads are not fenced"
        assert await s.stored() == (1, 1, 1), "nothing of the refused writes was written"
        assert s.saver.retried == 0, "a refused write is not retried as a lost connection"

        with fenced(new):
            await s.put(1)
            assert await s.stored() == (2, 2, 2), "the new holder writes"
            await s.checkpoint(9, after=first, run_id=new.run_id)
            assert (await s.stored())[0] == 3
            await s.saver.adelete_for_runs([new.run_id])
            assert (await s.stored())[0] == 2, "and rolls its own run back"
        before = len(checks)
        await s.put(2)
        assert await s.stored() == (3, 3, 3) and len(checks) == before, "without a fence no check is made"


@pytest.mark.needs("postgres")
async def test_a_takeover_waits_for_a_fenced_write_in_flight(monkeypatch):
    checked, go = asyncio.Event(), asyncio.Event()
    check = pg_reconnect.passed

    async def held_open(cur, fence: Fence) -> None:
        await check(cur, fence)
        checked.set()
        await go.wait()

    async with asyncio.timeout(GUARD_S), store() as s:
        old = await s.running(A)
        await s.sql("UPDATE agent_ng_runs SET lease_until = clock_timestamp() + interval '300 milliseconds'"
                    " WHERE run_id = %s", (old.run_id,))
        monkeypatch.setattr(pg_reconnect, "passed", held_open)
        with fenced(old):
            write = asyncio.create_task(s.checkpoint(0))
        await checked.wait()
        async with await AsyncConnection.connect(POSTGRES_URL, autocommit=True, options=s.saver.conn.kwargs["options"]) as clock:
            lapsed = "SELECT clock_timestamp() > lease_until FROM agent_ng_runs WHERE run_id = %s"
            while not (await (await clock.execute(lapsed, (old.run_id,))).fetchone())[0]:  # lapses mid-write
                await asyncio.sleep(0.02)

        assert await s.runs.claim(B, run_id=old.run_id) is None, "the claim skips a run with a write in flight"
        update = "UPDATE agent_ng_runs SET holder = %s, attempt = attempt + 1 WHERE run_id = %s"
        async with await AsyncConnection.connect(POSTGRES_URL, autocommit=True, application_name=s.name,
                                                 options=s.saver.conn.kwargs["options"]) as other:
            taking = asyncio.create_task(other.execute(update, (B, old.run_id)))
            await s.waiting_on_a_lock()
            assert not taking.done(), "the takeover waits for the write's transaction"
            released_at = monotonic()
            monkeypatch.setattr(pg_reconnect, "passed", check)
            go.set()
            await write
            await taking
            taken_at = monotonic()
        assert taken_at > released_at
        assert await s.stored() == (1, 1, 0), "the write in flight committed before the takeover"
        with fenced(old), pytest.raises(FencedError):
            await s.put(1)


@pytest.mark.needs("postgres")
async def test_a_fenced_write_waits_for_a_takeover_under_way_and_is_then_refused():
    async with asyncio.timeout(GUARD_S), store() as s:
        old = await s.running(A)
        async with await AsyncConnection.connect(POSTGRES_URL, options=s.saver.conn.kwargs["options"]) as other:
            await other.execute("UPDATE agent_ng_runs SET holder = %s, attempt = attempt + 1 WHERE run_id = %s",
                                (B, old.run_id))
            with fenced(old):
                write = asyncio.create_task(s.checkpoint(0))
            await s.waiting_on_a_lock()
            assert not write.done()
            await other.commit()
        with pytest.raises(FencedError):
            await write
        assert await s.stored() == (0, 0, 0)


@pytest.mark.needs("pgbouncer", "postgres")
async def test_fenced_writes_work_through_a_transaction_pooler():
    """Through PgBouncer (the shared run table: a pooler takes no ``search_path``; the run goes in
    as running, so no other test's claim can take it)."""
    with PgBouncer() as bouncer:
        async with asyncio.timeout(GUARD_S), postgres_saver(bouncer.url, 2, POSTGRES_URL, TIMEOUT_S) as saver:
            runs = PostgresRunTable(saver.conn, lease_s=60, timeout_s=TIMEOUT_S)
            await runs.setup()
            s = Store(saver, runs, "")
            old = Fence(str(uuid.uuid4()), A, 1)
            await s.sql(
                "INSERT INTO agent_ng_runs (run_id, queue, thread_id, status, attempt, holder, lease_until, kind, payload)"
                " VALUES (%s, %s, %s, 'running', 1, %s, now() + interval '1 hour', 'native', '')",
                (old.run_id, runs.queue, s.thread, A),
            )
            try:
                with fenced(old):
                    await s.put(0)
                await s.sql("UPDATE agent_ng_runs SET holder = %s, attempt = 2 WHERE run_id = %s", (B, old.run_id))
                with fenced(old), pytest.raises(FencedError):
                    await s.put(1)
                with fenced(Fence(old.run_id, B, 2)):
                    await s.put(1)
                assert await s.stored() == (2, 2, 2)
            finally:
                await s.sql("DELETE FROM agent_ng_runs WHERE run_id = %s", (old.run_id,))
                await saver.adelete_thread(s.thread)


class Steps(TypedDict):
    steps: Annotated[list[str], operator.add]


def three_steps(flip=None) -> StateGraph:
    """``first`` -> ``second`` -> ``third``; ``flip`` is awaited inside ``second``."""

    async def first(state: Steps) -> dict:
        return {"steps": ["first"]}

    async def second(state: Steps) -> dict:
        if flip is not None:
            await flip()
        return {"steps": ["second"]}

    async def third(state: Steps) -> dict:
        return {"steps": ["third"]}

    builder = StateGraph(Steps)
    builder.add_node(first)
    builder.add_node(second)
    builder.add_node(third)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", "third")
    builder.add_edge("third", END)
    return builder


@pytest.mark.needs("postgres")
@pytest.mark.parametrize("durability", ["async", "sync"])
async def test_a_graph_whose_run_is_taken_over_mid_run_fails_and_writes_nothing_after(durability):
    """With ``async`` durability a step's checkpoint is written while the next step runs, so the
    takeover inside ``second`` may come before any checkpoint reached the database: then none
    is stored (CI saw that once). ``sync`` stores ``first``'s before ``second`` starts."""
    async with asyncio.timeout(GUARD_S), store() as s:
        fence = await s.running(A)
        flipped = []

        async def flip() -> None:
            await s.take_over(fence)
            flipped.append(monotonic())

        graph = three_steps(flip).compile(checkpointer=s.saver)
        with fenced(fence), pytest.raises(FencedError):
            await graph.ainvoke({"steps": []}, s.config, durability=durability)
        assert flipped

        stored = [t async for t in s.saver.alist(s.config)]
        values = [t.checkpoint["channel_values"].get("steps", []) for t in stored]
        writes = [v for t in stored for _, _, v in t.pending_writes]
        assert all(v in ([], ["first"]) for v in values), values
        assert all("second" not in str(w) and "third" not in str(w) for w in writes), writes
        if durability == "sync":
            assert ["first"] in values, "the checkpoint written before the flip is kept"


@pytest.mark.needs("postgres")
async def test_the_fence_reaches_langgraphs_tasks_and_its_background_checkpoint_writer(checks):
    async with asyncio.timeout(GUARD_S), store() as s:
        fence = await s.running(A)
        seen: list[tuple[str, Fence | None, asyncio.Task]] = []
        for name in ("aput", "aput_writes"):
            method = getattr(s.saver, name)

            def spy(*args, _method=method, _name=name, **kwargs):
                seen.append((_name, FENCE.get(), asyncio.current_task()))
                return _method(*args, **kwargs)

            setattr(s.saver, name, spy)

        async def run() -> dict:
            with fenced(fence):
                return await three_steps().compile(checkpointer=s.saver).ainvoke(
                    {"steps": []}, s.config, durability="async")

        running = asyncio.create_task(run())
        assert (await running)["steps"] == ["first", "second", "third"]

        assert {name for name, _, _ in seen} == {"aput", "aput_writes"}
        assert all(f == fence for _, f, _ in seen), "every checkpoint write saw the run's fence"
        assert any(task is not running for _, _, task in seen), "some came from LangGraph's own tasks"
        assert checks == [fence] * len(seen), "and each went through the fence check"


@pytest.mark.needs("postgres")
async def test_the_pool_and_the_lock_session_carry_the_replicas_application_name():
    async with asyncio.timeout(GUARD_S), postgres_saver(POSTGRES_URL, 2, POSTGRES_URL, TIMEOUT_S) as saver:
        async with saver.conn.connection() as conn:
            pool_pid = conn.info.backend_pid
            lock_pid = (await locks_of(saver).session()).info.backend_pid
            cur = await conn.execute("SELECT pid, application_name FROM pg_stat_activity WHERE pid = ANY(%s)",
                                     ([pool_pid, lock_pid],))
            named = {row["pid"]: row["application_name"] for row in await cur.fetchall()}
    assert named == {pool_pid: application_name_of(REPLICA_ID), lock_pid: application_name_of(REPLICA_ID)}


HOLDER = """
import asyncio, sys
from pathlib import Path
from agent_ng.persistence.replica import REPLICA_ID
from agent_ng.persistence.thread_lock import FileThreadLocks, PostgresThreadLocks

async def main(kind, where, *threads):
    locks = PostgresThreadLocks(where, 10.0) if kind == "postgres" else FileThreadLocks(Path(where))
    holds = {t: locks.hold(t) for t in threads}
    for hold in holds.values():
        await hold.__aenter__()
    print("held", REPLICA_ID, flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        await holds.pop(line.strip()).__aexit__(None, None, None)
        print("released", flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


class Holder:
    """Another process holding thread locks; it releases one per thread id written to it."""

    def __init__(self, process: asyncio.subprocess.Process, replica: str) -> None:
        self.process, self.replica = process, replica

    @classmethod
    @asynccontextmanager
    async def of(cls, kind: str, where: str, *threads: str) -> AsyncIterator[Holder]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLDER, kind, where, *threads, cwd=REPO,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        try:
            held, replica = (await process.stdout.readline()).decode().split()
            assert held == "held"
            yield cls(process, replica)
        finally:
            process.stdin.close()
            await process.wait()

    async def release(self, thread: str) -> float:
        """When the holder had released ``thread``."""
        self.process.stdin.write(thread.encode() + b"\n")
        await self.process.stdin.drain()
        assert (await self.process.stdout.readline()).strip() == b"released"
        return monotonic()


async def waits_then_frees(locks, thread: str, let_go) -> None:
    """``free`` refuses while another holds ``thread`` (taking its whole bound), waits while it
    holds, and answers ``True`` once ``let_go`` (another process's release, an eviction) is done."""
    started = monotonic()
    assert not await locks.free(thread, within_s=0.3)
    assert 0.3 <= monotonic() - started < 2.0

    tries, tried = 0, asyncio.Event()
    attempt = locks._try

    async def counted(thread_id: str) -> bool:
        nonlocal tries
        tries += 1
        if tries == 3:
            tried.set()
        return await attempt(thread_id)

    locks._try = counted
    try:
        waiting = asyncio.create_task(locks.free(thread, within_s=GUARD_S))
        await tried.wait()
        assert not waiting.done()
        let_go_at = await let_go()
        assert await waiting and monotonic() >= let_go_at
    finally:
        del locks._try


@pytest.mark.needs("postgres")
async def test_a_postgres_thread_is_free_once_another_process_releases_it_or_is_evicted():
    released, evicted = f"free-{uuid.uuid4().hex}", f"free-{uuid.uuid4().hex}"
    locks = PostgresThreadLocks(POSTGRES_URL, TIMEOUT_S)
    try:
        async with asyncio.timeout(GUARD_S), Holder.of("postgres", POSTGRES_URL, released, evicted) as other:
            assert other.replica != REPLICA_ID
            await waits_then_frees(locks, released, lambda: other.release(released))

            async def evict() -> float:
                async with AsyncConnectionPool(POSTGRES_URL, min_size=1, max_size=1, open=False,
                                               kwargs={"autocommit": True, "row_factory": dict_row}) as pool:
                    assert await PostgresRunTable(pool, lease_s=5, timeout_s=TIMEOUT_S).evict(other.replica) == 1
                return monotonic()

            await waits_then_frees(locks, evicted, evict)
    finally:
        await locks.close()


async def test_a_file_locked_thread_is_free_once_another_process_releases_it(tmp_path):
    thread = "t1"
    async with asyncio.timeout(GUARD_S), Holder.of("file", str(tmp_path), thread) as other:
        await waits_then_frees(FileThreadLocks(tmp_path), thread, lambda: other.release(thread))


@pytest.mark.needs("redis")
async def test_a_redis_append_with_a_token_lands_only_while_the_token_holds_the_run(redis_prefix):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix, retention_s=60)
    run = str(uuid.uuid4())
    try:
        await log.open(run, "t1")
        with pytest.raises(FencedError, match=f"run {run} was taken over"):
            await log.append(run, {"type": "content", "n": 0}, token="a:1")
        await log.fence(run, "a:1")
        await log.append(run, {"type": "content", "n": 1}, token="a:1")
        await log.append(run, {"type": "content", "n": 2})

        await log.fence(run, "b:2")
        with pytest.raises(FencedError):
            await log.append(run, {"type": "content", "n": 3}, token="a:1")
        await log.append(run, {"type": "content", "n": 4}, token="b:2")
        assert await log._redis.ttl(log._holder(run)) == -1, "kept while the run runs, however long"
        await log.append(run, {"type": "run_end", "status": "done"}, token="b:2")
        assert 0 < await log._redis.ttl(log._holder(run)) <= 60, "then kept as long as the events"

        await log.fence(run, None)
        for token in ("a:1", "b:2"):
            with pytest.raises(FencedError):
                await log.append(run, {"type": "content", "n": 5}, token=token)

        async with asyncio.timeout(5):
            events = [data async for _, data in log.read(run)]
        assert [e.get("n") for e in events] == [1, 2, 4, None], "the refused appends added nothing"
    finally:
        await log.close()
