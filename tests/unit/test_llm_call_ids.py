"""Every tool call keeps an id of its own in the thread, whatever ids the model sends.

Some providers and local servers give two calls of one answer the same id, or start again at
``call_0`` each turn; a result finds its call by id alone, so the model node renames the
repeats once, where it merges the answer, and the stored calls and results agree.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.nodes.history import is_valid
from agent_ng.nodes.llm import with_unique_call_ids
from agent_ng.settings import Settings
from agent_ng.tools.calculator import calculator

GUARD_S = 10
CONFIG = {"configurable": {"thread_id": "t"}}


def call(expression: str, id_: str | None) -> dict[str, Any]:
    return {"name": "calculator", "args": {"expression": expression}, "id": id_, "type": "tool_call"}


class Repeating(BaseChatModel):
    """Streams each scripted answer: its text, or its calls (``(expression, id)``) as chunks."""

    answers: list[str | list[tuple[str, str]]]
    seen: list[list[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "repeating"

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        self.seen.append(list(messages))
        answer = self.answers.pop(0)
        if isinstance(answer, str):
            chunks = [AIMessageChunk(content=answer)]
        else:
            chunks = [
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {"name": "calculator", "args": json.dumps({"expression": e}), "id": i, "index": n}
                    ],
                )
                for n, (e, i) in enumerate(answer)
            ]
        for chunk in chunks:
            yield ChatGenerationChunk(message=chunk)

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError


async def ask(graph, question: str) -> list:
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, {"messages": [HumanMessage(question)]}, CONFIG)]


def graph_of(model: BaseChatModel):
    settings = Settings(checkpoint_url="memory://", cache_url="memory://", system_prompt="")
    return build_graph(model, tools=[calculator], checkpointer=InMemorySaver(), settings=settings)


async def test_two_calls_with_one_id_both_run_and_both_results_are_kept():
    model = Repeating(answers=[[("1+1", "dup"), ("2*3", "dup")], "2 and 6"], seen=[])
    graph = graph_of(model)

    events = await ask(graph, "1+1 and 2*3?")
    messages = (await graph.aget_state(CONFIG)).values["messages"]

    assert events[-1].status == "done"
    answer = messages[1]
    ids = [c["id"] for c in answer.tool_calls]
    assert ids[0] == "dup" and len(set(ids)) == 2
    results = {m.tool_call_id: m.text for m in messages if isinstance(m, ToolMessage)}
    assert results == {ids[0]: "2", ids[1]: "6"}
    assert [e.tool_call_id for e in events if e.type == "tool_call"] == ids
    assert is_valid(messages) and is_valid(model.seen[1])


async def test_an_id_the_model_used_in_an_earlier_turn_does_not_hide_the_new_call():
    model = Repeating(answers=[[("1+1", "call_0")], "2", [("7*7", "call_0")], "49"], seen=[])
    graph = graph_of(model)

    await ask(graph, "1+1?")
    events = await ask(graph, "7*7?")
    messages = (await graph.aget_state(CONFIG)).values["messages"]

    assert events[-1].status == "done"
    results = [m.text for m in messages if isinstance(m, ToolMessage)]
    assert results == ["2", "49"]
    assert messages[-1].text == "49" and is_valid(messages)


def test_an_answer_whose_ids_are_already_unique_is_kept_as_it_is():
    answer = AIMessage("", tool_calls=[call("1+1", "a"), call("2+2", "b")])

    assert with_unique_call_ids(answer, [HumanMessage("go")]) is answer


def test_missing_repeated_and_taken_ids_get_new_ones_garbled_calls_included():
    earlier = AIMessage("", tool_calls=[call("0", "old")])
    garbled = {"name": "calculator", "args": "{", "id": "a", "error": None, "type": "invalid_tool_call"}
    answer = AIMessage("", tool_calls=[call("1", "a"), call("2", "old"), call("3", None)], invalid_tool_calls=[garbled])

    fixed = with_unique_call_ids(answer, [HumanMessage("go"), earlier])

    ids = [c["id"] for c in [*fixed.tool_calls, *fixed.invalid_tool_calls]]
    assert ids[0] == "a" and len(set(ids + ["old"])) == 5 and all(ids)
    assert [c["args"] for c in fixed.tool_calls] == [{"expression": e} for e in "123"]
    assert answer.tool_calls[1]["id"] == "old"
