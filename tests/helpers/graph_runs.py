"""Running the real graph in tool-engine tests: settings, input, and event collection."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool

from agent_ng.graph.events import AgentEvent, stream
from agent_ng.settings import Settings

GUARD_S = 10
"""Bound on any wait that would hang if the claim under test were false."""


def until_cancelled(cancelled: list[str]) -> BaseTool:
    """A tool ``forever`` that runs until its call is cancelled, and notes that in ``cancelled``."""

    @tool
    async def forever() -> str:
        """Runs until cancelled."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("forever")
            raise
        return "unreachable"

    return forever


def until_released(
    released: threading.Event, started: threading.Event | None = None, within_s: float = GUARD_S
) -> BaseTool:
    """A tool ``hold`` that sets ``started``, then waits until the test sets ``released`` (for a
    server in another thread: what is "still running" is the test's decision, not timing)."""

    @tool
    def hold() -> str:
        """Waits until the test releases it."""
        if started is not None:
            started.set()
        assert released.wait(within_s)
        return "released"

    return hold


def settings(**overrides) -> Settings:
    return Settings(
        checkpoint_url="memory://", cache_url="memory://", system_prompt="", **overrides
    )


def ask(text: str = "go") -> dict:
    return {"messages": [HumanMessage(text)]}


def config(thread: str = "t1", **extra) -> dict:
    return {"configurable": {"thread_id": thread}, **extra}


async def collect(graph, input=None, cfg: dict | None = None) -> list[AgentEvent]:
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, input or ask(), cfg or config())]


def of_type(events: list[AgentEvent], type_: str) -> list[AgentEvent]:
    return [e for e in events if e.type == type_]


def per_call(events: list[AgentEvent]) -> dict[str, list[str]]:
    """Each tool call's event types, in order."""
    calls: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if event.tool_call_id:
            calls[event.tool_call_id].append(event.type)
    return dict(calls)


def tool_messages(messages) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
