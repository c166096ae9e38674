"""``langgraph dev`` serves ``langgraph.json``'s graph: tokens and tool progress reach a
``langgraph_sdk`` client, and a thread goes on across runs.

The server is the real ``langgraph dev`` (``tests.helpers.langgraph_dev``: a subprocess on a free
loopback port, with the offline model and none of the caller's ``AGENT_*`` settings), its
checkpoints and tool store in memory and its data directory the test's own, so nothing a run
before it stored (a cached tool result comes without progress) changes what it sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client

from tests.helpers.langgraph_dev import langgraph_dev as running_langgraph_dev
from tests.helpers.langgraph_traffic import DEV_ENV

RUN_GUARD_S = 30
QUESTION = "what is 17*23 and how many primes are below 200000?"


@pytest.fixture
def langgraph_dev(tmp_path: Path) -> Iterator[str]:
    with running_langgraph_dev(tmp_path, **DEV_ENV, AGENT_DATA_DIR=str(tmp_path)) as url:
        yield url


async def stream_run(client, thread_id: str, text: str) -> list:
    async with asyncio.timeout(RUN_GUARD_S):
        return [
            part
            async for part in client.runs.stream(
                thread_id,
                "agent",
                input={"messages": [{"role": "user", "content": text}]},
                stream_mode=["messages-tuple", "custom", "updates"],
            )
        ]


def answer_tokens(parts: list) -> list[str]:
    return [
        chunk["content"]
        for part in parts
        if part.event == "messages"
        for chunk, metadata in [part.data]
        if metadata.get("langgraph_node") == "llm"
        and chunk["type"] == "AIMessageChunk"
        and chunk["content"]
    ]


async def test_a_thread_streams_tokens_and_tool_progress_and_continues_in_a_second_run(
    langgraph_dev,
):
    client = get_client(url=langgraph_dev)
    thread = await client.threads.create()

    first = await stream_run(client, thread["thread_id"], QUESTION)

    tokens = answer_tokens(first)
    assert len(tokens) > 5, "the answer arrives as many token chunks"
    assert "".join(tokens) == "17*23 = 391. There are 17,984 primes below 200,000."
    custom = [p.data for p in first if p.event == "custom"]
    progress = [c for c in custom if c.get("agent_ng") == "tool_progress"]
    assert len(progress) >= 10 and {c["name"] for c in progress} == {"count_primes"}
    assert progress[-1]["progress"] == 1.0
    assert [c["progress"] for c in progress] == sorted(c["progress"] for c in progress)
    assert {c["name"] for c in custom if c.get("agent_ng") == "tool_complete"} == {
        "calculator",
        "count_primes",
    }
    updated = [node for p in first if p.event == "updates" for node in p.data]
    assert updated.count("tools") == 2 and updated.count("llm") == 2

    second = await stream_run(client, thread["thread_id"], "what did I ask before?")

    assert "".join(answer_tokens(second)) == f'Earlier you asked: "{QUESTION}".'
    state = await client.threads.get_state(thread["thread_id"])
    roles = [m["type"] for m in state["values"]["messages"]]
    assert roles == ["human", "ai", "tool", "tool", "ai", "human", "ai"]
