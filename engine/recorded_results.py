"""At most once per recorded result: a call that already finished is answered, not run again.

    recorded = RecordedResults(store)   # in the chain (``agent_ng.engine.chain``):
    recorded.answer                     # outer: answers a call from its record
    recorded.record                     # just inside ``Lifecycle``: records before the result is reported

LangGraph stores each finished tool result as a pending write of its step, but a process killed
between a tool's side effect and that write, or the race between pending writes and the next
checkpoint (langgraph #8039), makes a resumed run execute the call again: a second payment, a
second e-mail. So each finished result (success or error, as the tool's own wrappers returned
it) is recorded under its call in the tool store and only then reported (``tool_result``) and
handed back: a client that saw a result never sees its call run again. A call that finds its
result recorded returns it without running, reported as a replay (``tool_start`` with
``cached: true``, then its result). A call answered by the result cache runs nothing and is
not recorded: the cache answers it again.

The key is the thread, the task's checkpoint namespace (``tools:<task id>``, which LangGraph
derives from the checkpoint and the ``Send``, so a resumed run gets the same one) and the tool
call id: providers that reuse ids like ``call_0`` on every turn cannot collide. Graphs without
a thread are never resumed and skip this.

Why the tool store and not the checkpointer's database: the record must be committed before
the result leaves the tool, on its own, by the one wrapper that owns it; the checkpointer's
writes belong to LangGraph's step protocol (and are what #8039 loses), and the tool store
already lives in every deployment beside it (SQLite file, Redis for replicas) with an expiry.

The window that remains: a process killed after the tool's side effect and before the record
is committed runs the call again on resume. Only the tool itself (an idempotency key sent with
the side effect) can close that.

If the store fails, the result is handed back unrecorded and the failure is logged: a store
outage weakens this guarantee for that call, never loses the answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from langchain_core.messages import ToolMessage, message_to_dict, messages_from_dict
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from agent_ng.engine.store import ToolStore
from agent_ng.engine.tool_calls import NOTES_KEY, Execute, noted, report_cached

log = logging.getLogger(__name__)

OLD_NOTES_KEY = "agent_ng"
"""Where versions before ``NOTES_KEY`` kept the notes (the custom-stream key, reused). Results are
recorded for days, so one recorded then may be replayed now: ``deserialize`` moves its notes."""


def result_key(request: ToolCallRequest) -> str | None:
    """Thread, task and call; None when the run has no thread (nothing to resume)."""
    configurable = request.runtime.config.get("configurable", {})
    thread_id = configurable.get("thread_id")
    if thread_id is None:
        return None
    return json.dumps([str(thread_id), configurable.get("checkpoint_ns", ""), request.tool_call["id"]])


def serialize(message: ToolMessage) -> str:
    """The message as JSON; an artifact that is not JSON is left out."""
    try:
        return json.dumps(message_to_dict(message))
    except (TypeError, ValueError):
        return json.dumps(message_to_dict(message.model_copy(update={"artifact": None})))


def deserialize(raw: str) -> ToolMessage:
    """The recorded message, its notes under ``NOTES_KEY`` even if recorded under the old key."""
    message = messages_from_dict([json.loads(raw)])[0]
    metadata = message.response_metadata
    if OLD_NOTES_KEY in metadata and NOTES_KEY not in metadata:
        metadata[NOTES_KEY] = metadata.pop(OLD_NOTES_KEY)
    return message


@dataclass(frozen=True, slots=True)
class RecordedResults:
    """Two wrappers of one store: ``answer`` (outer) answers a call from its recorded result,
    else runs it; ``record`` (inner, just inside ``Lifecycle``) records each finished result
    before it is reported or handed back."""

    store: ToolStore
    clock: Callable[[], float] = field(default=time.time)

    async def answer(self, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        key = result_key(request)
        if key is None:
            return await execute(request)
        try:
            raw = await self.store.recorded_result(key, self.clock())
        except Exception:
            log.warning("reading recorded tool results failed; running the call", exc_info=True)
            raw = None
        if raw is None:
            return await execute(request)
        message = noted(deserialize(raw), replayed=True)
        report_cached(request, message)
        return message

    async def record(self, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        result = await execute(request)
        if (key := result_key(request)) is not None and isinstance(result, ToolMessage):
            try:
                await self.store.record_result(key, serialize(result), self.clock())
            except Exception:
                log.warning(
                    "recording %s's result failed; a resume may run it again",
                    request.tool_call["name"],
                    exc_info=True,
                )
        return result
