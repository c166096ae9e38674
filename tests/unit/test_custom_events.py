"""Tool records reach callback handlers as custom events only when a handler takes them.

Plain ``stream()`` has no such handler, so no custom event is built (that cost a tenth of a
parallel run's CPU); a handler the caller passes, or ``astream_events``, still gets every record.
"""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

import agent_ng.engine.tool_calls
from agent_ng.contract import CUSTOM_EVENT, EVENT_KEY
from agent_ng.engine.tool_calls import takes_custom_events
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.settings import Settings
from agent_ng.tools import progress
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 10


@tool
def halves() -> str:
    """Reports two halves."""
    progress.report(0.5, "half")
    progress.report(1.0, "all")
    return "whole"


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_custom_event(self, name, data, **kwargs) -> None:
        if name == CUSTOM_EVENT:
            self.records.append(data)


class Silent(AsyncCallbackHandler):
    """A handler that does not implement ``on_custom_event``."""


def graph_with_halves():
    model = ScriptedModel(replies=[calls(("halves", {})), Reply(text="whole")])
    return build_graph(
        model, [halves], InMemorySaver(), Settings(checkpoint_url="memory://", system_prompt="")
    )


async def run(graph, config: dict) -> list:
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, {"messages": [HumanMessage("go")]}, config)]


async def test_plain_stream_sends_no_custom_events_yet_shows_every_record(monkeypatch):
    sent = []
    monkeypatch.setattr(agent_ng.engine.tool_calls, "dispatch_custom_event", lambda *a, **k: sent.append(a))

    events = await run(graph_with_halves(), {"configurable": {"thread_id": "t"}})

    assert sent == []
    tool_events = [e.type for e in events if e.type.startswith("tool_") and e.type != "tool_call"]
    assert tool_events == ["tool_start", "tool_progress", "tool_progress", "tool_result", "tool_complete"]


async def test_a_handler_that_takes_custom_events_gets_every_record():
    recorder = Recorder()

    await run(graph_with_halves(), {"configurable": {"thread_id": "t"}, "callbacks": [recorder]})

    assert [r[EVENT_KEY] for r in recorder.records] == [
        "tool_start", "tool_progress", "tool_progress", "tool_result", "tool_complete",
    ]
    assert [r["message"] for r in recorder.records if "message" in r] == ["half", "all"]


@pytest.mark.parametrize(
    ("callbacks", "expected"),
    [(None, False), ([], False), ([Silent()], False), ([Silent(), Recorder()], True)],
)
def test_takes_custom_events(callbacks, expected):
    assert takes_custom_events({"callbacks": callbacks}) is expected
