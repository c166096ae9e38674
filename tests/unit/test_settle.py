"""Stop keeps what the user saw: a cancelled or closed ``stream()`` settles the thread itself.

The stop is made from inside the consumer (``task.cancel()`` once a given event was seen) or by
leaving the loop, never by timing; a tool blocks on an ``Event`` that nobody sets.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agent_ng.contract import EVENT_KEY
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.graph.settle import CANCELLED, SUPERSEDED, settle
from agent_ng.nodes.history import is_valid
from agent_ng.settings import Settings
from agent_ng.tools.registry import configure
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

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


async def run(graph, input, cfg) -> list:
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, input, cfg)]


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


def kinds(messages) -> list[str]:
    return [type(m).__name__ for m in messages]


async def test_a_run_cancelled_mid_tool_keeps_the_streamed_text_and_finished_results():
    model = ScriptedModel(
        replies=[
            Reply(text="Let me look.", tool_calls=[("quick", {}), ("forever", {})]),
            Reply(text="next answer"),
        ]
    )
    graph = build_graph(model, tools=[quick, forever], checkpointer=InMemorySaver(), settings=settings())
    await run_until(
        graph, ask("first"), config(), lambda seen: "tool_complete:quick" in seen and "tool_start:forever" in seen
    )

    state = await graph.aget_state(config())
    assert state.next == () and not state.tasks, "the thread is idle, as after a normal end"
    messages = state.values["messages"]
    assert kinds(messages) == ["HumanMessage", "AIMessage", "ToolMessage", "ToolMessage"]
    assert messages[1].text == "Let me look."
    assert {(m.name, m.status, m.text) for m in messages[2:]} == {
        ("quick", "success", "quick result"),
        ("forever", "error", CANCELLED),
    }

    events = await run(graph, ask("second"), config())
    assert events[-1].status == "done"
    sent = model.seen[1]
    assert kinds(sent) == ["HumanMessage", "AIMessage", "ToolMessage", "ToolMessage", "HumanMessage"]
    assert is_valid(sent)
    assert "quick result" in [m.text for m in sent]


async def test_a_run_cancelled_mid_answer_stores_the_text_streamed_so_far():
    release = asyncio.Event()
    model = ScriptedModel(
        replies=[Reply(text="a long answer that stops", hold_after=2, release=release), Reply(text="ok")]
    )
    graph = build_graph(model, tools=[], checkpointer=InMemorySaver(), settings=settings())
    seen = await run_until(graph, ask("one"), config(), lambda seen: seen.count("content") == 2)
    assert seen[-1] == "content"

    messages = (await graph.aget_state(config())).values["messages"]
    assert [m.text for m in messages] == ["one", "a long "]
    assert messages[1].response_metadata["finish_reason"] == "cancelled"
    assert not (await graph.aget_state(config())).next

    assert (await run(graph, ask("two"), config()))[-1].status == "done"
    assert [m.text for m in model.seen[1]] == ["one", "a long ", "two"]


async def test_closing_the_stream_stops_the_run_the_same_way():
    model = ScriptedModel(replies=[calls(("quick", {}), ("forever", {})), Reply(text="ok")])
    graph = build_graph(model, tools=[quick, forever], checkpointer=InMemorySaver(), settings=settings())
    started: set[str] = set()
    async with asyncio.timeout(GUARD_S), aclosing(stream(graph, ask("first"), config())) as events:
        async for event in events:
            if event.type in ("tool_complete", "tool_start"):
                started.add(f"{event.type}:{event.name}")
            if {"tool_complete:quick", "tool_start:forever"} <= started:
                break
    messages = (await graph.aget_state(config())).values["messages"]
    assert {m.text for m in messages if isinstance(m, ToolMessage)} == {"quick result", CANCELLED}
    assert is_valid(messages)


async def test_settling_an_idle_thread_writes_nothing():
    model = ScriptedModel(replies=[Reply(text="done")])
    graph = build_graph(model, tools=[], checkpointer=InMemorySaver(), settings=settings())
    await run(graph, ask("one"), config())
    checkpoints = [s async for s in graph.aget_state_history(config())]
    assert await settle(graph, config()) == []
    assert len([s async for s in graph.aget_state_history(config())]) == len(checkpoints)


async def test_a_new_message_on_a_thread_waiting_for_approval_closes_the_waiting_call():
    """The person moved on: the waiting call did not run, and the model is told so."""
    ran: list[str] = []

    @tool
    def remove(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return f"removed {path}"

    model = ScriptedModel(
        replies=[calls(("quick", {}), ("remove", {"path": "/a"})), Reply(text="as you wish")]
    )
    graph = build_graph(
        model,
        tools=[quick, configure(remove, requires_approval=True)],
        checkpointer=InMemorySaver(),
        settings=settings(),
    )
    assert (await run(graph, ask("clean up"), config()))[-1].status == "interrupted"

    events = await run(graph, ask("never mind, what time is it?"), config())

    assert events[-1].status == "done" and ran == []
    sent = model.seen[1]
    assert is_valid(sent)
    assert {(m.name, m.text) for m in sent if isinstance(m, ToolMessage)} == {
        ("quick", "quick result"),
        ("remove", SUPERSEDED),
    }
    assert not (await graph.aget_state(config())).next


async def test_a_new_message_after_a_killed_step_keeps_its_finished_results():
    """A run cut off outside ``stream`` (as a killed process leaves it) and then a new question."""
    model = ScriptedModel(replies=[calls(("quick", {}), ("forever", {})), Reply(text="ok")])
    graph = build_graph(model, tools=[quick, forever], checkpointer=InMemorySaver(), settings=settings())

    async def cut_off():
        seen = set()
        parts = graph.astream(ask("first"), config(), stream_mode=["custom"], durability="sync")
        async for _, chunk in parts:
            seen.add((chunk.get(EVENT_KEY), chunk.get("name")))
            if {("tool_complete", "quick"), ("tool_start", "forever")} <= seen:
                task.cancel()

    task = asyncio.create_task(cut_off())
    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(task, return_exceptions=True)
    assert "tools" in (await graph.aget_state(config())).next

    assert (await run(graph, ask("second"), config()))[-1].status == "done"
    sent = model.seen[1]
    assert is_valid(sent)
    assert {(m.name, m.text) for m in sent if isinstance(m, ToolMessage)} == {
        ("quick", "quick result"),
        ("forever", SUPERSEDED),
    }


class StallsBeforeClosing(InMemorySaver):
    """Stores the model's answer as its task's pending write, then blocks the checkpoint that
    would close the step: a process killed between the two."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = asyncio.Event()
        self._stall_next_put = False

    async def aput_writes(self, config, writes, task_id, task_path=""):
        await super().aput_writes(config, writes, task_id, task_path)
        if not self.stalled.is_set() and any(
            isinstance(m, AIMessage) for channel, value in writes if channel == "messages" for m in value
        ):
            self._stall_next_put = True

    async def aput(self, config, checkpoint, metadata, new_versions):
        if self._stall_next_put:
            self._stall_next_put = False
            self.stalled.set()
            await asyncio.Event().wait()
        return await super().aput(config, checkpoint, metadata, new_versions)


async def test_an_answer_stored_but_its_step_not_closed_is_kept_by_the_next_turn():
    """``next`` is empty once the model's task wrote its answer, yet the step is open (its
    ``tasks``); new input would drop that pending answer unless the step is closed first."""
    saver = StallsBeforeClosing()
    model = ScriptedModel(replies=[Reply(text="the whole answer"), Reply(text="ok")])
    graph = build_graph(model, tools=[], checkpointer=saver, settings=settings())
    cut_off = asyncio.create_task(graph.ainvoke(ask("one"), config(), durability="sync"))
    async with asyncio.timeout(GUARD_S):
        await saver.stalled.wait()
        cut_off.cancel()
        await asyncio.gather(cut_off, return_exceptions=True)
    left = await graph.aget_state(config())
    assert left.tasks and not left.next, "the answer is written, its step not closed"

    assert (await run(graph, ask("two"), config()))[-1].status == "done"
    assert [m.text for m in model.seen[1]] == ["one", "the whole answer", "two"]
    messages = (await graph.aget_state(config())).values["messages"]
    assert [m.text for m in messages] == ["one", "the whole answer", "two", "ok"]


async def test_resuming_with_a_command_does_not_settle():
    model = ScriptedModel(replies=[calls(("quick", {})), Reply(text="ok")])
    graph = build_graph(model, tools=[quick], checkpointer=InMemorySaver(), settings=settings())
    events = await run(graph, ask("go"), config())
    assert events[-1].status == "done"
    assert (await run(graph, Command(resume={}), config()))[-1].status == "done"
    assert isinstance((await graph.aget_state(config())).values["messages"][-1], AIMessage)


async def test_a_result_already_shown_is_kept_even_if_the_stop_cancels_its_bookkeeping():
    """The tool returned and ``tool_result`` was shown, but a wrapper outside ``Lifecycle`` (a
    store write) still holds the call when the stop comes: the shown result is kept."""
    bookkeeping = asyncio.Event()

    async def slow_bookkeeping(request, execute):
        result = await execute(request)
        if request.tool_call["name"] == "quick":
            await bookkeeping.wait()
        return result

    model = ScriptedModel(replies=[calls(("quick", {}), ("forever", {})), Reply(text="ok")])
    graph = build_graph(
        model, tools=[quick, forever], checkpointer=InMemorySaver(), settings=settings(),
        tool_wrappers=[slow_bookkeeping],
    )
    await run_until(
        graph, ask("first"), config(), lambda seen: "tool_complete:quick" in seen and "tool_start:forever" in seen
    )
    assert not bookkeeping.is_set()
    messages = (await graph.aget_state(config())).values["messages"]
    assert {(m.name, m.text) for m in messages if isinstance(m, ToolMessage)} == {
        ("quick", "quick result"),
        ("forever", CANCELLED),
    }
