"""Many runs at once on one store: nothing lost, nothing interleaved, a busy thread refused.

50 runs on 50 threads meet at a barrier inside their tool (so they really are in flight
together), against one SQLite file and against PostgreSQL; afterwards every thread has exactly
its own messages and as many checkpoints as a run alone makes. Two runs on one thread: the
second is refused with ``ThreadBusyError`` and writes nothing, also from a second checkpointer
on the same store (as another process or replica would have).
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.thread_lock import ThreadBusyError
from agent_ng.settings import Settings
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

RUNS = 50
GUARD_S = 30


class JobModel(ScriptedModel):
    """Answers by content, so concurrent runs can share it: "job k" -> meet(k) -> "job k: result"."""

    def _next(self, messages):
        self.finished.append(False)
        last = messages[-1]
        if isinstance(last, HumanMessage):
            return calls(("meet", {"k": int(last.text.split()[1])}))
        return Reply(text=f"job {last.text}")


def meeting_tool(parties: int):
    barrier = asyncio.Barrier(parties)

    @tool
    async def meet(k: int) -> str:
        """Waits until every run is here."""
        await barrier.wait()
        return f"{k} met"

    return meet


async def run(graph, k: int, thread: str) -> list:
    config = {"configurable": {"thread_id": thread}}
    return [e async for e in stream(graph, {"messages": [HumanMessage(f"job {k}")]}, config)]


async def checkpoint_count(graph, thread: str) -> int:
    return len([s async for s in graph.aget_state_history({"configurable": {"thread_id": thread}})])


async def test_fifty_concurrent_runs_on_fifty_threads_lose_and_mix_nothing(checkpoint_url):
    prefix = f"many-{uuid.uuid4().hex[:8]}"
    settings = Settings(system_prompt="", memory_max_tokens=0)
    async with open_checkpointer(checkpoint_url) as saver:
        alone = build_graph(JobModel(replies=[]), tools=[meeting_tool(1)], checkpointer=saver, settings=settings)
        await run(alone, -1, f"{prefix}-alone")
        expected_checkpoints = await checkpoint_count(alone, f"{prefix}-alone")

        graph = build_graph(JobModel(replies=[]), tools=[meeting_tool(RUNS)], checkpointer=saver, settings=settings)
        async with asyncio.timeout(GUARD_S):
            results = await asyncio.gather(*(run(graph, k, f"{prefix}-{k}") for k in range(RUNS)))

        assert [events[-1].status for events in results] == ["done"] * RUNS
        for k in range(RUNS):
            thread = f"{prefix}-{k}"
            messages = (await graph.aget_state({"configurable": {"thread_id": thread}})).values["messages"]
            human, asked, answered, final = messages
            assert isinstance(human, HumanMessage) and human.text == f"job {k}"
            assert isinstance(asked, AIMessage) and asked.tool_calls[0]["args"] == {"k": k}
            assert isinstance(answered, ToolMessage) and answered.tool_call_id == asked.tool_calls[0]["id"]
            assert answered.text == f"{k} met" and final.text == f"job {k} met"
            assert await checkpoint_count(graph, thread) == expected_checkpoints, thread
        for thread in [f"{prefix}-alone", *(f"{prefix}-{k}" for k in range(RUNS))]:
            await saver.adelete_thread(thread)


@pytest.mark.parametrize("second_store", [False, True], ids=["same-checkpointer", "another-checkpointer"])
async def test_a_second_run_on_a_busy_thread_is_refused_and_writes_nothing(checkpoint_url, second_store):
    thread = f"busy-{uuid.uuid4().hex}"
    config = {"configurable": {"thread_id": thread}}
    release = asyncio.Event()

    @tool
    async def hold() -> str:
        """Holds the run until released."""
        await release.wait()
        return "held"

    settings = Settings(system_prompt="")
    async with open_checkpointer(checkpoint_url) as saver, open_checkpointer(checkpoint_url) as other:
        first = build_graph(
            ScriptedModel(replies=[calls(("hold", {})), Reply(text="first done")]),
            tools=[hold], checkpointer=saver, settings=settings,
        )
        second = build_graph(
            ScriptedModel(replies=[Reply(text="second done")]),
            tools=[], checkpointer=other if second_store else saver, settings=settings,
        )
        async with asyncio.timeout(GUARD_S):
            events = stream(first, {"messages": [HumanMessage("first")]}, config)
            async for event in events:
                if event.type == "tool_start":
                    break

            refused = []
            with pytest.raises(ThreadBusyError, match="is busy"):
                async for event in stream(second, {"messages": [HumanMessage("second")]}, config):
                    refused.append(event)
            assert [e.type for e in refused] == ["run_start", "run_end"]
            assert refused[-1].status == "error" and "ThreadBusyError" in refused[-1].error

            release.set()
            rest = [e async for e in events]
            assert rest[-1].status == "done"
            texts = [m.text for m in (await first.aget_state(config)).values["messages"]]
            assert texts == ["first", "", "held", "first done"], "the refused run wrote nothing"

            after = [e async for e in stream(second, {"messages": [HumanMessage("second")]}, config)]
            assert after[-1].status == "done", "the thread is free once the first run ended"
            texts = [m.text for m in (await first.aget_state(config)).values["messages"]]
            assert texts[-2:] == ["second", "second done"]
        await saver.adelete_thread(thread)


@pytest.mark.needs("postgres")
async def test_a_lost_lock_session_is_reopened_and_still_refuses_a_busy_thread():
    from psycopg import AsyncConnection

    from agent_ng.persistence.thread_lock import locks_of
    from tests.helpers.system import POSTGRES_URL

    thread = f"lost-{uuid.uuid4().hex}"
    config = {"configurable": {"thread_id": thread}}
    settings = Settings(system_prompt="")
    async with open_checkpointer(POSTGRES_URL) as saver, open_checkpointer(POSTGRES_URL) as other:
        graph = build_graph(ScriptedModel(replies=[Reply(text="one"), Reply(text="two")]), tools=[], checkpointer=saver, settings=settings)
        rival = build_graph(ScriptedModel(replies=[]), tools=[], checkpointer=other, settings=settings)
        session = await locks_of(saver).session()
        async with await AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (session.info.backend_pid,))
        async with asyncio.timeout(GUARD_S):
            first = [e async for e in stream(graph, {"messages": [HumanMessage("a")]}, config)]
            assert first[-1].status == "done"
            assert (await locks_of(saver).session()) is not session, "a new session was opened"
            async with locks_of(saver).hold(thread):
                with pytest.raises(ThreadBusyError):
                    [e async for e in stream(rival, {"messages": [HumanMessage("b")]}, config)]
        await saver.adelete_thread(thread)


async def test_a_file_lock_whose_taking_is_cancelled_is_not_left_held(tmp_path, monkeypatch):
    from agent_ng.persistence.thread_lock import FileThreadLocks

    locks, other = FileThreadLocks(tmp_path), FileThreadLocks(tmp_path)
    entered, go_on = threading.Event(), threading.Event()
    take = locks._lock

    def slow_lock(thread_id: str):
        entered.set()
        go_on.wait(GUARD_S)
        return take(thread_id)

    monkeypatch.setattr(locks, "_lock", slow_lock)

    async def hold() -> None:
        async with locks.hold("t1"):
            raise AssertionError("the cancelled hold never starts")

    holder = asyncio.create_task(hold())
    await asyncio.to_thread(entered.wait, GUARD_S)
    holder.cancel()
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await holder
    for _ in range(100):
        try:
            async with other.hold("t1"):
                return
        except ThreadBusyError:
            await asyncio.sleep(0.01)
    raise AssertionError("the lock the cancelled hold took in its worker thread stayed held")
