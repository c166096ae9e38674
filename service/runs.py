"""``POST /threads/{thread_id}/runs/stream``: a run as Server-Sent Events, one per ``AgentEvent``.

Each SSE event is named after the event's type and carries its JSON (``AgentEvent.to_dict``)::

    event: tool_progress
    data: {"type": "tool_progress", "run_id": "...", "tool_call_id": "call_1", "progress": 0.5, ...}

An idle stream gets a keep-alive comment every ``AGENT_SSE_PING_S`` seconds. Closing the
connection cancels the run; the thread stays valid (see ``service.runner``). A question on a
thread whose calls wait for approval gets 409 and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from graph.events import AgentEvent
from service.inputs import RunRequest, ThreadId, check_question

router = APIRouter()


@router.post(
    "/threads/{thread_id}/runs/stream", summary="Ask a question, streaming the run's events"
)
async def stream_run(
    thread_id: ThreadId, body: RunRequest, request: Request
) -> EventSourceResponse:
    settings = request.app.state.settings
    check_question(body.input, settings, loc=("body", "input"))
    runner = request.app.state.runner
    if not runner.busy(thread_id):  # a run ahead of this one is checked when it ends
        await runner.ready(thread_id)
    events = runner.events(thread_id, body.input, body.config.to_config())
    return EventSourceResponse(sse_events(events), ping=settings.sse_ping_s)


async def sse_events(events: AsyncIterator[AgentEvent]) -> AsyncIterator[ServerSentEvent]:
    async with aclosing(events):
        async for event in events:
            yield ServerSentEvent(
                data=json.dumps(event.to_dict(), default=str, ensure_ascii=False), event=event.type
            )
