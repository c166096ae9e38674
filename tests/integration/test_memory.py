"""Memory: what the model is sent fits the budget, stays valid, and the thread keeps everything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.nodes.memory import SUMMARY_HEADING, make_memory, token_counter_for, window
from agent_ng.settings import Settings
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 10


def one_per_message(messages: Sequence[BaseMessage]) -> int:
    return len(messages)


def conversation() -> list[BaseMessage]:
    """Three turns; the second has a model step with two parallel tool calls, then another step."""
    history: list[BaseMessage] = []
    n = 0

    def ai_calling(*names: str) -> AIMessage:
        nonlocal n
        tool_calls = []
        for name in names:
            n += 1
            tool_calls.append({"name": name, "args": {}, "id": f"c{n}", "type": "tool_call"})
        return AIMessage("", tool_calls=tool_calls, id=f"ai{n}")

    history += [HumanMessage("q1", id="h1"), AIMessage("a1", id="a1")]
    step = ai_calling("x", "y")
    history += [HumanMessage("q2", id="h2"), step]
    history += [ToolMessage("rx", tool_call_id=c["id"], name=c["name"], id=f"t{c['id']}") for c in step.tool_calls]
    step = ai_calling("z")
    history += [step, ToolMessage("rz", tool_call_id=step.tool_calls[0]["id"], name="z", id="tz")]
    history += [AIMessage("a2", id="a2"), HumanMessage("q3", id="h3")]
    step = ai_calling("w", "v")
    history += [step]
    history += [ToolMessage("r", tool_call_id=c["id"], name=c["name"], id=f"t{c['id']}") for c in step.tool_calls]
    return history


def assert_valid(sent: Sequence[BaseMessage]) -> None:
    """Every tool call answered by a ToolMessage after it, every ToolMessage preceded by its call."""
    called: set[str] = set()
    for i, message in enumerate(sent):
        if isinstance(message, AIMessage):
            ids = {c["id"] for c in message.tool_calls}
            after = {m.tool_call_id for m in sent[i + 1 :] if isinstance(m, ToolMessage)}
            assert ids <= after, f"tool calls {ids - after} sent without their results"
            called |= ids
        elif isinstance(message, ToolMessage):
            assert message.tool_call_id in called, f"result {message.tool_call_id} sent without its call"


@pytest.mark.parametrize("budget", range(0, 16))
def test_every_budget_gives_a_valid_window_ending_with_the_newest_message(budget):
    history = conversation()
    kept = window(history, budget, one_per_message)
    assert_valid(kept)
    assert kept[-1] is history[-1], "the newest results are always sent"
    assert [m for m in history if m in kept] == kept, "order is kept"
    assert any(isinstance(m, HumanMessage) and m.text == "q3" for m in kept), "the question stays"
    if budget >= 4:
        assert len(kept) <= budget


def test_within_budget_whole_turns_are_kept_from_a_user_message():
    history = conversation()
    assert window(history, len(history), one_per_message) == history
    kept = window(history, len(history) - 1, one_per_message)
    assert kept[0].id == "h2", "the partial first turn is dropped, not cut"


def test_a_turn_over_budget_keeps_its_question_and_the_newest_whole_steps():
    history = [HumanMessage("q", id="h")]
    for k in range(4):
        call = {"name": "t", "args": {}, "id": f"c{k}", "type": "tool_call"}
        history += [AIMessage("", tool_calls=[call], id=f"a{k}"), ToolMessage("r", tool_call_id=f"c{k}", id=f"t{k}")]
    kept = window(history, 5, one_per_message)
    assert [m.id for m in kept] == ["h", "a2", "t2", "a3", "t3"]
    assert [m.id for m in window(history, 1, one_per_message)] == ["h", "a3", "t3"]


async def test_the_model_is_sent_a_trimmed_window_and_the_thread_keeps_everything():
    @tool
    def echo(text: str) -> str:
        """Echo text."""
        return text * 100

    replies = []
    for k in range(3):
        replies += [calls(("echo", {"text": f"turn{k} "})), Reply(text=f"answer {k}")]
    model = ScriptedModel(replies=replies)
    settings = Settings(checkpoint_url="memory://", system_prompt="Be brief.", memory_max_tokens=300)
    graph = build_graph(model, tools=[echo], checkpointer=InMemorySaver(), settings=settings)
    cfg = {"configurable": {"thread_id": "trim"}}
    async with asyncio.timeout(GUARD_S):
        for k in range(3):
            [_ async for _ in stream(graph, {"messages": [HumanMessage(f"question {k}")]}, cfg)]

    stored = (await graph.aget_state(cfg)).values["messages"]
    assert len(stored) == 3 * 4, "nothing is cut from the thread"
    last = model.seen[-1]
    assert isinstance(last[0], SystemMessage) and last[0].text == "Be brief."
    assert count_tokens_approximately(last) <= 300
    assert len(last) < len(stored) + 1, "the history was trimmed"
    assert last[1].text == "question 2", "the window starts at the current question"
    assert_valid(last[1:])
    for sent in model.seen:
        assert_valid(sent)


async def test_summary_of_what_is_dropped_is_stored_and_sent_but_not_streamed():
    model = ScriptedModel(
        replies=[
            Reply(text="first answer " * 30),
            Reply(text="SUMMARY: they asked one thing."),
            Reply(text="second answer"),
        ]
    )
    settings = Settings(
        checkpoint_url="memory://", system_prompt="Be brief.", memory_max_tokens=100, memory_summary=True
    )
    graph = build_graph(model, tools=[], checkpointer=InMemorySaver(), settings=settings)
    cfg = {"configurable": {"thread_id": "summary"}}
    async with asyncio.timeout(GUARD_S):
        [_ async for _ in stream(graph, {"messages": [HumanMessage("one")]}, cfg)]
        events = [e async for e in stream(graph, {"messages": [HumanMessage("two")]}, cfg)]

    summarizer_input = model.seen[1]
    assert "user: one" in summarizer_input[-1].text and "assistant: first answer" in summarizer_input[-1].text
    sent = model.seen[2]
    assert sent[0].text.startswith("Be brief.") and SUMMARY_HEADING in sent[0].text
    assert "SUMMARY: they asked one thing." in sent[0].text
    assert [m.text for m in sent[1:]] == ["two"]
    assert "SUMMARY" not in "".join(e.text or "" for e in events if e.type == "content")
    state = (await graph.aget_state(cfg)).values
    assert state["summary"] == "SUMMARY: they asked one thing."
    assert state["summary_through"] == state["messages"][1].id
    assert len(state["messages"]) == 4


async def test_memory_off_sends_everything():
    memory = make_memory(ScriptedModel(replies=[]), max_tokens=0)
    history = conversation()
    recall = await memory([SystemMessage("s")], {"messages": history})
    assert recall.messages[1:] == history and recall.update == {}


class CountingModel(ScriptedModel):
    fail: bool = False

    def get_num_tokens_from_messages(self, messages, tools=None) -> int:
        if self.fail:
            raise OSError("no tokenizer files here")
        return 7 * len(messages)


def test_the_models_own_token_counter_is_used_when_it_works():
    assert token_counter_for(ScriptedModel(replies=[])) is count_tokens_approximately
    assert token_counter_for(CountingModel(replies=[], fail=True)) is count_tokens_approximately
    counter = token_counter_for(CountingModel(replies=[]))
    assert counter([HumanMessage("a"), HumanMessage("b")]) == 14
    assert BaseChatModel.get_num_tokens_from_messages is not CountingModel.get_num_tokens_from_messages


class SlowToLoadModel(ScriptedModel):
    """Its first count loads a tokenizer (blocking, as tiktoken reading or fetching its files)."""

    loaded: bool = False

    def get_num_tokens_from_messages(self, messages, tools=None) -> int:
        if not self.loaded:
            time.sleep(LOAD_S)
            self.loaded = True
        return len(messages)


LOAD_S = 0.3


async def test_the_tokenizer_is_loaded_off_the_event_loop():
    memory = make_memory(SlowToLoadModel(replies=[]), max_tokens=100)
    lags: list[float] = []

    async def beat() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before)

    beating = asyncio.create_task(beat())
    await asyncio.sleep(0.02)
    await memory([], {"messages": [HumanMessage("hi")]})
    beating.cancel()
    assert len(lags) >= LOAD_S / 0.02 and max(lags) < LOAD_S / 2, lags


async def test_the_real_chat_openai_client_sends_the_trimmed_valid_window(openai_server):
    """End to end through ``ChatOpenAI`` (its tiktoken counter cannot load offline, so the
    approximate one counts): what reaches the server is trimmed, starts with the system
    prompt, and answers every tool call id it contains."""
    from tests.helpers.openai_server import Reply as ServerReply

    for k in range(3):
        openai_server.script.replies += [
            ServerReply(tool_calls=[("calculator", {"expression": f"{k}*1000"}), ("calculator", {"expression": f"{k}+1"})]),
            ServerReply(text=f"answer {k} " + "and more words " * 40),
        ]
    settings = Settings(
        checkpoint_url="memory://",
        openai_base_url=openai_server.base_url,
        openai_api_key="test",
        model="test-model",
        system_prompt="Be brief.",
        memory_max_tokens=250,
    )
    graph = build_graph(checkpointer=InMemorySaver(), settings=settings)
    cfg = {"configurable": {"thread_id": "openai-trim"}}
    async with asyncio.timeout(GUARD_S):
        for k in range(3):
            events = [e async for e in stream(graph, {"messages": [HumanMessage(f"question {k}")]}, cfg)]
            assert events[-1].status == "done"

    stored = (await graph.aget_state(cfg)).values["messages"]
    assert len(stored) == 3 * 5
    last = openai_server.script.requests[-1]["messages"]
    assert last[0] == {"role": "system", "content": "Be brief."}
    assert len(last) - 1 < len(stored), "the request was trimmed"
    assert last[1] == {"role": "user", "content": "question 2"}
    for request in openai_server.script.requests:
        called, answered = set(), set()
        for message in request["messages"]:
            called |= {c["id"] for c in message.get("tool_calls") or []}
            if message["role"] == "tool":
                assert message["tool_call_id"] in called, "a result without its call"
                answered.add(message["tool_call_id"])
        assert called == answered, "a call without its result"
