"""The offline model streams and calls tools like a real chat model, without a network."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.tools import tool

from agent_ng.models.offline import MODEL_NAME, OfflineChatModel, plan_tool_calls, word_chunks

QUESTION = "what is 17*23 and how many primes are below 200000?"


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return "391"


@tool
def count_primes(below: int) -> int:
    """Count the primes smaller than `below`."""
    return 17984


def merged(chunks: list[AIMessageChunk]) -> AIMessage:
    return message_chunk_to_message(add_ai_message_chunks(*chunks))


def calls_of(message: AIMessage) -> list[tuple[str, dict[str, Any]]]:
    return [(call["name"], call["args"]) for call in message.tool_calls]


def history_with_results(*results: ToolMessage) -> list[Any]:
    ask = AIMessage(
        content="",
        tool_calls=[
            {"name": "calculator", "args": {"expression": "17*23"}, "id": "call_a"},
            {"name": "count_primes", "args": {"below": 200000}, "id": "call_b"},
        ],
    )
    return [HumanMessage(QUESTION), ask, *results]


async def test_text_streams_in_word_chunks_that_join_to_the_answer() -> None:
    model = OfflineChatModel()
    chunks = [chunk async for chunk in model.astream("hello")]
    answer = await model.ainvoke("hello")

    contents = [chunk.content for chunk in chunks]
    assert len(contents) > 5
    assert "".join(contents) == answer.content
    assert [c.strip() for c in contents] == answer.content.split()
    assert all(c == c.lstrip() for c in contents)
    assert not any(chunk.tool_call_chunks for chunk in chunks)


async def test_asks_for_both_tools_in_one_message_in_text_order() -> None:
    model = OfflineChatModel().bind_tools([calculator, count_primes])

    answer = await model.ainvoke(QUESTION)

    assert answer.content == ""
    assert calls_of(answer) == [
        ("calculator", {"expression": "17*23"}),
        ("count_primes", {"below": 200000}),
    ]
    ids = [call["id"] for call in answer.tool_calls]
    assert len(set(ids)) == 2
    assert all(i and i.startswith("call_") and len(i) == len("call_") + 12 for i in ids)
    assert answer.response_metadata["finish_reason"] == "tool_calls"


async def test_tool_calls_stream_as_openai_style_fragments() -> None:
    model = OfflineChatModel().bind_tools([calculator, count_primes])

    chunks = [chunk async for chunk in model.astream(QUESTION)]

    pieces = [piece for chunk in chunks for piece in chunk.tool_call_chunks]
    for index in (0, 1):
        own = [p for p in pieces if p["index"] == index]
        assert 2 <= len(own) <= 3
        assert own[0]["name"] and own[0]["id"]
        assert all(p["name"] is None and p["id"] is None for p in own[1:])
    assert all(chunk.content == "" for chunk in chunks)

    message = merged(chunks)
    assert calls_of(message) == [
        ("calculator", {"expression": "17*23"}),
        ("count_primes", {"below": 200000}),
    ]
    assert not message.invalid_tool_calls
    assert len({call["id"] for call in message.tool_calls}) == 2


async def test_asks_only_for_the_tools_that_are_bound() -> None:
    model = OfflineChatModel().bind_tools([calculator])

    answer = await model.ainvoke(QUESTION)

    assert calls_of(answer) == [("calculator", {"expression": "17*23"})]


async def test_answers_from_tool_results_in_call_order() -> None:
    model = OfflineChatModel().bind_tools([calculator, count_primes])
    history = history_with_results(
        ToolMessage("17984", tool_call_id="call_b", name="count_primes"),
        ToolMessage("391", tool_call_id="call_a", name="calculator"),
    )

    answer = await model.ainvoke(history)

    assert not answer.tool_calls
    assert answer.content == "17*23 = 391. There are 17,984 primes below 200,000."
    assert answer.response_metadata["finish_reason"] == "stop"


async def test_a_failed_tool_is_reported_as_failed() -> None:
    model = OfflineChatModel().bind_tools([calculator, count_primes])
    history = history_with_results(
        ToolMessage(
            "Error: division by zero\n Please fix your mistakes.",
            tool_call_id="call_a",
            name="calculator",
            status="error",
        ),
        ToolMessage("17984", tool_call_id="call_b", name="count_primes"),
    )

    answer = await model.ainvoke(history)

    assert answer.content.startswith("The calculator tool failed: division by zero.")
    assert "17,984" in answer.content


async def test_unknown_tool_and_unparseable_result_get_a_generic_sentence() -> None:
    ask = AIMessage(
        content="",
        tool_calls=[
            {"name": "weather", "args": {"city": "Oslo"}, "id": "call_w"},
            {"name": "calculator", "args": {"expression": "1/3"}, "id": "call_c"},
        ],
    )
    history = [
        HumanMessage("weather in Oslo and 1/3?"),
        ask,
        ToolMessage("Rain,\n 4 °C.", tool_call_id="call_w"),
        ToolMessage("not a number", tool_call_id="call_c"),
    ]

    answer = await OfflineChatModel().ainvoke(history)

    assert answer.content == "weather returned: Rain, 4 °C. calculator returned: not a number."


async def test_recalls_earlier_questions() -> None:
    model = OfflineChatModel().bind_tools([calculator, count_primes])
    history = [
        HumanMessage("what is the capital of France?"),
        AIMessage("I cannot look that up offline."),
        HumanMessage("what did I ask before?"),
    ]

    answer = await model.ainvoke(history)

    assert answer.content == 'Earlier you asked: "what is the capital of France?".'
    first = await model.ainvoke([HumanMessage("What was my last question?")])
    assert first.content == "You have not asked anything before this."


@pytest.mark.parametrize(
    "question",
    ["hello", QUESTION],
    ids=["text", "tool calls"],
)
async def test_last_chunk_carries_usage_and_finish_metadata(question: str) -> None:
    model = OfflineChatModel().bind_tools([calculator, count_primes])

    chunks = [chunk async for chunk in model.astream(question)]

    last = chunks[-1]
    assert last.chunk_position == "last"
    assert last.usage_metadata is not None
    assert last.usage_metadata["output_tokens"] == len(chunks)
    assert last.usage_metadata["input_tokens"] == len(question.split())
    assert last.usage_metadata["total_tokens"] == len(question.split()) + len(chunks)
    assert last.response_metadata["model_name"] == MODEL_NAME
    expected = "tool_calls" if question == QUESTION else "stop"
    assert last.response_metadata["finish_reason"] == expected
    assert all(chunk.usage_metadata is None for chunk in chunks[:-1])


async def test_without_tools_it_says_it_is_the_offline_model() -> None:
    answer = await OfflineChatModel().ainvoke(QUESTION)

    assert not answer.tool_calls
    assert "offline" in answer.content
    assert "17*23" not in answer.content
    assert 2 <= answer.content.count(". ") + 1 <= 3


async def test_callbacks_get_each_word_as_a_new_token() -> None:
    class Tokens(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    handler = Tokens()
    answer = await OfflineChatModel().ainvoke("hello", config={"callbacks": [handler]})

    assert handler.tokens == word_chunks(answer.content)


def test_sync_invoke_and_stream_agree() -> None:
    model = OfflineChatModel().bind_tools([calculator, count_primes])

    streamed = merged(list(model.stream(QUESTION)))
    invoked = model.invoke(QUESTION)

    assert calls_of(streamed) == calls_of(invoked)
    assert "".join(c.content for c in OfflineChatModel().stream("hi")) == (
        OfflineChatModel().invoke("hi").content
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what is (2 + 3) * 4?", [("calculator", {"expression": "(2 + 3) * 4"})]),
        ("and 2^10, please", [("calculator", {"expression": "2^10"})]),
        ("how much is 7 // 2 ** 3 % 5", [("calculator", {"expression": "7 // 2 ** 3 % 5"})]),
        ("(what is 1.5-0.25)", [("calculator", {"expression": "1.5-0.25"})]),
        ("what is 42?", []),
        ("primes below 200000", [("count_primes", {"below": 200000})]),
        ("Prime numbers UNDER 1,000,000!", [("count_primes", {"below": 1_000_000})]),
        ("primes less than 10_000", [("count_primes", {"below": 10_000})]),
        ("how many primes up to 100", [("count_primes", {"below": 101})]),
        ("meet on 2024-01-05", []),
        (
            "list files containing TODO, then 3*3",
            [("file_search", {"pattern": "TODO"}), ("calculator", {"expression": "3*3"})],
        ),
        ('search files for "big deal".', [("file_search", {"pattern": "big deal"})]),
    ],
)
def test_plan_tool_calls(text: str, expected: list[tuple[str, dict[str, Any]]]) -> None:
    calls = plan_tool_calls(text, {"calculator", "count_primes", "file_search"})

    assert [(call["name"], call["args"]) for call in calls] == expected


def test_plan_tool_calls_skips_unbound_tools() -> None:
    assert plan_tool_calls("files containing TODO", {"calculator"}) == []


def test_word_chunks_are_words_with_their_whitespace() -> None:
    assert word_chunks("There are 17,984 primes.") == ["There ", "are ", "17,984 ", "primes."]


def test_v3_events_carry_every_argument_fragment() -> None:
    model = OfflineChatModel().bind_tools([calculator, count_primes])

    events = list(model.stream_events(QUESTION, version="v3"))

    finished = [e["content"] for e in events if e["event"] == "content-block-finish"]
    assert [(block["type"], block["name"], block["args"]) for block in finished] == [
        ("tool_call", "calculator", {"expression": "17*23"}),
        ("tool_call", "count_primes", {"below": 200000}),
    ]
