"""Deleting one run's checkpoints (``adelete_for_runs``, what ``multitask_strategy="rollback"``
calls) on every saver ``open_checkpointer`` returns: the thread is as the run before left it.

The agent runs with the offline model on memory, a SQLite file and the shared PostgreSQL. The
first run stops at an approval (``calculator`` needs one, ``count_primes`` runs beside it), so
its end has a next node, an interrupt and a pending write; the second asks a new question on top.
Runs carry their id in the config's metadata, as LangGraph Server's do.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from agent_ng.graph.agent import build_graph
from agent_ng.models.offline import OfflineChatModel
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import Retention, prune
from agent_ng.persistence.run_deletion import RunDeletionRefusedError
from agent_ng.persistence.thread_records import get_record, update_thread
from agent_ng.persistence.threads import thread_config
from agent_ng.settings import Settings
from agent_ng.tools.calculator import calculator
from agent_ng.tools.primes import count_primes
from agent_ng.tools.registry import configure

GUARD_S = 30
APPROVAL = "what is 17*23 and how many primes are below 20000?"
NO_RETENTION = Retention(keep_checkpoints=0, thread_ttl_s=0)




def agent(saver) -> Any:
    tools = [configure(calculator.model_copy(), requires_approval=True), count_primes]
    return build_graph(OfflineChatModel(), tools, saver, Settings(checkpoint_url="memory://", system_prompt=""))


async def run(graph, thread_id: str, question: str) -> str:
    """One run on the thread with its id in the metadata, as LangGraph Server runs it; its id."""
    run_id = str(uuid.uuid4())
    config = {"configurable": {"thread_id": thread_id}, "metadata": {"run_id": run_id}}
    async with asyncio.timeout(GUARD_S):
        await graph.ainvoke({"messages": [{"role": "user", "content": question}]}, config)
    return run_id


async def end_of(graph, thread_id: str) -> dict[str, Any]:
    """What a thread is now: its head checkpoint, values, next nodes, interrupts, pending writes
    (messages without ids: a pending tool result gets a new one each time the state is read)."""
    state = await graph.aget_state(thread_config(thread_id))
    head = await graph.checkpointer.aget_tuple(thread_config(thread_id))
    return {
        "checkpoint": state.config["configurable"]["checkpoint_id"],
        "messages": [(m.type, m.text) for m in state.values["messages"]],
        "next": state.next,
        "interrupts": [(i.id, i.value) for i in state.interrupts],
        "pending_writes": [(task, channel, repr(value)) for task, channel, value in head.pending_writes],
    }


async def checkpoints_of(saver, thread_id: str) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] async for t in saver.alist(thread_config(thread_id))]


async def blobs_of(saver, thread_id: str) -> set | None:
    """The channel-value blobs stored for the thread (memory, PostgreSQL); SQLite has none apart."""
    if hasattr(saver, "blobs"):
        return {key for key in saver.blobs if key[0] == thread_id}
    if not hasattr(saver, "guarded"):
        return None
    async with saver.conn.connection() as conn:
        rows = await (await conn.execute(
            "SELECT checkpoint_ns, channel, version FROM checkpoint_blobs WHERE thread_id = %s", (thread_id,)
        )).fetchall()
    return {(r["checkpoint_ns"], r["channel"], r["version"]) for r in rows}


async def test_deleting_the_second_run_leaves_the_thread_as_the_first_ended_and_the_rest_as_it_was(any_checkpoint_url):
    async with open_checkpointer(any_checkpoint_url, retention=NO_RETENTION) as saver:
        graph = agent(saver)
        thread, other = str(uuid.uuid4()), str(uuid.uuid4())
        await update_thread(graph, thread, {"owner": "test"})
        record = await get_record(graph, thread)
        await run(graph, thread, APPROVAL)
        await run(graph, other, "what is 2*3?")
        first_end, first_blobs = await end_of(graph, thread), await blobs_of(saver, thread)
        others = (await checkpoints_of(saver, other), await end_of(graph, other), await blobs_of(saver, other))
        second = await run(graph, thread, "what did I ask before?")
        assert (await end_of(graph, thread))["messages"][-1][1].startswith("Earlier you asked")

        await saver.adelete_for_runs([second])

        assert await end_of(graph, thread) == first_end
        assert first_end["next"] == ("tools",) and first_end["interrupts"] and first_end["pending_writes"]
        assert await blobs_of(saver, thread) == first_blobs, "the second run's values went, the first's stayed"
        assert (await checkpoints_of(saver, other), await end_of(graph, other), await blobs_of(saver, other)) == others
        assert await get_record(graph, thread) == record


async def test_the_sync_form_from_another_thread_deletes_a_run_that_started_the_thread(any_checkpoint_url):
    async with open_checkpointer(any_checkpoint_url, retention=NO_RETENTION) as saver:
        graph = agent(saver)
        thread = str(uuid.uuid4())
        only = await run(graph, thread, "what is 2*3?")

        await asyncio.to_thread(saver.delete_for_runs, [only])

        assert await checkpoints_of(saver, thread) == []


async def test_a_run_another_run_was_made_on_is_not_deleted(any_checkpoint_url):
    async with open_checkpointer(any_checkpoint_url, retention=NO_RETENTION) as saver:
        graph = agent(saver)
        thread = str(uuid.uuid4())
        first = await run(graph, thread, "what is 2*3?")
        await run(graph, thread, "what is 2*4?")
        before = await checkpoints_of(saver, thread)

        with pytest.raises(RunDeletionRefusedError, match=f"run {first} was not rolled back: checkpoint"):
            await saver.adelete_for_runs([first])

        assert await checkpoints_of(saver, thread) == before


async def test_a_run_whose_starting_checkpoint_retention_pruned_is_not_deleted(checkpoint_url):
    """Deleting it would leave the thread without the state it had before the run."""
    async with open_checkpointer(checkpoint_url, retention=NO_RETENTION) as saver:
        graph = agent(saver)
        thread = str(uuid.uuid4())
        await run(graph, thread, "what is 2*3?")
        second = await run(graph, thread, "what is 2*4?")
        await prune(saver, Retention(keep_checkpoints=2), threads=[thread])
        before = await checkpoints_of(saver, thread)

        with pytest.raises(RunDeletionRefusedError, match="retention has pruned"):
            await saver.adelete_for_runs([second])

        assert len(before) == 2 and await checkpoints_of(saver, thread) == before
