"""Approvals: a tool marked ``requires_approval`` waits for a person, the rest of its step runs.

The run stops with ``interrupt`` events (one per waiting call, showing it) and status
``interrupted``; ``Command(resume={interrupt_id: answer})`` continues it, also from a new graph
on the same checkpoint store (another process, later).
"""

from __future__ import annotations

import asyncio
import uuid

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from rich.console import Console

from agent_ng.cli.approvals import settle
from agent_ng.engine.approval import parse_decision
from agent_ng.engine.tool_calls import notes
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import AgentEvent, stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.settings import Settings
from agent_ng.tools.registry import configure
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 10


def make_tools(log: list):
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        log.append(("add", a, b))
        return a + b

    @tool
    def remove(path: str) -> str:
        """Delete a file."""
        log.append(("remove", path))
        return f"removed {path}"

    return [add, configure(remove, requires_approval=True)]


def settings() -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="")


async def collect(graph, input, cfg) -> list[AgentEvent]:
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, input, cfg)]


def of_type(events, type_):
    return [e for e in events if e.type == type_]


def three_removals_and_an_add() -> list[Reply]:
    return [
        calls(("add", {"a": 1, "b": 2}), *[("remove", {"path": p}) for p in ("/a", "/b", "/c")]),
        Reply(text="done"),
    ]


async def test_waiting_calls_interrupt_the_run_while_the_rest_of_the_step_runs():
    log: list = []
    model = ScriptedModel(replies=three_removals_and_an_add())
    graph = build_graph(model, tools=make_tools(log), checkpointer=InMemorySaver(), settings=settings())
    cfg = {"configurable": {"thread_id": "approve"}}
    events = await collect(graph, {"messages": [HumanMessage("clean up")]}, cfg)

    assert log == [("add", 1, 2)], "only the call that needs no approval ran"
    assert [e.name for e in of_type(events, "tool_complete")] == ["add"]
    waiting = of_type(events, "interrupt")
    assert sorted(e.value["args"]["path"] for e in waiting) == ["/a", "/b", "/c"]
    calls_by_id = {e.tool_call_id: e.args for e in of_type(events, "tool_call")}
    for event in waiting:
        assert event.value["type"] == "approval" and event.value["name"] == "remove"
        assert calls_by_id[event.value["tool_call_id"]] == event.value["args"]
        assert event.interrupt_id
    assert events[-1].type == "run_end" and events[-1].status == "interrupted"
    assert not any(e.name == "remove" for e in of_type(events, "tool_start"))

    by_path = {e.value["args"]["path"]: e.interrupt_id for e in waiting}
    resumed = await collect(
        graph,
        Command(
            resume={
                by_path["/a"]: "approve",
                by_path["/b"]: {"action": "reject", "reason": "keep b"},
                by_path["/c"]: {"action": "edit", "args": {"path": "/tmp/c"}},
            }
        ),
        cfg,
    )

    assert log == [("add", 1, 2), ("remove", "/a"), ("remove", "/tmp/c")], "add did not run again"
    assert resumed[-1].status == "done"
    [rejected] = of_type(resumed, "tool_error")
    assert "Rejected" in rejected.error and "keep b" in rejected.error
    results = {m.tool_call_id: m for m in model.seen[1] if isinstance(m, ToolMessage)}
    assert len(results) == 4, "the model sees one result per call"
    ids = {e.value["args"]["path"]: e.value["tool_call_id"] for e in waiting}
    assert results[ids["/b"]].status == "error" and "did not approve" in results[ids["/b"]].text
    assert results[ids["/c"]].text.endswith("removed /tmp/c") and "edited" in results[ids["/c"]].text
    assert results[ids["/a"]].text == "removed /a"


async def test_an_answer_that_is_not_understood_is_asked_again_and_nothing_runs():
    log: list = []
    model = ScriptedModel(replies=[calls(("remove", {"path": "/x"})), Reply(text="ok")])
    graph = build_graph(model, tools=make_tools(log), checkpointer=InMemorySaver(), settings=settings())
    cfg = {"configurable": {"thread_id": "bad-answer"}}
    [first] = of_type(await collect(graph, {"messages": [HumanMessage("go")]}, cfg), "interrupt")

    again = await collect(graph, Command(resume={first.interrupt_id: "maybe"}), cfg)
    [second] = of_type(again, "interrupt")
    assert "approval answer" in second.value["error"] and "'maybe'" in second.value["error"]
    assert again[-1].status == "interrupted" and log == []

    edit_without_args = await collect(graph, Command(resume={second.interrupt_id: {"action": "edit"}}), cfg)
    [third] = of_type(edit_without_args, "interrupt")
    assert "needs 'args'" in third.value["error"] and log == []

    done = await collect(graph, Command(resume={third.interrupt_id: {"action": "approve"}}), cfg)
    assert done[-1].status == "done" and log == [("remove", "/x")]


def test_parse_decision_accepts_the_documented_forms_only():
    assert parse_decision("approve").action == "approve"
    assert parse_decision({"action": "reject", "reason": "no"}).reason == "no"
    assert parse_decision({"action": "edit", "args": {"a": 1}}).args == {"a": 1}
    for bad in (None, True, "yes", {"action": "edit", "args": "x"}, ["approve"]):
        try:
            parse_decision(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


async def test_an_interrupted_run_is_answered_later_from_another_graph_on_the_same_store(checkpoint_url):
    thread = f"approve-{uuid.uuid4().hex}"
    cfg = {"configurable": {"thread_id": thread}}
    log: list = []
    async with open_checkpointer(checkpoint_url) as saver:
        model = ScriptedModel(replies=[calls(("add", {"a": 2, "b": 2}), ("remove", {"path": "/y"}))])
        graph = build_graph(model, tools=make_tools(log), checkpointer=saver, settings=settings())
        events = await collect(graph, {"messages": [HumanMessage("go")]}, cfg)
        [waiting] = of_type(events, "interrupt")
    assert log == [("add", 2, 2)]

    async with open_checkpointer(checkpoint_url) as saver:
        model = ScriptedModel(replies=[Reply(text="all done")])
        graph = build_graph(model, tools=make_tools(log), checkpointer=saver, settings=settings())
        events = await collect(graph, Command(resume={waiting.interrupt_id: "approve"}), cfg)
        state = await graph.aget_state(cfg)
        await saver.adelete_thread(thread)
    assert log == [("add", 2, 2), ("remove", "/y")]
    assert events[-1].status == "done"
    assert [m.text for m in state.values["messages"] if isinstance(m, ToolMessage)] == ["4", "removed /y"]


async def test_the_cli_asks_yes_no_or_edit_and_resumes(monkeypatch):
    log: list = []
    model = ScriptedModel(
        replies=[calls(*[("remove", {"path": p}) for p in ("/1", "/2", "/3")]), Reply(text="ok")]
    )
    graph = build_graph(model, tools=make_tools(log), checkpointer=InMemorySaver(), settings=settings())
    cfg = {"configurable": {"thread_id": "cli-approve"}}
    await collect(graph, {"messages": [HumanMessage("go")]}, cfg)
    waiting = (await graph.aget_state(cfg)).interrupts
    answers_by_path = {"/1": ["y"], "/2": ["what?", "n", "not this one"], "/3": ["e", "{bad json", "[1]", '{"path": "/9"}']}
    console = Console(file=open("/dev/null", "w"))
    order = iter([a for w in waiting for a in answers_by_path[w.value["args"]["path"]]])
    monkeypatch.setattr(console, "input", lambda prompt="": next(order))

    async def show(graph, input, config):
        return (await collect(graph, input, config))[-1].status

    async with asyncio.timeout(GUARD_S):
        status = await settle(graph, cfg, "interrupted", show, console)
    assert status == "done"
    assert sorted(log) == [("remove", "/1"), ("remove", "/9")]
    rejected = [m for m in model.seen[1] if isinstance(m, ToolMessage) and m.status == "error"]
    assert len(rejected) == 1 and "not this one" in rejected[0].text
    assert notes(rejected[0]) == {"rejected": True}


async def test_without_an_answer_the_cli_leaves_the_thread_waiting(monkeypatch):
    log: list = []
    model = ScriptedModel(replies=[calls(("remove", {"path": "/z"}))])
    graph = build_graph(model, tools=make_tools(log), checkpointer=InMemorySaver(), settings=settings())
    cfg = {"configurable": {"thread_id": "cli-eof"}}
    await collect(graph, {"messages": [HumanMessage("go")]}, cfg)
    console = Console(file=open("/dev/null", "w"))

    def eof(prompt=""):
        raise EOFError

    monkeypatch.setattr(console, "input", eof)
    assert await settle(graph, cfg, "interrupted", None, console) == "interrupted"
    assert log == [] and (await graph.aget_state(cfg)).interrupts


def test_the_live_view_marks_waiting_calls_and_shows_calls_of_a_resumed_run():
    from agent_ng.cli.view import TurnView

    view = TurnView()
    view.handle(AgentEvent("tool_call", "r", "t", 0.0, tool_call_id="c1", name="remove", args={"path": "/a"}))
    view.handle(AgentEvent("interrupt", "r", "t", 0.0, value={"type": "approval", "tool_call_id": "c1"}))
    assert view.rows["c1"].state == "waiting"

    resumed = TurnView()
    resumed.handle(AgentEvent("tool_start", "r2", "t", 0.0, tool_call_id="c1", name="remove", args={"path": "/a"}))
    resumed.handle(AgentEvent("tool_complete", "r2", "t", 0.1, tool_call_id="c1", name="remove", elapsed_s=0.1))
    assert resumed.rows["c1"].state == "done" and resumed.rows["c1"].args == {"path": "/a"}
