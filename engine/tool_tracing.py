"""One OpenTelemetry span per tool call, made by a tool-call wrapper (its place: ``agent_ng.engine.chain``).

In the chain (``agent_ng.engine.chain``) only when tracing is on. LangChain's own tool callbacks only see a
tool that runs; this wrapper also sees calls answered from the cache, stopped by a timeout or
rejected by a person, so the span says which (``agent_ng.tool.cached`` / ``timed_out`` /
``rejected``, from the notes the engine wrappers leave on the ``ToolMessage``). It carries the
``tool_call.id``, follows the OpenInference conventions (``openinference.span.kind=TOOL``,
``tool.name``, ``input.value``, ``output.value``) and is a child of its ``tools`` task's span,
so parallel calls show as overlapping siblings in one trace.

LangChain's tool span for the same call is suppressed while the wrapper's span is open, so a
call is one span, not two. Spans the tool itself would start (a model called inside a tool)
are suppressed with it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from openinference.instrumentation.langchain import get_current_span
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from agent_ng.engine.tool_calls import Execute, notes, preview


@dataclass(frozen=True, slots=True)
class TraceToolCalls:
    """The wrapper: each call inside its own span of ``provider``'s tracer, with its outcome."""

    provider: TracerProvider

    async def __call__(self, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        return await traced(self.provider.get_tracer(__name__), request, execute)


async def traced(tracer: Tracer, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
    """Run the call inside its span; an interrupt (approval) or a cancel is noted, not recorded as
    the tool's exception."""
    call = request.tool_call
    parent = get_current_span()
    context = trace.set_span_in_context(parent) if parent is not None else None
    with tracer.start_as_current_span(
        call["name"],
        context=context,
        attributes=start_attributes(call),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            with suppress_instrumentation():
                result = await execute(request)
        except GraphBubbleUp:
            span.set_attribute("agent_ng.tool.status", "interrupted")
            raise
        except asyncio.CancelledError:
            span.set_attribute("agent_ng.tool.status", "cancelled")
            span.set_status(trace.StatusCode.ERROR, "cancelled")
            raise
        except Exception as e:
            span.record_exception(e)
            span.set_status(trace.StatusCode.ERROR, f"{type(e).__name__}: {e}")
            raise
        span.set_attributes(outcome_attributes(result))
        if isinstance(result, ToolMessage) and result.status == "error":
            span.set_status(trace.StatusCode.ERROR, preview(result.text, 500))
        return result


def start_attributes(call: dict[str, Any]) -> dict[str, Any]:
    """What is known before the call runs (OpenInference's tool attributes)."""
    return {
        "openinference.span.kind": "TOOL",
        "tool.name": call["name"],
        "tool_call.id": call["id"],
        "input.value": json.dumps(call["args"], default=str),
        "input.mime_type": "application/json",
    }


def outcome_attributes(result: ToolMessage | Command) -> dict[str, Any]:
    """How the call ended, from the result and the notes the inner wrappers left on it."""
    if not isinstance(result, ToolMessage):
        return {"agent_ng.tool.status": "command"}
    noted = notes(result)
    return {
        "output.value": preview(result.text),
        "agent_ng.tool.status": result.status,
        "agent_ng.tool.cached": bool(noted.get("cached")),
        "agent_ng.tool.timed_out": bool(noted.get("timed_out")),
        "agent_ng.tool.rejected": bool(noted.get("rejected")),
    }
