"""The history rule (``agent_ng.nodes.history``): what breaks it, how it is repaired, and that nothing the
agent does breaks it, whatever happens to its tool calls.

The property tests run the real graph: hypothesis draws turns whose tool calls finish, fail, time
out, are rejected at approval, name an unknown tool, have arguments that are not JSON, or block
until the turn is cancelled (``stream()`` consumer), crashed (LangGraph's own stream cut off, as a
killed process leaves it) or left waiting for approval; the history is trimmed to a drawn token
budget. Every history the model receives must keep the rule, also on the wire to the local
OpenAI-compatible server. Stops are made on events, never on timing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import _Run, stream
from agent_ng.nodes.history import LOST, is_valid, repair, violations
from agent_ng.nodes.memory import window
from agent_ng.settings import Settings
from agent_ng.tools.registry import configure
from tests.helpers import openai_server
from tests.helpers.scripted_model import Reply, ScriptedModel

GUARD_S = 10


def ai(*ids: str, text: str = "") -> AIMessage:
    return AIMessage(text, tool_calls=[{"name": "t", "args": {}, "id": i} for i in ids])


def result(call_id: str, text: str = "ok") -> ToolMessage:
    return ToolMessage(text, tool_call_id=call_id, name="t")


# --- the rule and its repair -------------------------------------------------------------


def test_each_way_of_breaking_the_rule_is_named():
    assert violations([HumanMessage("q"), ai("a", "b"), result("a"), AIMessage("done")]) == [
        "tool call b (t) has no result"
    ]
    assert violations([HumanMessage("q"), ai("a"), result("a"), result("a")]) == [
        "tool call a has more than one result"
    ]
    assert violations([HumanMessage("q"), result("z")]) == [
        "tool result z answers no call of the AI message before it"
    ]
    assert violations([HumanMessage("q"), ai("a"), HumanMessage("again"), result("a")]) == [
        "tool call a (t) has no result",
        "tool result a answers no call of the AI message before it",
    ]
    garbled = AIMessage("", invalid_tool_calls=[{"name": "t", "args": "{", "id": "g", "error": None, "type": "invalid_tool_call"}])
    assert violations([garbled]) == ["tool call g (t) has no result"]


def test_repair_puts_the_missing_result_where_it_belongs_and_drops_strays():
    broken = [HumanMessage("q"), ai("a", "b"), result("a"), HumanMessage("again"), result("z")]
    fixed = repair(broken)
    assert [type(m).__name__ for m in fixed] == ["HumanMessage", "AIMessage", "ToolMessage", "ToolMessage", "HumanMessage"]
    assert fixed[3].tool_call_id == "b" and fixed[3].text == LOST and fixed[3].status == "error"
    assert is_valid(fixed)


messages = st.lists(
    st.one_of(
        st.builds(HumanMessage, st.sampled_from(["q", "again"])),
        st.builds(lambda ids: ai(*ids), st.lists(st.sampled_from("abcd"), max_size=3, unique=True)),
        st.builds(result, st.sampled_from("abcdz")),
        st.just(SystemMessage("s")),
    ),
    max_size=12,
)


@given(messages)
def test_repair_makes_any_history_valid_and_keeps_every_other_message(history):
    fixed = repair(history)
    assert is_valid(fixed)
    assert [m for m in fixed if not isinstance(m, ToolMessage)] == [m for m in history if not isinstance(m, ToolMessage)]
    assert repair(fixed) == fixed
    if is_valid(history):
        assert fixed == history


@st.composite
def valid_histories(draw) -> list:
    history: list = []
    for turn in range(draw(st.integers(1, 4))):
        history.append(HumanMessage(f"question {turn} " + "word " * draw(st.integers(0, 30))))
        for step in range(draw(st.integers(0, 3))):
            ids = [f"c{turn}_{step}_{k}" for k in range(draw(st.integers(1, 3)))]
            history.append(ai(*ids, text="thinking " * draw(st.integers(0, 10))))
            history += [result(i, "data " * draw(st.integers(0, 40))) for i in draw(st.permutations(ids))]
        history.append(AIMessage("answer " * draw(st.integers(0, 20))))
    return history


@given(valid_histories(), st.integers(-50, 600))
def test_trimming_keeps_the_rule(history, budget):
    assert is_valid(window(history, budget, count_tokens_approximately))


# --- the graph, whatever happens to its tool calls ------------------------------------------

CALL_KINDS = ["finish", "fail", "timeout", "unknown", "invalid", "reject"]


@dataclass
class Turn:
    kinds: list[str]
    stop: str
    """none | cancel (the stream consumer) | crash (LangGraph's stream cut off) | waiting"""


@st.composite
def scenarios(draw, kinds=CALL_KINDS) -> tuple[list[Turn], int]:
    turns = []
    for _ in range(draw(st.integers(1, 3))):
        stop = draw(st.sampled_from(["none", "cancel", "crash", "waiting"]))
        allowed = [k for k in kinds if not (k == "reject" and stop in ("cancel", "crash"))]
        chosen = draw(st.lists(st.sampled_from(allowed), max_size=3))
        chosen += {"cancel": ["block"], "crash": ["block"], "waiting": ["reject"]}.get(stop, [])
        turns.append(Turn(draw(st.permutations(chosen or ["finish"])), stop))
    return turns, draw(st.sampled_from([0, 60, 200]))


def make_tools() -> list:
    @tool
    async def finish(i: int) -> str:
        """Finishes."""
        return f"done {i}"

    @tool
    async def fail(i: int) -> str:
        """Fails."""
        raise ValueError(f"failure {i}")

    @tool
    async def slow(i: int) -> str:
        """Outlives its timeout."""
        await asyncio.Event().wait()

    @tool
    async def block(i: int) -> str:
        """Runs until its run is stopped."""
        await asyncio.Event().wait()

    @tool
    async def guarded(i: int) -> str:
        """Needs approval."""
        return f"guarded {i}"

    return [
        finish,
        fail,
        configure(slow, timeout_s=0.001),
        block,
        configure(guarded, requires_approval=True),
    ]


TOOL_OF = {"finish": "finish", "fail": "fail", "timeout": "slow", "unknown": "no_such_tool", "block": "block", "reject": "guarded"}


def step_calls(turn: Turn, offset: int) -> list[tuple[str, Any]]:
    return [(kind, TOOL_OF.get(kind, "finish"), {"i": offset + n}) for n, kind in enumerate(turn.kinds)]


def until_stoppable(turn: Turn):
    """True once every call that ends by itself has ended and every blocking call has started."""
    blocking = turn.kinds.count("block")
    ending = len(turn.kinds) - blocking

    def ready(ended: set[str], started_blocking: set[str]) -> bool:
        return len(ended) >= ending and len(started_blocking) >= blocking

    return ready


async def play(graph, turns: list[Turn], thread: str) -> None:
    config = {"configurable": {"thread_id": thread}}
    for number, turn in enumerate(turns):
        await play_turn(graph, turn, {"messages": [HumanMessage(f"question {number}")]}, config, thread)
    async with asyncio.timeout(GUARD_S):
        assert [e async for e in stream(graph, {"messages": [HumanMessage("last")]}, config)][-1].status == "done"


async def play_turn(graph, turn: Turn, question: dict, config: dict, thread: str) -> None:
    """One turn, stopped as ``turn.stop`` says (a function of its own, so the closures bind this turn)."""
    ready = until_stoppable(turn)
    ended: set[str] = set()
    started: set[str] = set()

    def note(event) -> bool:
        if event.type in ("tool_complete", "tool_error"):
            ended.add(event.tool_call_id)
        elif event.type == "tool_start" and event.name == "block":
            started.add(event.tool_call_id)
        return ready(ended, started)

    if turn.stop == "cancel":
        async def consume():
            async for event in stream(graph, question, config):
                if note(event):
                    task.cancel()
    elif turn.stop == "crash":
        async def consume():
            run = _Run("crash", thread)
            parts = graph.astream(question, config, stream_mode=["messages", "custom", "updates"], durability="sync")
            async for mode, chunk in parts:
                if any(note(event) for event in run.translate(mode, chunk)):
                    task.cancel()
    else:
        async def consume():
            events = [e async for e in stream(graph, question, config)]
            while turn.stop == "none" and events[-1].status == "interrupted":
                answers = {e.interrupt_id: "reject" for e in events if e.type == "interrupt"}
                events = [e async for e in stream(graph, Command(resume=answers), config)]
            assert events[-1].status == ("interrupted" if turn.stop == "waiting" else "done")

    task = asyncio.create_task(consume())
    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(task, return_exceptions=True)
    if turn.stop in ("cancel", "crash"):
        assert task.cancelled()
    else:
        task.result()


def scripted_replies(turns: list[Turn], reply) -> list:
    replies, offset = [], 0
    for turn in turns:
        replies.append(reply(step_calls(turn, offset)))
        offset += len(turn.kinds)
        if turn.stop == "none":
            replies.append(reply(None))
    return [*replies, reply(None)]


def scripted_model_reply(calls):
    if calls is None:
        return Reply(text="an answer")
    return Reply(
        tool_calls=[(name, args) for kind, name, args in calls if kind != "invalid"],
        raw_tool_calls=[("finish", '{"i": ') for kind, _, _ in calls if kind == "invalid"],
    )


def graph_settings(budget: int) -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="be brief", memory_max_tokens=budget, max_steps=10)


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_no_interleaving_of_tool_outcomes_gives_the_model_a_broken_history(scenario):
    turns, budget = scenario
    model = ScriptedModel(replies=scripted_replies(turns, scripted_model_reply))
    graph = build_graph(model, tools=make_tools(), checkpointer=InMemorySaver(), settings=graph_settings(budget))
    asyncio.run(play(graph, turns, "property"))
    assert len(model.seen) == len(model.replies)
    for sent in model.seen:
        assert not violations(sent), sent


def wire_violations(body: dict[str, Any]) -> list[str]:
    """The rule as OpenAI states it, on the request body: every assistant ``tool_calls`` id is
    answered once by the ``tool`` messages right after it, and no ``tool`` message is stray."""
    problems, open_ids, answered = [], set(), set()
    for message in body["messages"]:
        if message["role"] == "tool":
            if message["tool_call_id"] not in open_ids or message["tool_call_id"] in answered:
                problems.append(f"stray or repeated result {message['tool_call_id']}")
            answered.add(message["tool_call_id"])
            continue
        problems += [f"unanswered {i}" for i in open_ids - answered]
        open_ids = {c["id"] for c in message.get("tool_calls") or []}
        answered = set()
    return problems + [f"unanswered {i}" for i in open_ids - answered]


def openai_reply(calls):
    if calls is None:
        return openai_server.Reply(text="an answer")
    return openai_server.Reply(tool_calls=[(name, args) for _, name, args in calls])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios(kinds=[k for k in CALL_KINDS if k != "invalid"]))
def test_the_openai_server_always_receives_every_tool_call_answered(openai_server, scenario):
    turns, budget = scenario
    script = openai_server.script
    script.requests.clear()
    script.replies[:] = scripted_replies(turns, openai_reply)
    expected = len(script.replies)
    model = ChatOpenAI(
        base_url=openai_server.base_url, api_key="test", model="test-model", streaming=True, stream_usage=True, max_retries=0
    )
    graph = build_graph(model, tools=make_tools(), checkpointer=InMemorySaver(), settings=graph_settings(budget))
    asyncio.run(play(graph, turns, "wire"))
    assert len(script.requests) == expected
    for body in script.requests:
        assert wire_violations(body) == [], body["messages"]


async def test_a_thread_broken_by_hand_is_repaired_on_load_and_stored_repaired():
    model = ScriptedModel(replies=[Reply(text="fine")])
    graph = build_graph(model, tools=make_tools(), checkpointer=InMemorySaver(), settings=graph_settings(0))
    config = {"configurable": {"thread_id": "broken"}}
    broken = [HumanMessage("q"), ai("a", "b"), result("a"), HumanMessage("again"), result("z")]
    await graph.aupdate_state(config, {"messages": broken}, as_node="tools")
    assert violations((await graph.aget_state(config)).values["messages"])

    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, {"messages": [HumanMessage("and now?")]}, config)]

    assert events[-1].status == "done"
    assert [e.type for e in events] == ["run_start", "content", "run_end"], "the repair is not replayed as events"
    assert is_valid(model.seen[0])
    assert [m.text for m in model.seen[0] if isinstance(m, ToolMessage)] == ["ok", LOST]
    stored = (await graph.aget_state(config)).values["messages"]
    assert is_valid(stored)
    assert [m.text for m in stored] == ["q", "", "ok", LOST, "again", "and now?", "fine"]
