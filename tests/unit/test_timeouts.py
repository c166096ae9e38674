"""Timeouts: alone around a fake ``execute``, then in the real graph among siblings."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt.tool_node import ToolCallRequest

from agent_ng.contract import tool_progress
from agent_ng.engine.timeouts import enforce_timeout
from agent_ng.engine.tool_calls import notes
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.tools import progress
from agent_ng.tools.progress import ToolCallAbandoned
from agent_ng.tools.registry import configure
from tests.helpers.graph_runs import (
    GUARD_S,
    ask,
    config,
    of_type,
    per_call,
    settings,
    tool_messages,
)
from tests.helpers.scripted_model import Reply, ScriptedModel, calls


def request_for(tool_=None, name: str = "slow") -> ToolCallRequest:
    call = {"name": name, "args": {}, "id": "call_1", "type": "tool_call"}
    return ToolCallRequest(tool_call=call, tool=tool_, state={}, runtime=None)


async def never_returns(request: ToolCallRequest) -> ToolMessage:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_call_past_its_timeout_becomes_an_error_message_saying_so():
    async with asyncio.timeout(GUARD_S):
        result = await enforce_timeout(default_s=0.05)(request_for(), never_returns)
    assert result.status == "error" and result.tool_call_id == "call_1"
    assert "slow timed out after 0.05 s" in result.text
    assert notes(result) == {"timed_out": True}


async def test_the_tool_s_own_timeout_wins_over_the_default():
    @tool
    def slow() -> str:
        """Never called here."""
        return ""

    configure(slow, timeout_s=0.05)
    async with asyncio.timeout(GUARD_S):
        result = await enforce_timeout(default_s=3600)(request_for(slow), never_returns)
    assert "after 0.05 s" in result.text


async def test_a_fast_call_and_a_timeout_error_of_the_tool_itself_pass_through():
    ok = ToolMessage("fine", tool_call_id="call_1")

    async def fast(request):
        return ok

    async def raises(request):
        raise TimeoutError("the tool's own")

    wrapper = enforce_timeout(default_s=60)
    assert await wrapper(request_for(), fast) is ok
    with pytest.raises(TimeoutError, match="the tool's own"):
        await wrapper(request_for(), raises)


async def test_an_async_tool_past_its_timeout_is_cancelled_while_its_siblings_finish():
    timed_out = asyncio.Event()
    cancelled = []

    @tool
    async def hang() -> str:
        """Waits for an event nobody sets."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    @tool
    async def work(i: int) -> str:
        """Finishes only after the sibling has timed out."""
        await timed_out.wait()
        return f"work {i}"

    configure(hang, timeout_s=0.1)
    model = ScriptedModel(
        replies=[calls(("work", {"i": 0}), ("hang", {}), ("work", {"i": 1})), Reply(text="ok")]
    )
    graph = build_graph(model, [hang, work], InMemorySaver(), settings(max_concurrency=4))
    events = []
    async with asyncio.timeout(GUARD_S):
        async for event in stream_all(graph):
            events.append(event)
            if event.type == "tool_error":
                timed_out.set()

    [hang_id] = model.replies[0].ids[1:2]
    [error] = of_type(events, "tool_error")
    assert error.tool_call_id == hang_id and "timed out after 0.1 s" in error.error
    assert error.elapsed_s >= 0.1 * 0.99  # asyncio may fire a timer a clock tick early
    assert cancelled == [True]
    completes = of_type(events, "tool_complete")
    assert sorted(e.tool_call_id for e in completes) == sorted(model.replies[0].ids[::2])
    assert all(events.index(e) > events.index(error) for e in completes)
    assert per_call(events)[hang_id] == ["tool_call", "tool_start", "tool_result", "tool_error"]
    seen = tool_messages(model.seen[1])
    assert seen[hang_id].status == "error" and "timed out" in seen[hang_id].text
    assert sorted(m.text for m in seen.values() if m.status == "success") == ["work 0", "work 1"]
    assert events[-1].status == "done"


async def test_a_sync_tool_past_its_timeout_is_abandoned_and_its_late_result_dropped():
    gate, returned = threading.Event(), threading.Event()
    late_reports: list[BaseException] = []
    sibling_may_finish = asyncio.Event()

    @tool
    def blocker() -> str:
        """Blocks its worker thread until the test opens the gate."""
        gate.wait(GUARD_S)
        try:
            progress.report(0.5, "late progress")
        except ToolCallAbandoned as e:
            late_reports.append(e)
        returned.set()
        return "late result"

    @tool
    async def sibling() -> str:
        """Finishes once the blocker's thread has returned."""
        await sibling_may_finish.wait()
        return "sibling done"

    configure(blocker, timeout_s=0.1)
    model = ScriptedModel(replies=[calls(("blocker", {}), ("sibling", {})), Reply(text="ok")])
    graph = build_graph(model, [blocker, sibling], InMemorySaver(), settings(max_concurrency=2))
    events = []
    try:
        async with asyncio.timeout(GUARD_S):
            async for event in stream_all(graph):
                events.append(event)
                if event.type == "tool_error":
                    gate.set()
                    assert await asyncio.to_thread(returned.wait, GUARD_S)
                    sibling_may_finish.set()
    finally:
        gate.set()

    blocker_id, sibling_id = model.replies[0].ids
    assert per_call(events)[blocker_id] == ["tool_call", "tool_start", "tool_result", "tool_error"]
    assert per_call(events)[sibling_id][-1] == "tool_complete"
    assert len(late_reports) == 1
    assert not [e for e in of_type(events, "tool_progress") if e.message == "late progress"]
    state = await graph.aget_state(config())
    messages = tool_messages(state.values["messages"])
    assert "timed out after 0.1 s" in messages[blocker_id].text
    assert messages[sibling_id].text == "sibling done"
    assert all("late result" not in m.text for m in state.values["messages"])


def stream_all(graph):
    return stream(graph, ask(), config())


def test_once_a_call_is_over_its_reports_raise_and_its_writes_are_dropped():
    written = []
    with progress.tool_call_scope("call_1", "slow", written.append) as scope:
        progress.report(0.5, "in time")
    with pytest.raises(ToolCallAbandoned, match="call_2 is over"):
        with progress.tool_call_scope("call_2", "slow", written.append) as late:
            late.finish()
            progress.report(0.9, "too late")
    scope.emit(tool_progress, progress=None, message="after the end", elapsed_s=1.0, eta_s=None)
    assert [w["message"] for w in written] == ["in time"]
