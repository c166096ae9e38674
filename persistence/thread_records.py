"""Thread records: a thread's metadata and times, kept by the checkpointer beside its checkpoints.

The LangGraph Server API has a thread exist (with metadata) before any checkpoint of it, and
filters threads by that metadata. A checkpointer keeps only checkpoints, so each record is a
checkpoint of its own, in a namespace of its own (``NAMESPACE``) of the same thread:

    await ensure_thread(graph, thread_id, {"graph_id": "agent"})    # created, or metadata merged
    record = await get_record(graph, thread_id)                     # ThreadRecord | None

Every saver keeps it (memory, SQLite, PostgreSQL, with their own retries and deadlines),
``adelete_thread`` deletes it with the thread, and what reads conversations never sees it: they
read the root namespace ``""`` (``agent_ng.persistence.threads.thread_ids`` lists only threads
with root checkpoints; retention keeps the newest checkpoints of each namespace, and a record is
one checkpoint, rewritten in place, whose id is the time the record was made: retention's
idle-thread pass deletes a thread that never ran once that time is past its TTL). A thread
started without a record (``agent-ng ask``) exists all the same; its record is made when one
is first needed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from weakref import WeakValueDictionary

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.pregel import Pregel

from agent_ng.persistence.thread_lock import hold_thread
from agent_ng.persistence.threads import saver_of, thread_config

NAMESPACE = "agent_ng_thread"
"""The checkpoint namespace of records; a subgraph's namespace always holds a ``:``."""
MARK = {"agent_ng_record": "thread"}
"""The checkpoint metadata that tells records apart when they are listed across threads."""
FIELD = "record"
"""The metadata field that holds the record, as one JSON text: every saver keeps a text as it is
(PostgreSQL's ``jsonb`` would refuse a NUL character nested in the thread's metadata)."""

_updating: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    """What the API keeps of a thread besides its checkpoints."""

    thread_id: str
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


def _updating_lock(thread_id: str) -> asyncio.Lock:
    """This process's lock over one thread's record, so two merges do not lose one another."""
    lock = _updating.get(thread_id)
    if lock is None:
        lock = _updating[thread_id] = asyncio.Lock()
    return lock


def record_config(thread_id: str) -> dict[str, Any]:
    """The config that addresses the thread's record."""
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": NAMESPACE}}


def _decoded(thread_id: str, metadata: dict[str, Any] | None) -> ThreadRecord | None:
    raw = (metadata or {}).get(FIELD)
    if not isinstance(raw, str):
        return None
    data = json.loads(raw)
    return ThreadRecord(
        thread_id,
        datetime.fromisoformat(data["created_at"]),
        datetime.fromisoformat(data["updated_at"]),
        data["metadata"],
    )


async def get_record(graph: Pregel, thread_id: str) -> ThreadRecord | None:
    """The thread's record, or None when it has none."""
    item = await saver_of(graph).aget_tuple(record_config(thread_id))
    return _decoded(thread_id, item.metadata) if item else None


async def all_records(graph: Pregel) -> dict[str, ThreadRecord]:
    """Every thread's record, by thread id."""
    found = {}
    async for item in saver_of(graph).alist(None, filter=MARK):
        thread_id = item.config["configurable"]["thread_id"]
        if item.config["configurable"].get("checkpoint_ns") == NAMESPACE and (
            record := _decoded(thread_id, item.metadata)
        ):
            found[thread_id] = record
    return found


async def _put(saver: BaseCheckpointSaver, record: ThreadRecord, checkpoint_id: str | None) -> None:
    """Write ``record``; over its previous checkpoint (``checkpoint_id``) when it has one, so a
    thread never holds more than one."""
    checkpoint = empty_checkpoint()
    if checkpoint_id is not None:
        checkpoint["id"] = checkpoint_id
    text = json.dumps(
        {
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
            "metadata": record.metadata,
        }
    )
    await saver.aput(record_config(record.thread_id), checkpoint, {**MARK, FIELD: text}, {})


async def has_checkpoints(graph: Pregel, thread_id: str) -> bool:
    """Whether the thread has a conversation checkpoint (root namespace)."""
    return await saver_of(graph).aget_tuple(thread_config(thread_id)) is not None


async def thread_exists(graph: Pregel, thread_id: str) -> bool:
    """Whether the thread exists: it has a record, or checkpoints (a thread of ``agent-ng ask``)."""
    return await get_record(graph, thread_id) is not None or await has_checkpoints(graph, thread_id)


async def first_checkpoint_at(graph: Pregel, thread_id: str) -> datetime | None:
    """When the thread's first conversation checkpoint was written (None: it has none): the one
    of step -1, or, when retention has pruned it, the oldest one kept."""
    saver, config = saver_of(graph), {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    oldest = None
    async for item in saver.alist(config, filter={"step": -1}, limit=1):
        oldest = item
    if oldest is None:
        async for item in saver.alist(config):
            oldest = item
    return datetime.fromisoformat(oldest.checkpoint["ts"]) if oldest else None


async def update_thread(
    graph: Pregel, thread_id: str, metadata: dict[str, Any] | None = None, *, create: bool = True
) -> ThreadRecord | None:
    """Merge ``metadata`` into the thread's record (key by key, as LangGraph's PATCH does) and
    return it; a thread without a record gets one, created when its first checkpoint was (or
    now), unless ``create`` is false and the thread does not exist at all (then None)."""
    saver = saver_of(graph)
    async with _updating_lock(thread_id):
        item = await saver.aget_tuple(record_config(thread_id))
        now = datetime.now(UTC)
        if item is not None and (record := _decoded(thread_id, item.metadata)) is not None:
            if metadata is None:
                return record
            updated = ThreadRecord(thread_id, record.created_at, now, {**record.metadata, **metadata})
            await _put(saver, updated, item.checkpoint["id"])
            return updated
        first = await first_checkpoint_at(graph, thread_id)
        if first is None and not create:
            return None
        created = ThreadRecord(thread_id, first or now, now, dict(metadata or {}))
        await _put(saver, created, None)
        return created


async def create_thread(graph: Pregel, thread_id: str, metadata: dict[str, Any] | None = None) -> ThreadRecord | None:
    """A new thread's record; None, with nothing written, when the thread already exists."""
    async with _updating_lock(thread_id):
        if await thread_exists(graph, thread_id):
            return None
        now = datetime.now(UTC)
        record = ThreadRecord(thread_id, now, now, dict(metadata or {}))
        await _put(saver_of(graph), record, None)
        return record


async def delete_record(graph: Pregel, thread_id: str) -> bool:
    """Delete a thread that has only its record (no conversation), under the thread's lock
    (``ThreadBusyError`` if a run holds it); False when it has no record."""
    async with hold_thread(graph, thread_id):
        if await get_record(graph, thread_id) is None:
            return False
        await saver_of(graph).adelete_thread(thread_id)
    return True


async def ensure_thread(graph: Pregel, thread_id: str, metadata: dict[str, Any] | None = None) -> None:
    """Make the thread exist: its record is created when missing, ``metadata`` merged into it when
    given; a record that already holds ``metadata`` is not written again (this runs before every run)."""
    record = await get_record(graph, thread_id)
    if record is None or (metadata is not None and {**record.metadata, **metadata} != record.metadata):
        await update_thread(graph, thread_id, metadata)
