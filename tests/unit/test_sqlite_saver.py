"""The SQLite saver's group commit: parallel tasks' writes share one transaction, each call
returns only once its own rows are committed, and a failed batch fails its callers; its
checkpoints are stored as LangGraph's own SQLite saver stores them."""

from __future__ import annotations

import asyncio

import aiosqlite
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agent_ng.graph.agent import build_graph
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.sqlite_saver import ROWS_PER_STATEMENT, SqliteSaver
from agent_ng.settings import Settings
from agent_ng.tools.registry import configure
from tests.helpers.scripted_model import ScriptedModel, calls


def config(checkpoint_id: str = "c1") -> dict:
    return {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": checkpoint_id}}


async def stored(path) -> list[tuple]:
    """The writes as a second connection sees them: only what was committed."""
    async with open_checkpointer(f"sqlite:///{path}") as reader:
        async with reader.conn.execute(
            "SELECT task_id, idx, channel FROM writes ORDER BY task_id, idx"
        ) as cursor:
            return list(await cursor.fetchall())


async def count_commits(saver: SqliteSaver) -> list[int]:
    """The ``COMMIT``s SQLite runs on the saver's connection, wherever they are issued from."""
    commits = [0]

    def traced(sql: str) -> None:
        commits[0] += sql.strip().upper() == "COMMIT"

    await saver.conn.set_trace_callback(traced)
    return commits


async def test_parallel_writes_share_a_commit_and_are_committed_when_each_call_returns(tmp_path):
    path = tmp_path / "c.db"
    tasks = 3 * ROWS_PER_STATEMENT // 2  # more rows than one statement takes
    async with open_checkpointer(f"sqlite:///{path}") as saver:
        assert isinstance(saver, SqliteSaver)
        commits = await count_commits(saver)
        await asyncio.gather(*(
            saver.aput_writes(config(), [("messages", [ToolMessage(f"r{i}", tool_call_id=f"c{i}")])], f"task-{i:03}")
            for i in range(tasks)
        ))
        assert 1 <= commits[0] < tasks / 10, "the calls made together were committed together"
        rows = await stored(path)
    assert rows == [(f"task-{i:03}", 0, "messages") for i in range(tasks)]


async def test_special_writes_replace_and_regular_writes_are_kept_once(tmp_path):
    path = tmp_path / "c.db"
    async with open_checkpointer(f"sqlite:///{path}") as saver:
        await asyncio.gather(
            saver.aput_writes(config(), [("__error__", "first")], "a"),
            saver.aput_writes(config(), [("messages", "kept")], "b"),
        )
        await asyncio.gather(
            saver.aput_writes(config(), [("__error__", "second")], "a"),
            saver.aput_writes(config(), [("messages", "ignored")], "b"),
        )
        async with saver.conn.execute("SELECT task_id, channel, type, value FROM writes") as cursor:
            pending = {(task, channel): saver.serde.loads_typed((kind, value)) for task, channel, kind, value in await cursor.fetchall()}
    assert pending == {("a", "__error__"): "second", ("b", "messages"): "kept"}


async def test_a_failed_batch_is_rolled_back_and_fails_every_call_in_it(tmp_path):
    path = tmp_path / "c.db"
    async with open_checkpointer(f"sqlite:///{path}") as saver:
        unserializable = object()
        calls = [
            saver.aput_writes(config(), [("messages", "fine")], "good"),
            saver.aput_writes(config(), [("messages", unserializable)], "bad"),
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results), results
        await saver.aput_writes(config(), [("messages", "later")], "after")
        assert await stored(path) == [("after", 0, "messages")]


@tool
def double(x: int) -> int:
    """Double x."""
    return 2 * x


@tool
def remove(path: str) -> str:
    """Remove a file."""
    return "removed"


def waiting_for_approval(saver):
    """A graph whose one turn doubles 2 and asks to remove a file, which waits for an approval."""
    model = ScriptedModel(replies=[calls(("double", {"x": 2}), ("remove", {"path": "/tmp/x"}))])
    return build_graph(model, [double, configure(remove, requires_approval=True)], saver, Settings(system_prompt=""))


async def test_a_pending_tool_result_reads_back_as_the_same_message_every_time(tmp_path):
    """A result stored while its step waits (here for an approval) keeps its message id
    (``with_message_id``): a state read from it does not make a new id on each read."""
    async with open_checkpointer(f"sqlite:///{tmp_path / 'c.db'}") as saver:
        graph = waiting_for_approval(saver)
        cfg = {"configurable": {"thread_id": "ids"}}
        await graph.ainvoke({"messages": [HumanMessage("double 2, remove /tmp/x")]}, cfg)
        first, second = [(await graph.aget_state(cfg)).values["messages"] for _ in range(2)]
        async with saver.conn.execute("SELECT type, value FROM writes WHERE channel = 'messages'") as cursor:
            written = [m for row in await cursor.fetchall() for m in saver.serde.loads_typed(tuple(row))]
    stored = [m for m in written if isinstance(m, ToolMessage)]
    assert len(stored) == 1 and stored[0].id, "stored with its id, whenever the saver serializes it"
    results = [m for m in first if isinstance(m, ToolMessage)]
    assert [m.text for m in results] == ["4"] and results[0].id
    assert first == second


async def test_a_checkpoint_is_stored_as_langgraphs_own_sqlite_saver_stores_it(tmp_path):
    checkpoint = {**empty_checkpoint(), "channel_values": {"messages": [HumanMessage("hi", id="m1")]}}
    put_config = {
        "configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "parent"},
        "metadata": {"run_id": "r1", "note": "é"},
    }
    metadata = {"source": "loop", "step": 3, "parents": {}}
    rows, returned = [], []
    for saver_of in (
        lambda: open_checkpointer(f"sqlite:///{tmp_path / 'ours.db'}"),
        lambda: AsyncSqliteSaver.from_conn_string(str(tmp_path / "theirs.db")),
    ):
        async with saver_of() as saver:
            await saver.setup()
            returned.append(await saver.aput(put_config, checkpoint, metadata, {}))
            async with saver.conn.execute("SELECT * FROM checkpoints") as cursor:
                rows.append([tuple(row) for row in await cursor.fetchall()])
            assert (await saver.aget_tuple(returned[-1])).checkpoint["id"] == checkpoint["id"]

    assert rows[0] == rows[1] and len(rows[0]) == 1
    assert returned[0] == returned[1]


async def test_a_checkpoint_loads_as_langgraphs_own_sqlite_saver_loads_it_in_one_trip_or_two(tmp_path, monkeypatch):
    """Loads read through ``OneTripReads``: the same tuples as ``AsyncSqliteSaver`` reads from
    the same file (pending writes, an interrupt, parents, history), in a trip to the SQLite
    thread for a thread with no checkpoint and two for one with (six and four before)."""
    path = tmp_path / "c.db"
    cfg = {"configurable": {"thread_id": "waits"}}
    none = {"configurable": {"thread_id": "none"}}
    trips = [0]
    execute = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        trips[0] += 1
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)

    async def loads(saver) -> tuple[list, list[int]]:
        got, counts = [], []
        latest = await saver.aget_tuple(cfg)
        for config in (cfg, latest.parent_config, none):
            trips[0] = 0
            got.append(await saver.aget_tuple(config))
            counts.append(trips[0])
        got.append([t async for t in saver.alist(cfg)])
        return got, counts

    async with open_checkpointer(f"sqlite:///{path}") as saver:
        graph = waiting_for_approval(saver)
        await graph.ainvoke({"messages": [HumanMessage("double 2, remove /tmp/x")]}, cfg)
        ours, our_trips = await loads(saver)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as theirs_saver:
        theirs, their_trips = await loads(theirs_saver)

    assert any(write[1] == "__interrupt__" for write in ours[0].pending_writes), "the thread waits for approval"
    assert ours == theirs and ours[2] is None and len(ours[3]) > 2
    assert our_trips == [2, 2, 1] and their_trips == [6, 6, 4]
