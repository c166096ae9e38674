"""Runs as records in PostgreSQL, in one process: queued, refused, cancelled, taken over, fenced out.

The app runs in a thread (``tests.helpers.live_server``) on the real PostgreSQL checkpointer and
Redis event log, so its runs are rows of the run table (``agent_ng.persistence.run_table``).
Another replica is played by the test through the table itself: it claims a run and lets its
lease lapse (a replica that died), or takes a run over from the app (the app froze). The same
with real processes behind HAProxy is ``test_replicas_haproxy.py``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

import httpx
import pytest
from langchain_core.tools import tool
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from agent_ng.persistence.run_table import PostgresRunTable
from agent_ng.service.app import create_app
from agent_ng.service.background import NATIVE
from agent_ng.service.settings import ServiceSettings
from agent_ng.service.shared_runs import dumps
from tests.helpers.graph_runs import until_released
from tests.helpers.live_server import serving
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.sse import events
from tests.helpers.system import POSTGRES_URL, REDIS_URL

pytestmark = pytest.mark.needs("postgres", "redis")

GUARD_S = 20
LEASE_S = 0.6


def settings(redis_prefix: str, **overrides) -> ServiceSettings:
    return ServiceSettings(
        checkpoint_url=POSTGRES_URL,
        cache_url="memory://",
        system_prompt="",
        api_key=None,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        run_lease_s=LEASE_S,
        run_poll_s=0.05,
        **overrides,
    )


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=GUARD_S)


def thread() -> str:
    return f"shared-{uuid.uuid4().hex[:10]}"


async def table() -> tuple[AsyncConnectionPool, PostgresRunTable]:
    pool = AsyncConnectionPool(
        POSTGRES_URL, min_size=1, max_size=2, open=False,
        kwargs={"autocommit": True, "prepare_threshold": None, "row_factory": dict_row},
    )
    await pool.open()
    return pool, PostgresRunTable(pool, lease_s=LEASE_S, timeout_s=5, queue=os.environ["AGENT_RUN_QUEUE"])


async def ended(runs: PostgresRunTable, run_id: str):
    """The run's row once its end is recorded (just after its run_end reaches the log)."""
    while (row := await runs.get(run_id)).status in ("pending", "running"):
        await asyncio.sleep(0.02)
    return row


async def joined(c: httpx.AsyncClient, thread_id: str, run_id: str) -> list:
    async with c.stream("GET", f"/threads/{thread_id}/runs/{run_id}/stream") as r:
        assert r.status_code == 200, await r.aread()
        return [f async for f in events(r)]


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no {name}")


async def test_a_run_is_a_record_that_ends_with_its_status_and_attempt(redis_prefix):
    t = thread()
    model = ScriptedModel(replies=[Reply(text="hello")])
    pool, runs = await table()
    with serving(create_app(settings(redis_prefix), model=model, tools=[])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            run_id = (await c.post(f"/threads/{t}/runs", json={"input": "hi"})).json()["run_id"]
            got = await joined(c, t, run_id)
            row = await ended(runs, run_id)
            described = (await c.get(f"/threads/{t}/runs/{run_id}")).json()
            elsewhere = await c.get(f"/threads/{thread()}/runs/{run_id}")
    await pool.close()

    assert described["status"] == "done" and described["attempt"] == 1
    assert elsewhere.status_code == 404
    assert got[0].data["type"] == "run_start" and got[0].data["attempt"] == 1
    assert got[-1].data["status"] == "done"
    assert (row.status, row.attempt, row.holder, row.thread_id) == ("done", 1, None, t)


async def test_past_max_runs_a_streamed_run_gets_503_and_a_background_run_waits_in_the_queue(redis_prefix):
    busy, queued, refused = thread(), thread(), thread()
    released, started = threading.Event(), threading.Event()
    model = ScriptedModel(replies=[calls(("hold", {})), Reply(text="first"), Reply(text="second")])
    app = create_app(settings(redis_prefix, max_runs=1, retry_after_s=3), model=model, tools=[until_released(released, started, GUARD_S)])
    with serving(app) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            first = (await c.post(f"/threads/{busy}/runs", json={"input": "a"})).json()["run_id"]
            assert await asyncio.to_thread(started.wait, GUARD_S)
            second = (await c.post(f"/threads/{queued}/runs", json={"input": "b"})).json()["run_id"]
            rejected = await c.post(f"/threads/{refused}/runs/stream", json={"input": "c"})
            body = {"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": "d"}]}}
            rejected_too = await c.post("/langgraph/runs/stream", json=body)
            during = (await c.get("/metrics")).text
            released.set()
            got_first, got_second = await joined(c, busy, first), await joined(c, queued, second)
            after = (await c.get("/metrics")).text

    assert rejected.status_code == 503 and rejected.headers["retry-after"] == "3", rejected.text
    assert "AGENT_MAX_RUNS" in rejected.json()["detail"]
    assert rejected_too.status_code == 503 and rejected_too.headers["retry-after"] == "3"
    assert metric(during, "agent_runs_queued") == 1 and metric(during, "agent_runs_held") == 1
    assert metric(during, "agent_runs_rejected_total") == 2
    assert got_first[-1].data["status"] == "done" and got_second[-1].data["status"] == "done"
    assert "".join(f.data["text"] for f in got_second if f.event == "content") == "second"
    assert metric(after, "agent_runs_queued") == 0


async def test_a_queued_run_cancelled_ends_at_once_and_never_runs(redis_prefix):
    busy, queued = thread(), thread()
    released, started = threading.Event(), threading.Event()
    model = ScriptedModel(replies=[calls(("hold", {})), Reply(text="first"), Reply(text="never")])
    pool, runs = await table()
    app = create_app(settings(redis_prefix, max_runs=1), model=model, tools=[until_released(released, started, GUARD_S)])
    with serving(app) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            first = (await c.post(f"/threads/{busy}/runs", json={"input": "a"})).json()["run_id"]
            assert await asyncio.to_thread(started.wait, GUARD_S)
            second = (await c.post(f"/threads/{queued}/runs", json={"input": "b"})).json()["run_id"]
            cancelled = await c.post(f"/threads/{queued}/runs/{second}/cancel")
            got_second = await joined(c, queued, second)
            released.set()
            await joined(c, busy, first)
            row = await runs.get(second)
            state = (await c.get(f"/threads/{queued}")).status_code
    await pool.close()

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert [f.event for f in got_second] == ["run_end"] and got_second[0].data["status"] == "cancelled"
    assert row.status == "cancelled" and row.attempt == 0
    assert state == 404  # the question was never asked: the thread has no checkpoint
    assert len(model.seen) == 2  # "never" was never played


async def ghost_run(runs: PostgresRunTable, redis_prefix: str):
    """A run another replica started, claimed, then died holding: its lease lapses. The run's log
    is opened as that replica would have (``EventLog.open``)."""
    t, run_id = thread(), str(uuid.uuid4())
    await runs.add(run_id, t, NATIVE, dumps({"input": "hi", "config": {}, "stream_kwargs": {}}))
    ghost = await runs.claim("ghost-replica", run_id=run_id)
    redis = Redis.from_url(REDIS_URL)
    await redis.set(f"{redis_prefix}run:{run_id}:thread", t, ex=600)
    await redis.aclose()
    return t, run_id, ghost


async def test_a_run_whose_replica_died_is_taken_over_with_attempt_2(redis_prefix):
    model = ScriptedModel(replies=[Reply(text="taken over")])
    pool, runs = await table()
    t, run_id, ghost = await ghost_run(runs, redis_prefix)
    with serving(create_app(settings(redis_prefix), model=model, tools=[])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            got = await joined(c, t, run_id)
            row = await ended(runs, run_id)
            described = (await c.get(f"/threads/{t}/runs/{run_id}")).json()
            metrics = (await c.get("/metrics")).text
    await pool.close()

    assert ghost.attempt == 1
    assert [(f.event, f.data.get("attempt")) for f in got][0] == ("run_start", 2)
    assert got[-1].data["status"] == "done"
    assert "".join(f.data["text"] for f in got if f.event == "content") == "taken over"
    assert (row.status, row.attempt) == ("done", 2)
    assert (described["status"], described["attempt"]) == ("done", 2)
    assert metric(metrics, "agent_run_takeovers_total") == 1


async def test_a_run_past_its_attempts_ends_with_an_error_instead_of_running_again(redis_prefix):
    model = ScriptedModel(replies=[Reply(text="never")])
    pool, runs = await table()
    t, run_id, _ = await ghost_run(runs, redis_prefix)
    with serving(create_app(settings(redis_prefix, run_max_attempts=1), model=model, tools=[])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            got = await joined(c, t, run_id)
            row = await ended(runs, run_id)
    await pool.close()

    assert [f.event for f in got] == ["run_end"]
    assert got[0].data["status"] == "error" and "1 times" in got[0].data["error"]
    assert (row.status, row.attempt) == ("error", 2)
    assert len(model.seen) == 0


async def test_a_replica_whose_run_was_taken_over_writes_nothing_more_for_it(redis_prefix):
    t = thread()
    released, started = threading.Event(), threading.Event()
    model = ScriptedModel(replies=[calls(("hold", {})), Reply(text="not from here")])
    pool, runs = await table()
    app = create_app(settings(redis_prefix), model=model, tools=[until_released(released, started, GUARD_S)])
    with serving(app) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            run_id = (await c.post(f"/threads/{t}/runs", json={"input": "a"})).json()["run_id"]
            assert await asyncio.to_thread(started.wait, GUARD_S)
            async with pool.connection() as conn:  # another replica took it over (this one looked frozen)
                await conn.execute(
                    "UPDATE agent_ng_runs SET holder = 'other-replica', attempt = attempt + 1 WHERE run_id = %s",
                    (run_id,),
                )
            while app.state.runs.running(run_id):  # the next renewal tells it: it stops the run
                await asyncio.sleep(0.02)
            released.set()
            history = (await c.get(f"/threads/{t}/history")).json()
            redis = Redis.from_url(REDIS_URL, decode_responses=True)
            logged = [e["event"] for _, e in await redis.xrange(f"{redis_prefix}run:{run_id}:events")]
            await redis.aclose()
            row = await runs.get(run_id)
    await pool.close()

    assert all('"run_end"' not in e for e in logged), logged  # its end is the new holder's to write
    assert not any('"tool_result"' in e for e in logged)
    assert (row.status, row.holder, row.attempt) == ("running", "other-replica", 2)
    assert max(h["messages"] for h in history) == 2  # the question and the call: no result, no answer
    assert len(model.seen) == 1  # the answer after the tool was never asked for here


async def test_a_langgraph_server_api_run_is_a_shared_run_too(redis_prefix):
    model = ScriptedModel(replies=[Reply(text="via the sdk")])
    pool, runs = await table()
    with serving(create_app(settings(redis_prefix), model=model, tools=[])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            t = (await c.post("/langgraph/threads", json={})).json()["thread_id"]
            body = {"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": "hi"}]},
                    "stream_mode": ["messages-tuple"]}
            async with c.stream("POST", f"/langgraph/threads/{t}/runs/stream", json=body) as r:
                run_id = r.headers["content-location"].rsplit("/", 1)[-1]
                got = [f async for f in events(r)]
            record = (await c.get(f"/langgraph/threads/{t}/runs/{run_id}")).json()
            row = await ended(runs, run_id)
    await pool.close()

    assert got[0].event == "metadata" and got[0].data == {"run_id": run_id, "attempt": 1}
    assert "".join(f.data[0]["content"] for f in got if f.event == "messages") == "via the sdk"
    assert record["status"] == "success"
    assert (row.kind, row.status, row.attempt) == ("langgraph", "done", 1)


async def test_a_langgraph_server_api_run_lost_to_a_replica_that_died_is_taken_back_and_its_stream_goes_on(
    redis_prefix,
):
    released = threading.Event()
    calls_made: list[float] = []

    @tool
    def hold() -> str:
        """Waits until the test releases it."""
        calls_made.append(0.0)
        assert released.wait(GUARD_S)
        return "released"

    model = ScriptedModel(replies=[calls(("hold", {})), Reply(text="after the takeover")])
    pool, runs = await table()
    with serving(create_app(settings(redis_prefix), model=model, tools=[hold])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            t = (await c.post("/langgraph/threads", json={})).json()["thread_id"]
            body = {"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": "hold it"}]},
                    "stream_mode": ["messages-tuple"]}
            run_id = (await c.post(f"/langgraph/threads/{t}/runs", json=body)).json()["run_id"]
            while not calls_made:
                await asyncio.sleep(0.02)
            async with pool.connection() as conn:  # a replica took it over, then died at once
                await conn.execute(
                    "UPDATE agent_ng_runs SET holder = 'ghost', attempt = attempt + 1,"
                    " lease_until = clock_timestamp() + interval '200 milliseconds' WHERE run_id = %s",
                    (run_id,),
                )
            while (await runs.get(run_id)).attempt < 3:  # this replica took it back
                await asyncio.sleep(0.02)
            released.set()
            async with c.stream("GET", f"/langgraph/threads/{t}/runs/{run_id}/stream") as r:
                got = [f async for f in events(r)]
            record = (await c.get(f"/langgraph/threads/{t}/runs/{run_id}")).json()
            state = (await c.get(f"/langgraph/threads/{t}/state")).json()
            row = await ended(runs, run_id)
    await pool.close()

    assert [f.data["attempt"] for f in got if f.event == "metadata"] == [1, 3]
    assert "".join(f.data[0]["content"] for f in got if f.event == "messages" and f.data[0]["type"] == "AIMessageChunk") \
        .endswith("after the takeover")
    assert len(calls_made) == 2  # the call had not finished: it ran again
    assert record["status"] == "success" and (row.status, row.attempt) == ("done", 3)
    assert [m["type"] for m in state["values"]["messages"]] == ["human", "ai", "tool", "ai"]
