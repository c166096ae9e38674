"""The SQLite checkpointer: WAL with synchronous=NORMAL, and threads that outlive the process's saver."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from agent_ng.graph.agent import build_graph
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.settings import Settings
from tests.helpers.scripted_model import Reply, ScriptedModel


async def pragma(saver, name: str):
    async with saver.conn.execute(f"PRAGMA {name}") as cursor:
        return (await cursor.fetchone())[0]


async def test_sqlite_saver_uses_wal_without_fsync_per_commit(tmp_path):
    async with open_checkpointer(f"sqlite:///{tmp_path / 'c.db'}") as saver:
        assert await pragma(saver, "journal_mode") == "wal"
        assert await pragma(saver, "synchronous") == 1, "1 is NORMAL; FULL (2) fsyncs every commit"


async def test_a_thread_written_is_read_back_by_a_new_saver(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    settings = Settings(checkpoint_url=url, system_prompt="")
    config = {"configurable": {"thread_id": "kept"}}
    async with open_checkpointer(url) as saver:
        graph = build_graph(ScriptedModel(replies=[Reply(text="stored")]), [], saver, settings)
        await graph.ainvoke({"messages": [HumanMessage("keep this")]}, config)

    async with open_checkpointer(url) as saver:
        graph = build_graph(ScriptedModel(replies=[]), [], saver, settings)
        messages = (await graph.aget_state(config)).values["messages"]
    assert [type(m) for m in messages] == [HumanMessage, AIMessage]
    assert [m.text for m in messages] == ["keep this", "stored"]
