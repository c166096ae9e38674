"""Thread operations, for the CLI and for embedding: list, show, fork, delete.

    async with open_checkpointer(url) as saver:
        graph = build_graph(checkpointer=saver)
        for info in await list_threads(graph):                 # newest first
            print(info.thread_id, info.status, info.last_question)
        history = await show_thread(graph, "t1")              # messages, tool results, checkpoints
        copy = await fork_thread(graph, "t1", history.checkpoints[3].checkpoint_id)
        await delete_thread(graph, "t1")

A fork is a new thread holding the state of an earlier checkpoint; what was pending there is
pending in the fork (tool calls not yet answered run when it is resumed with
``stream(graph, None, config)``), and the source thread is left as it was. Deleting refuses a
thread that a run is writing (``ThreadBusyError``). LangGraph has no "list threads" call, so
thread ids come from the checkpointer's own tables (SQLite, PostgreSQL) or storage (memory).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.pregel import Pregel
from langgraph.types import Interrupt, StateSnapshot

from agent_ng.nodes import LLM, TOOLS
from agent_ng.persistence.thread_lock import hold_thread

ThreadStatus = Literal["idle", "interrupted", "pending"]
"""``interrupted``: waits for an approval; ``pending``: a run stopped mid-way (resume it)."""

THREADS_SQL = (
    "SELECT thread_id, MAX(checkpoint_id) AS last FROM checkpoints WHERE checkpoint_ns = '' "
    "GROUP BY thread_id ORDER BY last DESC"
)


class ThreadNotFoundError(LookupError):
    """No such thread, or no such checkpoint of it."""

    def __init__(self, thread_id: str, checkpoint_id: str | None = None) -> None:
        what = f"checkpoint {checkpoint_id!r} of thread {thread_id!r}" if checkpoint_id else f"thread {thread_id!r}"
        super().__init__(f"no {what}")


class UnfinishedRunError(RuntimeError):
    """A new question on a thread whose last run has not finished; nothing was written.

    LangGraph would start the question anyway and drop what the unfinished step holds: calls
    waiting for approval, results of tools that finished before a crash."""

    def __init__(self, thread_id: str, status: ThreadStatus) -> None:
        why = "calls waiting for approval" if status == "interrupted" else "it stopped mid-way"
        super().__init__(f"thread {thread_id!r} has an unfinished run ({why}); finish it first")
        self.thread_id = thread_id
        self.status = status


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A thread at a glance (``list_threads``): last write, size, status, last question."""

    thread_id: str
    updated_at: str | None
    messages: int
    status: ThreadStatus
    last_question: str | None


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One checkpoint of a thread: when, at which step, and which nodes it left to run."""

    checkpoint_id: str
    created_at: str | None
    step: int | None
    source: str | None
    next: tuple[str, ...]
    messages: int


@dataclass(frozen=True, slots=True)
class ThreadHistory:
    """A thread as ``show_thread`` reads it: its messages, what it waits for, its checkpoints."""

    thread_id: str
    status: ThreadStatus
    messages: list[AnyMessage]
    interrupts: tuple[Interrupt, ...]
    checkpoints: list[CheckpointInfo]
    """Newest first; any of their ids can be forked from."""


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    """The run config that addresses ``thread_id``, at ``checkpoint_id`` when given."""
    configurable = {"thread_id": thread_id}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def saver_of(graph: Pregel) -> BaseCheckpointSaver:
    """The graph's checkpointer; thread operations refuse a graph without one."""
    if not isinstance(graph.checkpointer, BaseCheckpointSaver):
        raise ValueError("thread operations need a graph built with a checkpointer")
    return graph.checkpointer


async def thread_ids(saver: BaseCheckpointSaver, limit: int | None = None) -> list[str]:
    """Thread ids, most recently written first."""
    if isinstance(saver, InMemorySaver):
        latest = {t: max(s.get("", {}) or [""]) for t, s in saver.storage.items() if s.get("")}
        ids = sorted(latest, key=latest.__getitem__, reverse=True)
    elif "AsyncSqliteSaver" in (kinds := {cls.__name__ for cls in type(saver).__mro__}):
        async with saver.lock, saver.conn.execute(THREADS_SQL) as cursor:
            ids = [row[0] async for row in cursor]
    elif "AsyncPostgresSaver" in kinds:
        from langgraph.checkpoint.postgres import _ainternal

        async def fetch() -> list[Any]:
            async with _ainternal.get_connection(saver.conn) as conn:
                return await (await conn.execute(THREADS_SQL)).fetchall()

        guarded = getattr(saver, "guarded", None)  # ReconnectingPostgresSaver's retry and deadline
        rows = await (guarded(fetch) if guarded else fetch())
        ids = [row["thread_id"] for row in rows]
    else:
        ids = list(dict.fromkeys([t.config["configurable"]["thread_id"] async for t in saver.alist(None)]))
    return ids[:limit] if limit is not None else ids


def status_of(snapshot: StateSnapshot) -> ThreadStatus:
    """``tasks`` rather than ``next``: a step whose tasks all wrote results before the process
    stopped has no ``next`` yet, but is unfinished until it is resumed."""
    if snapshot.interrupts:
        return "interrupted"
    return "pending" if snapshot.tasks else "idle"


def refuse_if_waiting(thread_id: str, snapshot: StateSnapshot) -> None:
    """``UnfinishedRunError`` when the thread's calls wait for approval: new input there would
    supersede a person's pending decision (a thread stopped mid-way is settled instead)."""
    if status_of(snapshot) == "interrupted":
        raise UnfinishedRunError(thread_id, "interrupted")


async def thread_status(graph: Pregel, thread_id: str) -> ThreadStatus:
    """Whether the thread is idle, waits for an approval, or stopped mid-way."""
    return status_of(await graph.aget_state(thread_config(thread_id)))


async def list_threads(graph: Pregel, limit: int | None = 20) -> list[ThreadInfo]:
    """The most recently written threads, with their status and last question."""
    infos = []
    for thread_id in await thread_ids(saver_of(graph), limit):
        snapshot = await graph.aget_state(thread_config(thread_id))
        messages = snapshot.values.get("messages", [])
        asked = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        infos.append(ThreadInfo(thread_id, snapshot.created_at, len(messages), status_of(snapshot), asked))
    return infos


async def show_thread(graph: Pregel, thread_id: str, checkpoints: int | None = None) -> ThreadHistory:
    """The thread's messages (with tool results) and its checkpoints, newest first."""
    snapshot = await graph.aget_state(thread_config(thread_id))
    if snapshot.metadata is None:
        raise ThreadNotFoundError(thread_id)
    history = [
        CheckpointInfo(
            s.config["configurable"]["checkpoint_id"],
            s.created_at,
            (s.metadata or {}).get("step"),
            (s.metadata or {}).get("source"),
            s.next,
            len(s.values.get("messages", [])),
        )
        async for s in graph.aget_state_history(thread_config(thread_id), limit=checkpoints)
    ]
    return ThreadHistory(
        thread_id,
        status_of(snapshot),
        list(snapshot.values.get("messages", [])),
        snapshot.interrupts,
        history,
    )


async def fork_thread(
    graph: Pregel,
    thread_id: str,
    checkpoint_id: str | None = None,
    new_thread_id: str | None = None,
) -> str:
    """A new thread with the state of ``thread_id`` at ``checkpoint_id`` (default: its latest)."""
    source = await graph.aget_state(thread_config(thread_id, checkpoint_id))
    if source.metadata is None:
        raise ThreadNotFoundError(thread_id, checkpoint_id)
    values = {k: v for k, v in source.values.items() if k in ("messages", "summary", "summary_through")}
    if not values.get("messages"):
        raise ValueError(f"checkpoint {checkpoint_id or 'latest'} of thread {thread_id!r} has no messages to fork")
    new_thread_id = new_thread_id or uuid.uuid4().hex[:12]
    if await saver_of(graph).aget_tuple(thread_config(new_thread_id)) is not None:
        raise ValueError(f"thread {new_thread_id!r} already exists; fork into a new thread id")
    target = {
        **thread_config(new_thread_id),
        "metadata": {"forked_from": thread_id, "forked_at": source.config["configurable"]["checkpoint_id"]},
    }
    async with hold_thread(graph, new_thread_id):
        await graph.aupdate_state(target, values, as_node=resume_node(values["messages"]))
    return new_thread_id


def resume_node(messages: list[AnyMessage]) -> str:
    """The node the fork's state is written as, so the fork continues where the source would:
    after a question the model is next (as if written by ``tools``); otherwise ``llm``'s router
    re-sends the unanswered tool calls, or calls the model after answered ones, or ends."""
    return TOOLS if isinstance(messages[-1], HumanMessage) else LLM


async def delete_thread(graph: Pregel, thread_id: str) -> None:
    """Delete every checkpoint of the thread; refused while a run writes it."""
    saver = saver_of(graph)
    async with hold_thread(graph, thread_id):
        if await saver.aget_tuple(thread_config(thread_id)) is None:
            raise ThreadNotFoundError(thread_id)
        await saver.adelete_thread(thread_id)
