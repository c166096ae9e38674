"""The PostgreSQL checkpointer through PgBouncer in transaction pooling (tests/pgbouncer.py).

- Runs work through the pooler: no prepared statements (``prepare_threshold=None``).
- A pooler restart in the middle of a run (a tool waiting while every pooled connection is
  dropped) costs one retried operation, and the run's checkpoints are all there afterwards.
- Thread locks go to the direct URL (``lock_url``): two checkpointers through the pooler
  still refuse each other's busy thread and release it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import Retention
from agent_ng.persistence.thread_lock import ThreadBusyError, hold_thread
from agent_ng.persistence.threads import thread_ids
from agent_ng.settings import Settings
from tests.helpers.pgbouncer import PgBouncer
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.system import POSTGRES_URL

GUARD_S = 30
pytestmark = pytest.mark.needs("pgbouncer", "postgres")


@pytest.fixture
def bouncer():
    with PgBouncer() as running:
        yield running


def settings() -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="")


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def open_through(bouncer: PgBouncer):
    return open_checkpointer(bouncer.url, lock_url=POSTGRES_URL, retention=Retention(keep_checkpoints=0))


async def test_runs_survive_a_pooler_restart_mid_run(bouncer):
    thread = f"pgb-{uuid.uuid4().hex[:10]}"
    started, release = asyncio.Event(), asyncio.Event()

    @tool
    async def wait_for_pooler(n: int) -> str:
        """Works while the test restarts the pooler."""
        started.set()
        await release.wait()
        return f"part {n} done"

    model = ScriptedModel(
        replies=[
            Reply(text="first answer"),
            calls(("wait_for_pooler", {"n": 1})),
            Reply(text="second answer"),
            Reply(text="third answer"),
        ]
    )
    async with asyncio.timeout(GUARD_S), open_through(bouncer) as saver:
        graph = build_graph(model, tools=[wait_for_pooler], checkpointer=saver, settings=settings())
        first = [e async for e in stream(graph, {"messages": [HumanMessage("one")]}, cfg(thread))]
        assert first[-1].status == "done" and saver.retried == 0

        async def second_run() -> list:
            return [e async for e in stream(graph, {"messages": [HumanMessage("two")]}, cfg(thread))]

        running = asyncio.create_task(second_run())
        await started.wait()
        await asyncio.to_thread(bouncer.restart)
        release.set()
        second = await running
        assert second[-1].status == "done", second[-1].to_dict()
        assert saver.retried == 1, "the tool result's write met a dropped connection and went again, once"

        third = [e async for e in stream(graph, {"messages": [HumanMessage("three")]}, cfg(thread))]
        assert third[-1].status == "done" and saver.retried == 1
        assert thread in await thread_ids(saver), "the thread list (its own SQL) works through the pooler"

    async with open_checkpointer(POSTGRES_URL, retention=Retention(keep_checkpoints=0)) as direct:
        messages = (await direct.aget_tuple(cfg(thread))).checkpoint["channel_values"]["messages"]
        history = [c async for c in direct.alist(cfg(thread))]
        try:
            assert [m.text for m in messages] == [
                "one", "first answer", "two", "", "part 1 done", "second answer", "three", "third answer"
            ]
            assert len([m for m in messages if isinstance(m, ToolMessage)]) == 1
            steps = [c.metadata["step"] for c in reversed(history)]
            assert steps == list(range(-1, len(steps) - 1)), "one checkpoint per step, none missing"
            parents = {c.config["configurable"]["checkpoint_id"] for c in history}
            assert all(c.parent_config is None or c.parent_config["configurable"]["checkpoint_id"] in parents
                       for c in history), "an unbroken chain: no checkpoint lost"
        finally:
            await direct.adelete_thread(thread)


async def test_thread_locks_hold_through_the_pooler_with_a_direct_lock_url(bouncer):
    thread = f"pgb-{uuid.uuid4().hex[:10]}"
    model = ScriptedModel(replies=[Reply(text="hello")])
    async with asyncio.timeout(GUARD_S), open_through(bouncer) as one, open_through(bouncer) as two:
        first = build_graph(model, checkpointer=one, settings=settings())
        second = build_graph(model, checkpointer=two, settings=settings())
        async with hold_thread(first, thread):
            with pytest.raises(ThreadBusyError):
                async with hold_thread(second, thread):
                    pass
        events = [e async for e in stream(second, {"messages": [HumanMessage("hi")]}, cfg(thread))]
        assert events[-1].status == "done", "released: the other replica may run the thread"
        await two.adelete_thread(thread)
