"""Tool execution: LangGraph's ``ToolNode`` plus a chain of small ``awrap_tool_call`` wrappers.

Each wrapper does one job around ``execute`` (the tool call itself); ``chain`` composes them,
first = outermost; which wrappers, in which order, is ``agent_ng.engine.chain``'s to say.
``Lifecycle`` marks the call's scope so ``progress.report`` is tagged with the tool call id,
and writes ``tool_start``, ``tool_result`` and ``tool_complete`` / ``tool_error`` to the
custom stream when the call really starts and ends. A chain without one gets one innermost.

Wrappers leave notes for the ones outside them on the ``ToolMessage`` itself
(``response_metadata[NOTES_KEY]``: ``elapsed_s``, ``cached``, ``timed_out``...), so the
checkpointed result also says how it came about. The records themselves are
``agent_ng.contract``'s.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import reduce
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackHandler,
    BaseCallbackHandler,
    BaseCallbackManager,
    dispatch_custom_event,
)
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest, ToolInvocationError
from langgraph.types import Command

from agent_ng.contract import CUSTOM_EVENT, Record, run_own, tool_complete, tool_error, tool_result, tool_start
from agent_ng.tools import progress

Execute = Callable[[ToolCallRequest], Awaitable[ToolMessage | Command]]
ToolCallWrapper = Callable[[ToolCallRequest, Execute], Awaitable[ToolMessage | Command]]
Estimate = Callable[[str], Awaitable[float | None]]
"""A tool's expected duration in seconds from its name, None when unknown."""

NOTES_KEY = "agent_ng_notes"
"""Key of the wrappers' notes in ``ToolMessage.response_metadata`` (read them with ``notes``)."""

SHOWN_RESULTS = "__agent_ng_shown_results"
"""``configurable`` key of a dict that ``agent_ng.graph.events.stream`` passes to each run: every result
reported as ``tool_result`` is put there by its call id, so that a stop keeps what the consumer
saw even when it cancels the call's task before LangGraph stores the result."""

RECORDS = "__agent_ng_records"
"""``configurable`` key of where ``agent_ng.graph.events.stream`` takes a run's records when it
reads them itself (``agent_ng.nodes.tokens.TokenTap.put_record``, a callable safe to call from
any thread) rather than from LangGraph's custom stream: a record goes straight to the reader,
past a ``call_soon_threadsafe`` into LangGraph's queue, the stream's waiter and two hand-overs.
Only the calls of the run's own graph write there; a graph run inside a tool, which inherits
the config, keeps its custom stream."""

PREVIEW_CHARS = 2000


def make_tool_node(
    tools: Sequence[BaseTool], wrappers: Sequence[ToolCallWrapper] = ()
) -> ToolNode:
    """A ``ToolNode`` whose calls go through ``wrappers`` (outer first) and a ``Lifecycle``."""
    if not any(isinstance(w, Lifecycle) for w in wrappers):
        wrappers = (*wrappers, lifecycle)
    return ToolNode(
        tools, awrap_tool_call=chain(with_message_id, *wrappers), handle_tool_errors=tool_error_message
    )


async def with_message_id(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
    """Give the result its message id before LangGraph stores it, as ``add_messages`` would only
    when the step's writes are applied: the stored pending write and every state read from it
    then hold the same message (a checkpointer may serialize a write before that; ours
    does, ``agent_ng.persistence.sqlite_saver``). In place, like ``add_messages``, so the
    result a stop keeps (``SHOWN_RESULTS``) is the same message too."""
    result = await execute(request)
    if isinstance(result, ToolMessage) and not result.id:
        result.id = str(uuid.uuid4())
    return result


def tool_error_message(e: Exception) -> str:
    """What the model reads when a tool fails: any exception becomes an error result."""
    if isinstance(e, ToolInvocationError):
        return e.message
    return f"Error: the tool raised {type(e).__name__}: {e}"


def chain(*wrappers: ToolCallWrapper) -> ToolCallWrapper:
    """Compose wrappers into one; the first wraps all the others. A step of the composition
    hands back its outer wrapper's coroutine rather than awaiting it in one of its own: a
    coroutine frame less per wrapper, on every call and every resume of a tool."""

    def compose(outer: ToolCallWrapper, inner: ToolCallWrapper) -> ToolCallWrapper:
        def composed(request: ToolCallRequest, execute: Execute) -> Awaitable[ToolMessage | Command]:
            return outer(request, lambda req: inner(req, execute))

        return composed

    return reduce(compose, wrappers)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """Report the call's start and end, and scope its progress reports to its id.

    ``expected_s`` (e.g. ``agent_ng.engine.eta.expected_duration``) gives ``tool_start`` its ``eta_s``
    and lets progress reports blend the tool's history into their remaining time.
    """

    expected_s: Estimate | None = None

    async def __call__(self, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        call = request.tool_call
        expected = await self.expected_s(call["name"]) if self.expected_s else None
        with call_scope(request, expected) as scope:
            scope.emit(tool_start, args=call["args"], eta_s=expected, cached=False)
            try:
                result = await execute(request)
            except asyncio.CancelledError:
                scope.emit(tool_error, error="cancelled", elapsed_s=scope.elapsed())
                raise
            elapsed = scope.elapsed()
            if isinstance(result, ToolMessage):
                result = noted(result, elapsed_s=elapsed)
                keep_shown(request, result)
            report_end(scope, result, elapsed, cached=False)
            return result


lifecycle = Lifecycle()


def report_cached(request: ToolCallRequest, message: ToolMessage) -> None:
    """Report a call answered without running (a cache hit): start, result and completion."""
    keep_shown(request, message)
    with call_scope(request) as scope:
        scope.emit(tool_start, args=request.tool_call["args"], eta_s=0.0, cached=True)
        report_end(scope, message, scope.elapsed(), cached=True)


def call_scope(
    request: ToolCallRequest, expected_s: float | None = None
) -> AbstractContextManager[progress.ToolCallScope]:
    """The call's ``progress`` scope, its records going to both streams (``both_streams``): for a
    call that runs (``Lifecycle``) and for one answered without running (a cache hit, a rejection)."""
    call = request.tool_call
    write = both_streams(request.runtime.stream_writer, request.runtime.config)
    return progress.tool_call_scope(call["id"], call["name"], write, expected_s)


def keep_shown(request: ToolCallRequest, message: ToolMessage) -> None:
    """Put a result about to be reported into the run's ``SHOWN_RESULTS``, if it has one."""
    shown = request.runtime.config.get("configurable", {}).get(SHOWN_RESULTS)
    if shown is not None:
        shown[message.tool_call_id] = message


def report_end(
    scope: progress.ToolCallScope, result: ToolMessage | Command, elapsed: float, *, cached: bool
) -> None:
    """``tool_result`` for a message, then ``tool_error`` if it failed, else ``tool_complete``."""
    if isinstance(result, ToolMessage):
        text = result.text
        scope.emit(tool_result, content=preview(text), status=result.status)
        if result.status == "error":
            scope.emit(tool_error, error=text, elapsed_s=elapsed)
            return
    scope.emit(tool_complete, elapsed_s=elapsed, cached=cached)


def notes(result: ToolMessage | Command) -> dict[str, Any]:
    """What the wrappers noted on a result (``elapsed_s``, ``cached``, ``timed_out``, ``rejected``,
    ``replayed``, ``cut_from_bytes``)."""
    if not isinstance(result, ToolMessage):
        return {}
    return result.response_metadata.get(NOTES_KEY) or {}


def noted(message: ToolMessage, **fields: Any) -> ToolMessage:
    """A copy of ``message`` with ``fields`` added to its notes."""
    metadata = {**message.response_metadata, NOTES_KEY: {**notes(message), **fields}}
    return message.model_copy(update={"response_metadata": metadata})


def both_streams(
    stream_writer: Callable[[Any], None], config: RunnableConfig
) -> Callable[[Record], None]:
    """Write a record to LangGraph's custom stream (or the run's ``RECORDS``) and, as a custom
    event, to ``astream_events``.

    The custom event is sent only when a callback handler of the run takes custom events
    (``astream_events``, a tracer): sending one builds a callback manager each time, which
    was a tenth of a parallel run's CPU with nobody listening (bench/README.md, parallel).
    """
    stream_writer = run_records(config) or stream_writer
    if not takes_custom_events(config):
        return stream_writer

    def write(record: Record) -> None:
        stream_writer(record)
        dispatch_custom_event(CUSTOM_EVENT, record)

    return write


def run_records(config: RunnableConfig) -> Callable[[Record], None] | None:
    """The run's ``RECORDS``, for a call of the run's own graph (``run_own``)."""
    return run_own(config.get("configurable") or {}, RECORDS)


def takes_custom_events(config: RunnableConfig) -> bool:
    """Whether any callback handler of the run implements ``on_custom_event``."""
    callbacks = config.get("callbacks")
    handlers = callbacks.handlers if isinstance(callbacks, BaseCallbackManager) else callbacks
    return any(
        type(handler).on_custom_event
        not in (BaseCallbackHandler.on_custom_event, AsyncCallbackHandler.on_custom_event)
        for handler in handlers or ()
    )


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Bound what a result event carries; the full result stays in the state."""
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"
