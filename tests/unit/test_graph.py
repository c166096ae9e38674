"""The graph end to end through the event stream, driven by a scripted model.

Concurrency and ordering are shown with events the tests control, never with timing luck; each
wait that would hang if the claim were false is bounded by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import AgentEvent, stream
from agent_ng.settings import Settings
from agent_ng.tools import progress
from agent_ng.tools.progress import Progress
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 10


def settings(**overrides) -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="", **overrides)


def ask(text: str) -> dict:
    return {"messages": [HumanMessage(text)]}


def config(thread: str = "t1", **extra) -> dict:
    return {"configurable": {"thread_id": thread}, **extra}


async def collect(graph, input, cfg) -> list[AgentEvent]:
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, input, cfg)]


def of_type(events: list[AgentEvent], type_: str) -> list[AgentEvent]:
    return [e for e in events if e.type == type_]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"boom: {reason}")


async def test_content_events_are_the_model_chunks_and_arrive_while_it_streams():
    release = asyncio.Event()
    text = "The quick brown fox jumps over the lazy dog today."
    model = ScriptedModel(replies=[Reply(text=text, hold_after=2, release=release)])
    graph = build_graph(model, tools=[], checkpointer=InMemorySaver(), settings=settings())

    contents: list[AgentEvent] = []
    async with asyncio.timeout(GUARD_S):
        async for event in stream(graph, ask("go"), config()):
            if event.type == "content":
                contents.append(event)
                if len(contents) == 2:
                    assert not model.finished[0], "content arrived only after the model finished"
                    release.set()

    assert len(contents) == len(text.split())
    assert "".join(e.text for e in contents) == text
    assert all(e.node == "llm" for e in contents)
    state = await graph.aget_state(config())
    assert state.values["messages"][-1].content == text


async def test_run_start_and_end_frame_the_run_with_usage():
    model = ScriptedModel(replies=[calls(("add", {"a": 2, "b": 3})), Reply(text="five")])
    graph = build_graph(model, tools=[add], checkpointer=InMemorySaver(), settings=settings())
    events = await collect(graph, ask("2+3?"), config("t-usage"))

    assert events[0].type == "run_start" and events[0].input == "2+3?"
    assert events[-1].type == "run_end" and events[-1].status == "done"
    assert events[-1].usage == {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30}
    assert {e.run_id for e in events} == {events[0].run_id}
    assert {e.thread_id for e in events} == {"t-usage"}
    assert [e.t for e in events] == sorted(e.t for e in events)
    per_call = [e.type for e in events if e.tool_call_id]
    assert per_call == ["tool_call", "tool_start", "tool_result", "tool_complete"]
    assert of_type(events, "tool_result")[0].content == "5"


async def test_a_run_of_async_tools_never_waits_on_the_thread_pool():
    """Routing is async: LangGraph would run a sync router in a worker thread every model turn."""

    @tool
    async def double(x: int) -> int:
        """Double x."""
        return 2 * x

    handed_off: list[object] = []

    class Watched(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            handed_off.append(fn)
            return super().submit(fn, *args, **kwargs)

    asyncio.get_running_loop().set_default_executor(Watched())
    model = ScriptedModel(replies=[calls(("double", {"x": 2}), ("double", {"x": 5})), Reply(text="4, 10")])
    graph = build_graph(model, tools=[double], checkpointer=InMemorySaver(), settings=settings())

    events = await collect(graph, ask("double 2 and 5"), config("t-no-threads"))

    assert sorted(e.content for e in of_type(events, "tool_result")) == ["10", "4"]
    assert events[-1].status == "done"
    assert handed_off == []


async def test_tools_run_in_parallel_and_complete_in_finishing_order():
    n = 4
    barrier = asyncio.Barrier(n)
    gates = {i: asyncio.Event() for i in range(n)}

    @tool
    async def wait_turn(i: int) -> str:
        """Waits until every sibling has started, then until its gate opens."""
        await barrier.wait()
        await gates[i].wait()
        return f"done {i}"

    model = ScriptedModel(
        replies=[calls(*[("wait_turn", {"i": i}) for i in range(n)]), Reply(text="all done")]
    )
    graph = build_graph(
        model, tools=[wait_turn], checkpointer=InMemorySaver(), settings=settings(max_concurrency=n)
    )
    release_order = list(reversed(range(n)))
    ids: dict[int, str] = {}
    started, completed = [], []
    async with asyncio.timeout(GUARD_S):
        async for event in stream(graph, ask("go"), config()):
            if event.type == "tool_call":
                ids[event.args["i"]] = event.tool_call_id
            elif event.type == "tool_start":
                started.append(event.tool_call_id)
                if len(started) == n:
                    gates[release_order[0]].set()
            elif event.type == "tool_complete":
                completed.append(event.tool_call_id)
                if len(completed) < n:
                    gates[release_order[len(completed)]].set()

    assert len(started) == n
    assert completed == [ids[i] for i in release_order]
    tool_messages = [m for m in model.seen[1] if isinstance(m, ToolMessage)]
    assert sorted(m.content for m in tool_messages) == [f"done {i}" for i in range(n)]


def limited_graph(max_concurrency: int):
    """Six calls to a tool that counts how many copies of it are running at once."""
    state = {"active": 0, "peak": 0, "runs": 0}
    release = asyncio.Event()

    @tool
    async def crowded(i: int) -> int:
        """Holds its place until released."""
        state["active"] += 1
        state["peak"] = max(state["peak"], state["active"])
        await release.wait()
        state["active"] -= 1
        state["runs"] += 1
        return i

    model = ScriptedModel(
        replies=[calls(*[("crowded", {"i": i}) for i in range(6)]), Reply(text="ok")]
    )
    graph = build_graph(
        model, tools=[crowded], checkpointer=InMemorySaver(), settings=settings(max_concurrency=max_concurrency)
    )
    return graph, state, release


async def run_until_starts(graph, release: asyncio.Event, starts: int, cfg: dict) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    async with asyncio.timeout(GUARD_S):
        async for event in stream(graph, ask("go"), cfg):
            events.append(event)
            if not release.is_set() and len(of_type(events, "tool_start")) == starts:
                for _ in range(100):  # the started calls reach their tool; one past the limit would start
                    await asyncio.sleep(0)
                assert not of_type(events, "tool_complete")
                release.set()
    return events


async def test_at_most_max_concurrency_tools_run_at_once_and_all_finish():
    graph, state, release = limited_graph(3)
    events = await run_until_starts(graph, release, 3, config())
    assert state["peak"] == 3
    assert state["runs"] == 6
    assert len(of_type(events, "tool_complete")) == 6


async def test_max_concurrency_can_be_set_per_run():
    graph, state, release = limited_graph(3)
    events = await run_until_starts(graph, release, 2, config(max_concurrency=2))
    assert state["peak"] == 2
    assert len(of_type(events, "tool_complete")) == 6


async def test_progress_is_tagged_with_each_parallel_call():
    @tool
    def steps(n: int) -> int:
        """Reports n progress steps (sync: runs in a worker thread)."""
        for k in range(1, n + 1):
            progress.report(k / n, f"step {k}")
        return n

    model = ScriptedModel(replies=[calls(("steps", {"n": 3}), ("steps", {"n": 5})), Reply(text="ok")])
    graph = build_graph(model, tools=[steps], checkpointer=InMemorySaver(), settings=settings())
    events = await collect(graph, ask("go"), config())

    by_call = {e.tool_call_id: e.args["n"] for e in of_type(events, "tool_call")}
    reports = Counter(e.tool_call_id for e in of_type(events, "tool_progress"))
    assert dict(reports) == by_call
    for event in of_type(events, "tool_progress"):
        assert event.name == "steps" and event.elapsed_s >= 0
        assert event.message.startswith("step ")
    last = [e for e in of_type(events, "tool_progress") if e.progress == 1.0]
    assert len(last) == 2 and all(e.eta_s == 0 for e in last)


async def test_async_generator_tools_report_progress_and_return_their_last_item():
    async def countdown(start: int):
        """Counts down, reporting each step."""
        for k in range(start, 0, -1):
            yield Progress((start - k + 1) / start, f"{k} left")
        yield "liftoff"

    model = ScriptedModel(replies=[calls(("countdown", {"start": 3})), Reply(text="ok")])
    graph = build_graph(model, tools=[countdown], checkpointer=InMemorySaver(), settings=settings())
    events = await collect(graph, ask("go"), config())

    assert [e.message for e in of_type(events, "tool_progress")] == ["3 left", "2 left", "1 left"]
    assert of_type(events, "tool_result")[0].content == "liftoff"


async def test_a_failing_tool_is_isolated_and_the_model_sees_the_error():
    model = ScriptedModel(
        replies=[calls(("explode", {"reason": "bad day"}), ("add", {"a": 1, "b": 2})), Reply(text="ok")]
    )
    graph = build_graph(model, tools=[explode, add], checkpointer=InMemorySaver(), settings=settings())
    events = await collect(graph, ask("go"), config())

    [error] = of_type(events, "tool_error")
    assert error.name == "explode" and "boom: bad day" in error.error and error.elapsed_s >= 0
    [complete] = of_type(events, "tool_complete")
    assert complete.name == "add"
    seen = {m.name: m for m in model.seen[1] if isinstance(m, ToolMessage)}
    assert seen["explode"].status == "error" and "boom: bad day" in seen["explode"].content
    assert seen["add"].status == "success" and seen["add"].content == "3"
    assert events[-1].status == "done"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (calls(("no_such_tool", {"x": 1})), "not a valid tool"),
        (calls(("add", {"a": "one", "b": 2})), "Input should be a valid integer"),
        (Reply(raw_tool_calls=[("add", "[1, 2]")]), "not valid JSON"),
    ],
    ids=["unknown-tool", "invalid-arguments", "malformed-json"],
)
async def test_bad_tool_calls_get_a_clear_error_and_the_run_goes_on(reply, expected):
    model = ScriptedModel(replies=[reply, Reply(text="sorry")])
    graph = build_graph(model, tools=[add], checkpointer=InMemorySaver(), settings=settings())
    events = await collect(graph, ask("go"), config())

    [error] = of_type(events, "tool_error")
    assert expected in error.error
    [result] = of_type(events, "tool_result")
    assert result.status == "error" and result.tool_call_id == error.tool_call_id
    errors = [m for m in model.seen[1] if isinstance(m, ToolMessage)]
    assert len(errors) == 1 and errors[0].status == "error" and expected in errors[0].content
    assert events[-1].status == "done"


async def test_max_steps_ends_with_a_plain_answer_instead_of_an_exception():
    model = ScriptedModel(replies=[calls(("add", {"a": i, "b": 1})) for i in range(3)])
    graph = build_graph(model, tools=[add], checkpointer=InMemorySaver(), settings=settings(max_steps=3))
    events = await collect(graph, ask("loop forever"), config())

    assert len(model.seen) == 3
    assert events[-1].status == "max_steps"
    final = "".join(e.text for e in of_type(events, "content"))
    assert "limit of 3 model steps" in final
    state = await graph.aget_state(config())
    assert state.values["messages"][-1].text == final
    assert not state.next


async def test_a_thread_keeps_its_history_across_turns():
    model = ScriptedModel(replies=[Reply(text="first answer"), Reply(text="second answer")])
    graph = build_graph(model, tools=[], checkpointer=InMemorySaver(), settings=settings())
    await collect(graph, ask("one"), config("mem"))
    await collect(graph, ask("two"), config("mem"))
    assert [m.text for m in model.seen[1]] == ["one", "first answer", "two"]


async def test_astream_events_v2_carries_tokens_and_tool_progress():
    @tool
    def halves() -> str:
        """Reports two halves."""
        progress.report(0.5, "half")
        progress.report(1.0, "all")
        return "whole"

    model = ScriptedModel(replies=[calls(("halves", {})), Reply(text="it is whole now")])
    graph = build_graph(model, tools=[halves], checkpointer=InMemorySaver(), settings=settings())
    tokens, custom = [], []
    async with asyncio.timeout(GUARD_S):
        async for event in graph.astream_events(ask("go"), config(), version="v2"):
            if event["event"] == "on_chat_model_stream" and event["data"]["chunk"].text:
                tokens.append(event["data"]["chunk"].text)
            elif event["event"] == "on_custom_event":
                custom.append(event["data"])
            elif event["event"] == "on_chain_stream" and event["name"] == "tools":
                pass

    assert "".join(tokens) == "it is whole now"
    assert [c["message"] for c in custom if c.get("agent_ng") == "tool_progress"] == ["half", "all"]


async def test_a_consumer_that_stops_early_stops_the_run_and_its_tools():
    started, cancelled = asyncio.Event(), asyncio.Event()

    @tool
    async def forever() -> str:
        """Never finishes on its own."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "unreachable"

    model = ScriptedModel(replies=[calls(("forever", {}))])
    graph = build_graph(model, tools=[forever], checkpointer=InMemorySaver(), settings=settings())
    events = stream(graph, ask("go"), config())
    async with asyncio.timeout(GUARD_S):
        async for event in events:
            if event.type == "tool_start":
                break
        await started.wait()  # tool_start comes as the call starts, the tool's body a few hops later
        await events.aclose()
    assert cancelled.is_set(), "closing the event stream left the tool running"
