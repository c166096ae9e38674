"""The runs in the AG-UI protocol: ``POST /agui`` takes a ``RunAgentInput`` and streams AG-UI events.

Why our own encoding rather than ``ag-ui-langgraph``: that adapter re-reads LangGraph's raw
``astream_events`` (the costlier stream) instead of our ``AgentEvent``s, shows our tool progress
only as opaque ``CUSTOM`` events, and, with tool calls streamed the way OpenAI streams them
(name, id and the first argument fragment in one chunk), drops that first fragment, so its
``TOOL_CALL_ARGS`` fail ``ag-ui-validate`` (AGUI204). Translating our events with the protocol's
own types and ``EventEncoder`` is short and keeps one adapter over the graph.

The mapping:

- ``run_start`` -> ``RUN_STARTED``;
- ``content`` -> ``TEXT_MESSAGE_START`` (first chunk of a model turn), ``TEXT_MESSAGE_CONTENT``;
- ``tool_call`` -> ``TEXT_MESSAGE_END`` if text was open, then ``TOOL_CALL_START`` / ``_ARGS`` /
  ``_END`` (the turn's text message, if any, is the parent);
- ``tool_start`` / ``tool_progress`` / ``tool_complete`` / ``tool_error`` -> an activity message
  per tool call (type ``tool_progress``): ``ACTIVITY_SNAPSHOT`` first, then ``ACTIVITY_DELTA``
  patches of what changed (status, progress, message, elapsedS, etaS, error);
- ``tool_result`` -> ``TOOL_CALL_RESULT``;
- ``interrupt`` -> nothing at once: it goes out with ``RUN_FINISHED`` (``SENT_WITH_RUN_END``);
- ``run_end`` -> ``RUN_FINISHED`` with token usage (outcome ``interrupt`` when the run waits for
  a person) or ``RUN_ERROR``.

Every event type of ``agent_ng.contract`` has its line here (``tests/unit/test_event_contract.py``
checks that none sends nothing unless listed in ``SENT_WITH_RUN_END``).

The thread's history lives in the agent's checkpointer, keyed by ``threadId``: only the last
user message of ``messages`` is asked; earlier ones are already in the thread. Client-side
``tools`` and ``state`` are not used.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import orjson
from ag_ui.core import (
    ActivityDeltaEvent,
    ActivitySnapshotEvent,
    BaseEvent,
    Interrupt,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Request

from agent_ng.contract import AgentEvent, EventType
from agent_ng.service.event_log import event_json
from agent_ng.service.inputs import Id, check_question, invalid
from agent_ng.service.sse import EventStream

ACTIVITY_TYPE = "tool_progress"
"""AG-UI activity type of the per-call activity messages (the name of the event it mostly shows)."""
TOOL_EXECUTION = frozenset(
    {
        EventType.TOOL_START,
        EventType.TOOL_PROGRESS,
        EventType.TOOL_RESULT,
        EventType.TOOL_COMPLETE,
        EventType.TOOL_ERROR,
    }
)
"""Events of a running call: they end the model turn whose text parents the next tool calls."""
SENT_WITH_RUN_END = frozenset({EventType.INTERRUPT})
"""Events that send nothing when they come: an interrupt is part of ``RUN_FINISHED``'s outcome."""

router = APIRouter()


class AguiInput(RunAgentInput):
    """``RunAgentInput`` with ``threadId`` and ``runId`` held to the service's one id rule."""

    thread_id: Id
    run_id: Id


@router.post("/agui", summary="Run the agent, streaming AG-UI events")
async def run_agui(body: AguiInput, request: Request) -> EventStream:
    """Ask the last user message on ``threadId``; the run's events go out as AG-UI SSE frames."""
    question = last_user_text(body)
    check_question(question, request.app.state.settings, loc=("body", "messages"))
    runner, runs = request.app.state.runner, request.app.state.runs
    runs.admit(request.app.state.settings.stream_overload)
    if not runner.busy(body.thread_id):  # a run ahead of this one is checked when it ends
        await runner.ready(body.thread_id)
    encoder = EventEncoder(accept=request.headers.get("accept"))
    translation = AguiTranslation(body.thread_id, body.run_id)

    async def frames() -> AsyncIterator[bytes]:
        async with runs.foreground(), aclosing(runner.events(body.thread_id, question)) as events:
            async for event in events:
                for out in translation.translate(carriable(event)):
                    yield encoder.encode(out).encode()

    return EventStream(frames(), ping=request.app.state.settings.sse_ping_s)


def carriable(event: AgentEvent) -> AgentEvent:
    """``event``, or a copy in which text UTF-8 cannot carry (lone surrogates, from a model or a
    tool) reads U+FFFD as on the native stream (``event_json``): AG-UI's events refuse it."""
    try:
        orjson.dumps(event.to_dict(), default=str)
    except TypeError:
        return AgentEvent(**orjson.loads(event_json(event.to_dict())))
    return event


def last_user_text(body: RunAgentInput) -> str:
    """The text of the last message, which must be the user's (AG-UI sends the whole history)."""
    if not body.messages or not isinstance(body.messages[-1], UserMessage):
        invalid(
            ("body", "messages"),
            "the last message must be a user message: it is the question asked",
        )
    content = body.messages[-1].content
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if getattr(part, "type", None) == "text")


@dataclass
class AguiTranslation:
    """One run's AG-UI events from its ``AgentEvent``s; keeps which messages are open."""

    thread_id: str
    run_id: str
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    """Wall clock of the run's start (ms), to stamp events; set again by ``run_start``."""
    text_id: str | None = None
    """The assistant text message being streamed, if one is open."""
    turn_text_id: str | None = None
    """The text message of the current model turn: the parent of its tool calls."""
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupts: list[Interrupt] = field(default_factory=list)

    def translate(self, event: AgentEvent) -> list[BaseEvent]:
        """The AG-UI events for one ``AgentEvent`` (none for ``SENT_WITH_RUN_END``)."""
        if event.type == EventType.RUN_START:  # a run queued behind another on its thread starts late
            self.started_ms = int(time.time() * 1000 - event.t * 1000)
        stamp = {"timestamp": self.started_ms + int(event.t * 1000)}
        out: list[BaseEvent] = []
        if event.type != EventType.CONTENT:
            out += self._close_text(stamp)
        if event.type in TOOL_EXECUTION:
            self.turn_text_id = None
        match event.type:
            case EventType.RUN_START:
                out.append(RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id, **stamp))
            case EventType.CONTENT:
                out += self._text(event.text or "", stamp)
            case EventType.TOOL_CALL:
                out += self._tool_call(event, stamp)
            case EventType.TOOL_START:
                out += self._activity(event, stamp, status="running", etaS=event.eta_s)
            case EventType.TOOL_PROGRESS:
                out += self._activity(
                    event,
                    stamp,
                    progress=event.progress,
                    message=event.message or "",
                    elapsedS=event.elapsed_s,
                    etaS=event.eta_s,
                )
            case EventType.TOOL_RESULT:
                out.append(
                    ToolCallResultEvent(
                        message_id=f"result-{event.tool_call_id}",
                        tool_call_id=event.tool_call_id or "",
                        content=event.content or "",
                        role="tool",
                        **stamp,
                    )
                )
            case EventType.TOOL_COMPLETE:
                out += self._activity(
                    event, stamp, status="done", progress=1.0, elapsedS=event.elapsed_s, etaS=None
                )
            case EventType.TOOL_ERROR:
                out += self._activity(
                    event,
                    stamp,
                    status="error",
                    error=event.error,
                    elapsedS=event.elapsed_s,
                    etaS=None,
                )
            case EventType.INTERRUPT:
                self.interrupts.append(
                    Interrupt(
                        id=f"interrupt-{len(self.interrupts)}",
                        reason="approval",
                        message=json.dumps(event.value, default=str),
                    )
                )
            case EventType.RUN_END:
                out.append(self._finish(event, stamp))
        return out

    def _text(self, text: str, stamp: dict[str, int]) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        if self.text_id is None:
            self.text_id = self.turn_text_id = f"msg-{uuid.uuid4().hex}"
            out.append(TextMessageStartEvent(message_id=self.text_id, role="assistant", **stamp))
        out.append(TextMessageContentEvent(message_id=self.text_id, delta=text, **stamp))
        return out

    def _close_text(self, stamp: dict[str, int]) -> list[BaseEvent]:
        if self.text_id is None:
            return []
        end = TextMessageEndEvent(message_id=self.text_id, **stamp)
        self.text_id = None
        return [end]

    def _tool_call(self, event: AgentEvent, stamp: dict[str, int]) -> list[BaseEvent]:
        call_id = event.tool_call_id or ""
        return [
            ToolCallStartEvent(
                tool_call_id=call_id,
                tool_call_name=event.name or "",
                parent_message_id=self.turn_text_id,
                **stamp,
            ),
            ToolCallArgsEvent(tool_call_id=call_id, delta=json.dumps(event.args), **stamp),
            ToolCallEndEvent(tool_call_id=call_id, **stamp),
        ]

    def _activity(
        self, event: AgentEvent, stamp: dict[str, int], **changes: Any
    ) -> list[BaseEvent]:
        """The tool call's activity message: a snapshot when first seen, then only what changed."""
        message_id = f"activity-{event.tool_call_id}"
        content = self.activities.get(message_id)
        if content is None:
            content = {
                "toolCallId": event.tool_call_id,
                "name": event.name,
                "status": "running",
                "progress": None,
                "message": "",
                "elapsedS": None,
                "etaS": None,
                "error": None,
                **changes,
            }
            self.activities[message_id] = content
            return [
                ActivitySnapshotEvent(
                    message_id=message_id,
                    activity_type=ACTIVITY_TYPE,
                    content=dict(content),
                    **stamp,
                )
            ]
        patch = [
            {"op": "replace", "path": f"/{key}", "value": value}
            for key, value in changes.items()
            if content[key] != value
        ]
        content.update(changes)
        if not patch:
            return []
        return [
            ActivityDeltaEvent(
                message_id=message_id, activity_type=ACTIVITY_TYPE, patch=patch, **stamp
            )
        ]

    def _finish(self, event: AgentEvent, stamp: dict[str, int]) -> BaseEvent:
        usage = [
            TokenUsage(
                input_tokens=(event.usage or {}).get("input_tokens", 0),
                output_tokens=(event.usage or {}).get("output_tokens", 0),
                total_tokens=(event.usage or {}).get("total_tokens", 0),
            )
        ]
        if event.status == "error":
            return RunErrorEvent(
                message=event.error or "the run failed", code="agent_error", usage=usage, **stamp
            )
        outcome = (
            RunFinishedInterruptOutcome(interrupts=self.interrupts)
            if event.status == "interrupted" and self.interrupts
            else RunFinishedSuccessOutcome()
        )
        return RunFinishedEvent(
            thread_id=self.thread_id,
            run_id=self.run_id,
            result={"status": event.status},
            outcome=outcome,
            usage=usage,
            **stamp,
        )
