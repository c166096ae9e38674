"""The real ``ChatOpenAI`` against the scripted OpenAI server.

Graph tests trust this server to look like OpenAI to langchain-openai. These tests pin that:
word-sized content chunks with usage at the end, parallel tool calls whose interleaved
argument fragments merge back by index, the tools and tool results the client sends, and
tokens reaching the client while the rest of the reply is still being held back.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from tests.helpers.openai_server import OpenAIServer, Reply

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "count_primes",
            "description": "Count the primes below a number.",
            "parameters": {
                "type": "object",
                "properties": {"below": {"type": "integer"}},
                "required": ["below"],
            },
        },
    },
]
TOOL_CALLS = [("calculator", {"expression": "17*23"}), ("count_primes", {"below": 200})]
QUESTION = "What is 17*23, and how many primes are below 200?"


def chat_model(server: OpenAIServer, *, streaming: bool = True) -> ChatOpenAI:
    """The production client, pointed at the scripted server; no retries, so errors show."""
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="test",
        model="test-model",
        streaming=streaming,
        stream_usage=True,
        max_retries=0,
    )


async def test_text_reply_streams_word_chunks_then_usage(openai_server: OpenAIServer) -> None:
    text = "Seventeen times twenty-three is 391."
    openai_server.script.replies.append(Reply(text=text))

    chunks = [chunk async for chunk in chat_model(openai_server).astream(QUESTION)]

    *from_server, end = chunks
    contents = [chunk.content for chunk in from_server if chunk.content]
    assert contents == ["Seventeen ", "times ", "twenty-three ", "is ", "391."]
    assert "".join(contents) == text
    # The usage chunk is the server's last; langchain-core then closes with an empty marker.
    assert from_server[-1].usage_metadata is not None
    assert from_server[-1].usage_metadata["output_tokens"] == len(contents)
    assert all(chunk.usage_metadata is None for chunk in from_server[:-1])
    assert end.chunk_position == "last"
    (request,) = openai_server.script.requests
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}


async def test_interleaved_tool_call_fragments_merge_by_index(
    openai_server: OpenAIServer,
) -> None:
    openai_server.script.replies.extend([Reply(tool_calls=TOOL_CALLS)] * 2)
    model = chat_model(openai_server).bind_tools(TOOLS)

    message = await model.ainvoke(QUESTION)

    assert isinstance(message, AIMessage)
    assert [(call["name"], call["args"]) for call in message.tool_calls] == TOOL_CALLS
    assert [call["id"] for call in message.tool_calls] == ["call_1_0", "call_1_1"]
    assert message.response_metadata["finish_reason"] == "tool_calls"

    chunks = [chunk async for chunk in model.astream(QUESTION)]
    tool_call_chunks = [tc for chunk in chunks for tc in chunk.tool_call_chunks]

    headers = [tc for tc in tool_call_chunks if tc["name"] is not None]
    fragments = [tc for tc in tool_call_chunks if tc["name"] is None]
    assert [(tc["index"], tc["name"], tc["id"]) for tc in headers] == [
        (0, "calculator", "call_2_0"),
        (1, "count_primes", "call_2_1"),
    ]
    assert [tc["index"] for tc in fragments] == [0, 1, 0, 1, 0, 1]
    for index, (_, arguments) in enumerate(TOOL_CALLS):
        joined = "".join(tc["args"] for tc in fragments if tc["index"] == index)
        assert json.loads(joined) == arguments


async def test_requests_carry_bound_tools_and_tool_results(openai_server: OpenAIServer) -> None:
    openai_server.script.replies.extend(
        [Reply(tool_calls=TOOL_CALLS), Reply(text="391, and there are 46 primes below 200.")]
    )
    model = chat_model(openai_server).bind_tools(TOOLS)
    question = HumanMessage(QUESTION)

    calls = await model.ainvoke([question])
    results = [
        ToolMessage(content=content, tool_call_id=call["id"])
        for call, content in zip(calls.tool_calls, ["391", "46"], strict=True)
    ]
    await model.ainvoke([question, calls, *results])

    first, second = openai_server.script.requests
    assert first["tools"] == TOOLS
    assert second["tools"] == TOOLS
    roles = [message["role"] for message in second["messages"]]
    assert roles == ["user", "assistant", "tool", "tool"]
    assistant, *tool_messages = second["messages"][1:]
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_1_0", "call_1_1"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        ("call_1_0", "391"),
        ("call_1_1", "46"),
    ]


async def test_first_chunks_arrive_while_the_reply_is_held(openai_server: OpenAIServer) -> None:
    release = threading.Event()
    text = "one two three four five"
    openai_server.script.replies.append(Reply(text=text, hold_after=2, release=release))
    stream = chat_model(openai_server).astream("Count to five.")

    # Only the test sets the event, so if the server or client buffered, this would hang:
    # bound it so a regression fails instead.
    async with asyncio.timeout(10):
        early = [await anext(stream), await anext(stream)]
    assert not release.is_set()
    assert [chunk.content for chunk in early] == ["one ", "two "]

    release.set()
    rest = [chunk async for chunk in stream]

    assert "".join(str(chunk.content) for chunk in early + rest) == text


async def test_non_streaming_request_gets_a_completion_object(openai_server: OpenAIServer) -> None:
    openai_server.script.replies.extend([Reply(tool_calls=TOOL_CALLS), Reply(text="Done.")])
    model = chat_model(openai_server, streaming=False)

    calls = await model.bind_tools(TOOLS).ainvoke(QUESTION)
    answer = await model.ainvoke(QUESTION)

    assert [(call["name"], call["args"]) for call in calls.tool_calls] == TOOL_CALLS
    assert answer.content == "Done."
    assert answer.usage_metadata is not None
    assert not any(request.get("stream") for request in openai_server.script.requests)


async def test_running_out_of_script_is_a_server_error(openai_server: OpenAIServer) -> None:
    with pytest.raises(openai.InternalServerError, match="no scripted reply left for request #1"):
        await chat_model(openai_server).ainvoke(QUESTION)
