"""Threads as LangGraph Server shows them: create, read, patch, delete, search; a thread's state,
its history, and updates to it.

A thread is one thread whichever route made it: its conversation is the graph's checkpoints,
its metadata and times a record beside them (``agent_ng.persistence.thread_records``). A thread
started by ``agent-ng ask`` or the native routes has no record until one is needed; it shows
here as a thread of the agent (``graph_id`` and ``assistant_id`` in its metadata, as LangGraph
Server sets them on a thread a run was made on), created when its first checkpoint was.

Answers carry the keys ``langgraph dev`` sends (a ``Thread``, a ``ThreadState`` built as
``langgraph_api.state.state_snapshot_to_thread_state`` builds it) and its status codes: 404
``Thread with ID ... not found``, 409 for a thread id already taken, 204 for a delete.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any
from uuid import uuid4

from fastapi import APIRouter, HTTPException, Query, Request, Response
from langgraph.errors import InvalidUpdateError
from langgraph.types import Interrupt, StateSnapshot

import agent_ng.persistence.thread_records as records
import agent_ng.persistence.threads as stored
from agent_ng.persistence.thread_lock import ThreadBusyError, hold_thread
from agent_ng.persistence.thread_records import ThreadRecord
from agent_ng.persistence.threads import thread_config
from agent_ng.service.inputs import ThreadId
from agent_ng.service.langgraph_server.assistants import ASSISTANT_ID, GRAPH_ID
from agent_ng.service.langgraph_server.schemas import (
    ApiJSON,
    CheckpointConfig,
    HistorySearch,
    StateAtCheckpoint,
    StateUpdate,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
    checkpoint_json,
    contains,
    jsonable,
    selected,
)

router = APIRouter(prefix="/threads")

Select = Annotated[list[str] | None, Query()]
"""``select`` of a state read: the fields to send (``values.<key>``: one key of the values)."""

AGENT_METADATA = {"graph_id": GRAPH_ID, "assistant_id": ASSISTANT_ID}
"""The metadata of a thread that has checkpoints but no record: the agent made it."""


def not_found(thread_id: str) -> HTTPException:
    """LangGraph Server's 404 for a thread it does not hold."""
    return HTTPException(404, f"Thread with ID {thread_id} not found")


@contextmanager
def bad_request() -> Iterator[None]:
    """A ``ValueError`` (or LangGraph's ``InvalidUpdateError``) from the graph as a 400 with its
    message, as LangGraph Server answers one: an unknown node, namespace, an ambiguous update."""
    try:
        yield
    except (ValueError, InvalidUpdateError) as e:
        raise HTTPException(400, str(e)) from None


def interrupt_json(interrupt: Interrupt) -> dict[str, Any]:
    """An interrupt as a client resumes it: its id and value (and the schema of the answer, if any)."""
    shown = {"id": interrupt.id, "value": interrupt.value}
    if (schema := getattr(interrupt, "response_schema", None)) is not None:
        shown["response_schema"] = schema
    return shown


def state_json(state: StateSnapshot) -> dict[str, Any]:
    """A ``ThreadState``, built as ``langgraph_api.state.state_snapshot_to_thread_state`` builds it."""
    return {
        "values": state.values,
        "next": state.next,
        "tasks": [
            {
                "id": t.id,
                "name": t.name,
                "path": t.path,
                "error": t.error,
                "interrupts": [interrupt_json(i) for i in t.interrupts],
                "checkpoint": t.state["configurable"]
                if t.state is not None and not isinstance(t.state, StateSnapshot)
                else None,
                "state": state_json(t.state) if isinstance(t.state, StateSnapshot) else None,
                "result": getattr(t, "result", None),
            }
            for t in state.tasks
        ],
        "metadata": state.metadata,
        "created_at": state.created_at,
        "checkpoint": checkpoint_json(state.config),
        "parent_checkpoint": checkpoint_json(state.parent_config),
        "interrupts": [interrupt_json(i) for i in state.interrupts],
        "checkpoint_id": (state.config or {}).get("configurable", {}).get("checkpoint_id"),
        "parent_checkpoint_id": state.parent_config["configurable"]["checkpoint_id"] if state.parent_config else None,
    }


def thread_status(request: Request, thread_id: str, state: StateSnapshot) -> str:
    """``busy`` while a run holds the thread, ``interrupted`` while calls wait for approval,
    ``error`` when its latest run failed, else ``idle``."""
    latest = request.app.state.run_records.latest_status(thread_id)
    if request.app.state.runner.busy(thread_id) or latest in ("pending", "running"):
        return "busy"
    if stored.status_of(state) == "interrupted":
        return "interrupted"
    return "error" if latest == "error" else "idle"


async def thread_json(request: Request, thread_id: str, record: ThreadRecord | None) -> dict[str, Any] | None:
    """The thread as LangGraph Server shows it, None when it does not exist; ``created_at`` of a
    thread without a record is left None (``created``: it costs a read of its checkpoints)."""
    state = await request.app.state.runner.graph.aget_state(thread_config(thread_id))
    checkpointed = state.metadata is not None
    if record is None and not checkpointed:
        return None
    state_at = datetime.fromisoformat(state.created_at) if checkpointed else None
    times = [t for t in (record and record.updated_at, state_at) if t is not None]
    thread = {
        "thread_id": thread_id,
        "created_at": record.created_at if record else None,
        "updated_at": max(times),
        "state_updated_at": state_at or record.created_at,
        "metadata": record.metadata if record else dict(AGENT_METADATA),
        "status": thread_status(request, thread_id, state),
        "config": {"configurable": {}} if checkpointed else {},
        "values": state.values if checkpointed else None,
    }
    if checkpointed:
        thread["interrupts"] = {t.id: [interrupt_json(i) for i in t.interrupts] for t in state.tasks if t.interrupts}
        thread["error"] = None
    return thread


async def created(request: Request, thread: dict[str, Any]) -> dict[str, Any]:
    """``thread`` with its ``created_at``: for one without a record, when its first checkpoint was."""
    if thread["created_at"] is None:
        graph = request.app.state.runner.graph
        thread["created_at"] = await records.first_checkpoint_at(graph, thread["thread_id"]) or thread["updated_at"]
    return thread


async def shown_thread(request: Request, thread_id: str) -> dict[str, Any]:
    """The thread, whole; 404 when it does not exist."""
    record = await records.get_record(request.app.state.runner.graph, thread_id)
    thread = await thread_json(request, thread_id, record)
    if thread is None:
        raise not_found(thread_id)
    return await created(request, thread)


async def existing(request: Request, thread_id: str) -> Any:
    """The graph, once the thread is known to exist (404 otherwise)."""
    graph = request.app.state.runner.graph
    if not await records.thread_exists(graph, thread_id):
        raise not_found(thread_id)
    return graph


@router.post("", summary="Create a thread")
async def create_thread(body: ThreadCreate, request: Request) -> ApiJSON:
    """A new thread; for an id already taken, 409 (``if_exists="raise"``, the default) or that thread."""
    thread_id = body.thread_id or str(uuid4())
    if await records.create_thread(request.app.state.runner.graph, thread_id, body.metadata) is None:
        if (body.if_exists or "raise") == "raise":
            raise HTTPException(409, f"Thread with ID {thread_id} already exists")
    return ApiJSON(await shown_thread(request, thread_id))


@router.post("/search", summary="Search threads")
async def search_threads(body: ThreadSearch, request: Request) -> ApiJSON:
    """Threads matching every filter given, most recently updated first (or as ``sort_by`` says),
    with LangGraph Server's pagination headers.

    Ids and metadata are matched on the records alone; then each remaining thread's latest state
    is read (its status, values and time of update), one thread at a time: a search costs a state
    read per thread that passes those filters, and a first-checkpoint read per thread shown that
    has no record.
    """
    graph = request.app.state.runner.graph
    kept = await records.all_records(graph)
    ids = list(dict.fromkeys([*kept, *await stored.thread_ids(stored.saver_of(graph))]))
    if body.ids is not None:
        wanted = set(body.ids)
        ids = [i for i in ids if i in wanted]
    if body.metadata:
        ids = [i for i in ids if contains(kept[i].metadata if i in kept else AGENT_METADATA, body.metadata)]
    threads = []
    for thread_id in ids:
        thread = await thread_json(request, thread_id, kept.get(thread_id))
        if thread is None or (body.status and thread["status"] != body.status):
            continue
        if body.values and not contains(jsonable(thread["values"]), body.values):
            continue
        threads.append(thread)
    sort_by = body.sort_by or "updated_at"
    if sort_by == "created_at":
        threads = [await created(request, t) for t in threads]
    threads.sort(key=lambda t: t[sort_by], reverse=body.sort_order != "asc")
    end = body.offset + body.limit
    page = [await created(request, t) for t in threads[body.offset : end]]
    headers = (
        {"X-Pagination-Total": str(end + 1), "X-Pagination-Next": str(end)}
        if len(threads) > end
        else {"X-Pagination-Total": str(len(page) + body.offset)}
    )
    return ApiJSON([selected(t, body.select) for t in page], headers=headers)


@router.get("/{thread_id}", summary="A thread")
async def get_thread(thread_id: ThreadId, request: Request) -> ApiJSON:
    """The thread: metadata, status, latest values and what it waits for."""
    return ApiJSON(await shown_thread(request, thread_id))


@router.patch("/{thread_id}", summary="Merge metadata into a thread's")
async def patch_thread(thread_id: ThreadId, body: ThreadPatch, request: Request) -> ApiJSON:
    """The thread with ``metadata`` merged into its own, key by key; 404 (``Not Found``, as
    LangGraph Server says it here) for a thread that does not exist."""
    graph = request.app.state.runner.graph
    metadata = body.metadata or {}
    if await records.get_record(graph, thread_id) is None:
        metadata = {**AGENT_METADATA, **metadata}
    if await records.update_thread(graph, thread_id, metadata, create=False) is None:
        raise HTTPException(404, "Not Found")
    return ApiJSON(await shown_thread(request, thread_id))


@router.delete("/{thread_id}", status_code=204, summary="Delete a thread")
async def delete_thread(thread_id: ThreadId, request: Request) -> Response:
    """Delete the thread, its checkpoints, its record and its runs' records; 409 while a run holds it."""
    runner = request.app.state.runner
    if runner.busy(thread_id):
        raise HTTPException(409, f"Thread {thread_id} has a run in progress; delete it afterwards")
    try:
        try:
            await stored.delete_thread(runner.graph, thread_id)
        except stored.ThreadNotFoundError:
            if not await records.delete_record(runner.graph, thread_id):
                raise not_found(thread_id) from None
    except ThreadBusyError as e:
        raise HTTPException(409, str(e)) from None
    request.app.state.run_records.forget_thread(thread_id)
    return Response(status_code=204)


@router.get("/{thread_id}/state", summary="A thread's latest state")
async def get_state(
    thread_id: ThreadId,
    request: Request,
    subgraphs: str | None = None,
    select: Select = None,
) -> ApiJSON:
    """The thread's latest state (``subgraphs``: with its subgraphs' states)."""
    return await state_at(request, thread_id, {}, subgraphs in ("true", "True"), select)


@router.get("/{thread_id}/state/{checkpoint_id}", summary="A thread's state at a checkpoint")
async def get_state_at(
    thread_id: ThreadId,
    checkpoint_id: str,
    request: Request,
    subgraphs: str | None = None,
    select: Select = None,
) -> ApiJSON:
    """The thread's state at one checkpoint of its root namespace."""
    return await state_at(
        request, thread_id, {"checkpoint_id": checkpoint_id}, subgraphs in ("true", "True"), select
    )


@router.post("/{thread_id}/state/checkpoint", summary="A thread's state at a checkpoint")
async def post_state_at(thread_id: ThreadId, body: StateAtCheckpoint, request: Request) -> ApiJSON:
    """The thread's state at a checkpoint of any namespace (``RemoteGraph.get_state``'s route)."""
    return await state_at(request, thread_id, body.checkpoint.configurable(), body.subgraphs, body.select)


async def state_at(
    request: Request, thread_id: str, checkpoint: dict[str, Any], subgraphs: bool, select: list[str] | None
) -> ApiJSON:
    """The thread's state at ``checkpoint`` (its latest without one); an unknown checkpoint is an
    empty state, as in LangGraph Server. Whether a state read by its checkpoint id alone names
    its ``checkpoint_ns`` is the saver's to say, there as here (SQLite echoes the config given)."""
    graph = await existing(request, thread_id)
    config = {"configurable": {**checkpoint, "thread_id": thread_id}}
    with bad_request():
        state = await graph.aget_state(config, subgraphs=subgraphs)
    return ApiJSON(selected(state_json(state), select))


@router.post("/{thread_id}/state", summary="Update a thread's state")
async def update_state(thread_id: ThreadId, body: StateUpdate, request: Request) -> ApiJSON:
    """Write ``values`` as a new checkpoint, as if ``as_node`` had returned them (after
    ``checkpoint`` when given: a fork of the thread's past); 409 while a run holds the thread."""
    graph = await existing(request, thread_id)
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if body.checkpoint_id:
        configurable["checkpoint_id"] = body.checkpoint_id
    if body.checkpoint:
        configurable.update(body.checkpoint.configurable())
    configurable["thread_id"] = thread_id
    busy = HTTPException(409, f"Thread {thread_id} has in-flight runs")
    if request.app.state.runner.busy(thread_id):
        raise busy
    try:
        async with hold_thread(graph, thread_id):
            with bad_request():
                written = await graph.aupdate_state({"configurable": configurable}, body.values, as_node=body.as_node)
    except ThreadBusyError:
        raise busy from None
    checkpoint = written["configurable"]
    return ApiJSON({"checkpoint": checkpoint, "configurable": checkpoint, "checkpoint_id": checkpoint["checkpoint_id"]})


@router.post("/{thread_id}/history", summary="A thread's states, newest first")
async def history(thread_id: ThreadId, body: HistorySearch, request: Request) -> ApiJSON:
    """Up to ``limit`` states, newest first: before ``before``, matching ``metadata``, of the
    namespace and from the checkpoint ``checkpoint`` names."""
    graph = await existing(request, thread_id)
    configurable = {"checkpoint_ns": "", **(body.checkpoint.configurable() if body.checkpoint else {})}
    configurable["thread_id"] = thread_id
    before = body.before
    if isinstance(before, CheckpointConfig):
        before = {"configurable": before.configurable()}
    elif isinstance(before, str):
        before = {"configurable": {"checkpoint_id": before}}
    with bad_request():
        states = [
            selected(state_json(s), body.select)
            async for s in graph.aget_state_history(
                {"configurable": configurable}, limit=body.limit, filter=body.metadata, before=before
            )
        ]
    return ApiJSON(states)
