"""Timeouts: a tool call past its ``timeout_s`` is stopped, and the model is told so.

    wrappers = [..., Lifecycle(), enforce_timeout(settings.tool_timeout_s)]

It runs inside ``Lifecycle``, so a timed-out call still ends with one ``tool_result`` and a
``tool_error`` carrying ``elapsed_s``, and the model reads an error ``ToolMessage`` saying
how long the tool was given. Each call is its own task, so its siblings run on.

An async tool is cancelled. A sync tool runs in a worker thread, which cannot be cancelled:
the call is abandoned instead. Its late result is dropped (the future waiting for it is
already cancelled, so it is never written to the state), and its next ``progress.report``
raises ``ToolCallAbandoned``, so a tool that reports progress stops there.
"""

from __future__ import annotations

import asyncio

from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from agent_ng.engine.tool_calls import Execute, ToolCallWrapper, noted
from agent_ng.tools.registry import spec_of


def enforce_timeout(default_s: float) -> ToolCallWrapper:
    """Stop each call after its tool's ``timeout_s``, or ``default_s`` when it sets none."""

    async def timeout(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        limit_s = spec_of(request.tool).timeout_s or default_s
        try:
            async with asyncio.timeout(limit_s) as deadline:
                return await execute(request)
        except TimeoutError:
            if not deadline.expired():
                raise
        return timed_out(request, limit_s)

    return timeout


def timed_out(request: ToolCallRequest, limit_s: float) -> ToolMessage:
    """The error result the model reads, noted ``timed_out`` for the wrappers outside."""
    call = request.tool_call
    message = ToolMessage(
        content=(
            f"Error: the tool {call['name']} timed out after {limit_s:g} s and was stopped; "
            "it produced no result."
        ),
        name=call["name"],
        tool_call_id=call["id"],
        status="error",
    )
    return noted(message, timed_out=True)
