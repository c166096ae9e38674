"""The threads the agent keeps: list them, read one's messages or checkpoints, delete one.

Threads live in the graph's checkpointer, which has no "list threads" call; the thread ids
come from ``agent_ng.persistence.threads`` (the CLI's ``agent-ng threads`` reads them the same way), and
deleting goes through it too, so a thread another process is running is refused there as here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel

import agent_ng.persistence.threads as stored
from agent_ng.persistence.thread_lock import ThreadBusyError
from agent_ng.persistence.threads import thread_config
from agent_ng.service.inputs import ThreadId

router = APIRouter(prefix="/threads")

TITLE_CHARS = 80
EPOCH = datetime.fromtimestamp(0, UTC)


class ToolCallOut(BaseModel):
    """A tool call the model made."""

    id: str | None
    name: str
    args: Any


class MessageOut(BaseModel):
    """One message of a thread."""

    id: str | None
    role: Literal["user", "assistant", "tool", "system"]
    content: str
    tool_calls: list[ToolCallOut] = []
    tool_call_id: str | None = None
    name: str | None = None
    status: str | None = None


class ThreadSummary(BaseModel):
    """A thread in the list."""

    thread_id: str
    title: str
    """The thread's first question, cut to 80 characters."""
    messages: int
    updated_at: datetime | None


class ThreadState(BaseModel):
    """A thread's messages at its latest checkpoint."""

    thread_id: str
    messages: list[MessageOut]
    next: list[str]
    """Nodes still to run: not empty when a run stopped part-way (waiting for approval)."""
    checkpoint_id: str | None
    updated_at: datetime | None


class CheckpointOut(BaseModel):
    """One checkpoint of a thread."""

    checkpoint_id: str | None
    parent_checkpoint_id: str | None
    step: int | None
    source: str | None
    next: list[str]
    messages: int
    created_at: datetime | None


@router.get("", summary="The most recently updated threads")
async def list_threads(
    request: Request, limit: int = Query(50, ge=1, le=500)
) -> list[ThreadSummary]:
    """The most recently updated threads, each titled by its first question."""
    saver = stored.saver_of(request.app.state.runner.graph)
    summaries = [
        ThreadSummary(
            thread_id=thread_id,
            title=title(messages := item.checkpoint["channel_values"].get("messages", [])),
            messages=len(messages),
            updated_at=item.checkpoint.get("ts"),
        )
        for thread_id in await stored.thread_ids(saver, limit)
        if (item := await saver.aget_tuple(thread_config(thread_id)))
    ]
    return sorted(summaries, key=lambda t: t.updated_at or EPOCH, reverse=True)


@router.get("/{thread_id}", summary="A thread's messages")
async def get_thread(thread_id: ThreadId, request: Request) -> ThreadState:
    """The thread's messages at its latest checkpoint, and what is left to run."""
    state = await request.app.state.runner.graph.aget_state(thread_config(thread_id))
    if not state.values:
        raise HTTPException(404, f"no thread {thread_id!r}")
    return ThreadState(
        thread_id=thread_id,
        messages=[message_out(m) for m in state.values.get("messages", [])],
        next=list(state.next),
        checkpoint_id=(state.config or {}).get("configurable", {}).get("checkpoint_id"),
        updated_at=state.created_at,
    )


@router.get("/{thread_id}/history", summary="A thread's checkpoints, newest first")
async def thread_history(
    thread_id: ThreadId, request: Request, limit: int = Query(50, ge=1, le=1000)
) -> list[CheckpointOut]:
    """The thread's checkpoints, newest first: the step and the source that wrote each."""
    graph = request.app.state.runner.graph
    history = [
        CheckpointOut(
            checkpoint_id=s.config["configurable"].get("checkpoint_id"),
            parent_checkpoint_id=(s.parent_config or {})
            .get("configurable", {})
            .get("checkpoint_id"),
            step=(s.metadata or {}).get("step"),
            source=(s.metadata or {}).get("source"),
            next=list(s.next),
            messages=len((s.values or {}).get("messages", [])),
            created_at=s.created_at,
        )
        async for s in graph.aget_state_history(thread_config(thread_id), limit=limit)
    ]
    if not history:
        raise HTTPException(404, f"no thread {thread_id!r}")
    return history


@router.delete("/{thread_id}", status_code=204, summary="Delete a thread and its checkpoints")
async def delete_thread(thread_id: ThreadId, request: Request) -> Response:
    """Delete the thread and its checkpoints; 409 while a run is writing it."""
    runner = request.app.state.runner
    if runner.busy(thread_id):
        raise HTTPException(409, f"thread {thread_id!r} has a run in progress; delete it afterwards")
    try:
        await stored.delete_thread(runner.graph, thread_id)
    except ThreadBusyError as e:
        raise HTTPException(409, str(e)) from None
    except stored.ThreadNotFoundError as e:
        raise HTTPException(404, e.args[0]) from None
    return Response(status_code=204)


def title(messages: list[AnyMessage]) -> str:
    """The thread's first question on one line, cut to ``TITLE_CHARS``."""
    first = next((m.text for m in messages if isinstance(m, HumanMessage)), "")
    first = " ".join(first.split())
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"


def message_out(message: AnyMessage) -> MessageOut:
    """A LangChain message as the API shows it."""
    common = {"id": message.id, "content": message.text}
    if isinstance(message, AIMessage):
        calls = [
            ToolCallOut(id=c["id"], name=c["name"], args=c["args"]) for c in message.tool_calls
        ]
        return MessageOut(role="assistant", tool_calls=calls, **common)
    if isinstance(message, ToolMessage):
        return MessageOut(
            role="tool",
            tool_call_id=message.tool_call_id,
            name=message.name,
            status=message.status,
            **common,
        )
    if isinstance(message, SystemMessage):
        return MessageOut(role="system", **common)
    return MessageOut(role="user", **common)
