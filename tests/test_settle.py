"""``graph.settle``: a run cancelled mid-step leaves a thread that the next run can use."""

from __future__ import annotations

import asyncio

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from graph.agent import build_graph
from graph.events import stream
from graph.settings import Settings
from graph.settle import CANCELLED, settle
from tests.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 10


def config(thread: str = "t1") -> dict:
    return {"configurable": {"thread_id": thread}}


def ask(text: str) -> dict:
    return {"messages": [HumanMessage(text)]}


async def run_until(graph, input, cfg, stop) -> list[str]:
    """Run, and cancel the run from inside once ``stop(seen)`` holds."""
    seen: list[str] = []

    async def consume():
        async for event in stream(graph, input, cfg):
            seen.append(f"{event.type}:{event.name}" if event.name else event.type)
            if stop(seen):
                task.cancel()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    return seen


@tool
async def quick() -> str:
    """Finishes at once."""
    return "quick result"


@tool
async def forever() -> str:
    """Runs until cancelled."""
    await asyncio.Event().wait()


def settings() -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="")


async def test_a_turn_cut_off_mid_tool_keeps_finished_results_and_marks_the_rest_cancelled():
    model = ScriptedModel(
        replies=[calls(("quick", {}), ("forever", {})), Reply(text="next answer")]
    )
    graph = build_graph(
        model, tools=[quick, forever], checkpointer=InMemorySaver(), settings=settings()
    )
    await run_until(
        graph,
        ask("first"),
        config(),
        lambda seen: "tool_complete:quick" in seen and "tool_start:forever" in seen,
    )
    before = await graph.aget_state(config())
    assert before.next == ("tools",)

    closing = await settle(graph, config())

    assert [(m.name, m.status, m.content) for m in closing] == [
        ("quick", "success", "quick result"),
        ("forever", "error", CANCELLED),
    ]
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, ask("second"), config())]
    assert events[-1].status == "done"
    history = model.seen[1]
    assert [type(m).__name__ for m in history] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "HumanMessage",
    ]
    assert {m.tool_call_id for m in history if isinstance(m, ToolMessage)} == {
        c["id"] for c in history[1].tool_calls
    }


async def test_without_settling_the_next_run_would_lose_the_finished_result():
    """Why ``settle`` exists: LangGraph drops the unfinished step's writes on new input."""
    model = ScriptedModel(
        replies=[calls(("quick", {}), ("forever", {})), Reply(text="next answer")]
    )
    graph = build_graph(
        model, tools=[quick, forever], checkpointer=InMemorySaver(), settings=settings()
    )
    await run_until(
        graph,
        ask("first"),
        config(),
        lambda seen: "tool_complete:quick" in seen and "tool_start:forever" in seen,
    )
    async with asyncio.timeout(GUARD_S):
        [e async for e in stream(graph, ask("second"), config())]
    assert not any(isinstance(m, ToolMessage) for m in model.seen[1])


async def test_settling_a_complete_or_model_only_turn_writes_nothing():
    release = asyncio.Event()
    model = ScriptedModel(
        replies=[
            Reply(text="done"),
            Reply(text="a long answer", hold_after=1, release=release),
            Reply(text="ok"),
        ]
    )
    graph = build_graph(model, tools=[], checkpointer=InMemorySaver(), settings=settings())
    async with asyncio.timeout(GUARD_S):
        [e async for e in stream(graph, ask("one"), config())]
    assert await settle(graph, config()) == []

    await run_until(graph, ask("two"), config(), lambda seen: "content" in seen)
    checkpoints = [s async for s in graph.aget_state_history(config())]
    assert await settle(graph, config()) == []
    assert len([s async for s in graph.aget_state_history(config())]) == len(checkpoints)
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, ask("three"), config())]
    assert events[-1].status == "done"
    assert [m.text for m in model.seen[2]] == ["one", "done", "two", "three"]
