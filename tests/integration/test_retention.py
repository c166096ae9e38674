"""Retention on real SQLite and PostgreSQL: pruning shrinks a grown database and every thread's
latest state stays intact and loadable (with its pending writes, and in PostgreSQL with the
blobs it references); runs prune their own thread when they end; idle threads go past a TTL.

On the shared PostgreSQL a pass is limited to this test's threads (``prune(threads=...)``); on
SQLite it covers the whole file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.types import Command
from typer.testing import CliRunner

from agent_ng.cli.main import app
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import Retention, checkpoint_id_at, prune, store_of
from agent_ng.persistence.thread_lock import hold_thread
from agent_ng.settings import Settings
from agent_ng.tools.registry import configure
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.system import POSTGRES_URL

GUARD_S = 20
OFF = Retention(keep_checkpoints=0, thread_ttl_s=0)


@pytest.fixture
def store_url(checkpoint_url) -> str:
    """The conftest's SQLite file and shared PostgreSQL, by the name these tests use."""
    return checkpoint_url


def only(url: str, *threads: str) -> list[str] | None:
    """The shared PostgreSQL holds other tests' threads: prune only this test's there."""
    return list(threads) if url == POSTGRES_URL else None


def settings() -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="")


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def remove(path: str) -> str:
    """Remove a file."""
    return f"removed {path}"


async def run(graph, input, thread: str) -> list:
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, input, cfg(thread))]


def turns(n: int) -> list[Reply]:
    return [r for i in range(n) for r in (calls(("add", {"a": i, "b": 1})), Reply(text=f"it is {i + 1}"))]


async def checkpoints(saver, thread: str) -> list:
    return [t async for t in saver.alist(cfg(thread))]


async def blob_refs(saver, thread: str) -> tuple[set, set]:
    """PostgreSQL: (blobs stored, blobs the thread's checkpoints reference)."""
    async with saver.conn.connection() as conn:
        stored = await (await conn.execute(
            "SELECT channel, version FROM checkpoint_blobs WHERE thread_id = %s", (thread,)
        )).fetchall()
        refs = await (await conn.execute(
            "SELECT checkpoint -> 'channel_versions' AS v FROM checkpoints WHERE thread_id = %s", (thread,)
        )).fetchall()
    return (
        {(r["channel"], r["version"]) for r in stored},
        {(c, str(v)) for r in refs for c, v in r["v"].items()},
    )


async def test_prune_keeps_latest_state_pending_writes_and_referenced_blobs(store_url):
    grown, waiting, small = (f"r-{uuid.uuid4().hex[:8]}" for _ in range(3))
    model = ScriptedModel(
        replies=[
            *turns(6),
            calls(("add", {"a": 2, "b": 2}), ("remove", {"path": "/tmp/x"})),
            Reply(text="small"),
            Reply(text="done: 4 and removed"),
            Reply(text="it is 7"),
        ]
    )
    tools = [add, configure(remove, requires_approval=True)]
    async with open_checkpointer(store_url, retention=OFF) as saver:
        graph = build_graph(model, tools=tools, checkpointer=saver, settings=settings())
        for i in range(6):
            await run(graph, {"messages": [HumanMessage(f"{i}+1?")]}, grown)
        events = await run(graph, {"messages": [HumanMessage("add and remove")]}, waiting)
        assert events[-1].status == "interrupted"
        await run(graph, {"messages": [HumanMessage("hi")]}, small)

        before = {t: await checkpoints(saver, t) for t in (grown, waiting, small)}
        state_before = {t: (await graph.aget_state(cfg(t))).values["messages"] for t in before}
        pending_before = before[waiting][0].pending_writes
        assert len(before[grown]) > 20 and any(w[1] == "__interrupt__" for w in pending_before)

        blobs_before = (await blob_refs(saver, grown))[0] if store_url == POSTGRES_URL else set()
        report = await prune(saver, Retention(keep_checkpoints=2), threads=only(store_url, grown, waiting, small))

        after = {t: await checkpoints(saver, t) for t in before}
        assert grown in report.threads_pruned and small in report.threads_pruned
        assert report.checkpoints_deleted == sum(len(before[t]) - 2 for t in before)
        for thread in before:
            assert [c.config for c in after[thread]] == [c.config for c in before[thread][:2]]
            assert after[thread][-1].parent_config is None, "the oldest kept lost its deleted parent"
            assert (await graph.aget_state(cfg(thread))).values["messages"] == state_before[thread]
        assert after[waiting][0].pending_writes == pending_before, "the add result and the interrupt"
        if store_url == POSTGRES_URL:
            stored, referenced = await blob_refs(saver, grown)
            assert stored <= referenced, "no blob left that no checkpoint references"
            assert referenced & blobs_before <= stored, "no blob a kept checkpoint references is gone"
            assert len(stored) < len(blobs_before)

        snapshot = await graph.aget_state(cfg(waiting))
        [interrupt] = snapshot.interrupts
        resumed = await run(graph, Command(resume={interrupt.id: "approve"}), waiting)
        assert resumed[-1].status == "done"
        results = [m for m in (await graph.aget_state(cfg(waiting))).values["messages"] if isinstance(m, ToolMessage)]
        assert sorted(m.text for m in results) == ["4", "removed /tmp/x"], "the kept add result was not run again"

        await run(graph, {"messages": [HumanMessage("6+1?")]}, grown)
        messages = (await graph.aget_state(cfg(grown))).values["messages"]
        assert len(messages) == len(state_before[grown]) + 2 and messages[-1].text == "it is 7"
        assert grown in (await prune(saver, Retention(keep_checkpoints=2), threads=only(store_url, grown))).threads_pruned
        assert len(await checkpoints(saver, grown)) == 2


async def test_each_run_prunes_its_thread_when_it_ends(store_url):
    thread = f"r-{uuid.uuid4().hex[:8]}"
    model = ScriptedModel(replies=turns(4))
    async with open_checkpointer(store_url, retention=Retention(keep_checkpoints=3)) as saver:
        graph = build_graph(model, tools=[add], checkpointer=saver, settings=settings())
        for i in range(4):
            events = await run(graph, {"messages": [HumanMessage(f"{i}+1?")]}, thread)
            assert events[-1].status == "done"
    async with open_checkpointer(store_url, retention=OFF) as saver:
        kept = await checkpoints(saver, thread)
        assert len(kept) == 3, "pruned after the runs (the last one before the checkpointer closed)"
        graph = build_graph(model, tools=[add], checkpointer=saver, settings=settings())
        messages = (await graph.aget_state(cfg(thread))).values["messages"]
        assert [m.text for m in messages if isinstance(m, HumanMessage)] == [f"{i}+1?" for i in range(4)]


async def test_a_sqlite_thread_within_its_limit_is_pruned_without_the_write_lock(tmp_path):
    """Every run prunes its thread when it ends; most threads have nothing to delete then, and
    pruning them must not take SQLite's database-wide write lock (another process may hold it)."""
    path = tmp_path / "checkpoints.db"
    thread, grown = f"r-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
    async with open_checkpointer(f"sqlite:///{path}", retention=OFF) as saver:
        graph = build_graph(ScriptedModel(replies=turns(2)), tools=[add], checkpointer=saver, settings=settings())
        await run(graph, {"messages": [HumanMessage("1+1?")]}, thread)
        await run(graph, {"messages": [HumanMessage("2+1?")]}, grown)
        holder = sqlite3.connect(path, timeout=0)
        holder.execute("BEGIN IMMEDIATE")
        try:
            async with asyncio.timeout(1):
                deleted = await store_of(saver).prune_thread(thread, 20)  # what the end of its run does
        finally:
            holder.rollback()
            holder.close()
        assert deleted == 0 and len(await checkpoints(saver, thread)) > 2
        assert await store_of(saver).prune_thread(grown, 2) > 0 and len(await checkpoints(saver, grown)) == 2


async def test_idle_threads_are_deleted_unless_a_run_holds_them(store_url):
    idle, busy = f"r-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
    model = ScriptedModel(replies=[Reply(text="a"), Reply(text="b")])
    async with open_checkpointer(store_url, retention=OFF) as saver:
        graph = build_graph(model, tools=[add], checkpointer=saver, settings=settings())
        await run(graph, {"messages": [HumanMessage("a")]}, idle)
        await run(graph, {"messages": [HumanMessage("b")]}, busy)
        ttl = Retention(keep_checkpoints=0, thread_ttl_s=3600)

        mine = only(store_url, idle, busy)
        assert (await prune(saver, ttl, threads=mine)).threads_deleted == [], "written just now: not idle"
        async with hold_thread(graph, busy):
            report = await prune(saver, ttl, threads=mine, now=time.time() + 7200)
        assert report.threads_deleted == [idle] and report.threads_busy == [busy]
        assert await saver.aget_tuple(cfg(idle)) is None
        assert await saver.aget_tuple(cfg(busy)) is not None


def test_checkpoint_ids_compare_in_time_order():
    from langgraph.checkpoint.base.id import uuid6

    now = time.time()
    assert checkpoint_id_at(now - 1) < str(uuid6()) < checkpoint_id_at(now + 1)


async def test_memory_saver_is_refused_clearly():
    async with open_checkpointer("memory://") as saver:
        with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
            await prune(saver, Retention())


def test_prune_command_shrinks_a_grown_sqlite_file(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    thread = "grown"

    async def grow() -> int:
        async with open_checkpointer(url, retention=OFF) as saver:
            graph = build_graph(ScriptedModel(replies=turns(5)), tools=[add], checkpointer=saver, settings=settings())
            for i in range(5):
                await run(graph, {"messages": [HumanMessage(f"{i}+1?")]}, thread)
            return len(await checkpoints(saver, thread))

    async def count() -> tuple[int, int]:
        async with open_checkpointer(url, retention=OFF) as saver:
            graph = build_graph(ScriptedModel(replies=[]), checkpointer=saver, settings=settings())
            return len(await checkpoints(saver, thread)), len((await graph.aget_state(cfg(thread))).values["messages"])

    grown = asyncio.run(grow())
    monkeypatch.setenv("AGENT_CHECKPOINT_URL", url)
    result = CliRunner().invoke(app, ["prune", "--keep", "4"])
    assert result.exit_code == 0, result.output
    assert f"deleted {grown - 4} checkpoints of 1 threads" in result.output
    assert asyncio.run(count()) == (4, 20)

    bad = CliRunner().invoke(app, ["prune", "--keep", "-1"])
    assert bad.exit_code != 0 and asyncio.run(count()) == (4, 20), "refused, nothing deleted"
