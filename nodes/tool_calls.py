"""Tool execution: LangGraph's ``ToolNode`` plus a chain of small ``awrap_tool_call`` wrappers.

Each wrapper does one job around ``execute`` (the tool call itself); ``chain`` composes them,
first = outermost. ``lifecycle`` is always innermost-but-one: it marks the call's scope so
``progress.report`` is tagged with the tool call id, and writes ``tool_start``,
``tool_result`` and ``tool_complete`` / ``tool_error`` to the custom stream when the call
really starts and ends (after any concurrency limit let it through).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
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

from tools import progress

Execute = Callable[[ToolCallRequest], Awaitable[ToolMessage | Command]]
ToolCallWrapper = Callable[[ToolCallRequest, Execute], Awaitable[ToolMessage | Command]]

PREVIEW_CHARS = 2000


def make_tool_node(
    tools: Sequence[BaseTool], wrappers: Sequence[ToolCallWrapper] = ()
) -> ToolNode:
    return ToolNode(
        tools, awrap_tool_call=chain(*wrappers, lifecycle), handle_tool_errors=tool_error_message
    )


def tool_error_message(e: Exception) -> str:
    """What the model reads when a tool fails: any exception becomes an error result."""
    if isinstance(e, ToolInvocationError):
        return e.message
    return f"Error: the tool raised {type(e).__name__}: {e}"


def chain(*wrappers: ToolCallWrapper) -> ToolCallWrapper:
    """Compose wrappers into one; the first wraps all the others."""

    def compose(outer: ToolCallWrapper, inner: ToolCallWrapper) -> ToolCallWrapper:
        async def composed(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
            return await outer(request, lambda req: inner(req, execute))

        return composed

    return reduce(compose, wrappers)


async def lifecycle(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
    """Report the call's start and end, and scope its progress reports to its id."""
    call = request.tool_call
    write = both_streams(request.runtime.stream_writer, request.runtime.config)
    with progress.tool_call_scope(call["id"], call["name"], write) as scope:
        scope.emit("tool_start", args=call["args"], eta_s=None, cached=False)
        try:
            result = await execute(request)
        except asyncio.CancelledError:
            scope.emit("tool_error", error="cancelled", elapsed_s=scope.elapsed())
            raise
        elapsed = scope.elapsed()
        if isinstance(result, ToolMessage):
            text = result.text
            scope.emit("tool_result", content=preview(text), status=result.status)
            if result.status == "error":
                scope.emit("tool_error", error=text, elapsed_s=elapsed)
            else:
                scope.emit("tool_complete", elapsed_s=elapsed, cached=False)
        else:
            scope.emit("tool_complete", elapsed_s=elapsed, cached=False)
        return result


def both_streams(
    stream_writer: Callable[[Any], None], config: RunnableConfig
) -> Callable[[dict[str, Any]], None]:
    """Write a record to LangGraph's custom stream and, as a custom event, to ``astream_events``.

    The custom event is sent only when a callback handler of the run takes custom events
    (``astream_events``, a tracer): sending one builds a callback manager each time, which
    was a tenth of a parallel run's CPU with nobody listening (bench/README.md, parallel).
    """
    if not takes_custom_events(config):
        return stream_writer

    def write(record: dict[str, Any]) -> None:
        stream_writer(record)
        dispatch_custom_event(progress.EVENT_KEY, record)

    return write


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
